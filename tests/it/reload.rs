//! Reload of the agents of the file (what SIGHUP does, called in-process): file agents are
//! added, changed and removed; API agents stay; a file agent wins a name clash and the API
//! agent comes back when the file drops the name; a running turn finishes on the definition
//! it started with.

use crate::support::*;
use outpost::config::{Config, EngineSpec};
use serde_json::{json, Value};
use std::sync::Arc;

async fn agents(addr: std::net::SocketAddr, token: &str) -> Vec<(String, String, String)> {
    let reply = send(
        addr,
        None,
        false,
        build(hyper::Method::GET, "/api/agents", Some(token), None, &[]),
    )
    .await;
    let list: Value = reply.json();
    list.as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["source"].as_str().unwrap().to_string(),
                a["display_name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn with_agents(base: &Config, agents: Vec<outpost::config::AgentConfig>) -> Config {
    Config {
        agents,
        ..base.clone()
    }
}

#[tokio::test]
async fn reload_refreshes_file_agents_and_keeps_api_agents() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut config = test_config(dir.path());
    config.agents = vec![echo_agent("alpha", 40, 2)];
    let daemon = outpost::start(config.clone()).await.unwrap();
    let addr = daemon.local_addrs()[0];
    let client = Client { addr };
    let token = client.login().await;
    for name in ["gamma", "delta"] {
        let made = client
            .post("/api/agents", &token, json!({"name": name}))
            .await;
        assert_eq!(made.status, 201, "{:?}", made.body);
    }

    // A slow turn on alpha, still running while alpha changes.
    let words = vec!["word"; 20].join(" ");
    let turn = tokio::spawn({
        let (client, token) = (client.clone(), token.clone());
        async move {
            client
                .post("/api/agents/alpha/chat", &token, json!({"message": words}))
                .await
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let mut alpha = echo_agent("alpha", 0, 2);
    alpha.display_name = "Alpha, changed".into();
    let mut gamma = echo_agent("gamma", 0, 1);
    gamma.engine = EngineSpec::Echo { delay_ms: 1 };
    let reloaded = daemon
        .reload(with_agents(&config, vec![alpha.clone(), gamma]))
        .await
        .unwrap();
    assert_eq!(reloaded.agents.added, vec!["gamma"]);
    assert_eq!(reloaded.agents.changed, vec!["alpha"]);
    assert!(reloaded.agents.removed.is_empty());
    assert!(reloaded.needs_restart.is_empty());
    assert_eq!(
        agents(addr, &token).await,
        vec![
            ("alpha".into(), "config".into(), "Alpha, changed".into()),
            ("delta".into(), "api".into(), "delta".into()),
            ("gamma".into(), "config".into(), "gamma".into()),
        ]
    );

    // The turn that started before the reload ends normally, on the old definition.
    let reply = turn.await.unwrap();
    assert_eq!(reply.status, 200);
    let lines = reply.lines();
    let result = lines.last().unwrap();
    assert_eq!(result["type"], "result", "{lines:?}");
    assert_eq!(result["is_error"], false, "{result}");

    // The file drops gamma: the API agent of that name is served again, with its data.
    let reloaded = daemon
        .reload(with_agents(&config, vec![alpha]))
        .await
        .unwrap();
    assert_eq!(reloaded.agents.removed, vec!["gamma"]);
    let listed = agents(addr, &token).await;
    assert!(listed.contains(&("gamma".into(), "api".into(), "gamma".into())));
    assert!(listed.contains(&("delta".into(), "api".into(), "delta".into())));
    daemon.stop().await;
}

#[tokio::test]
async fn a_reload_that_changes_sockets_says_they_wait_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path());
    let daemon = outpost::start(config.clone()).await.unwrap();
    let mut next = config.clone();
    next.listen = vec!["127.0.0.1:1".parse().unwrap()];
    next.workers = 3;
    let reloaded = daemon.reload(next).await.unwrap();
    assert_eq!(
        reloaded.needs_restart,
        vec!["server.listen", "pool.workers"]
    );
    assert_eq!(reloaded.fingerprint, None);
    daemon.stop().await;
}

/// A plain client for a daemon started without `TestServer`.
#[derive(Clone)]
struct Client {
    addr: std::net::SocketAddr,
}

impl Client {
    async fn login(&self) -> String {
        let reply = self
            .post_raw(
                "/api/token",
                None,
                json!({"username": "admin", "password": ADMIN_PASSWORD}),
            )
            .await;
        reply.json()["access_token"].as_str().unwrap().to_string()
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.post_raw(path, Some(token), body).await
    }

    async fn post_raw(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        send(
            self.addr,
            None,
            false,
            build(hyper::Method::POST, path, token, Some(body), &[]),
        )
        .await
    }
}
