//! Ending a session ends it everywhere: logout, revoking a device token, changing a password
//! and removing an account end open streams within a second and refuse earlier tokens; a
//! re-created account inherits nothing of a removed one.

use crate::support::*;
use hyper::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A turn long enough to outlive every check here: 200 words, 50 ms each.
fn long_message() -> String {
    vec!["word"; 200].join(" ")
}

/// Sends `request` and, 400 ms later, `end` (from another connection); returns the stream's
/// reply and how long it went on after `end` answered.
async fn stream_then<F, Fut>(
    server: &TestServer,
    request: hyper::Request<http_body_util::Full<bytes::Bytes>>,
    end: F,
) -> (Reply, Duration)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Reply>,
{
    let ended_at = std::sync::Mutex::new(None);
    let stream = async {
        let reply = server.send(request).await;
        (reply, Instant::now())
    };
    let ending = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let reply = end().await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        *ended_at.lock().unwrap() = Some(Instant::now());
    };
    let ((reply, finished), ()) = tokio::join!(stream, ending);
    let ended = ended_at.lock().unwrap().expect("the ending ran");
    (reply, finished.saturating_duration_since(ended))
}

fn chat_stream(token: &str) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    build(
        Method::POST,
        "/api/agents/slow/chat",
        Some(token),
        Some(json!({"message": long_message()})),
        &[],
    )
}

#[tokio::test]
async fn logout_ends_an_ndjson_chat_within_a_second_and_only_that_tokens() {
    let server = TestServer::with(|c| c.agents = vec![echo_agent("slow", 50, 4)]).await;
    let token = server.admin().await;
    let other = server.admin().await;
    let logout = || server.call(Method::POST, "/api/auth/logout", Some(&token), None);
    let started = Instant::now();
    let (reply, after) = stream_then(&server, chat_stream(&token), logout).await;
    assert_eq!(reply.status, 200);
    assert!(
        after < Duration::from_secs(1),
        "the stream went on {after:?} after logout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the whole turn was sent"
    );
    let lines = reply.lines();
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "error", "{last}");
    assert_eq!(last["error"], "unauthorized", "{last}");
    assert!(lines.len() < 40, "{} lines after logout", lines.len());
    // Another token of the same account was not logged out.
    assert_eq!(server.get("/api/users/me", &other).await.status, 200);
}

#[tokio::test]
async fn revoking_a_device_token_ends_its_sse_follow_within_a_second() {
    let server = TestServer::with(|c| c.agents = vec![echo_agent("slow", 50, 4)]).await;
    let admin = server.admin().await;
    let minted = server
        .post(
            "/api/tokens",
            &admin,
            json!({"username": "admin", "scope": "tasks", "label": "panel"}),
        )
        .await;
    assert_eq!(minted.status, 201, "{:?}", minted.body);
    let device = minted.json()["access_token"].as_str().unwrap().to_string();
    let id = minted.json()["id"].as_str().unwrap().to_string();
    let submitted = server
        .post(
            "/api/agents/slow/task",
            &device,
            json!({"message": long_message(), "async_mode": true}),
        )
        .await;
    assert_eq!(submitted.status, 202, "{:?}", submitted.body);
    let execution = submitted.json()["execution_id"]
        .as_str()
        .unwrap()
        .to_string();
    let follow = build(
        Method::GET,
        &format!("/api/agents/slow/executions/{execution}/stream"),
        Some(&device),
        None,
        &[],
    );
    let token_path = format!("/api/tokens/{id}");
    let revoke = || server.call(Method::DELETE, &token_path, Some(&admin), None);
    let (reply, after) = stream_then(&server, follow, revoke).await;
    assert_eq!(reply.status, 200);
    assert!(
        after < Duration::from_secs(1),
        "the stream went on {after:?} after revocation"
    );
    let text = String::from_utf8_lossy(&reply.body);
    assert!(
        text.trim_end().ends_with(
            r#"data: {"error":"unauthorized","message":"this token is no longer accepted"}"#
        ),
        "{text}"
    );
    assert!(!text.contains("event: end"), "{text}");
    server
        .get("/api/agents/slow/executions", &device)
        .await
        .assert_error(401, "unauthorized");
    // The revoked token is off the list; the task itself goes on.
    let listed = server.get("/api/tokens", &admin).await;
    assert_eq!(listed.json()["tokens"], json!([]));
}

