//! The command line: `check`, `user`, `token issue`, and a clear word when the daemon holds the store.

use crate::support::*;
use std::process::Command;

fn outpost(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env_remove("OUTPOST_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_names_the_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "[server]\nlisten = [\"127.0.0.1:9000\"]\n").unwrap();
    let (ok, stdout, _) = outpost(&["check", "--config", good.to_str().unwrap()]);
    assert!(ok);
    assert!(stdout.contains("configuration is valid"));
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "[server]\nlisen = [\"127.0.0.1:9000\"]\n").unwrap();
    let (ok, _, stderr) = outpost(&["check", "--config", typo.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("lisen"), "{stderr}");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[agents.research]\ntimeout = \"soon\"\n").unwrap();
    let (ok, _, stderr) = outpost(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("agents.research.timeout"), "{stderr}");
}

#[tokio::test]
async fn users_and_tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let (ok, stdout, stderr) = outpost(&["user", "add", "dana", "--data-dir", &data]);
    assert!(ok, "{stderr}");
    let password = stdout
        .lines()
        .find_map(|l| l.strip_prefix("password: "))
        .unwrap()
        .to_string();
    let (ok, stdout, _) = outpost(&["user", "list", "--data-dir", &data]);
    assert!(ok);
    assert!(stdout.starts_with("dana\tuser\t"));
    let (ok, token, stderr) = outpost(&[
        "token",
        "issue",
        "--user",
        "dana",
        "--ttl",
        "1h",
        "--scope",
        "voice chat",
        "--data-dir",
        &data,
    ]);
    assert!(ok, "{stderr}");

    let server = TestServer::in_dir(std::sync::Arc::new(dir), |_| {}).await;
    let me = server.get("/api/users/me", token.trim()).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["username"], "dana");
    server.login("dana", &password).await;
    // The daemon holds the store: the command says so instead of failing obscurely.
    let (ok, _, stderr) = outpost(&["user", "list", "--data-dir", &data]);
    assert!(!ok);
    assert!(stderr.contains("in use by another process"), "{stderr}");
}
