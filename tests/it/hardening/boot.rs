//! Numbers through every route that stores them, then a restart; and a store holding records
//! the daemon cannot use, which it must set aside and still serve.

use super::{assert_out_of_range, raw, WORST};
use crate::restart::Process;
use crate::support::*;
use hyper::Method;
use serde_json::json;

/// (method, path, the body's other fields, the numeric field, values of WORST it takes)
type Case = (
    Method,
    String,
    &'static str,
    &'static str,
    &'static [&'static str],
);

fn cases(link_id: &str) -> Vec<Case> {
    let links = "/api/agents/echo/public-links".to_string();
    let link = format!("/api/agents/echo/public-links/{link_id}");
    vec![
        (
            Method::POST,
            "/api/agents".into(),
            r#""name":"fresh","#,
            "max_concurrent",
            &[],
        ),
        (
            Method::POST,
            "/api/agents".into(),
            r#""name":"fresh","#,
            "queue_capacity",
            &[],
        ),
        (
            Method::POST,
            "/api/agents".into(),
            r#""name":"fresh","#,
            "timeout",
            &["\"12\""],
        ),
        (
            Method::PATCH,
            "/api/agents/made".into(),
            "",
            "max_concurrent",
            &[],
        ),
        (
            Method::PATCH,
            "/api/agents/made".into(),
            "",
            "queue_capacity",
            &[],
        ),
        (
            Method::PATCH,
            "/api/agents/made".into(),
            "",
            "timeout",
            &["\"12\""],
        ),
        (
            Method::POST,
            "/api/agents/echo/task".into(),
            r#""message":"hi","#,
            "timeout_seconds",
            &[],
        ),
        (
            Method::POST,
            "/api/agents/echo/task".into(),
            r#""message":"hi","#,
            "wait_seconds",
            &["0"],
        ),
        (
            Method::POST,
            links.clone(),
            "",
            "rate_limit_per_minute",
            &[],
        ),
        (Method::POST, links, "", "max_messages_per_session", &[]),
        (
            Method::PATCH,
            link.clone(),
            "",
            "rate_limit_per_minute",
            &[],
        ),
        (Method::PATCH, link, "", "max_messages_per_session", &[]),
    ]
}

/// Regression: `max_concurrent: 2^61` panicked in `Semaphore::new`, and the PATCH value was
/// saved first, so every later start panicked too.
#[tokio::test]
async fn the_worst_numbers_are_refused_on_every_route_and_a_restart_serves() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("outpost.toml");
    std::fs::write(&config, "[agents.echo]\n").unwrap();
    let data = dir.path().join("data");
    let daemon = Process::start(&data, &config).await;
    let token = daemon.admin_token().await;
    let made = daemon
        .call(
            Method::POST,
            "/api/agents",
            Some(&token),
            Some(json!({"name": "made", "max_concurrent": 3, "queue_capacity": 7})),
        )
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let link = daemon
        .call(
            Method::POST,
            "/api/agents/echo/public-links",
            Some(&token),
            Some(json!({"name": "l"})),
        )
        .await
        .json();
    let link_id = link["id"].as_str().unwrap().to_string();
    let mut refused = 0;
    for (method, path, others, field, accepted) in cases(&link_id) {
        for value in WORST.iter().filter(|v| !accepted.contains(v)) {
            let text = format!("{{{others}\"{field}\":{value}}}");
            let request = raw(method.clone(), &path, &token, text.clone());
            let reply = send(daemon.addr, None, false, request).await;
            assert_out_of_range(&reply, field, &format!("{method} {path} {text}"));
            refused += 1;
        }
    }
    // A number too long for any float is refused by the JSON decoder itself.
    let huge = format!("{{\"max_concurrent\":{}}}", "9".repeat(400));
    let reply = send(
        daemon.addr,
        None,
        false,
        raw(Method::PATCH, "/api/agents/made", &token, huge),
    )
    .await;
    reply.assert_error(400, "bad_request");
    let delay = json!({"name": "slow", "engine": {"kind": "echo", "delay_ms": u64::MAX}});
    let reply = daemon
        .call(Method::POST, "/api/agents", Some(&token), Some(delay))
        .await;
    assert_out_of_range(&reply, "delay_ms", "echo delay_ms");
    assert!(refused > 90, "{refused} refusals");

    drop(daemon);
    let daemon = Process::start(&data, &config).await;
    let ready = daemon.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, 200);
    let token = daemon.admin_token().await;
    let made = daemon
        .call(Method::GET, "/api/agents/made", Some(&token), None)
        .await
        .json();
    assert_eq!(
        made["limits"]["max_concurrent"], 3,
        "nothing refused was stored"
    );
    assert_eq!(made["limits"]["queue_capacity"], 7);
    let agents = daemon
        .call(Method::GET, "/api/agents", Some(&token), None)
        .await
        .json();
    assert_eq!(agents.as_array().unwrap().len(), 2, "{agents}");
    let links = daemon
        .call(
            Method::GET,
            "/api/agents/echo/public-links",
            Some(&token),
            None,
        )
        .await
        .json();
    assert_eq!(links["links"][0]["rate_limit_per_minute"], 60);
    assert_eq!(links["links"][0]["max_messages_per_session"], json!(null));
}

