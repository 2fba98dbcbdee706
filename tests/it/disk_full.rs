//! A full disk is an answer, not a wedge: the daemon runs with its data dir on a small tmpfs
//! mounted in a mount namespace of its own (`unshare --mount`), is filled with chat turns
//! until writes are refused, and then the tmpfs grows (`nsenter … mount -o remount`). Needs
//! root (CI runs as root); skipped with a message otherwise.

use crate::support::*;
use hyper::Method;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Confined {
    child: Child,
    addr: SocketAddr,
    data: std::path::PathBuf,
}

impl Drop for Confined {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Confined {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let headers = [("accept", "application/json")];
        send(
            self.addr,
            None,
            false,
            build(method, path, token, body, &headers),
        )
        .await
    }

    async fn admin_token(&self) -> String {
        let login = json!({"username": "admin", "password": ADMIN_PASSWORD});
        let reply = self
            .call(Method::POST, "/api/token", None, Some(login))
            .await;
        reply.json()["access_token"].as_str().unwrap().to_string()
    }

    async fn turn(&self, token: &str, message: &str) -> Reply {
        let body = json!({"message": message});
        self.call(
            Method::POST,
            "/api/agents/echo/chat",
            Some(token),
            Some(body),
        )
        .await
    }

    /// What `outpost status` prints, run in the daemon's mount namespace.
    fn status(&self) -> String {
        let output = Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-m"])
            .arg(env!("CARGO_BIN_EXE_outpost"))
            .arg("--data-dir")
            .arg(&self.data)
            .arg("status")
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    /// Grows the tmpfs the daemon's data dir is on, from inside its mount namespace.
    fn grow(&self, size: &str) {
        let status = Command::new("nsenter")
            .args(["-t", &self.child.id().to_string(), "-m", "mount", "-o"])
            .arg(format!("remount,size={size}"))
            .arg(&self.data)
            .status()
            .unwrap();
        assert!(status.success(), "remounting the tmpfs failed");
    }
}

fn can_mount() -> bool {
    let root = rustix::process::geteuid().is_root();
    let tools = ["unshare", "nsenter", "mount"].iter().all(|tool| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    // A container without the right to make mount namespaces says so here.
    let unshares = || {
        Command::new("unshare")
            .args(["--mount", "true"])
            .status()
            .is_ok_and(|s| s.success())
    };
    root && tools && unshares()
}

async fn start_on_tmpfs(size: &str, store: &str) -> (tempfile::TempDir, Confined) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    let text = format!("[store]\n{store}\n[agents.echo]\nengine = {{ kind = \"echo\" }}\n");
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let script = r#"mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" serve --config "$4" --data-dir "$2" --listen "$5""#;
    let child = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            size,
        ])
        .arg(&data)
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .arg(&config)
        .arg(addr.to_string())
        .env("OUTPOST_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("OUTPOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let daemon = Confined { child, addr, data };
    eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_ok()
            .then_some(())
    })
    .await;
    (dir, daemon)
}

/// True, having said why, when this machine cannot run these tests.
#[allow(clippy::print_stderr)] // the reason a test is skipped
fn skipped() -> bool {
    let skip = !can_mount();
    if skip {
        eprintln!("skipped: mounting a tmpfs in a mount namespace needs root, unshare and nsenter, and the right to make a mount namespace");
    }
    skip
}

/// Chat turns of ~2,000 words until `refusals` of them are refused.
struct Filled {
    acknowledged: u64,
    session_id: String,
    refused: Vec<Reply>,
}

async fn fill(daemon: &Confined, token: &str, refusals: usize) -> Filled {
    let words = vec!["storage"; 2_000].join(" ");
    let mut filled = Filled {
        acknowledged: 0,
        session_id: String::new(),
        refused: Vec::new(),
    };
    for _ in 0..2_000 {
        let reply = daemon.turn(token, &words).await;
        if reply.status == 200 {
            filled.acknowledged += 1;
            filled.session_id = reply.json()["session_id"].as_str().unwrap().to_string();
        } else {
            filled.refused.push(reply);
            if filled.refused.len() >= refusals {
                break;
            }
        }
    }
    assert!(
        filled.acknowledged > 10,
        "only {} turns before the disk was full",
        filled.acknowledged
    );
    assert_eq!(filled.refused.len(), refusals, "an 8 MB disk must fill up");
    filled
}

