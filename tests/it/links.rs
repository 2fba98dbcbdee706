//! Public links: the owner's side (create, list, change, delete), the visitor's side (link,
//! chat, history), what the store keeps, and what visitors are shown.

pub mod browser;
mod limits;

use crate::support::*;
use hyper::Method;
use outpost::clock::Timestamp;
use outpost::config::EngineSpec;
use serde_json::{json, Value};
use std::time::Duration;

const DAY: Duration = Duration::from_secs(86_400);

/// Makes a link to `agent` as `owner`; returns (link id, token).
async fn make_link(server: &TestServer, owner: &str, agent: &str, body: Value) -> (String, String) {
    let reply = server
        .post(&format!("/api/agents/{agent}/public-links"), owner, body)
        .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let link = reply.json();
    let token = link["token"].as_str().unwrap().to_string();
    assert!(link["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/p/{token}")));
    (link["id"].as_str().unwrap().to_string(), token)
}

/// `GET /api/public/link/{token}`, no account.
async fn open_link(server: &TestServer, token: &str) -> Reply {
    server
        .call(
            Method::GET,
            &format!("/api/public/link/{token}"),
            None,
            None,
        )
        .await
}

/// A visitor's message, answered as one JSON document.
async fn visit(server: &TestServer, token: &str, message: &str, session: Option<&str>) -> Reply {
    let mut body = json!({"message": message});
    if let Some(session) = session {
        body["session_id"] = json!(session);
    }
    server
        .call(
            Method::POST,
            &format!("/api/public/chat/{token}"),
            None,
            Some(body),
        )
        .await
}

/// A visitor session's history.
async fn history(server: &TestServer, token: &str, session: &str) -> Reply {
    let path = format!("/api/public/history/{token}?session_id={session}");
    server.call(Method::GET, &path, None, None).await
}