/// A store with an API agent whose `max_concurrent` no constructor takes, and records that
/// cannot be decoded at all: the daemon logs them, sets them aside and serves.
#[tokio::test]
async fn start_up_sets_aside_stored_records_it_cannot_use() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let dir = server.stop().await;
    {
        let store = outpost::store::Store::open(dir.path()).unwrap();
        let record = outpost::records::AgentRecord {
            name: "huge".into(),
            display_name: "huge".into(),
            description: String::new(),
            owner: "admin".into(),
            shared_with: Vec::new(),
            engine: outpost::records::EngineSpec::Echo { delay_ms: 0 },
            max_concurrent: 1 << 61,
            queue_capacity: usize::MAX,
            timeout_seconds: u64::MAX,
            voice: false,
            source: "api".into(),
            stopped: false,
            created_at: outpost::clock::Timestamp::now(),
            engine_trusted: Some(true),
        };
        store.write(move |tx| tx.put_agent(&record)).await.unwrap();
        // A settlement owed for a turn whose record (garbled below) cannot be read.
        let owed = outpost::store::PendingSettlement {
            agent: "echo".into(),
            valid_before: u64::MAX,
            body: json!({}),
            resume_before: None,
            resume: None,
        };
        store
            .write(move |tx| tx.put_pending_settlement("01BADEXECUTION", &owed))
            .await
            .unwrap();
    }
    {
        let path = dir.path().join(outpost::data_dir::STORE_FILE);
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let bytes: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("agents");
            txn.open_table(bytes)
                .unwrap()
                .insert("garbled", b"\x01{not json".as_slice())
                .unwrap();
            let executions: redb::TableDefinition<&str, &[u8]> =
                redb::TableDefinition::new("executions");
            txn.open_table(executions)
                .unwrap()
                .insert("01BADEXECUTION", b"\x07??".as_slice())
                .unwrap();
            let unfinished: redb::TableDefinition<&str, ()> =
                redb::TableDefinition::new("unfinished_executions");
            txn.open_table(unfinished)
                .unwrap()
                .insert("01BADEXECUTION", ())
                .unwrap();
            let owed: redb::TableDefinition<&str, &[u8]> =
                redb::TableDefinition::new("pending_settlements");
            txn.open_table(owed)
                .unwrap()
                .insert("01BADSETTLEMENT", b"\x01[".as_slice())
                .unwrap();
            let queue: redb::TableDefinition<u64, &str> = redb::TableDefinition::new("task_queue");
            txn.open_table(queue)
                .unwrap()
                .insert(0, "01BADEXECUTION")
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let server = TestServer::in_dir(dir, |_| {}).await;
    assert_eq!(
        server.call(Method::GET, "/readyz", None, None).await.status,
        200
    );
    let agents = server.get("/api/agents", &token).await.json();
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo"], "the unusable agents are not served");
    let turn = server
        .chat_json("echo", &token, json!({"message": "still serving"}))
        .await;
    assert_eq!(turn.status, 200, "{:?}", turn.body);
    assert_eq!(turn.json()["response"], "still serving");
    // The set-aside records stay in the file for whoever repairs it; a second start is the same.
    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |_| {}).await;
    let task = server
        .post(
            "/api/agents/echo/task",
            &token,
            json!({"message": "and tasks run", "wait_seconds": 10}),
        )
        .await;
    assert_eq!(task.status, 200, "{:?}", task.body);
}
