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

async fn start_on_tmpfs(size: &str) -> (tempfile::TempDir, Confined) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "[agents.echo]\nengine = { kind = \"echo\" }\n").unwrap();
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

#[tokio::test]
#[allow(clippy::print_stderr)] // why it is skipped; how long recovery took
async fn a_full_disk_refuses_writes_keeps_reads_and_recovers_when_space_returns() {
    if !can_mount() {
        eprintln!("skipped: mounting a tmpfs in a mount namespace needs root, unshare and nsenter, and the right to make a mount namespace");
        return;
    }
    let (_dir, daemon) = start_on_tmpfs("8m").await;
    let login = json!({"username": "admin", "password": ADMIN_PASSWORD});
    let token = daemon
        .call(Method::POST, "/api/token", None, Some(login))
        .await
        .json()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let words = vec!["storage"; 2_000].join(" ");
    let mut acknowledged = 0u64;
    let mut session_id = Value::Null;
    let mut refused = None;
    for _ in 0..2_000 {
        let reply = daemon
            .call(
                Method::POST,
                "/api/agents/echo/chat",
                Some(&token),
                Some(json!({"message": words})),
            )
            .await;
        match reply.status {
            200 => {
                acknowledged += 1;
                session_id = reply.json()["session_id"].clone();
            }
            _ => {
                refused = Some(reply);
                break;
            }
        }
    }
    let refused = refused.expect("an 8 MB disk must fill up");
    assert!(
        acknowledged > 10,
        "only {acknowledged} turns before the disk was full"
    );
    assert_eq!(
        refused.status,
        507,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    assert_eq!(refused.json()["error"], "insufficient_storage");
    assert!(refused.header("retry-after").is_some());

    // Writes keep being refused with the same answer, never a 500.
    for _ in 0..20 {
        let reply = daemon
            .call(
                Method::POST,
                "/api/agents/echo/chat",
                Some(&token),
                Some(json!({"message": "more"})),
            )
            .await;
        assert_eq!(
            reply.status,
            507,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    let ready = daemon.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["store_state"], "full");

    // Reads keep working, and show every acknowledged turn and nothing else.
    let history = daemon
        .call(
            Method::GET,
            "/api/agents/echo/chat/history/persistent?limit=500",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(history.status, 200);
    let messages = history.json()["messages"].as_array().unwrap().len() as u64;
    assert_eq!(messages, (2 * acknowledged).min(500));
    let session = daemon
        .call(
            Method::GET,
            &format!(
                "/api/agents/echo/chat/sessions/{}",
                session_id.as_str().unwrap()
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(session.status, 200);
    assert_eq!(session.json()["session"]["message_count"], 2 * acknowledged);
    let metrics =
        String::from_utf8_lossy(&daemon.call(Method::GET, "/metrics", None, None).await.body)
            .into_owned();
    assert!(metrics.contains("outpost_store_writable 0"), "{metrics}");

    // Space comes back: writes succeed again within seconds, without a restart.
    daemon.grow("64m");
    let started = Instant::now();
    let reply = eventually(Duration::from_secs(10), || async {
        let reply = daemon
            .call(
                Method::POST,
                "/api/agents/echo/chat",
                Some(&token),
                Some(json!({"message": "back"})),
            )
            .await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_eq!(reply.json()["session_id"], session_id);
    eprintln!(
        "writes resumed {:?} after the tmpfs grew",
        started.elapsed()
    );
    let ready = daemon.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
    let session = daemon
        .call(
            Method::GET,
            &format!(
                "/api/agents/echo/chat/sessions/{}",
                session_id.as_str().unwrap()
            ),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(
        session.json()["session"]["message_count"],
        2 * acknowledged + 2
    );
}
