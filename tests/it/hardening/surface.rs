//! The daemon's outer surface: private files whatever the umask, the docs page's policy,
//! idempotency keys reused with another body, and HEAD.

use crate::support::*;
use hyper::Method;
use outpost::config::Tls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The raw bytes of one HTTP/1.1 exchange on a new connection.
async fn exchange_raw(server: &TestServer, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Regression: monitors and `curl -I` got 405 from every route.
#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let paths = [
        "/healthz",
        "/readyz",
        "/docs",
        "/openapi.json",
        "/voice",
        "/p/sometoken",
        "/api/agents",
        "/api/agents/echo",
        "/api/users/me",
        "/api/agents/echo/executions",
        "/api/agents/echo/chat/sessions",
    ];
    for path in paths {
        let get = server.get(path, &token).await;
        assert_eq!(get.status, 200, "GET {path}");
        let text = exchange_raw(
            &server,
            &format!(
                "HEAD {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
            ),
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 200"), "HEAD {path}: {text}");
        let (head, rest) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(rest, "", "HEAD {path} sends no body");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains(&format!("content-length: {}\r\n", get.body.len())),
            "HEAD {path} gives GET's length: {head}"
        );
        let content_type = get.header("content-type").unwrap();
        assert!(
            head.contains(&format!("content-type: {content_type}")),
            "{head}"
        );
    }
    // Not found stays not found.
    let text = exchange_raw(
        &server,
        "HEAD /nothing HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
}

#[tokio::test]
async fn head_over_http2_has_no_body() {
    let server = TestServer::with(|c| c.tls = Tls::Auto).await;
    let cert = server.data_dir().join("tls/cert.pem");
    let token = server.admin().await;
    for path in ["/healthz", "/docs", "/api/agents"] {
        let reply = send(
            server.addr,
            Some(client_tls(&cert, true)),
            true,
            build(Method::HEAD, path, Some(&token), None, &[]),
        )
        .await;
        assert_eq!(reply.status, 200, "HEAD {path}");
        assert!(reply.body.is_empty(), "HEAD {path} over h2 sends no body");
        assert!(reply.header("content-length").is_some(), "HEAD {path}");
    }
}

#[tokio::test]
async fn a_405_lists_head_beside_get() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let reply = server
        .call(Method::PUT, "/api/agents", Some(&token), None)
        .await;
    reply.assert_error(405, "method_not_allowed");
    let allow: Vec<&str> = reply.header("allow").unwrap().split(", ").collect();
    assert!(allow.contains(&"GET") && allow.contains(&"HEAD") && allow.contains(&"POST"));
    let reply = server
        .call(Method::HEAD, "/api/agents/echo/chat", Some(&token), None)
        .await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("POST"), "no GET, so no HEAD");
}

/// The docs page, like the public and voice pages, may not be framed by another site.
#[tokio::test]
async fn the_docs_page_sends_its_policy() {
    let server = TestServer::start().await;
    let docs = server.call(Method::GET, "/docs", None, None).await;
    assert_eq!(docs.status, 200);
    let policy = docs.header("content-security-policy").unwrap();
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("default-src 'none'"), "{policy}");
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    assert_eq!(docs.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(docs.header("referrer-policy"), Some("no-referrer"));
}

/// A chat turn or task with an `Idempotency-Key`.
async fn with_key(
    server: &TestServer,
    token: &str,
    route: &str,
    key: &str,
    message: &str,
) -> Reply {
    let request = build(
        Method::POST,
        &format!("/api/agents/echo/{route}"),
        Some(token),
        Some(serde_json::json!({"message": message})),
        &[("idempotency-key", key), ("accept", "application/json")],
    );
    server.send(request).await
}

/// Regression: a key sent again with another body got the first request's answer.
#[tokio::test]
async fn an_idempotency_key_reused_with_another_body_is_refused() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let first = with_key(&server, &token, "chat", "k-1", "first").await;
    assert_eq!(first.status, 200);
    let again = with_key(&server, &token, "chat", "k-1", "first").await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-idempotent-replay"), Some("true"));
    with_key(&server, &token, "chat", "k-1", "second")
        .await
        .assert_error(422, "idempotency_key_reused");
    with_key(&server, &token, "task", "k-1", "first")
        .await
        .assert_error(422, "idempotency_key_reused");

    let task = with_key(&server, &token, "task", "k-2", "a task").await;
    assert_eq!(task.status, 200, "{:?}", task.body);
    let again = with_key(&server, &token, "task", "k-2", "a task").await;
    assert_eq!(again.header("x-idempotent-replay"), Some("true"));
    with_key(&server, &token, "task", "k-2", "another task")
        .await
        .assert_error(422, "idempotency_key_reused");
    // Nothing of the refused requests ran.
    let executions = server
        .get("/api/agents/echo/executions", &token)
        .await
        .json();
    assert_eq!(executions["executions"].as_array().unwrap().len(), 2);
}
