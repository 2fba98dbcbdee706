//! Engine URLs of users: a user allowed to create agents cannot point an openai engine at the
//! box's own network (loopback, link-local, private), by address or by a name resolving there,
//! unless `[outbound] allow` names it; an admin's engine reaches it as before; and a failing
//! model server's body never reaches the caller. Fake servers bind 127.0.0.1 only; the
//! metadata address is only ever checked, never connected to.

use crate::engines::{fake_openai, openai_agent};
use crate::support::*;
use hyper::Method;
use outpost::outbound::AllowList;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn openai(base_url: &str) -> Value {
    json!({"kind": "openai", "base_url": base_url, "model": "tiny-model"})
}

async fn create(server: &TestServer, token: &str, name: &str, base_url: &str) -> Reply {
    let body = json!({"name": name, "engine": openai(base_url)});
    server.post("/api/agents", token, body).await
}

fn assert_refused(reply: &Reply) {
    reply.assert_error(422, "outbound_not_allowed");
    let message = reply.json()["message"].as_str().unwrap().to_string();
    assert!(message.starts_with("engine.base_url:"), "{message}");
}

#[tokio::test]
async fn a_users_engine_cannot_reach_loopback_link_local_or_private_addresses() {
    let (base_url, mut seen) = fake_openai().await;
    let port = base_url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let server = TestServer::with(|c| c.users_may_create_agents = true).await;
    let user = server.user("mallory").await;
    for url in [
        base_url.clone(),
        format!("http://localhost:{port}/v1"),
        format!("http://[::ffff:127.0.0.1]:{port}/v1"),
        // Numeric forms the resolver reads as 127.0.0.1.
        format!("http://2130706433:{port}/v1"),
        format!("http://127.1:{port}/v1"),
        "http://169.254.169.254/latest/meta-data".to_string(),
        "http://10.0.0.1:8080/v1".to_string(),
        "https://[fe80::1]/v1".to_string(),
    ] {
        assert_refused(&create(&server, &user, "probe", &url).await);
    }
    // Nor by changing an agent it may have.
    create(&server, &user, "mine", "https://api.example.com/v1")
        .await
        .json();
    let patch = json!({"engine": openai(&base_url)});
    let reply = server
        .call(Method::PATCH, "/api/agents/mine", Some(&user), Some(patch))
        .await;
    assert_refused(&reply);
    assert!(seen.try_recv().is_err(), "nothing reached the model server");
}

#[tokio::test]
async fn an_allowed_address_and_an_admins_engine_reach_the_local_server() {
    let (base_url, _seen) = fake_openai().await;
    let server = TestServer::with(|c| {
        c.users_may_create_agents = true;
        c.outbound_allow = AllowList::parse(&["127.0.0.1".to_string()]).unwrap();
    })
    .await;
    let user = server.user("alice").await;
    assert_eq!(create(&server, &user, "local", &base_url).await.status, 201);
    let reply = server
        .chat_json("local", &user, json!({"message": "hello there"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["response"], "hello there ");

    // Without the allow list, an admin's agent still reaches it.
    let (base_url, _seen) = fake_openai().await;
    let server = TestServer::with(|c| c.users_may_create_agents = true).await;
    let admin = server.admin().await;
    assert_eq!(
        create(&server, &admin, "local", &base_url).await.status,
        201
    );
    let reply = server
        .chat_json("local", &admin, json!({"message": "hi admin"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["response"], "hi admin ");
}

#[tokio::test]
async fn a_failing_model_servers_body_is_not_shown_to_the_caller() {
    const SECRET: &str = "root:x:0:0:secret-instance-credentials";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 65536];
            let _ = stream.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{SECRET}",
                SECRET.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
        }
    });
    let server = TestServer::with(|c| c.agents = vec![openai_agent("llm", base_url, "m")]).await;
    let token = server.admin().await;
    let lines = server
        .post("/api/agents/llm/chat", &token, json!({"message": "hello"}))
        .await
        .lines();
    let result = lines.last().unwrap();
    assert_eq!(result["is_error"], true, "{result}");
    let execution_id = lines[0]["execution_id"].as_str().unwrap();
    let execution = server
        .get(
            &format!("/api/agents/llm/executions/{execution_id}"),
            &token,
        )
        .await
        .json();
    for shown in [result.to_string(), execution.to_string()] {
        assert!(!shown.contains("secret-instance"), "{shown}");
        assert!(
            shown.contains("upstream answered 500 Internal Server Error"),
            "{shown}"
        );
    }
}

