//! Tasks: the bounded pool, FIFO and fairness, the durable queue, idempotency, terminate,
//! and following a run over SSE across a reconnect.

use crate::support::*;
use hyper::Method;
use outpost::config::AgentConfig;
use serde_json::{json, Value};
use std::time::Duration;

async fn submit(server: &TestServer, agent: &str, token: &str, body: Value) -> Reply {
    server
        .post(&format!("/api/agents/{agent}/task"), token, body)
        .await
}

async fn execution(server: &TestServer, agent: &str, token: &str, id: &str) -> Value {
    server
        .get(&format!("/api/agents/{agent}/executions/{id}"), token)
        .await
        .json()
}

async fn wait_final(
    server: &TestServer,
    agent: &str,
    token: &str,
    id: &str,
    limit: Duration,
) -> Value {
    eventually(limit, || async {
        let e = execution(server, agent, token, id).await;
        let done = matches!(
            e["status"].as_str(),
            Some("success" | "failed" | "cancelled")
        );
        done.then_some(e)
    })
    .await
}

/// The session of a first chat turn with `agent`.
async fn chat_session(server: &TestServer, agent: &str, token: &str) -> String {
    let chat = server
        .chat_json(agent, token, json!({"message": "chat first"}))
        .await
        .json();
    chat["session_id"].as_str().unwrap().to_string()
}

fn queued_agent(
    name: &str,
    delay_ms: u64,
    max_concurrent: usize,
    queue_capacity: usize,
) -> AgentConfig {
    AgentConfig {
        queue_capacity,
        ..echo_agent(name, delay_ms, max_concurrent)
    }
}

#[tokio::test]
async fn never_more_than_max_concurrent_and_fifo_per_agent() {
    let fixture_dir = tempfile::tempdir().unwrap();
    let server = TestServer::with(|c| {
        c.agents = vec![AgentConfig {
            queue_capacity: 50,
            ..fixture_agent("worker", "overlap.sh", Some(fixture_dir.path()), 2)
        }];
        c.workers = 8;
    })
    .await;
    let token = server.admin().await;
    let mut ids = Vec::new();
    for i in 0..8 {
        let reply = submit(
            &server,
            "worker",
            &token,
            json!({"message": format!("job {i}"), "async_mode": true}),
        )
        .await;
        assert_eq!(reply.status, 202);
        assert_eq!(reply.json()["status"], "queued");
        ids.push(reply.json()["execution_id"].as_str().unwrap().to_string());
    }
    let mut started = Vec::new();
    for id in &ids {
        let e = wait_final(&server, "worker", &token, id, Duration::from_secs(30)).await;
        assert_eq!(e["status"], "success", "{e}");
        assert_eq!(e["kind"], "task");
        started.push(e["started_at"].as_str().unwrap().to_string());
    }
    let seen = std::fs::read_to_string(fixture_dir.path().join("seen")).unwrap();
    let most = seen
        .lines()
        .map(|l| l.trim().parse::<u32>().unwrap())
        .max()
        .unwrap();
    assert!(most <= 2, "{most} runs overlapped with max_concurrent = 2");
    assert_eq!(most, 2, "the pool did use both slots");
    let mut in_order = started.clone();
    in_order.sort();
    assert_eq!(started, in_order, "tasks started in submission order");
}