/// The owner's view of one link.
async fn link_row(server: &TestServer, owner: &str, agent: &str, id: &str) -> Value {
    let list = server
        .get(&format!("/api/agents/{agent}/public-links"), owner)
        .await;
    assert_eq!(list.status, 200, "{:?}", list.body);
    let list = list.json();
    let row = list["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["id"] == id);
    row.cloned().unwrap_or(Value::Null)
}

async fn patch_link(server: &TestServer, owner: &str, id: &str, body: Value) -> Reply {
    let path = format!("/api/agents/echo/public-links/{id}");
    server
        .call(Method::PATCH, &path, Some(owner), Some(body))
        .await
}

/// Every way a token stops working gives these exact bytes.
const GONE: &str = r#"{"error":"not_found","message":"link not found"}"#;

/// Asserts the token opens nothing, on every visitor route, with the one body.
async fn assert_gone(server: &TestServer, token: &str, session: &str) {
    for reply in [
        open_link(server, token).await,
        visit(server, token, "anyone?", None).await,
        visit(server, token, "anyone?", Some(session)).await,
        history(server, token, session).await,
    ] {
        assert_eq!(reply.status, 404);
        assert_eq!(String::from_utf8_lossy(&reply.body), GONE);
    }
}

#[tokio::test]
async fn a_links_whole_life() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (id, token) = make_link(&server, &admin, "echo", json!({"name": "website"})).await;
    assert!(token.starts_with("echo."), "{token}");

    let row = link_row(&server, &admin, "echo", &id).await;
    assert_eq!(row["name"], "website");
    assert_eq!(row["status"], "active");
    assert_eq!(
        row["usage"],
        json!({"visitors": 0, "messages": 0, "last_used_at": null})
    );
    assert!(
        row.get("token").is_none() && row.get("url").is_none(),
        "{row}"
    );
    let created = Timestamp::parse_rfc3339(row["created_at"].as_str().unwrap()).unwrap();
    let expires = Timestamp::parse_rfc3339(row["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires.0 - created.0, 30 * 86_400_000, "30 days by default");

    // A visitor: the agent's name, a minted session, two turns, the history.
    let info = open_link(&server, &token).await;
    assert_eq!(info.status, 200);
    assert_eq!(
        info.json(),
        json!({"valid": true, "agent_display_name": "Echo", "description": "Repeats what you say, word by word."})
    );
    let first = visit(&server, &token, "hello there", None).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let first = first.json();
    assert_eq!(first["response"], "hello there");
    assert_eq!(first["status"], "success");
    assert!(
        first.get("metadata").is_none(),
        "visitors see no costs: {first}"
    );
    let session = first["session_id"].as_str().unwrap().to_string();
    let second = visit(&server, &token, "and again", Some(&session))
        .await
        .json();
    assert_eq!(second["session_id"], session.as_str());
    let past = history(&server, &token, &session).await;
    assert_eq!(past.status, 200);
    let past = past.json();
    let said: Vec<(&str, &str)> = past["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    assert_eq!(
        said,
        [
            ("user", "hello there"),
            ("assistant", "hello there"),
            ("user", "and again"),
            ("assistant", "and again")
        ]
    );
    let row = link_row(&server, &admin, "echo", &id).await;
    assert_eq!(row["usage"]["visitors"], 1);
    assert_eq!(row["usage"]["messages"], 2);
    assert!(row["usage"]["last_used_at"].is_string());

    // Disabled: gone, with the body of an unknown token. Enabled again: back.
    assert_gone(&server, "echo.nosuchtoken", &session).await;
    let disabled = patch_link(&server, &admin, &id, json!({"enabled": false})).await;
    assert_eq!(disabled.status, 200, "{:?}", disabled.body);
    assert_eq!(disabled.json()["status"], "disabled");
    assert_gone(&server, &token, &session).await;
    patch_link(&server, &admin, &id, json!({"enabled": true})).await;
    assert_eq!(
        visit(&server, &token, "back", Some(&session)).await.status,
        200
    );

    // Expired by the clock, then given a new expiry.
    let in_an_hour = Timestamp::now().add_millis(3_600_000).to_rfc3339();
    let patched = patch_link(&server, &admin, &id, json!({"expires_at": in_an_hour})).await;
    assert_eq!(patched.json()["expires_at"], in_an_hour.as_str());
    server.link_clock().advance(Duration::from_secs(2 * 3600));
    assert_gone(&server, &token, &session).await;
    assert_eq!(
        link_row(&server, &admin, "echo", &id).await["status"],
        "expired"
    );
    patch_link(&server, &admin, &id, json!({"expires_at": null})).await;
    assert_eq!(open_link(&server, &token).await.status, 200);

    // Deleted: gone for good; the owner keeps the visitor's history.
    let path = format!("/api/agents/echo/public-links/{id}");
    let deleted = server.call(Method::DELETE, &path, Some(&admin), None).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["deleted"], true);
    assert_gone(&server, &token, &session).await;
    assert_eq!(link_row(&server, &admin, "echo", &id).await, Value::Null);
    server
        .call(Method::DELETE, &path, Some(&admin), None)
        .await
        .assert_error(404, "not_found");
    let kept = server
        .get(&format!("/api/agents/echo/chat/sessions/{session}"), &admin)
        .await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.json()["messages"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn expiry_defaults_to_thirty_days_and_null_is_never() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (_, month) = make_link(&server, &admin, "echo", json!({})).await;
    let (_, never) = make_link(&server, &admin, "echo", json!({"expires_at": null})).await;
    let past = Timestamp::now().add_millis(-1000).to_rfc3339();
    server
        .post(
            "/api/agents/echo/public-links",
            &admin,
            json!({"expires_at": past}),
        )
        .await
        .assert_error(422, "invalid_field");
    server
        .post(
            "/api/agents/echo/public-links",
            &admin,
            json!({"max_messages_per_session": 0}),
        )
        .await
        .assert_error(422, "invalid_field");
    server
        .post(
            "/api/agents/echo/public-links",
            &admin,
            json!({"token": "mine"}),
        )
        .await
        .assert_error(400, "bad_request");

    server.link_clock().advance(29 * DAY);
    assert_eq!(open_link(&server, &month).await.status, 200);
    server.link_clock().advance(2 * DAY);
    assert_eq!(open_link(&server, &month).await.status, 404);
    server.link_clock().advance(3650 * DAY);
    assert_eq!(open_link(&server, &never).await.status, 200);
    assert_eq!(visit(&server, &never, "still here", None).await.status, 200);
}

#[tokio::test]
async fn only_the_owner_and_admins_manage_links() {
    let server = TestServer::with(|c| {
        let mut agent = echo_agent("team", 0, 2);
        agent.owner = "dana".into();
        agent.shared_with = vec!["erin".into()];
        c.agents.push(agent);
    })
    .await;
    let (dana, erin, frank) = (
        server.user("dana").await,
        server.user("erin").await,
        server.user("frank").await,
    );
    let admin = server.admin().await;
    let (id, _) = make_link(&server, &dana, "team", json!({})).await;
    let path = "/api/agents/team/public-links";
    let one = format!("{path}/{id}");
    server
        .post(path, &erin, json!({}))
        .await
        .assert_error(403, "forbidden");
    server.get(path, &erin).await.assert_error(403, "forbidden");
    server
        .call(Method::DELETE, &one, Some(&erin), None)
        .await
        .assert_error(403, "forbidden");
    server
        .post(path, &frank, json!({}))
        .await
        .assert_error(404, "not_found");
    server
        .call(
            Method::PATCH,
            &one,
            Some(&frank),
            Some(json!({"enabled": false})),
        )
        .await
        .assert_error(404, "not_found");
    server
        .call(Method::GET, path, None, None)
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(
        link_row(&server, &admin, "team", &id).await["created_by"],
        "dana"
    );
    // A link id of another agent is not this agent's.
    server
        .call(
            Method::DELETE,
            &format!("/api/agents/echo/public-links/{id}"),
            Some(&admin),
            None,
        )
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn the_store_file_holds_no_token() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (_, token) = make_link(&server, &admin, "echo", json!({"name": "stored"})).await;
    assert_eq!(
        visit(&server, &token, "remember me", None).await.status,
        200
    );
    let dir = server.stop().await;
    let file = std::fs::read(dir.path().join("outpost.redb")).unwrap();
    let contains = |needle: &[u8]| file.windows(needle.len()).any(|w| w == needle);
    let secret = token.split_once('.').unwrap().1;
    assert!(
        !contains(token.as_bytes()),
        "the token is in the store file"
    );
    assert!(
        !contains(secret.as_bytes()),
        "the token's secret is in the store file"
    );
    let hash = outpost::ids::sha256_hex(token.as_bytes());
    assert!(
        contains(hash.as_bytes()),
        "the hash should be there: wrong file?"
    );
    assert!(
        contains(b"remember me"),
        "the visitor's message should be there"
    );
}

#[tokio::test]
async fn visitor_sessions_belong_to_their_link() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (_, one) = make_link(&server, &admin, "echo", json!({})).await;
    let (_, other) = make_link(&server, &admin, "echo", json!({})).await;
    let alice = visit(&server, &one, "alice here", None).await.json();
    let bob = visit(&server, &one, "bob here", None).await.json();
    let (alice, bob) = (
        alice["session_id"].as_str().unwrap().to_string(),
        bob["session_id"].as_str().unwrap().to_string(),
    );
    assert_ne!(alice, bob, "each visitor gets a session of their own");
    let hers = history(&server, &one, &alice).await.json();
    let contents: Vec<&str> = hers["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["alice here", "alice here"]);

    // A session of another link, a forged id, a malformed id, an account's session: 404.
    let forged = outpost::ids::new_id();
    let user_session = server
        .chat_json("echo", &admin, json!({"message": "an account's turn"}))
        .await
        .json()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    for session in [
        bob.as_str(),
        forged.as_str(),
        "..%2Fetc",
        user_session.as_str(),
    ] {
        let token = if session == bob { &other } else { &one };
        history(&server, token, session)
            .await
            .assert_error(404, "not_found");
        visit(&server, token, "let me in", Some(session))
            .await
            .assert_error(404, "not_found");
    }
    server
        .call(
            Method::GET,
            &format!("/api/public/history/{one}"),
            None,
            None,
        )
        .await
        .assert_error(400, "bad_request");
    // The account's own session did not get the visitor's message.
    let mine = server
        .get(
            &format!("/api/agents/echo/chat/sessions/{user_session}"),
            &admin,
        )
        .await
        .json();
    assert_eq!(mine["messages"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn visitor_turns_are_public_executions() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let (id, token) = make_link(&server, &admin, "echo", json!({})).await;
    let request = build(
        Method::POST,
        &format!("/api/public/chat/{token}"),
        None,
        Some(json!({"message": "stream this please"})),
        &[("accept", "application/x-ndjson")],
    );
    let reply = server.send(request).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    let lines = reply.lines();
    assert_eq!(lines[0]["type"], "system");
    assert!(lines[0]["session_id"].is_string() && lines[0].get("model").is_none());
    let text: String = lines
        .iter()
        .filter(|l| l["type"] == "stream_event")
        .map(|l| l["event"]["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "stream this please");
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "result");
    assert_eq!(last["result"], "stream this please");
    assert!(last.get("usage").is_none() && last.get("total_cost_usd").is_none());

    let list = server
        .get("/api/agents/echo/executions?kind=public", &admin)
        .await
        .json();
    let rows = list["executions"].as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["kind"], "public");
    assert_eq!(rows[0]["username"], format!("public:{id}"));
    assert_eq!(rows[0]["session_id"], lines[0]["session_id"]);
    let activity = server.get("/api/agents/echo/activity", &admin).await.json();
    assert_eq!(activity["totals"]["by_kind"]["public"], 1);
}

#[tokio::test]
async fn visitors_see_no_tool_calls_and_no_engine_errors() {
    let command = |name: &str, script: &str| {
        let mut agent = echo_agent(name, 0, 2);
        agent.engine = EngineSpec::Command {
            program: fixture(script),
            args: Vec::new(),
            workdir: None,
            env: Default::default(),
            resume_args: Vec::new(),
        };
        agent
    };
    let server = TestServer::with(|c| {
        c.agents.push(command("tools", "agent.sh"));
        c.agents.push(command("broken", "fail.sh"));
    })
    .await;
    let admin = server.admin().await;
    let (_, tools) = make_link(&server, &admin, "tools", json!({})).await;
    let (_, broken) = make_link(&server, &admin, "broken", json!({})).await;
    let request = |token: &str| {
        build(
            Method::POST,
            &format!("/api/public/chat/{token}"),
            None,
            Some(json!({"message": "go"})),
            &[("accept", "application/x-ndjson")],
        )
    };
    let body = String::from_utf8_lossy(&server.send(request(&tools)).await.body).into_owned();
    assert!(body.contains("you said: go"), "{body}");
    for hidden in [
        "tool_use",
        "fixture_unknown",
        "total_cost_usd",
        "fixture-model",
    ] {
        assert!(!body.contains(hidden), "{hidden} reached a visitor: {body}");
    }
    let streamed = String::from_utf8_lossy(&server.send(request(&broken)).await.body).into_owned();
    let document = visit(&server, &broken, "go", None).await;
    assert_eq!(document.status, 200);
    let document = String::from_utf8_lossy(&document.body).into_owned();
    for answer in [&streamed, &document] {
        assert!(
            answer.contains("the agent could not answer this message"),
            "{answer}"
        );
        assert!(
            !answer.contains("no model configured"),
            "engine text leaked: {answer}"
        );
    }
    // The owner still sees why it failed.
    let failed = server
        .get("/api/agents/broken/executions?kind=public", &admin)
        .await
        .json();
    let id = failed["executions"][0]["id"].as_str().unwrap().to_string();
    let execution = server
        .get(&format!("/api/agents/broken/executions/{id}"), &admin)
        .await
        .json();
    assert!(execution["error"]
        .as_str()
        .unwrap()
        .contains("no model configured"));
}

#[tokio::test]
async fn a_stopped_or_deleted_agent_takes_its_links_along() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let created = server
        .post(
            "/api/agents",
            &admin,
            json!({"name": "helper", "display_name": "Helper"}),
        )
        .await;
    assert_eq!(created.status, 201);
    let (_, token) = make_link(&server, &admin, "helper", json!({})).await;
    let session = visit(&server, &token, "hi", None).await.json()["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .call(Method::POST, "/api/agents/helper/stop", Some(&admin), None)
        .await;
    visit(&server, &token, "anyone?", Some(&session))
        .await
        .assert_error(503, "agent_stopped");
    server
        .call(Method::POST, "/api/agents/helper/start", Some(&admin), None)
        .await;
    assert_eq!(
        visit(&server, &token, "back", Some(&session)).await.status,
        200
    );

    let deleted = server
        .call(Method::DELETE, "/api/agents/helper", Some(&admin), None)
        .await
        .json();
    assert_eq!(deleted["removed"]["public_links"], 1);
    assert_gone(&server, &token, &session).await;
    server
        .post("/api/agents", &admin, json!({"name": "helper"}))
        .await;
    assert_gone(&server, &token, &session).await;
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy() {
    let server = TestServer::start().await;
    let page = server.call(Method::GET, "/p/anything", None, None).await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
    assert!(page
        .header("content-security-policy")
        .is_some_and(|p| p.contains("default-src 'none'") && p.contains("connect-src 'self'")));
    server
        .call(Method::POST, "/p/anything", None, None)
        .await
        .assert_error(405, "method_not_allowed");
}
