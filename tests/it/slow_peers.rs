//! Slow peers: a body trickled in is cut at `server.body_timeout_s` (408, connection closed),
//! a client that stops reading a large response is dropped after `server.write_timeout_s`
//! and its connection freed, and a stream that is only idle is not cut. Both are counted in
//! `/metrics`.

use crate::support::*;
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metric(server: &TestServer, name: &str) -> u64 {
    let reply = server.call(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&reply.body).to_string();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .trim()
        .parse()
        .unwrap()
}

async fn short_timeouts() -> TestServer {
    TestServer::with(|c| {
        c.body_timeout = Duration::from_secs(1);
        c.write_timeout = Duration::from_secs(1);
        c.agents = vec![echo_agent("slow", 1500, 4)];
    })
    .await
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_the_body_timeout() {
    let server = short_timeouts().await;
    let mut client = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /api/token HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{";
    client.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // One more byte now and then, as a trickling client would; the answer comes regardless.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            },
            _ = tokio::time::sleep(Duration::from_millis(300)) => {
                let _ = client.write_all(b" ").await;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still open");
    }
    let text = String::from_utf8_lossy(&answer).to_string();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
    let body: Value = serde_json::from_str(&text[text.find("\r\n\r\n").unwrap() + 4..]).unwrap();
    assert_eq!(body["error"], "body_timeout", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(metric(&server, "outpost_body_timeouts_total").await, 1);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let server = short_timeouts().await;
    // A small receive window, and pipelined requests for far more than the kernel buffers.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    let requests = "GET /openapi.json HTTP/1.1\r\nhost: x\r\n\r\n".repeat(64);
    stalled.write_all(requests.as_bytes()).await.unwrap();
    let dropped = eventually(Duration::from_secs(20), || async {
        (metric(&server, "outpost_write_timeouts_total").await >= 1).then_some(())
    })
    .await;
    let () = dropped;
    // The slot is free again: only the connection asking for the metrics is open.
    eventually(Duration::from_secs(5), || async {
        (metric(&server, "outpost_open_connections").await == 1).then_some(())
    })
    .await;
    drop(stalled);
}

#[tokio::test]
async fn an_idle_stream_outlives_the_write_timeout() {
    let server = short_timeouts().await;
    let token = server.admin().await;
    // Three words 1.5 s apart: the stream is silent for longer than write_timeout_s.
    let lines = server
        .post(
            "/api/agents/slow/chat",
            &token,
            json!({"message": "one two three"}),
        )
        .await
        .lines();
    assert_eq!(lines.last().unwrap()["subtype"], "success", "{lines:?}");
    assert_eq!(metric(&server, "outpost_write_timeouts_total").await, 0);
}
