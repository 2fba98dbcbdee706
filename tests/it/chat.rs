//! Streamed chat: the stream's shape, storage, busy sessions and agents, idempotency,
//! disconnects, and bad input.

use crate::support::*;
use hyper::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// Checks the stream-json shape: init first, exactly one result, last.
pub fn assert_stream_shape(lines: &[Value]) {
    assert!(lines.len() >= 2, "{lines:?}");
    assert_eq!(lines[0]["type"], "system");
    assert_eq!(lines[0]["subtype"], "init");
    let results = lines.iter().filter(|l| l["type"] == "result").count();
    assert_eq!(results, 1, "{lines:?}");
    assert_eq!(lines.last().unwrap()["type"], "result");
    assert_eq!(
        lines[0]["execution_id"],
        lines.last().unwrap()["execution_id"]
    );
    assert_eq!(lines[0]["session_id"], lines.last().unwrap()["session_id"]);
}

#[tokio::test]
async fn echo_streams_init_deltas_assistant_and_one_result_and_stores_both_messages() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let reply = server
        .post(
            "/api/agents/echo/chat",
            &token,
            json!({"message": "hello edge box"}),
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let lines = reply.lines();
    assert_stream_shape(&lines);
    let deltas: String = lines
        .iter()
        .filter(|l| l["type"] == "stream_event")
        .map(|l| l["event"]["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "hello edge box");
    let result = lines.last().unwrap();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "hello edge box");
    assert_eq!(result["usage"]["output_tokens"], 3);

    let session_id = result["session_id"].as_str().unwrap();
    let session = server
        .get(
            &format!("/api/agents/echo/chat/sessions/{session_id}"),
            &token,
        )
        .await;
    assert_eq!(session.status, 200);
    let messages = session.json()["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["content"], "hello edge box");
    assert_eq!(messages[0]["source"], "text");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["status"], "success");
    assert_eq!(messages[1]["usage"]["input_tokens"], 3);
    assert_eq!(messages[1]["execution_id"], result["execution_id"]);
    assert_eq!(session.json()["session"]["message_count"], 2);
    assert_eq!(session.json()["session"]["title"], "hello edge box");

    // The execution is in the log, with its events replayable.
    let execution_id = result["execution_id"].as_str().unwrap();
    let execution = server
        .get(
            &format!("/api/agents/echo/executions/{execution_id}"),
            &token,
        )
        .await;
    assert_eq!(execution.json()["kind"], "chat");
    assert_eq!(execution.json()["status"], "success");
    assert_eq!(execution.json()["events_count"], lines.len());
}

#[tokio::test]
async fn json_document_and_session_continuation() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let first = server
        .chat_json("echo", &token, json!({"message": "one"}))
        .await;
    assert_eq!(first.status, 200);
    let doc = first.json();
    assert_eq!(doc["response"], "one");
    assert_eq!(doc["status"], "success");
    assert_eq!(doc["metadata"]["output_tokens"], 1);
    assert_eq!(doc["metadata"]["model"], "echo");
    let session_id = doc["session_id"].as_str().unwrap().to_string();
    // Without session_id the active session continues.
    let second = server
        .chat_json("echo", &token, json!({"message": "two"}))
        .await
        .json();
    assert_eq!(second["session_id"], session_id);
    // new_session closes it and starts another.
    let third = server
        .chat_json(
            "echo",
            &token,
            json!({"message": "three", "new_session": true}),
        )
        .await
        .json();
    assert_ne!(third["session_id"], session_id);
    let list = server
        .get("/api/agents/echo/chat/sessions", &token)
        .await
        .json();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        sessions[0]["id"], third["session_id"],
        "newest activity first"
    );
    assert_eq!(sessions[1]["status"], "closed");
    // A closed session refuses turns by id; an unknown one is 404.
    server
        .chat_json(
            "echo",
            &token,
            json!({"message": "x", "session_id": session_id}),
        )
        .await
        .assert_error(409, "session_closed");
    server
        .chat_json(
            "echo",
            &token,
            json!({"message": "x", "session_id": "06h25mpxyqenq9kqxg68ddypxvdfg47j17z0"}),
        )
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_second_message_while_one_runs_is_session_busy() {
    let server = TestServer::with(|c| c.agents = vec![echo_agent("slow", 150, 4)]).await;
    let token = server.admin().await;
    let first = server
        .chat_json("slow", &token, json!({"message": "warm up"}))
        .await
        .json();
    let session_id = first["session_id"].as_str().unwrap().to_string();
    let long = {
        let (addr, token, sid) = (server.addr, token.clone(), session_id.clone());
        tokio::spawn(async move {
            let body = json!({"message": "a b c d e f", "session_id": sid});
            send(
                addr,
                None,
                false,
                build(
                    Method::POST,
                    "/api/agents/slow/chat",
                    Some(&token),
                    Some(body),
                    &[],
                ),
            )
            .await
        })
    };
    let running = eventually(Duration::from_secs(5), || async {
        let reply = server
            .get("/api/agents/slow/executions/running", &token)
            .await
            .json();
        reply["executions"]
            .as_array()
            .unwrap()
            .first()
            .map(|e| e["id"].as_str().unwrap().to_string())
    })
    .await;
    let busy = server
        .chat_json(
            "slow",
            &token,
            json!({"message": "me too", "session_id": session_id}),
        )
        .await;
    busy.assert_error(409, "session_busy");
    assert_eq!(busy.json()["execution_id"], running);
    let long = long.await.unwrap();
    assert_stream_shape(&long.lines());
    // Free again once the turn ended.
    let after = server
        .chat_json(
            "slow",
            &token,
            json!({"message": "now", "session_id": session_id}),
        )
        .await;
    assert_eq!(after.status, 200);
}