#[tokio::test]
async fn one_agents_flood_does_not_starve_another() {
    let server = TestServer::with(|c| {
        c.agents = vec![
            queued_agent("flood", 100, 2, 300),
            queued_agent("calm", 100, 2, 10),
        ];
        c.workers = 2;
    })
    .await;
    let token = server.admin().await;
    for i in 0..200 {
        let reply = submit(
            &server,
            "flood",
            &token,
            json!({"message": format!("f{i}"), "async_mode": true}),
        )
        .await;
        assert_eq!(reply.status, 202);
    }
    let calm = submit(
        &server,
        "calm",
        &token,
        json!({"message": "me", "async_mode": true}),
    )
    .await;
    let calm_id = calm.json()["execution_id"].as_str().unwrap().to_string();
    let calm = wait_final(&server, "calm", &token, &calm_id, Duration::from_secs(10)).await;
    let (submitted, started) = (
        calm["created_at"].as_str().unwrap(),
        calm["started_at"].as_str().unwrap(),
    );
    // Flood tasks that started after calm was submitted and before it started: one per worker
    // (those freed while calm's submission was being committed), two on a loaded machine where
    // the commit can outlast a flood run; a starved calm would see nearly all 200 go first.
    let flood = server
        .get("/api/agents/flood/executions?limit=500", &token)
        .await
        .json();
    let jumped = flood["executions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["started_at"].as_str())
        .filter(|s| *s > submitted && *s < started)
        .count();
    assert!(
        jumped <= 4,
        "{jumped} flood tasks started ahead of the calm agent's one"
    );
    let still_queued = server
        .get(
            "/api/agents/flood/executions?status=queued&limit=500",
            &token,
        )
        .await
        .json();
    assert!(
        still_queued["executions"].as_array().unwrap().len() > 150,
        "calm did not wait for the flood"
    );
}

#[tokio::test]
async fn a_full_queue_refuses_and_stores_nothing_and_releases_the_key() {
    let server = TestServer::with(|c| c.agents = vec![queued_agent("slow", 150, 2, 5)]).await;
    let token = server.admin().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let reply = submit(
            &server,
            "slow",
            &token,
            json!({"message": format!("t{i} a b"), "async_mode": true}),
        )
        .await;
        assert_eq!(reply.status, 202, "{i}");
        ids.push(reply.json()["execution_id"].as_str().unwrap().to_string());
        if i < 2 {
            // Let the first two take the slots, so five wait.
            eventually(Duration::from_secs(5), || async {
                let running = server
                    .get("/api/agents/slow/executions/running", &token)
                    .await
                    .json();
                (running["executions"].as_array().unwrap().len() == i + 1).then_some(())
            })
            .await;
        }
    }
    let keyed = |key: &'static str| {
        build(
            Method::POST,
            "/api/agents/slow/task",
            Some(&token),
            Some(json!({"message": "eighth", "async_mode": true})),
            &[("idempotency-key", key)],
        )
    };
    let refused = server.send(keyed("eighth")).await;
    refused.assert_error(429, "queue_full");
    assert!(refused.header("retry-after").is_some());
    let all = server
        .get("/api/agents/slow/executions?limit=100", &token)
        .await
        .json();
    assert_eq!(
        all["executions"].as_array().unwrap().len(),
        7,
        "nothing stored for the refused task"
    );
    for id in &ids {
        wait_final(&server, "slow", &token, id, Duration::from_secs(30)).await;
    }
    // The refused request did not keep its key.
    let accepted = server.send(keyed("eighth")).await;
    assert_eq!(accepted.status, 202);
}

