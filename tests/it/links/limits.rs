//! Limits of public links: per client address (and whose `X-Forwarded-For` counts), per
//! link, and per visitor session.

use super::{link_row, make_link, open_link, visit};
use crate::support::*;
use hyper::Method;
use serde_json::json;

/// `GET /api/public/link/{token}` as sent through a proxy that says it forwards for `client`.
async fn open_forwarded(server: &TestServer, token: &str, client: &str) -> Reply {
    let path = format!("/api/public/link/{token}");
    let request = build(
        Method::GET,
        &path,
        None,
        None,
        &[("x-forwarded-for", client)],
    );
    server.send(request).await
}

fn assert_rate_limited(reply: &Reply) {
    reply.assert_error(429, "rate_limited");
    let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(reply.json()["retry_after"], wait);
}

#[tokio::test]
async fn each_client_address_gets_so_many_requests_a_minute() {
    let server = TestServer::with(|c| c.public.requests_per_minute_per_ip = 3).await;
    let admin = server.admin().await;
    let (_, token) = make_link(&server, &admin, "echo", json!({})).await;
    // Unknown tokens count too, so guessing costs as much as using.
    assert_eq!(open_link(&server, "echo.guess").await.status, 404);
    assert_eq!(open_link(&server, &token).await.status, 200);
    assert_eq!(visit(&server, &token, "hi", None).await.status, 200);
    assert_rate_limited(&open_link(&server, &token).await);
    assert_rate_limited(&visit(&server, &token, "hi", None).await);
    // The peer is no trusted proxy: its X-Forwarded-For changes nothing.
    assert_rate_limited(&open_forwarded(&server, &token, "127.0.0.7").await);
    // Owners' routes are not visitor routes.
    assert_eq!(
        server
            .get("/api/agents/echo/public-links", &admin)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_client_counts() {
    let server = TestServer::with(|c| {
        c.public.requests_per_minute_per_ip = 2;
        c.public.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let admin = server.admin().await;
    let (_, token) = make_link(&server, &admin, "echo", json!({})).await;
    for _ in 0..2 {
        assert_eq!(
            open_forwarded(&server, &token, "127.0.0.7").await.status,
            200
        );
    }
    assert_rate_limited(&open_forwarded(&server, &token, "127.0.0.7").await);
    // Another client behind the same proxy has its own allowance, and so does the proxy.
    assert_eq!(
        open_forwarded(&server, &token, "127.0.0.8").await.status,
        200
    );
    assert_eq!(
        open_forwarded(&server, &token, "127.0.0.9, 127.0.0.8")
            .await
            .status,
        200
    );
    assert_rate_limited(&open_forwarded(&server, &token, "127.0.0.8").await);
    assert_eq!(open_link(&server, &token).await.status, 200);
}

#[tokio::test]
async fn each_link_takes_so_many_messages_a_minute() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (_, busy) = make_link(&server, &admin, "echo", json!({"rate_limit_per_minute": 2})).await;
    let (_, quiet) = make_link(&server, &admin, "echo", json!({})).await;
    assert_eq!(visit(&server, &busy, "one", None).await.status, 200);
    assert_eq!(visit(&server, &busy, "two", None).await.status, 200);
    assert_rate_limited(&visit(&server, &busy, "three", None).await);
    // Reading is not sending, and other links have their own allowance.
    assert_eq!(open_link(&server, &busy).await.status, 200);
    assert_eq!(visit(&server, &quiet, "elsewhere", None).await.status, 200);
    server
        .post(
            "/api/agents/echo/public-links",
            &admin,
            json!({"rate_limit_per_minute": 0}),
        )
        .await
        .assert_error(422, "invalid_field");
}

#[tokio::test]
async fn a_visitor_session_takes_at_most_its_messages() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (id, token) = make_link(
        &server,
        &admin,
        "echo",
        json!({"max_messages_per_session": 2}),
    )
    .await;
    let first = visit(&server, &token, "one", None).await.json();
    let session = first["session_id"].as_str().unwrap();
    assert_eq!(
        visit(&server, &token, "two", Some(session)).await.status,
        200
    );
    let refused = visit(&server, &token, "three", Some(session)).await;
    refused.assert_error(429, "session_limit");
    assert!(refused.json()["message"]
        .as_str()
        .unwrap()
        .contains("limit of 2 messages"));
    // A new conversation starts afresh.
    assert_eq!(visit(&server, &token, "again", None).await.status, 200);
    let row = link_row(&server, &admin, "echo", &id).await;
    assert_eq!(row["usage"]["visitors"], 2);
    assert_eq!(
        row["usage"]["messages"], 3,
        "the refused message is not counted"
    );
    // The owner may lift the limit.
    let lifted = server
        .call(
            Method::PATCH,
            &format!("/api/agents/echo/public-links/{id}"),
            Some(&admin),
            Some(json!({"max_messages_per_session": null})),
        )
        .await;
    assert_eq!(lifted.json()["max_messages_per_session"], json!(null));
    assert_eq!(
        visit(&server, &token, "three", Some(session)).await.status,
        200
    );
}

#[tokio::test]
async fn a_refused_turn_is_not_counted() {
    let server = TestServer::with(|c| c.agents = vec![echo_agent("slow", 300, 1)]).await;
    let admin = server.admin().await;
    let (id, token) = make_link(&server, &admin, "slow", json!({})).await;
    let running = {
        let request = build(
            Method::POST,
            &format!("/api/public/chat/{token}"),
            None,
            Some(json!({"message": "take your time"})),
            &[],
        );
        let addr = server.addr;
        tokio::spawn(async move { send(addr, None, false, request).await })
    };
    eventually(std::time::Duration::from_secs(5), || async {
        let running = server
            .get("/api/agents/slow/executions/running", &admin)
            .await
            .json();
        (!running["executions"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let busy = visit(&server, &token, "me too", None).await;
    busy.assert_error(429, "agent_busy");
    assert_eq!(running.await.unwrap().status, 200);
    let row = link_row(&server, &admin, "slow", &id).await;
    assert_eq!(row["usage"]["visitors"], 1);
    assert_eq!(row["usage"]["messages"], 1);
    let sessions = server
        .get("/api/agents/slow/chat/sessions", &admin)
        .await
        .json();
    assert_eq!(sessions["sessions"].as_array().unwrap().len(), 1);
}
