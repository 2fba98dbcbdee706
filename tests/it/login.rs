//! Logins under a flood: oversized fields refused before anything is kept, attempts reserved
//! before they are hashed, the owner of an attacked account still let in from elsewhere, and a
//! full hashing queue answered at once.

use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Method;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

/// A login for `username` sent from the local address `from` (plain HTTP, as tests run).
async fn login_from(server: &TestServer, from: &str, username: &str, password: &str) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = json!({"username": username, "password": password}).to_string();
    let request = hyper::Request::builder()
        .method(Method::POST)
        .uri("/api/token")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    status
}

/// The value of one series in `/metrics` (0 when absent).
async fn metric(server: &TestServer, series: &str) -> u64 {
    let reply = server.call(Method::GET, "/metrics", None, None).await;
    let text = String::from_utf8_lossy(&reply.body).to_string();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

async fn login(server: &TestServer, body: Value) -> Reply {
    server
        .call(Method::POST, "/api/token", None, Some(body))
        .await
}

#[tokio::test]
async fn oversized_usernames_and_passwords_are_refused_before_anything_is_hashed() {
    let server = TestServer::start().await;
    let hashes = metric(&server, "outpost_password_hashes_total").await;
    // Under the server's body limit, far over a login's.
    let huge = "a".repeat(1_000_000);
    login(&server, json!({"username": huge, "password": "whatever1"}))
        .await
        .assert_error(413, "body_too_large");
    let long = "a".repeat(65);
    let reply = login(&server, json!({"username": long, "password": "whatever1"})).await;
    reply.assert_error(422, "invalid_field");
    let long_password = "p".repeat(1025);
    login(
        &server,
        json!({"username": "admin", "password": long_password}),
    )
    .await
    .assert_error(422, "invalid_field");
    assert_eq!(
        metric(&server, "outpost_password_hashes_total").await,
        hashes
    );
    assert_eq!(
        metric(&server, "outpost_logins_refused_total{reason=\"too_long\"}").await,
        3
    );
    // A well-formed unknown name still costs a hash (timing does not tell accounts apart).
    login(
        &server,
        json!({"username": "nobody", "password": "whatever1"}),
    )
    .await
    .assert_error(401, "unauthorized");
    let after = metric(&server, "outpost_password_hashes_total").await;
    // The decoy is made once per process, then checked.
    assert!(
        (hashes + 1..=hashes + 2).contains(&after),
        "{hashes} then {after}"
    );
}

#[tokio::test]
async fn concurrent_wrong_passwords_from_one_address_are_hashed_at_most_the_limit() {
    let server = TestServer::start().await;
    let hashes = metric(&server, "outpost_password_hashes_total").await;
    let mut logins = tokio::task::JoinSet::new();
    let server = std::sync::Arc::new(server);
    for i in 0..150 {
        let server = server.clone();
        logins.spawn(async move {
            let password = format!("wrong-password-{i}");
            login_from(&server, "127.0.0.1", "admin", &password).await
        });
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    while let Some(status) = logins.join_next().await {
        *statuses.entry(status.unwrap()).or_default() += 1;
    }
    let hashed = metric(&server, "outpost_password_hashes_total").await - hashes;
    assert!(hashed <= 10, "{hashed} hashed; answers {statuses:?}");
    assert!(
        statuses.get(&401).copied().unwrap_or(0) <= 10,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get(&429).copied().unwrap_or(0) + statuses.get(&401).copied().unwrap_or(0),
        150,
        "{statuses:?}"
    );
    assert!(
        metric(
            &server,
            "outpost_logins_refused_total{reason=\"throttled\"}"
        )
        .await
            >= 140
    );
}

#[tokio::test]
async fn the_owner_logs_in_from_another_address_while_attacked_from_one() {
    let server = TestServer::with(|c| c.login_attempts_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(
            login_from(&server, "127.0.0.1", "admin", "wrong-password").await,
            401
        );
    }
    assert_eq!(
        login_from(&server, "127.0.0.1", "admin", ADMIN_PASSWORD).await,
        429
    );
    assert_eq!(
        login_from(&server, "127.0.0.2", "admin", ADMIN_PASSWORD).await,
        200,
        "the owner elsewhere is let in"
    );
}

#[tokio::test]
async fn a_full_hashing_queue_is_answered_login_busy_at_once() {
    let server = TestServer::with(|c| {
        c.login_attempts_per_minute = 1000;
        c.password_hash_threads = 1;
        c.password_hash_queue = 1;
    })
    .await;
    let server = std::sync::Arc::new(server);
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let server = server.clone();
        logins.spawn(async move {
            let reply = login(
                &server,
                json!({"username": "admin", "password": "wrong-one"}),
            )
            .await;
            (
                reply.status,
                reply.header("retry-after").map(str::to_string),
            )
        });
    }
    let mut busy = 0;
    while let Some(answer) = logins.join_next().await {
        let (status, retry_after) = answer.unwrap();
        match status {
            401 => {}
            429 => {
                busy += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
            }
            other => panic!("answered {other}"),
        }
    }
    assert!(
        busy > 0,
        "with one thread and one place in the queue some are busy"
    );
    assert_eq!(
        metric(&server, "outpost_logins_refused_total{reason=\"busy\"}").await,
        busy
    );
    // The busy ones were not counted as failures: the owner is not locked out by them.
    let token = server.login("admin", ADMIN_PASSWORD).await;
    assert!(!token.is_empty());
}
