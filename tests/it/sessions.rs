//! Sessions, history and executions: visibility, close, reset, pagination, SSE replay.

use crate::support::*;
use hyper::Method;
use outpost::config::AgentConfig;
use serde_json::json;

fn shared_echo() -> AgentConfig {
    let mut agent = echo_agent("echo", 0, 4);
    agent.shared_with = vec!["ann".into(), "bob".into()];
    agent
}

#[tokio::test]
async fn users_see_only_their_own_sessions_messages_and_executions() {
    let server = TestServer::with(|c| c.agents = vec![shared_echo()]).await;
    let admin = server.admin().await;
    let ann = server.user("ann").await;
    let bob = server.user("bob").await;
    let a = server
        .chat_json("echo", &ann, json!({"message": "ann's secret"}))
        .await
        .json();
    let b = server
        .chat_json("echo", &bob, json!({"message": "bob's note"}))
        .await
        .json();
    let ann_session = a["session_id"].as_str().unwrap();
    let ann_execution = a["execution_id"].as_str().unwrap();

    let bob_sessions = server
        .get("/api/agents/echo/chat/sessions", &bob)
        .await
        .json();
    let ids: Vec<&str> = bob_sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b["session_id"].as_str().unwrap()]);
    // The same list asked for by each of them (answers are cached per view): their own only.
    for _ in 0..2 {
        let ann_list = server
            .get("/api/agents/echo/chat/sessions", &ann)
            .await
            .json();
        assert_eq!(ann_list["sessions"][0]["id"], ann_session);
        assert_eq!(ann_list["sessions"].as_array().unwrap().len(), 1);
        let bob_list = server
            .get("/api/agents/echo/chat/sessions", &bob)
            .await
            .json();
        assert_eq!(bob_list["sessions"][0]["id"], b["session_id"]);
        assert_eq!(bob_list["sessions"].as_array().unwrap().len(), 1);
    }
    server
        .get(
            &format!("/api/agents/echo/chat/sessions/{ann_session}"),
            &bob,
        )
        .await
        .assert_error(404, "not_found");
    server
        .get(
            &format!("/api/agents/echo/executions/{ann_execution}"),
            &bob,
        )
        .await
        .assert_error(404, "not_found");
    server
        .get(
            &format!("/api/agents/echo/executions/{ann_execution}/stream"),
            &bob,
        )
        .await
        .assert_error(404, "not_found");
    server
        .call(
            Method::POST,
            &format!("/api/agents/echo/chat/sessions/{ann_session}/close"),
            Some(&bob),
            None,
        )
        .await
        .assert_error(404, "not_found");
    server
        .call(
            Method::POST,
            &format!("/api/agents/echo/executions/{ann_execution}/terminate"),
            Some(&bob),
            None,
        )
        .await
        .assert_error(404, "not_found");
    server
        .post(
            "/api/agents/echo/chat",
            &bob,
            json!({"message": "hijack", "session_id": ann_session}),
        )
        .await
        .assert_error(404, "not_found");
    let bob_executions = server.get("/api/agents/echo/executions", &bob).await.json();
    assert_eq!(bob_executions["executions"].as_array().unwrap().len(), 1);
    let bob_history = server
        .get("/api/agents/echo/chat/history/persistent", &bob)
        .await
        .json();
    assert!(bob_history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["content"] != "ann's secret"));
    server
        .get("/api/agents/echo/chat/history/persistent?user=ann", &bob)
        .await
        .assert_error(403, "forbidden");
    let bob_activity = server.get("/api/agents/echo/activity", &bob).await.json();
    assert_eq!(bob_activity["totals"]["executions"], 1);

    // The owner (admin) sees everyone's.
    let all = server
        .get("/api/agents/echo/chat/sessions", &admin)
        .await
        .json();
    assert_eq!(all["sessions"].as_array().unwrap().len(), 2);
    let ann_history = server
        .get("/api/agents/echo/chat/history/persistent?user=ann", &admin)
        .await
        .json();
    assert_eq!(ann_history["messages"][0]["content"], "ann's secret");
    assert_eq!(
        server.get("/api/agents/echo/activity", &admin).await.json()["totals"]["executions"],
        2
    );

    // A user with no share cannot see the agent at all.
    let eve = server.user("eve").await;
    server
        .get("/api/agents/echo", &eve)
        .await
        .assert_error(404, "not_found");
    server
        .get("/api/agents/echo/chat/sessions", &eve)
        .await
        .assert_error(404, "not_found");
    let visible = server.get("/api/agents", &eve).await.json();
    assert!(visible.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn close_and_reset_keep_history_and_start_fresh() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let first = server
        .chat_json("echo", &token, json!({"message": "first"}))
        .await
        .json();
    let session_id = first["session_id"].as_str().unwrap().to_string();
    let close_path = format!("/api/agents/echo/chat/sessions/{session_id}/close");
    let closed = server
        .call(Method::POST, &close_path, Some(&token), None)
        .await;
    assert_eq!(
        closed.json(),
        json!({"status": "closed", "session_id": session_id})
    );
    // Closing again is fine.
    assert_eq!(
        server
            .call(Method::POST, &close_path, Some(&token), None)
            .await
            .status,
        200
    );
    let second = server
        .chat_json("echo", &token, json!({"message": "second"}))
        .await
        .json();
    assert_ne!(second["session_id"], first["session_id"]);

    let reset = server
        .call(
            Method::DELETE,
            "/api/agents/echo/chat/history",
            Some(&token),
            None,
        )
        .await
        .json();
    assert_eq!(reset["status"], "reset");
    assert_eq!(reset["closed_session_id"], second["session_id"]);
    let third = server
        .chat_json("echo", &token, json!({"message": "third"}))
        .await
        .json();
    assert_ne!(third["session_id"], second["session_id"]);
    let active = server
        .get("/api/agents/echo/chat/sessions?status=active", &token)
        .await
        .json();
    assert_eq!(active["sessions"].as_array().unwrap().len(), 1);
    let closed = server
        .get("/api/agents/echo/chat/sessions?status=closed", &token)
        .await
        .json();
    assert_eq!(closed["sessions"].as_array().unwrap().len(), 2);
    // History is kept across all of it: 3 turns, 6 messages, newest first.
    let history = server
        .get("/api/agents/echo/chat/history/persistent", &token)
        .await
        .json();
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["third", "third", "second", "second", "first", "first"]
    );
    server
        .get("/api/agents/echo/chat/sessions?status=open", &token)
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn lists_paginate_with_cursors() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    for i in 0..5 {
        server
            .chat_json(
                "echo",
                &token,
                json!({"message": format!("m{i}"), "new_session": true}),
            )
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/agents/echo/chat/sessions?limit=2&cursor={c}"),
            None => "/api/agents/echo/chat/sessions?limit=2".to_string(),
        };
        let page = server.get(&path, &token).await.json();
        for s in page["sessions"].as_array().unwrap() {
            seen.push(s["title"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, ["m4", "m3", "m2", "m1", "m0"]);

    let mut history = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/agents/echo/chat/history/persistent?limit=3&cursor={c}"),
            None => "/api/agents/echo/chat/history/persistent?limit=3".to_string(),
        };
        let page = server.get(&path, &token).await.json();
        history.extend(
            page["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(history.len(), 10);
    history.dedup();
    assert_eq!(history.len(), 10, "no message twice");

    let page = server
        .get("/api/agents/echo/executions?limit=2", &token)
        .await
        .json();
    let next = page["next_cursor"].as_str().unwrap();
    let rest = server
        .get(
            &format!("/api/agents/echo/executions?limit=10&cursor={next}"),
            &token,
        )
        .await
        .json();
    assert_eq!(rest["executions"].as_array().unwrap().len(), 3);
    assert!(rest["next_cursor"].is_null());
    let chats = server
        .get(
            "/api/agents/echo/executions?kind=chat&status=success",
            &token,
        )
        .await
        .json();
    assert_eq!(chats["executions"].as_array().unwrap().len(), 5);
    let none = server
        .get("/api/agents/echo/executions?kind=task", &token)
        .await
        .json();
    assert!(none["executions"].as_array().unwrap().is_empty());
    server
        .get("/api/agents/echo/executions?kind=nap", &token)
        .await
        .assert_error(400, "bad_request");
    server
        .get("/api/agents/echo/executions?cursor=../../x", &token)
        .await
        .assert_error(400, "bad_request");
    server
        .get("/api/agents/echo/chat/sessions?limit=9999", &token)
        .await
        .assert_error(400, "bad_request");
}

#[tokio::test]
async fn execution_stream_replays_after_last_event_id_and_ends() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let reply = server
        .post("/api/agents/echo/chat", &token, json!({"message": "a b c"}))
        .await;
    let lines = reply.lines();
    let execution_id = lines[0]["execution_id"].as_str().unwrap();
    let path = format!("/api/agents/echo/executions/{execution_id}/stream");
    let full = server.get(&path, &token).await;
    assert_eq!(full.header("content-type"), Some("text/event-stream"));
    let text = String::from_utf8_lossy(&full.body).to_string();
    let ids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(ids, (0..lines.len() as u32).collect::<Vec<_>>());
    assert!(text.trim_end().ends_with(&format!(
        "data: {}",
        json!({"execution_id": execution_id, "status": "success"})
    )));
    let resumed = server
        .send(build(
            Method::GET,
            &path,
            Some(&token),
            None,
            &[("last-event-id", "2")],
        ))
        .await;
    let text = String::from_utf8_lossy(&resumed.body).to_string();
    let ids: Vec<u32> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(ids, (3..lines.len() as u32).collect::<Vec<_>>());
    let after = server.get(&format!("{path}?after=x"), &token).await;
    after.assert_error(400, "bad_request");
}