#[tokio::test]
async fn sync_tasks_wait_or_hand_back_an_id_to_poll() {
    let server = TestServer::with(|c| {
        c.agents = vec![
            queued_agent("echo", 0, 2, 10),
            queued_agent("slow", 400, 2, 10),
        ]
    })
    .await;
    let token = server.admin().await;
    let done = submit(&server, "echo", &token, json!({"message": "quick job"})).await;
    assert_eq!(done.status, 200);
    assert_eq!(done.json()["status"], "success");
    assert_eq!(done.json()["response"], "quick job");
    assert!(done.json()["session_id"].is_null(), "stateless");
    let late = submit(
        &server,
        "slow",
        &token,
        json!({"message": "a b c d e", "wait_seconds": 1}),
    )
    .await;
    assert_eq!(late.status, 202);
    assert_eq!(late.json()["status"], "queued_timeout");
    let id = late.json()["execution_id"].as_str().unwrap().to_string();
    let finished = wait_final(&server, "slow", &token, &id, Duration::from_secs(10)).await;
    assert_eq!(finished["status"], "success");
    assert_eq!(finished["response"], "a b c d e");
    submit(
        &server,
        "echo",
        &token,
        json!({"message": "x", "wait_seconds": 601}),
    )
    .await
    .assert_error(422, "invalid_field");
    submit(
        &server,
        "echo",
        &token,
        json!({"message": "x", "timeout_seconds": 0}),
    )
    .await
    .assert_error(422, "invalid_field");
    submit(
        &server,
        "echo",
        &token,
        json!({"message": "x", "session_id": "06h25mpxyqenq9kqxg68ddypxvdfg47j17z0"}),
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_task_can_resume_a_chat_session() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let session = chat_session(&server, "echo", &token).await;
    let session_id = session.as_str();
    let task = submit(
        &server,
        "echo",
        &token,
        json!({"message": "then a task", "session_id": session_id}),
    )
    .await;
    assert_eq!(task.status, 200);
    assert_eq!(task.json()["session_id"], session_id);
    let session = server
        .get(
            &format!("/api/agents/echo/chat/sessions/{session_id}"),
            &token,
        )
        .await
        .json();
    let sources: Vec<&str> = session["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, ["text", "text", "task", "task"]);
}

#[tokio::test]
async fn a_task_sent_to_a_closed_session_is_refused_as_a_chat_turn_is() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let session = chat_session(&server, "echo", &token).await;
    let session_id = session.as_str();
    let closed = server
        .call(
            Method::POST,
            &format!("/api/agents/echo/chat/sessions/{session_id}/close"),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(closed.status, 200);
    let body = json!({"message": "then a task", "session_id": session_id});
    submit(&server, "echo", &token, body.clone())
        .await
        .assert_error(409, "session_closed");
    server
        .chat_json("echo", &token, body)
        .await
        .assert_error(409, "session_closed");
    // Nothing was queued or stored for either.
    let executions = server
        .get("/api/agents/echo/executions", &token)
        .await
        .json();
    assert_eq!(executions["executions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn idempotent_tasks_replay_and_refuse_while_in_flight() {
    let server = TestServer::with(|c| c.agents = vec![queued_agent("slow", 200, 2, 10)]).await;
    let token = server.admin().await;
    let request = || {
        build(
            Method::POST,
            "/api/agents/slow/task",
            Some(&token),
            Some(json!({"message": "only once please", "async_mode": true})),
            &[("idempotency-key", "job-7")],
        )
    };
    let first = server.send(request()).await;
    assert_eq!(first.status, 202);
    let id = first.json()["execution_id"].as_str().unwrap().to_string();
    let again = server.send(request()).await;
    again.assert_error(409, "idempotent_in_flight");
    assert_eq!(again.json()["execution_id"], id);
    wait_final(&server, "slow", &token, &id, Duration::from_secs(10)).await;
    let replay = server.send(request()).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.header("x-idempotent-replay"), Some("true"));
    assert_eq!(replay.json()["execution_id"], id);
    assert_eq!(replay.json()["response"], "only once please");
    let all = server
        .get("/api/agents/slow/executions", &token)
        .await
        .json();
    assert_eq!(all["executions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn terminate_in_each_state() {
    let fixture_dir = tempfile::tempdir().unwrap();
    let server = TestServer::with(|c| {
        c.agents = vec![AgentConfig {
            queue_capacity: 10,
            ..fixture_agent("stuck", "hang.sh", Some(fixture_dir.path()), 1)
        }];
    })
    .await;
    let token = server.admin().await;
    let running = submit(
        &server,
        "stuck",
        &token,
        json!({"message": "forever", "async_mode": true}),
    )
    .await
    .json();
    let queued = submit(
        &server,
        "stuck",
        &token,
        json!({"message": "waiting", "async_mode": true}),
    )
    .await
    .json();
    let (running, queued) = (
        running["execution_id"].as_str().unwrap(),
        queued["execution_id"].as_str().unwrap(),
    );
    let leader = eventually(Duration::from_secs(10), || async {
        std::fs::read_to_string(fixture_dir.path().join("grandchild")).ok()?;
        std::fs::read_to_string(fixture_dir.path().join("leader")).ok()
    })
    .await;
    let grandchild = std::fs::read_to_string(fixture_dir.path().join("grandchild")).unwrap();
    let terminate = |id: &str| {
        let path = format!("/api/agents/stuck/executions/{id}/terminate");
        let (server, token) = (&server, token.clone());
        async move { server.call(Method::POST, &path, Some(&token), None).await }
    };

    let reply = terminate(queued).await;
    assert_eq!(
        reply.json(),
        json!({"status": "cancelled_while_queued", "execution_id": queued})
    );
    assert_eq!(
        execution(&server, "stuck", &token, queued).await["status"],
        "cancelled"
    );
    let reply = terminate(running).await;
    assert_eq!(
        reply.json(),
        json!({"status": "terminated", "execution_id": running})
    );
    let e = execution(&server, "stuck", &token, running).await;
    assert_eq!(e["status"], "cancelled");
    for pid in [leader.trim(), grandchild.trim()] {
        let stat = format!("/proc/{pid}/stat");
        eventually(Duration::from_secs(5), || async {
            let text = std::fs::read_to_string(&stat).unwrap_or_default();
            (text.is_empty() || text.contains(") Z ")).then_some(())
        })
        .await;
    }
    let reply = terminate(running).await;
    assert_eq!(
        reply.json(),
        json!({"status": "already_finished", "execution_id": running})
    );
    // Both streams end with one result.
    for id in [queued, running] {
        let events = server
            .get(&format!("/api/agents/stuck/executions/{id}/stream"), &token)
            .await;
        let text = String::from_utf8_lossy(&events.body).to_string();
        assert_eq!(text.matches("\"type\":\"result\"").count(), 1, "{text}");
        assert!(text.contains("\"subtype\":\"cancelled\""));
        assert!(text.contains("event: end"));
    }
}

#[tokio::test]
async fn sse_reconnect_with_last_event_id_gets_the_rest_once_in_order() {
    let server = TestServer::with(|c| c.agents = vec![queued_agent("slow", 80, 2, 10)]).await;
    let token = server.admin().await;
    let words: Vec<String> = (0..12).map(|i| format!("w{i}")).collect();
    let reply = submit(
        &server,
        "slow",
        &token,
        json!({"message": words.join(" "), "async_mode": true}),
    )
    .await;
    let id = reply.json()["execution_id"].as_str().unwrap().to_string();
    let path = format!("/api/agents/slow/executions/{id}/stream");

    // Read live events up to id 3, then go away.
    let stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let mut response = sender
        .send_request(build(Method::GET, &path, Some(&token), None, &[]))
        .await
        .unwrap();
    let mut seen = String::new();
    use http_body_util::BodyExt;
    while !seen.contains("id: 3\n") {
        let frame = response.body_mut().frame().await.unwrap().unwrap();
        seen.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    let first_ids = ids(&seen);
    let last = *first_ids.last().unwrap();
    assert_eq!(first_ids, (0..=last).collect::<Vec<_>>());
    drop(response);
    conn.abort();

    let resumed = server
        .send(build(
            Method::GET,
            &path,
            Some(&token),
            None,
            &[("last-event-id", &last.to_string())],
        ))
        .await;
    let rest = ids(&String::from_utf8_lossy(&resumed.body));
    let e = execution(&server, "slow", &token, &id).await;
    let total = e["events_count"].as_u64().unwrap() as u32;
    assert_eq!(
        rest,
        (last + 1..total).collect::<Vec<_>>(),
        "the rest, once, in order"
    );
    // And again after the run, from the same point.
    let after = server
        .send(build(
            Method::GET,
            &path,
            Some(&token),
            None,
            &[("last-event-id", &last.to_string())],
        ))
        .await;
    assert_eq!(ids(&String::from_utf8_lossy(&after.body)), rest);
}

fn ids(text: &str) -> Vec<u32> {
    text.lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn metrics_show_queue_depth_workers_and_wait_and_run_times() {
    let server = TestServer::with(|c| c.agents = vec![queued_agent("slow", 300, 1, 10)]).await;
    let token = server.admin().await;
    for i in 0..3 {
        submit(
            &server,
            "slow",
            &token,
            json!({"message": format!("m{i}"), "async_mode": true}),
        )
        .await;
    }
    let text = eventually(Duration::from_secs(5), || async {
        let reply = server.call(Method::GET, "/metrics", None, None).await;
        let text = String::from_utf8_lossy(&reply.body).to_string();
        text.contains("outpost_task_queue_depth{agent=\"slow\"} 2")
            .then_some(text)
    })
    .await;
    assert!(text.contains("outpost_task_workers_busy 1"), "{text}");
    assert!(
        text.contains("outpost_task_queue_wait_seconds_count 1"),
        "{text}"
    );
    let text = eventually(Duration::from_secs(10), || async {
        let reply = server.call(Method::GET, "/metrics", None, None).await;
        let text = String::from_utf8_lossy(&reply.body).to_string();
        text.contains("outpost_task_run_seconds_count 3")
            .then_some(text)
    })
    .await;
    assert!(
        text.contains("outpost_task_queue_depth{agent=\"slow\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("outpost_executions_total{kind=\"task\",status=\"success\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn tasks_queued_into_sessions_while_the_scheduler_runs_never_wedge_the_store() {
    // Admissions take the busy map and then the pool's queue; the scheduler takes the queue
    // and then asks the busy map. Both at once, many times: every task must still finish.
    let server = TestServer::with(|c| {
        c.workers = 8;
        c.agents = (0..8)
            .map(|n| queued_agent(&format!("quick{n}"), 0, 2, 10_000))
            .collect();
    })
    .await;
    let token = server.admin().await;
    let mut sessions = Vec::new();
    for n in 0..8 {
        let agent = format!("quick{n}");
        let session_id = chat_session(&server, &agent, &token).await;
        sessions.push((agent, session_id));
    }
    let server = std::sync::Arc::new(server);
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..16 {
        let (server, token, sessions) = (server.clone(), token.clone(), sessions.clone());
        clients.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..25 {
                let (agent, session) = &sessions[(client + i) % sessions.len()];
                let body = json!({"message": "go", "session_id": session, "async_mode": true});
                let reply = submit(&server, agent, &token, body).await;
                assert_eq!(reply.status, 202, "{:?}", reply.json());
                let id = reply.json()["execution_id"].as_str().unwrap().to_string();
                ids.push((agent.clone(), id));
            }
            ids
        });
    }
    let ids = tokio::time::timeout(Duration::from_secs(60), clients.join_all())
        .await
        .expect("the submissions were answered");
    for (agent, id) in ids.into_iter().flatten() {
        let finished = wait_final(&server, &agent, &token, &id, Duration::from_secs(60)).await;
        assert_eq!(finished["status"], "success");
    }
}