#[tokio::test]
async fn removing_an_account_ends_its_stream_within_a_second() {
    let server = TestServer::with(|c| {
        let mut slow = echo_agent("slow", 50, 4);
        slow.shared_with = vec!["dave".into()];
        c.agents = vec![slow];
    })
    .await;
    let admin = server.admin().await;
    let dave = server.user("dave").await;
    let remove = || server.call(Method::DELETE, "/api/users/dave", Some(&admin), None);
    let (reply, after) = stream_then(&server, chat_stream(&dave), remove).await;
    assert!(
        after < Duration::from_secs(1),
        "the stream went on {after:?} after removal"
    );
    assert_eq!(reply.lines().last().unwrap()["error"], "unauthorized");
}

#[tokio::test]
async fn a_password_change_ends_earlier_tokens_streams_and_refuses_them() {
    let server = TestServer::with(|c| {
        let mut slow = echo_agent("slow", 50, 4);
        slow.shared_with = vec!["dave".into()];
        c.agents = vec![slow];
    })
    .await;
    let admin = server.admin().await;
    let dave = server.user("dave").await;
    let change = || {
        server.call(
            Method::PUT,
            "/api/users/dave/password",
            Some(&dave),
            Some(json!({"password": "a-new-password", "current_password": "dave-password"})),
        )
    };
    let (reply, after) = stream_then(&server, chat_stream(&dave), change).await;
    assert!(
        after < Duration::from_secs(1),
        "the stream went on {after:?}"
    );
    assert_eq!(reply.lines().last().unwrap()["error"], "unauthorized");
    server
        .get("/api/users/me", &dave)
        .await
        .assert_error(401, "unauthorized");
    // A token minted right after the change, in the same second, is good.
    let new = server.login("dave", "a-new-password").await;
    assert_eq!(server.get("/api/users/me", &new).await.status, 200);
    // Wrong current password, or another user's: refused; an admin sets anyone's.
    let wrong = json!({"password": "third-password", "current_password": "nope"});
    server
        .call(
            Method::PUT,
            "/api/users/dave/password",
            Some(&new),
            Some(wrong),
        )
        .await
        .assert_error(403, "forbidden");
    let body = json!({"password": "admin-via-dave"});
    server
        .call(
            Method::PUT,
            "/api/users/admin/password",
            Some(&new),
            Some(body),
        )
        .await
        .assert_error(403, "forbidden");
    let body = json!({"password": "set-by-admin"});
    let set = server
        .call(
            Method::PUT,
            "/api/users/dave/password",
            Some(&admin),
            Some(body),
        )
        .await;
    assert_eq!(set.status, 200, "{:?}", set.body);
    server
        .get("/api/users/me", &new)
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(server.get("/api/users/me", &admin).await.status, 200);
}

