//! Agents at run time: create, change, stop and start, share, delete.

use crate::support::*;
use hyper::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn an_api_agents_whole_life() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let created = server
        .post("/api/agents", &admin, json!({"name": "helper", "display_name": "Helper", "max_concurrent": 2, "timeout": "5m"}))
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    let agent = created.json();
    assert_eq!(agent["status"], "running");
    assert_eq!(agent["source"], "api");
    assert_eq!(agent["owner"], "admin");
    assert_eq!(agent["engine"], "echo");
    assert_eq!(agent["limits"]["timeout_seconds"], 300);
    let got = server.get("/api/agents/helper", &admin).await.json();
    assert_eq!(got["display_name"], "Helper");
    let chat = server
        .chat_json("helper", &admin, json!({"message": "hi helper"}))
        .await;
    assert_eq!(chat.json()["response"], "hi helper");

    // Stopped: chat is refused, tasks wait.
    let stopped = server
        .call(Method::POST, "/api/agents/helper/stop", Some(&admin), None)
        .await;
    assert_eq!(stopped.json()["status"], "stopped");
    assert_eq!(
        server
            .call(Method::POST, "/api/agents/helper/stop", Some(&admin), None)
            .await
            .status,
        200
    );
    server
        .chat_json("helper", &admin, json!({"message": "anyone?"}))
        .await
        .assert_error(503, "agent_stopped");
    let task = server
        .post(
            "/api/agents/helper/task",
            &admin,
            json!({"message": "later", "async_mode": true}),
        )
        .await;
    assert_eq!(task.status, 202);
    let task_id = task.json()["execution_id"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = server
        .get(&format!("/api/agents/helper/executions/{task_id}"), &admin)
        .await
        .json();
    assert_eq!(waiting["status"], "queued");
    server
        .call(Method::POST, "/api/agents/helper/start", Some(&admin), None)
        .await;
    eventually(Duration::from_secs(5), || async {
        let e = server
            .get(&format!("/api/agents/helper/executions/{task_id}"), &admin)
            .await
            .json();
        (e["status"] == "success").then_some(())
    })
    .await;

    // A new engine for the next turn.
    let patched = server
        .call(
            Method::PATCH,
            "/api/agents/helper",
            Some(&admin),
            Some(json!({"engine": {"kind": "command", "program": fixture("probe.sh")}, "description": "now a probe"})),
        )
        .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.json()["engine"], "command");
    let lines = server
        .post(
            "/api/agents/helper/chat",
            &admin,
            json!({"message": "probe?"}),
        )
        .await
        .lines();
    assert!(lines.iter().any(|l| l["type"] == "probe"), "{lines:?}");

    // Delete: everything goes with it.
    let deleted = server
        .call(Method::DELETE, "/api/agents/helper", Some(&admin), None)
        .await;
    assert_eq!(deleted.status, 200);
    let body = deleted.json();
    assert_eq!(body["deleted"], true);
    assert_eq!(body["removed"]["sessions"], 1);
    assert_eq!(body["removed"]["executions"], 3);
    assert_eq!(
        body["removed"]["messages"], 4,
        "two chat turns; the task was stateless"
    );
    server
        .get("/api/agents/helper", &admin)
        .await
        .assert_error(404, "not_found");
    server
        .chat_json("helper", &admin, json!({"message": "x"}))
        .await
        .assert_error(404, "not_found");
    // The name is free again, and the new agent starts empty.
    assert_eq!(
        server
            .post("/api/agents", &admin, json!({"name": "helper"}))
            .await
            .status,
        201
    );
    let sessions = server
        .get("/api/agents/helper/chat/sessions", &admin)
        .await
        .json();
    assert!(sessions["sessions"].as_array().unwrap().is_empty());
    let executions = server
        .get("/api/agents/helper/executions", &admin)
        .await
        .json();
    assert!(executions["executions"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn who_may_create_change_and_delete() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dana = server.user("dana").await;
    let sam = server.user("sam").await;
    server
        .post("/api/agents", &dana, json!({"name": "mine"}))
        .await
        .assert_error(403, "forbidden");
    server
        .post("/api/agents", &admin, json!({"name": "Bad_Name"}))
        .await
        .assert_error(422, "invalid_field");
    server
        .post("/api/agents", &admin, json!({"name": "9lives"}))
        .await
        .assert_error(422, "invalid_field");
    server
        .post("/api/agents", &admin, json!({"name": "echo"}))
        .await
        .assert_error(409, "agent_exists");
    server
        .post(
            "/api/agents",
            &admin,
            json!({"name": "x", "engine": {"kind": "robot"}}),
        )
        .await
        .assert_error(400, "bad_request");
    server
        .post(
            "/api/agents",
            &admin,
            json!({"name": "x", "max_concurrent": 0}),
        )
        .await
        .assert_error(422, "invalid_field");
    assert_eq!(
        server
            .post("/api/agents", &admin, json!({"name": "team"}))
            .await
            .status,
        201
    );
    server
        .post("/api/agents", &admin, json!({"name": "team"}))
        .await
        .assert_error(409, "agent_exists");

    // dana is shared: she can use it, not manage it; sam sees nothing.
    let share = server
        .post(
            "/api/agents/team/shares",
            &admin,
            json!({"username": "dana"}),
        )
        .await;
    assert_eq!(share.status, 201);
    server
        .post(
            "/api/agents/team/shares",
            &admin,
            json!({"username": "nobody"}),
        )
        .await
        .assert_error(404, "not_found");
    let shares = server.get("/api/agents/team/shares", &admin).await.json();
    assert_eq!(shares["shares"], json!([{"username": "dana"}]));
    assert_eq!(
        server
            .chat_json("team", &dana, json!({"message": "hello"}))
            .await
            .status,
        200
    );
    server
        .call(Method::POST, "/api/agents/team/stop", Some(&dana), None)
        .await
        .assert_error(403, "forbidden");
    server
        .call(
            Method::PATCH,
            "/api/agents/team",
            Some(&dana),
            Some(json!({"description": "mine now"})),
        )
        .await
        .assert_error(403, "forbidden");
    server
        .call(Method::DELETE, "/api/agents/team", Some(&dana), None)
        .await
        .assert_error(403, "forbidden");
    server
        .get("/api/agents/team/shares", &dana)
        .await
        .assert_error(403, "forbidden");
    for (method, path) in [
        (Method::GET, "/api/agents/team"),
        (Method::POST, "/api/agents/team/stop"),
        (Method::DELETE, "/api/agents/team"),
    ] {
        server
            .call(method, path, Some(&sam), None)
            .await
            .assert_error(404, "not_found");
    }
    let unshared = server
        .call(
            Method::DELETE,
            "/api/agents/team/shares/dana",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(unshared.status, 200);
    server
        .chat_json("team", &dana, json!({"message": "still?"}))
        .await
        .assert_error(404, "not_found");

    // Config agents: start and stop, but not patch or delete.
    server
        .call(
            Method::PATCH,
            "/api/agents/echo",
            Some(&admin),
            Some(json!({"description": "x"})),
        )
        .await
        .assert_error(409, "managed_by_config");
    server
        .call(Method::DELETE, "/api/agents/echo", Some(&admin), None)
        .await
        .assert_error(409, "managed_by_config");
    assert_eq!(
        server
            .call(Method::POST, "/api/agents/echo/stop", Some(&admin), None)
            .await
            .status,
        200
    );
    assert_eq!(
        server
            .call(Method::POST, "/api/agents/echo/start", Some(&admin), None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn users_may_create_when_allowed_but_never_command_agents() {
    let server = TestServer::with(|c| c.users_may_create_agents = true).await;
    let dana = server.user("dana").await;
    let made = server
        .post("/api/agents", &dana, json!({"name": "danas"}))
        .await;
    assert_eq!(made.status, 201);
    assert_eq!(made.json()["owner"], "dana");
    server
        .post(
            "/api/agents",
            &dana,
            json!({"name": "shell", "engine": {"kind": "command", "program": "sh"}}),
        )
        .await
        .assert_error(403, "forbidden");
    server
        .call(
            Method::PATCH,
            "/api/agents/danas",
            Some(&dana),
            Some(json!({"engine": {"kind": "command", "program": "sh"}})),
        )
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        server
            .call(
                Method::PATCH,
                "/api/agents/danas",
                Some(&dana),
                Some(json!({"display_name": "Dana's"}))
            )
            .await
            .status,
        200
    );
    let admin = server.admin().await;
    assert_eq!(
        server.get("/api/agents/danas", &admin).await.json()["display_name"],
        "Dana's"
    );
}

#[tokio::test]
async fn api_agents_survive_restarts_and_config_changes_and_lose_a_name_clash() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    server
        .post("/api/agents", &admin, json!({"name": "keeper"}))
        .await;
    server
        .post(
            "/api/agents",
            &admin,
            json!({"name": "clash", "description": "from the API"}),
        )
        .await;
    server
        .call(Method::POST, "/api/agents/keeper/stop", Some(&admin), None)
        .await;
    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |c| {
        let mut clash = echo_agent("clash", 0, 1);
        clash.description = "from the file".into();
        c.agents = vec![echo_agent("other", 0, 1), clash];
    })
    .await;
    let keeper = server.get("/api/agents/keeper", &admin).await.json();
    assert_eq!(keeper["status"], "stopped", "the stopped state is kept");
    assert_eq!(keeper["source"], "api");
    let clash = server.get("/api/agents/clash", &admin).await.json();
    assert_eq!(clash["description"], "from the file");
    assert_eq!(clash["source"], "config");
    let names: Vec<String> = server
        .get("/api/agents", &admin)
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["clash", "keeper", "other"]);
}