#[tokio::test]
async fn the_configured_default_engine_serves_a_users_agent_at_a_local_address() {
    let (base_url, _seen) = fake_openai().await;
    let server = TestServer::with(|c| {
        c.users_may_create_agents = true;
        c.default_engine = openai_agent("x", base_url, "tiny-model").engine;
    })
    .await;
    let user = server.user("carol").await;
    let reply = server
        .post("/api/agents", &user, json!({"name": "plain"}))
        .await;
    assert_eq!(reply.status, 201, "{:?}", reply.body);
    let reply = server
        .chat_json("plain", &user, json!({"message": "from the default"}))
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["response"], "from the default ");
}

#[tokio::test]
async fn a_stored_users_engine_is_checked_again_at_every_connection() {
    // Allowed when it was made; after a restart without the allow list, its turns are
    // refused before anything connects.
    let (base_url, mut seen) = fake_openai().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::in_dir(dir.clone(), |c| {
        c.users_may_create_agents = true;
        c.outbound_allow = AllowList::parse(&["127.0.0.0/8".to_string()]).unwrap();
    })
    .await;
    let user = server.user("dave").await;
    assert_eq!(create(&server, &user, "local", &base_url).await.status, 201);
    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |c| c.users_may_create_agents = true).await;
    let user = server.login("dave", "dave-password").await;
    let reply = server
        .chat_json("local", &user, json!({"message": "hello"}))
        .await;
    reply.assert_error(503, "engine_unavailable");
    let execution_id = reply.json()["execution_id"].as_str().unwrap().to_string();
    let execution = server
        .get(
            &format!("/api/agents/local/executions/{execution_id}"),
            &user,
        )
        .await
        .json();
    let error = execution["error"].as_str().unwrap_or_default();
    assert!(error.contains("private address"), "{execution}");
    assert!(seen.try_recv().is_err(), "nothing reached the model server");
}

/// Takes `engine_trusted` out of every stored agent, as a store written before the rule.
async fn forget_engine_trust(dir: &std::path::Path) {
    let store = outpost::store::Store::open(dir).unwrap();
    let records = store.read(|r| r.agents()).await.unwrap();
    store
        .write(move |tx| {
            for mut record in records {
                record.engine_trusted = None;
                tx.put_agent(&record)?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn after_an_upgrade_an_admins_stored_agent_still_reaches_the_local_server() {
    // Agents stored before the outbound rule carry no trust: an admin owner's engine is
    // trusted (only admins could set one then), a user's is not.
    let (base_url, _seen) = fake_openai().await;
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let server = TestServer::in_dir(dir.clone(), |c| {
        c.users_may_create_agents = true;
        c.outbound_allow = AllowList::parse(&["127.0.0.1".to_string()]).unwrap();
    })
    .await;
    let admin = server.admin().await;
    let user = server.user("dave").await;
    assert_eq!(create(&server, &admin, "ours", &base_url).await.status, 201);
    assert_eq!(create(&server, &user, "his", &base_url).await.status, 201);
    let dir = server.stop().await;
    forget_engine_trust(dir.path()).await;
    for _ in 0..2 {
        // The second start reads the decision the first one stored.
        let server = TestServer::in_dir(dir.clone(), |c| c.users_may_create_agents = true).await;
        let admin = server.admin().await;
        let reply = server
            .chat_json("ours", &admin, json!({"message": "still here"}))
            .await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        let user = server.login("dave", "dave-password").await;
        let reply = server
            .chat_json("his", &user, json!({"message": "hello"}))
            .await;
        reply.assert_error(503, "engine_unavailable");
        server.stop().await;
    }
}