#[tokio::test]
async fn device_tokens_are_listed_to_their_owner_and_everyone_to_an_admin() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let alice = server.user("alice").await;
    let bob = server.user("bob").await;
    let mint = |username: &'static str, label: &'static str| {
        let (server, admin) = (&server, admin.clone());
        async move {
            let body = json!({"username": username, "scope": "chat", "label": label, "ttl": "90d"});
            let reply = server.post("/api/tokens", &admin, body).await;
            assert_eq!(reply.status, 201, "{:?}", reply.body);
            reply.json()
        }
    };
    let kitchen = mint("alice", "kitchen").await;
    let garage = mint("bob", "garage").await;
    let ids = |reply: Reply| -> Vec<Value> {
        reply.json()["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].clone())
            .collect()
    };
    assert_eq!(
        ids(server.get("/api/tokens", &alice).await),
        vec![kitchen["id"].clone()]
    );
    assert_eq!(ids(server.get("/api/tokens", &admin).await).len(), 2);
    let listed = server.get("/api/tokens", &alice).await.json();
    assert_eq!(listed["tokens"][0]["label"], "kitchen");
    assert_eq!(listed["tokens"][0]["scope"], "chat");
    assert!(
        !listed.to_string().contains("eyJ"),
        "a token itself was listed"
    );
    // Another user's token is not there to revoke; a scoped token cannot manage tokens.
    let garage_path = format!("/api/tokens/{}", garage["id"].as_str().unwrap());
    server
        .call(Method::DELETE, &garage_path, Some(&alice), None)
        .await
        .assert_error(404, "not_found");
    let kitchen_token = kitchen["access_token"].as_str().unwrap();
    server
        .get("/api/tokens", kitchen_token)
        .await
        .assert_error(403, "forbidden");
    // Bob revokes his own; it is refused from then on.
    let garage_token = garage["access_token"].as_str().unwrap();
    let me = server.get("/api/users/me", garage_token).await;
    assert_eq!(me.status, 200);
    let revoked = server
        .call(Method::DELETE, &garage_path, Some(&bob), None)
        .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    assert_eq!(revoked.json()["token"]["label"], "garage");
    server
        .get("/api/users/me", garage_token)
        .await
        .assert_error(401, "unauthorized");
    server
        .call(Method::DELETE, &garage_path, Some(&bob), None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        ids(server.get("/api/tokens", &admin).await),
        vec![kitchen["id"].clone()]
    );
    // The admin revokes anyone's.
    let kitchen_path = format!("/api/tokens/{}", kitchen["id"].as_str().unwrap());
    let revoked = server
        .call(Method::DELETE, &kitchen_path, Some(&admin), None)
        .await;
    assert_eq!(revoked.status, 200, "{:?}", revoked.body);
    server
        .get("/api/users/me", kitchen_token)
        .await
        .assert_error(401, "unauthorized");
}

fn outpost(args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env_remove("OUTPOST_CONFIG")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_password_change_refuses_earlier_tokens_and_the_cli_lists_and_revokes_device_tokens() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dave = server.user("dave").await;
    let device = server
        .post(
            "/api/tokens",
            &admin,
            json!({"username": "dave", "label": "car"}),
        )
        .await
        .json();
    let device_token = device["access_token"].as_str().unwrap().to_string();
    let dir = server.stop().await;
    let data_dir = dir.path().to_str().unwrap();

    let (ok, listed, err) = outpost(&["token", "list", "--data-dir", data_dir]);
    assert!(ok, "{err}");
    assert!(
        listed.contains(device["id"].as_str().unwrap()) && listed.contains("car"),
        "{listed}"
    );
    let (ok, minted, err) = outpost(&[
        "token",
        "issue",
        "--user",
        "admin",
        "--label",
        "shelf",
        "--data-dir",
        data_dir,
    ]);
    assert!(ok, "{err}");
    let (_, listed, _) = outpost(&["token", "list", "--user", "admin", "--data-dir", data_dir]);
    let shelf_id = listed
        .lines()
        .find(|l| l.ends_with("\tshelf"))
        .expect("the shelf token")
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    let (ok, said, err) = outpost(&["token", "revoke", &shelf_id, "--data-dir", data_dir]);
    assert!(ok && said.contains(&shelf_id), "{said} {err}");

    let mut passwd = std::process::Command::new(env!("CARGO_BIN_EXE_outpost"))
        .args([
            "user",
            "passwd",
            "dave",
            "--password-stdin",
            "--data-dir",
            data_dir,
        ])
        .env_remove("OUTPOST_CONFIG")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    passwd
        .stdin
        .take()
        .unwrap()
        .write_all(b"a-new-password\n")
        .unwrap();
    assert!(passwd.wait().unwrap().success());

    let server = TestServer::in_dir(dir, |_| {}).await;
    for old in [&dave, &device_token] {
        server
            .get("/api/users/me", old)
            .await
            .assert_error(401, "unauthorized");
    }
    server
        .get("/api/users/me", minted.trim())
        .await
        .assert_error(401, "unauthorized");
    // A token minted right after the change, in the same second, is good.
    let new = server.login("dave", "a-new-password").await;
    assert_eq!(server.get("/api/users/me", &new).await.status, 200);
}

