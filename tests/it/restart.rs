//! Durability across restarts: clean stops keep everything; `kill -9` mid-turn leaves the
//! turn `failed` / `interrupted` with the user message stored.

use crate::support::*;
use hyper::Method;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[tokio::test]
async fn a_restart_keeps_sessions_and_history() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let first = server
        .chat_json("echo", &token, json!({"message": "remember me"}))
        .await
        .json();
    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |_| {}).await;
    // The old token still works: the secret is kept in the data dir.
    let sessions = server
        .get("/api/agents/echo/chat/sessions", &token)
        .await
        .json();
    assert_eq!(sessions["sessions"][0]["id"], first["session_id"]);
    assert_eq!(sessions["sessions"][0]["message_count"], 2);
    let next = server
        .chat_json("echo", &token, json!({"message": "still here"}))
        .await
        .json();
    assert_eq!(
        next["session_id"], first["session_id"],
        "the active session survives"
    );
    let history = server
        .get("/api/agents/echo/chat/history/persistent", &token)
        .await
        .json();
    assert_eq!(history["messages"].as_array().unwrap().len(), 4);
}

/// The daemon as a separate process, for `kill -9`.
pub(crate) struct Process {
    child: Child,
    pub(crate) addr: std::net::SocketAddr,
}

impl Process {
    pub(crate) async fn start(data_dir: &std::path::Path, config: &std::path::Path) -> Process {
        Process::start_with_env(data_dir, config, &[]).await
    }

