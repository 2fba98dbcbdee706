//! The HTTP edge: HTTPS with the auto certificate, HTTP/2 through ALPN, slow clients,
//! graceful stop, and the operations routes.

use crate::support::*;
use hyper::Method;
use outpost::config::Tls;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn https_with_the_auto_certificate_over_http1_and_http2() {
    let server = TestServer::with(|c| c.tls = Tls::Auto).await;
    let cert = server.data_dir().join("tls/cert.pem");
    assert!(cert.exists());
    let token = server.admin().await;
    let h1 = send(
        server.addr,
        Some(client_tls(&cert, false)),
        false,
        build(Method::GET, "/api/users/me", Some(&token), None, &[]),
    )
    .await;
    assert_eq!(h1.status, 200);
    assert_eq!(h1.json()["username"], "admin");
    let h2 = send(
        server.addr,
        Some(client_tls(&cert, true)),
        true,
        build(
            Method::POST,
            "/api/agents/echo/chat",
            Some(&token),
            Some(json!({"message": "over h2"})),
            &[],
        ),
    )
    .await;
    assert_eq!(h2.status, 200);
    assert_eq!(h2.lines().last().unwrap()["result"], "over h2");
    // Plain HTTP to the TLS port gets nothing useful.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("\"ok\""));
    // The certificate is kept for the next start.
    let before = std::fs::read(&cert).unwrap();
    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |c| c.tls = Tls::Auto).await;
    assert_eq!(
        std::fs::read(server.data_dir().join("tls/cert.pem")).unwrap(),
        before
    );
}

#[tokio::test]
async fn slow_header_clients_are_dropped_and_others_are_served() {
    let server = TestServer::with(|c| c.header_timeout = Duration::from_secs(1)).await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let healthy = server.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(healthy.json(), json!({"status": "ok"}));
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow client was not dropped");
    let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the silent client was not dropped");
}

#[tokio::test]
async fn graceful_stop_lets_a_running_turn_finish() {
    let server = TestServer::with(|c| c.agents = vec![echo_agent("slow", 100, 4)]).await;
    let token = server.admin().await;
    let (addr, t) = (server.addr, token.clone());
    let turn = tokio::spawn(async move {
        send(
            addr,
            None,
            false,
            build(
                Method::POST,
                "/api/agents/slow/chat",
                Some(&t),
                Some(json!({"message": "one two three four five"})),
                &[],
            ),
        )
        .await
    });
    eventually(Duration::from_secs(5), || async {
        let reply = server
            .get("/api/agents/slow/executions/running", &token)
            .await
            .json();
        (!reply["executions"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    let dir = server.stop().await;
    let reply = turn.await.unwrap();
    let lines = reply.lines();
    assert_eq!(lines.last().unwrap()["subtype"], "success");
    assert_eq!(lines.last().unwrap()["result"], "one two three four five");
    // After the stop, new connections are refused.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    drop(dir);
}

#[tokio::test]
async fn operations_routes() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    server
        .chat_json("echo", &token, json!({"message": "count me"}))
        .await;
    let ready = server.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.json()["status"], "ready");
    let metrics = server.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(metrics.status, 200);
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        text.contains(
            "outpost_http_requests_total{route=\"/api/agents/{name}/chat\",status=\"200\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("outpost_executions_total{kind=\"chat\",status=\"success\"} 1"),
        "{text}"
    );
    assert!(text.contains("outpost_http_request_duration_seconds_bucket"));
    assert!(text.contains("outpost_running_turns 0"));
    let openapi = server
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .json();
    assert_eq!(openapi["openapi"], "3.1.0");
    let docs = server.call(Method::GET, "/docs", None, None).await;
    assert_eq!(docs.status, 200);
    let page = String::from_utf8_lossy(&docs.body).to_string();
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "the docs page loads nothing from elsewhere"
    );
}

/// `GET /healthz` over a new connection from `from`: the status line, or None when the
/// connection was closed without an answer.
async fn health_from(server: &TestServer, from: &str) -> Option<String> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
    if stream.write_all(request).await.is_err() {
        return None;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    read.await.expect("an answer or a close in time").ok()?;
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().map(str::to_string)
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = TestServer::with(|c| {
        c.max_connections_per_client = 3;
        c.public.trusted_proxies = vec!["127.0.0.3".parse().unwrap()];
    })
    .await;
    // 127.0.0.1 holds its three connections, idle.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let over = eventually(Duration::from_secs(5), || async {
        health_from(&server, "127.0.0.1")
            .await
            .is_none()
            .then_some(())
    });
    over.await;
    // Another address is served as usual, and so is a trusted proxy past the cap.
    assert_eq!(
        health_from(&server, "127.0.0.2").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    let mut proxied = Vec::new();
    for _ in 0..5 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.3:0".parse().unwrap()).unwrap();
        proxied.push(socket.connect(server.addr).await.unwrap());
    }
    assert_eq!(
        health_from(&server, "127.0.0.3").await.as_deref(),
        Some("HTTP/1.1 200 OK")
    );
    // One of the held connections goes: 127.0.0.1 has a place again.
    held.pop();
    eventually(Duration::from_secs(5), || async {
        let status = health_from(&server, "127.0.0.1").await;
        (status.as_deref() == Some("HTTP/1.1 200 OK")).then_some(())
    })
    .await;
    let token = server.admin().await;
    let metrics = server.get("/metrics", &token).await;
    let text = String::from_utf8_lossy(&metrics.body).to_string();
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("outpost_connections_refused_total "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(refused.parse::<u64>().unwrap() >= 1, "{text}");
}