/// Removing dave and creating dave again gives the new account nothing of the old one:
/// no sessions, history, executions, shares, device tokens; API agents dave made pass to the
/// admin who removed dave.
#[tokio::test]
async fn a_new_account_never_inherits_a_removed_ones_data() {
    let server = TestServer::with(|c| {
        c.users_may_create_agents = true;
        let mut file = echo_agent("file", 0, 4);
        file.shared_with = vec!["dave".into()];
        c.agents = vec![echo_agent("echo", 0, 4), file];
    })
    .await;
    let admin = server.admin().await;
    let dave = server.user("dave").await;
    let shared = server
        .post(
            "/api/agents/echo/shares",
            &admin,
            json!({"username": "dave"}),
        )
        .await;
    assert_eq!(shared.status, 201, "{:?}", shared.body);
    let turn = server
        .chat_json("echo", &dave, json!({"message": "my secret plan"}))
        .await;
    assert_eq!(turn.status, 200, "{:?}", turn.body);
    let task = server
        .post(
            "/api/agents/echo/task",
            &dave,
            json!({"message": "secret task", "async_mode": true}),
        )
        .await;
    assert_eq!(task.status, 202, "{:?}", task.body);
    let made = server
        .post("/api/agents", &dave, json!({"name": "daves-bot"}))
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    let own_turn = server
        .chat_json("daves-bot", &dave, json!({"message": "bot secret"}))
        .await;
    assert_eq!(own_turn.status, 200);
    server
        .post(
            "/api/tokens",
            &admin,
            json!({"username": "dave", "label": "old"}),
        )
        .await;

    let removed = server
        .call(Method::DELETE, "/api/users/dave", Some(&admin), None)
        .await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    let dave = server.user("dave").await;

    // The share the API gave is gone; the file's share stays (the file names accounts).
    server
        .get("/api/agents/echo", &dave)
        .await
        .assert_error(404, "not_found");
    server
        .get("/api/agents/daves-bot", &dave)
        .await
        .assert_error(404, "not_found");
    let agents = server.get("/api/agents", &dave).await.json();
    let names: Vec<&str> = agents
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["file"]);
    for path in [
        "/api/agents/file/chat/sessions",
        "/api/agents/file/chat/history/persistent",
        "/api/agents/file/executions",
    ] {
        let reply = server.get(path, &dave).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        assert!(
            !String::from_utf8_lossy(&reply.body).contains("secret"),
            "{path}"
        );
    }
    assert_eq!(
        server.get("/api/tokens", &dave).await.json()["tokens"],
        json!([])
    );
    // Share echo again: still nothing of the old dave's there.
    server
        .post(
            "/api/agents/echo/shares",
            &admin,
            json!({"username": "dave"}),
        )
        .await;
    for path in [
        "/api/agents/echo/chat/sessions",
        "/api/agents/echo/chat/history/persistent",
        "/api/agents/echo/executions",
    ] {
        let reply = server.get(path, &dave).await;
        assert_eq!(reply.status, 200, "{path}: {:?}", reply.body);
        let text = String::from_utf8_lossy(&reply.body);
        assert!(!text.contains("secret"), "{path}: {text}");
    }
    // The admin sees none of it either: it was deleted, not hidden.
    let history = server
        .get("/api/agents/echo/chat/history/persistent", &admin)
        .await;
    assert!(!String::from_utf8_lossy(&history.body).contains("secret"));
    // dave's agent now belongs to the admin and keeps its own history.
    let bot = server.get("/api/agents/daves-bot", &admin).await;
    assert_eq!(bot.json()["owner"], "admin", "{:?}", bot.body);
    assert_eq!(removed.json()["agents_to"], "admin");
}