    /// Starts it with these environment variables besides the test's own.
    pub(crate) async fn start_with_env(
        data_dir: &std::path::Path,
        config: &std::path::Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Process {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_outpost"))
            .args(["serve", "--config"])
            .arg(config)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", &addr.to_string()])
            .env("OUTPOST_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("OUTPOST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        eventually(Duration::from_secs(20), || async {
            let ok = tokio::net::TcpStream::connect(addr).await.is_ok();
            ok.then_some(())
        })
        .await;
        Process { child, addr }
    }

    pub(crate) async fn admin_token(&self) -> String {
        let body = json!({"username": "admin", "password": ADMIN_PASSWORD});
        let login = self
            .call(Method::POST, "/api/token", None, Some(body))
            .await;
        login.json()["access_token"].as_str().unwrap().to_string()
    }

    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Reply {
        send(
            self.addr,
            None,
            false,
            build(method, path, token, body, &[]),
        )
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn kill_9_during_a_slow_turn_leaves_it_interrupted_with_the_user_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(
        &config,
        "[agents.slow]\nengine = { kind = \"echo\", delay_ms = 200 }\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut daemon = Process::start(&data, &config).await;
    let token = daemon.admin_token().await;
    let words = vec!["word"; 100].join(" ");
    let (addr, stream_token) = (daemon.addr, token.clone());
    let streaming = tokio::spawn(async move {
        let request = build(
            Method::POST,
            "/api/agents/slow/chat",
            Some(&stream_token),
            Some(json!({"message": words})),
            &[],
        );
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let _ = sender.send_request(request).await;
        std::future::pending::<()>().await;
    });
    let running = eventually(Duration::from_secs(10), || async {
        let reply = daemon
            .call(
                Method::GET,
                "/api/agents/slow/executions/running",
                Some(&token),
                None,
            )
            .await
            .json();
        reply["executions"]
            .as_array()
            .unwrap()
            .first()
            .map(|e| e["id"].as_str().unwrap().to_string())
    })
    .await;
    // Let a few events become durable, then pull the plug.
    tokio::time::sleep(Duration::from_millis(600)).await;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    streaming.abort();

    let daemon = Process::start(&data, &config).await;
    let execution = daemon
        .call(
            Method::GET,
            &format!("/api/agents/slow/executions/{running}"),
            Some(&token),
            None,
        )
        .await
        .json();
    assert_eq!(execution["status"], "failed");
    assert_eq!(execution["error"], "interrupted");
    let session_id = execution["session_id"].as_str().unwrap();
    let session = daemon
        .call(
            Method::GET,
            &format!("/api/agents/slow/chat/sessions/{session_id}"),
            Some(&token),
            None,
        )
        .await
        .json();
    let messages = session["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "user");
    assert!(messages[0]["content"]
        .as_str()
        .unwrap()
        .starts_with("word word"));
    // Its event log replays to a single closing result.
    let events = daemon
        .call(
            Method::GET,
            &format!("/api/agents/slow/executions/{running}/stream"),
            Some(&token),
            None,
        )
        .await;
    let text = String::from_utf8_lossy(&events.body).to_string();
    assert_eq!(text.matches("\"type\":\"result\"").count(), 1);
    assert!(text.contains("\"subtype\":\"init\""));
    assert!(text.contains("event: end"));
    // New turns work in the same session.
    let next = daemon
        .call(
            Method::POST,
            "/api/agents/slow/chat",
            Some(&token),
            Some(json!({"message": "back", "session_id": session_id})),
        )
        .await;
    assert_eq!(next.status, 200);
}

#[tokio::test]
async fn kill_9_with_queued_and_running_tasks_resumes_the_queue_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    // Slow enough that three stay running while fifty wait.
    std::fs::write(
        &config,
        "[agents.work]\nengine = { kind = \"echo\", delay_ms = 5000 }\nmax_concurrent = 3\nqueue_capacity = 100\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut daemon = Process::start(&data, &config).await;
    let token = daemon.admin_token().await;
    let mut ids = Vec::new();
    for i in 0..53 {
        let reply = daemon
            .call(
                Method::POST,
                "/api/agents/work/task",
                Some(&token),
                Some(json!({"message": format!("job-{i:02}"), "async_mode": true})),
            )
            .await;
        assert_eq!(reply.status, 202);
        ids.push(reply.json()["execution_id"].as_str().unwrap().to_string());
    }
    eventually(Duration::from_secs(10), || async {
        let reply = daemon
            .call(
                Method::GET,
                "/api/agents/work/executions/running",
                Some(&token),
                None,
            )
            .await
            .json();
        (reply["executions"].as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(daemon);

    // Back with a fast engine: the fifty run, in their order; the three were interrupted.
    std::fs::write(
        &config,
        "[agents.work]\nengine = { kind = \"echo\", delay_ms = 0 }\nmax_concurrent = 1\nqueue_capacity = 100\n",
    )
    .unwrap();
    let daemon = Process::start(&data, &config).await;
    let mut finished = Vec::new();
    for id in &ids {
        let execution = eventually(Duration::from_secs(30), || async {
            let e = daemon
                .call(
                    Method::GET,
                    &format!("/api/agents/work/executions/{id}"),
                    Some(&token),
                    None,
                )
                .await
                .json();
            matches!(e["status"].as_str(), Some("success" | "failed")).then_some(e)
        })
        .await;
        finished.push(execution);
    }
    let interrupted: Vec<&str> = finished
        .iter()
        .filter(|e| e["status"] == "failed")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(interrupted, ["job-00", "job-01", "job-02"]);
    assert!(finished
        .iter()
        .filter(|e| e["status"] == "failed")
        .all(|e| e["error"] == "interrupted"));
    let succeeded: Vec<&serde_json::Value> = finished
        .iter()
        .filter(|e| e["status"] == "success")
        .collect();
    assert_eq!(succeeded.len(), 50);
    let starts: Vec<&str> = succeeded
        .iter()
        .map(|e| e["started_at"].as_str().unwrap())
        .collect();
    let mut sorted = starts.clone();
    sorted.sort();
    assert_eq!(starts, sorted, "the queue order is kept across the crash");
}

#[tokio::test]
async fn api_agents_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "[agents.fixed]\n").unwrap();
    let data = dir.path().join("data");
    let mut daemon = Process::start(&data, &config).await;
    let token = daemon.admin_token().await;
    let created = daemon
        .call(
            Method::POST,
            "/api/agents",
            Some(&token),
            Some(json!({"name": "made", "description": "by the API"})),
        )
        .await;
    assert_eq!(created.status, 201);
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    drop(daemon);
    let daemon = Process::start(&data, &config).await;
    let agent = daemon
        .call(Method::GET, "/api/agents/made", Some(&token), None)
        .await;
    assert_eq!(agent.status, 200);
    assert_eq!(agent.json()["description"], "by the API");
    assert_eq!(agent.json()["source"], "api");
}