/// Grows the tmpfs and waits for a turn in `session_id` to be taken again.
async fn grow_and_chat(daemon: &Confined, token: &str, session_id: &str) -> Duration {
    daemon.grow("64m");
    let started = Instant::now();
    let reply = eventually(Duration::from_secs(15), || async {
        let reply = daemon.turn(token, "back").await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(reply.json()["session_id"], session_id);
    started.elapsed()
}

async fn session(daemon: &Confined, token: &str, id: &str) -> Value {
    let path = format!("/api/agents/echo/chat/sessions/{id}?limit=500");
    let reply = daemon.call(Method::GET, &path, Some(token), None).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

async fn metrics(daemon: &Confined) -> String {
    let reply = daemon.call(Method::GET, "/metrics", None, None).await;
    String::from_utf8_lossy(&reply.body).into_owned()
}

#[tokio::test]
#[allow(clippy::print_stderr)] // how long recovery took
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    if skipped() {
        return;
    }
    let (_dir, daemon) = start_on_tmpfs("8m", "").await;
    let token = daemon.admin_token().await;
    // Once full, writes keep being refused with the same answer, never a 500.
    let filled = fill(&daemon, &token, 21).await;
    for refused in &filled.refused {
        let body = String::from_utf8_lossy(&refused.body);
        assert_eq!(refused.status, 507, "{body}");
        assert_eq!(refused.json()["error"], "insufficient_storage");
        assert!(refused.header("retry-after").is_some());
    }
    let ready = daemon.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["store_state"], "full");
    assert!(metrics(&daemon).await.contains("outpost_store_writable 0"));
    let status = daemon.status();
    assert!(status.contains("refused: the disk is full"), "{status}");

    // Reads keep working, and show every acknowledged turn and nothing else.
    let before = session(&daemon, &token, &filled.session_id).await;
    assert_eq!(before["session"]["message_count"], 2 * filled.acknowledged);
    assert_eq!(
        before["messages"].as_array().unwrap().len() as u64,
        2 * filled.acknowledged
    );

    // Space comes back: writes succeed again within seconds, without a restart.
    let took = grow_and_chat(&daemon, &token, &filled.session_id).await;
    eprintln!("writes resumed {took:?} after the tmpfs grew");
    let ready = daemon.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
    let status = daemon.status();
    assert!(status.contains("writes       writable"), "{status}");
    let after = session(&daemon, &token, &filled.session_id).await;
    assert_eq!(
        after["session"]["message_count"],
        2 * filled.acknowledged + 2
    );
}

/// With no reserve the disk itself refuses a commit: redb then refuses every call until its
/// file is reopened. The store reopens it by itself; no answer is a 500, and what it shows
/// afterwards is what is on disk.
#[tokio::test]
async fn an_io_error_mid_commit_reopens_the_store_without_a_restart() {
    if skipped() {
        return;
    }
    let (_dir, daemon) = start_on_tmpfs("8m", "write_reserve_mb = 0").await;
    let token = daemon.admin_token().await;
    let filled = fill(&daemon, &token, 20).await;
    let statuses: Vec<u16> = filled.refused.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 507 || *s == 503),
        "refusals were {statuses:?}"
    );
    let metrics = metrics(&daemon).await;
    assert!(!metrics.contains("outpost_store_io_errors 0"), "{metrics}");

    grow_and_chat(&daemon, &token, &filled.session_id).await;
    let session = session(&daemon, &token, &filled.session_id).await;
    let roles: Vec<&str> = session["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    // Every acknowledged reply is there and no other; at most the user message of a refused
    // turn whose admission reached the disk before its reply could not.
    let replies = roles.iter().filter(|r| **r == "assistant").count() as u64;
    assert_eq!(replies, filled.acknowledged + 1, "{roles:?}");
    let count = session["session"]["message_count"].as_u64().unwrap();
    let at_least = 2 * filled.acknowledged + 2;
    assert!(
        (at_least..=at_least + statuses.len() as u64).contains(&count),
        "{count} messages for {} acknowledged turns: {roles:?}",
        filled.acknowledged
    );
    let ready = daemon.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(
        ready.status,
        200,
        "{}",
        String::from_utf8_lossy(&ready.body)
    );
}
