//! `outpost backup FILE`: a consistent copy of the store taken through the running daemon
//! (its control socket) while turns are being written, or from the file when no daemon runs;
//! a restore is the copy put back as `outpost.redb`.

use crate::support::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn backup(data_dir: &Path, file: &Path) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_outpost"))
        .arg("backup")
        .arg(file)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("OUTPOST_CONFIG")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn message_count(server: &TestServer, token: &str) -> usize {
    let history = server
        .get("/api/agents/echo/chat/history/persistent", token)
        .await
        .json();
    history["messages"].as_array().unwrap().len()
}

#[tokio::test]
async fn a_backup_of_a_busy_daemon_restores_with_its_history() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    for i in 0..3 {
        let reply = server
            .chat_json("echo", &token, json!({"message": format!("before {i}")}))
            .await;
        assert_eq!(reply.status, 200);
    }
    // Turns keep landing while the copy is taken.
    let server = Arc::new(server);
    let writer = tokio::spawn({
        let (server, token) = (server.clone(), token.clone());
        async move {
            for i in 0..20 {
                server
                    .chat_json("echo", &token, json!({"message": format!("during {i}")}))
                    .await;
            }
        }
    });
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("outpost-backup.redb");
    let (data_dir, target) = (server.data_dir(), file.clone());
    let (ok, text) = tokio::task::spawn_blocking(move || backup(&data_dir, &target))
        .await
        .unwrap();
    assert!(ok, "{text}");
    assert!(text.contains("running daemon"), "{text}");
    writer.await.unwrap();
    let server = Arc::try_unwrap(server).ok().unwrap();
    server.stop().await;

    // Restore: the copy becomes the store of a new data dir.
    let restored = Arc::new(tempfile::tempdir().unwrap());
    std::fs::copy(&file, restored.path().join("outpost.redb")).unwrap();
    let server = TestServer::in_dir(restored, |_| {}).await;
    let token = server.admin().await;
    let count = message_count(&server, &token).await;
    assert!(
        (6..=46).contains(&count),
        "the 3 turns before the backup and at most the ones during it: {count}"
    );
    let dir = server.stop().await;

    // With no daemon running, the command copies the file itself.
    let again = out.path().join("again.redb");
    let (ok, text) = backup(dir.path(), &again);
    assert!(ok, "{text}");
    assert!(text.contains(" tables, "), "{text}");
}

#[test]
fn no_store_and_no_daemon_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, text) = backup(dir.path(), &dir.path().join("x.redb"));
    assert!(!ok);
    assert!(text.contains("no store"), "{text}");
}