#[tokio::test]
async fn agent_busy_beyond_max_concurrent() {
    let server = TestServer::with(|c| c.agents = vec![echo_agent("solo", 200, 1)]).await;
    let admin = server.admin().await;
    let dana = server.user("dana").await;
    let (addr, token) = (server.addr, admin.clone());
    let long = tokio::spawn(async move {
        let body = json!({"message": "one two three four"});
        send(
            addr,
            None,
            false,
            build(
                Method::POST,
                "/api/agents/solo/chat",
                Some(&token),
                Some(body),
                &[],
            ),
        )
        .await
    });
    eventually(Duration::from_secs(5), || async {
        let reply = server
            .get("/api/agents/solo/executions/running", &admin)
            .await
            .json();
        (!reply["executions"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    // dana is not shared on this agent: 404 before busy.
    server
        .chat_json("solo", &dana, json!({"message": "hi"}))
        .await
        .assert_error(404, "not_found");
    let second = server
        .chat_json(
            "solo",
            &admin,
            json!({"message": "hi", "new_session": true}),
        )
        .await;
    second.assert_error(429, "agent_busy");
    assert!(second.header("retry-after").is_some());
    assert_stream_shape(&long.await.unwrap().lines());
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_lose_the_turn() {
    let server = TestServer::with(|c| c.agents = vec![echo_agent("slow", 100, 4)]).await;
    let token = server.admin().await;
    // Read only the first line, then drop the connection.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let request = build(
        Method::POST,
        "/api/agents/slow/chat",
        Some(&token),
        Some(json!({"message": "still here after you leave"})),
        &[],
    );
    let mut response = sender.send_request(request).await.unwrap();
    use http_body_util::BodyExt;
    let first = response
        .body_mut()
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap();
    let init: Value = serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let execution_id = init["execution_id"].as_str().unwrap().to_string();
    drop(response);
    drop(sender);
    conn.abort();

    let execution = eventually(Duration::from_secs(10), || async {
        let reply = server
            .get(
                &format!("/api/agents/slow/executions/{execution_id}"),
                &token,
            )
            .await
            .json();
        (reply["status"] == "success").then_some(reply)
    })
    .await;
    assert_eq!(execution["response"], "still here after you leave");
    let session_id = init["session_id"].as_str().unwrap();
    let session = server
        .get(
            &format!("/api/agents/slow/chat/sessions/{session_id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(
        session["messages"][1]["content"],
        "still here after you leave"
    );
}

#[tokio::test]
async fn idempotency_key_replays_a_finished_turn_and_refuses_one_in_flight() {
    let server =
        TestServer::with(|c| c.agents = vec![echo_agent("echo", 0, 4), echo_agent("slow", 200, 4)])
            .await;
    let token = server.admin().await;
    let request = |key: &str, agent: &str| {
        build(
            Method::POST,
            &format!("/api/agents/{agent}/chat"),
            Some(&token),
            Some(json!({"message": "once only"})),
            &[("idempotency-key", key), ("accept", "application/json")],
        )
    };
    let first = server.send(request("k-1", "echo")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-idempotent-replay"), None);
    let again = server.send(request("k-1", "echo")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.header("x-idempotent-replay"), Some("true"));
    assert_eq!(again.json()["execution_id"], first.json()["execution_id"]);
    let executions = server
        .get("/api/agents/echo/executions", &token)
        .await
        .json();
    assert_eq!(
        executions["executions"].as_array().unwrap().len(),
        1,
        "ran once"
    );

    let (addr, slow_request) = (server.addr, request("k-2", "slow"));
    let running = tokio::spawn(async move { send(addr, None, false, slow_request).await });
    eventually(Duration::from_secs(5), || async {
        let reply = server
            .get("/api/agents/slow/executions/running", &token)
            .await
            .json();
        (!reply["executions"].as_array().unwrap().is_empty()).then_some(())
    })
    .await;
    let in_flight = server.send(request("k-2", "slow")).await;
    in_flight.assert_error(409, "idempotent_in_flight");
    assert_eq!(
        running.await.unwrap().json()["execution_id"],
        in_flight.json()["execution_id"]
    );
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let server = TestServer::with(|c| c.max_body_bytes = 4096).await;
    let token = server.admin().await;
    let raw = |body: &'static str, content_type: &'static str| {
        hyper::Request::builder()
            .method(Method::POST)
            .uri("/api/agents/echo/chat")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", content_type)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap()
    };
    server
        .send(raw("{not json", "application/json"))
        .await
        .assert_error(400, "bad_request");
    server
        .send(raw("{}", "application/json"))
        .await
        .assert_error(400, "bad_request");
    server
        .send(raw("message=hi", "text/plain"))
        .await
        .assert_error(415, "unsupported_media_type");
    server
        .post("/api/agents/echo/chat", &token, json!({"message": "  "}))
        .await
        .assert_error(422, "invalid_field");
    let big = "x".repeat(5000);
    server
        .post("/api/agents/echo/chat", &token, json!({"message": big}))
        .await
        .assert_error(413, "body_too_large");
    server
        .post("/api/agents/nobody/chat", &token, json!({"message": "hi"}))
        .await
        .assert_error(404, "not_found");
    server
        .call(Method::GET, "/api/nothing/here", Some(&token), None)
        .await
        .assert_error(404, "not_found");
    server
        .call(Method::PUT, "/api/agents/echo/chat", Some(&token), None)
        .await
        .assert_error(405, "method_not_allowed");
    // Nothing of the refused requests was stored.
    let sessions = server
        .get("/api/agents/echo/chat/sessions", &token)
        .await
        .json();
    assert!(sessions["sessions"].as_array().unwrap().is_empty());
}
