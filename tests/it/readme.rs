//! The README's walk-through runs top to bottom as written: its `sh` blocks, run by bash
//! against a fresh daemon on the built-in defaults, with the first-start admin password read
//! from `outpost-data/admin-password` as a person who just started the daemon would.

use crate::support::*;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const SECTION: &str = "## A walk through with curl";

/// The `sh` blocks of the walk-through section, in order.
fn walk_through(readme: &str) -> Vec<String> {
    let start = readme
        .find(SECTION)
        .unwrap_or_else(|| panic!("README.md has no {SECTION:?} section"));
    let section = &readme[start + SECTION.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + "```sh\n".len()..];
        let close = body.find("```").expect("an sh block is closed");
        blocks.push(body[..close].to_string());
        rest = &body[close + 3..];
    }
    blocks
}

/// Every curl call of the script fails on an HTTP error status (`-f`), so a refused request
/// fails the run instead of printing an error body.
fn assert_every_curl_fails_on_errors(script: &str) {
    for line in script.lines() {
        let code = line.split(" #").next().unwrap_or(line);
        for call in code.split("curl ").skip(1) {
            let flags: Vec<&str> = call
                .split_whitespace()
                .take_while(|w| w.starts_with('-'))
                .collect();
            let fails = flags.iter().any(|f| {
                *f == "--fail"
                    || *f == "--fail-with-body"
                    || (!f.starts_with("--") && f.contains('f'))
            });
            assert!(fails, "a curl call without -f in the walk-through: {line}");
        }
    }
}

#[tokio::test]
async fn the_walk_through_runs_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let blocks = walk_through(&readme);
    assert!(blocks.len() >= 2, "the walk-through has its sh blocks");
    let script = blocks.join("\n");
    assert!(
        script.contains("outpost-data/admin-password"),
        "the walk-through logs in with the first-start password"
    );
    assert_every_curl_fails_on_errors(&script);

    // The daemon on its defaults, as after `cargo run -- serve` in a fresh directory: no chosen
    // admin password, so the first start writes one to ./outpost-data/admin-password.
    let server = TestServer::with(|config| {
        config.admin_password = None;
        config.data_dir = config.data_dir.join("outpost-data");
    })
    .await;
    let cwd = server.data_dir();
    assert!(cwd.join("outpost-data/admin-password").exists());
    let script = script.replace("localhost:8000", &server.addr.to_string());

    let run = tokio::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&cwd)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the walk-through finishes within 30 s")
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the walk-through failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    // What it printed is what the comments promise.
    for expected in [
        "\"type\":\"result\"",
        "event: end",
        "already_finished",
        "\"valid\":true",
        "\"revoked\":true",
        "logged_out",
    ] {
        assert!(stdout.contains(expected), "no {expected} in:\n{stdout}");
    }
    server.stop().await;
}
