//! Login, tokens, revocation, throttling, users and scopes.

use crate::support::*;
use hyper::Method;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn login_with_json_and_form_and_bad_password() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let me = server.get("/api/users/me", &token).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["username"], "admin");
    assert_eq!(me.json()["role"], "admin");

    let form = hyper::Request::builder()
        .method(Method::POST)
        .uri("/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(format!(
            "grant_type=password&username=admin&password={ADMIN_PASSWORD}"
        ))))
        .unwrap();
    let reply = server.send(form).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["token_type"], "bearer");
    assert_eq!(reply.json()["expires_in"], 12 * 3600);

    let bad = server
        .call(
            Method::POST,
            "/api/token",
            None,
            Some(json!({"username": "admin", "password": "nope"})),
        )
        .await;
    bad.assert_error(401, "unauthorized");
    let missing = server.call(Method::GET, "/api/users/me", None, None).await;
    missing.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn failed_logins_are_throttled_per_account() {
    let server = TestServer::with(|c| c.login_attempts_per_minute = 3).await;
    for _ in 0..3 {
        let reply = server
            .call(
                Method::POST,
                "/api/token",
                None,
                Some(json!({"username": "admin", "password": "wrong"})),
            )
            .await;
        reply.assert_error(401, "unauthorized");
    }
    // Even the right password waits now.
    let reply = server
        .call(
            Method::POST,
            "/api/token",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    reply.assert_error(429, "too_many_attempts");
    assert!(reply.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
}

#[tokio::test]
async fn tampered_expired_revoked_and_unsigned_tokens_are_refused() {
    let server = TestServer::start().await;
    let token = server.admin().await;

    // Tampered: flip a character of the signature.
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 2;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    server
        .get("/api/users/me", &tampered)
        .await
        .assert_error(401, "unauthorized");

    // alg: none with the same claims and no signature.
    let claims = token.split('.').nth(1).unwrap();
    let header = base64url(br#"{"alg":"none","typ":"JWT"}"#);
    let unsigned = format!("{header}.{claims}.");
    server
        .get("/api/users/me", &unsigned)
        .await
        .assert_error(401, "unauthorized");

    // Expired: a one-second device token, used after it ran out.
    let short = server
        .post(
            "/api/tokens",
            &token,
            json!({"username": "admin", "ttl": "1s"}),
        )
        .await;
    assert_eq!(short.status, 201);
    let short = short.json()["access_token"].as_str().unwrap().to_string();
    assert_eq!(server.get("/api/users/me", &short).await.status, 200);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    server
        .get("/api/users/me", &short)
        .await
        .assert_error(401, "unauthorized");

    // Revoked: logout, then the same token fails, also after a restart.
    let reply = server
        .call(Method::POST, "/api/auth/logout", Some(&token), None)
        .await;
    assert_eq!(reply.status, 200);
    server
        .get("/api/users/me", &token)
        .await
        .assert_error(401, "unauthorized");
    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |_| {}).await;
    server
        .get("/api/users/me", &token)
        .await
        .assert_error(401, "unauthorized");
}

fn base64url(raw: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in raw.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn admins_manage_users_and_users_cannot() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let dana = server.user("dana").await;
    let list = server.get("/api/users", &admin).await;
    assert_eq!(list.status, 200);
    let names: Vec<String> = list.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["admin", "dana"]);
    assert!(
        !list.body.windows(6).any(|w| w == b"argon2"),
        "hashes never leave the store"
    );

    server
        .get("/api/users", &dana)
        .await
        .assert_error(403, "forbidden");
    server
        .post(
            "/api/users",
            &dana,
            json!({"username": "eve", "password": "long-enough"}),
        )
        .await
        .assert_error(403, "forbidden");
    server
        .post(
            "/api/users",
            &admin,
            json!({"username": "dana", "password": "long-enough"}),
        )
        .await
        .assert_error(409, "user_exists");
    server
        .post(
            "/api/users",
            &admin,
            json!({"username": "eve", "password": "short"}),
        )
        .await
        .assert_error(422, "invalid_field");
    server
        .post(
            "/api/users",
            &admin,
            json!({"username": "eve", "password": "long-enough", "rank": 1}),
        )
        .await
        .assert_error(400, "bad_request");
    let deleted = server
        .call(Method::DELETE, "/api/users/dana", Some(&admin), None)
        .await;
    assert_eq!(deleted.status, 200);
    server
        .call(Method::DELETE, "/api/users/dana", Some(&admin), None)
        .await
        .assert_error(404, "not_found");
    server
        .call(Method::DELETE, "/api/users/admin", Some(&admin), None)
        .await
        .assert_error(409, "last_admin");
}

#[tokio::test]
async fn scoped_device_tokens_reach_only_their_scope() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let minted = server
        .post(
            "/api/tokens",
            &admin,
            json!({"username": "admin", "scope": "voice", "ttl": "30d"}),
        )
        .await;
    assert_eq!(minted.status, 201);
    assert_eq!(minted.json()["scope"], "voice");
    let device = minted.json()["access_token"].as_str().unwrap().to_string();
    let chat = server
        .post("/api/agents/echo/chat", &device, json!({"message": "hi"}))
        .await;
    chat.assert_error(403, "forbidden");
    server
        .get("/api/users", &device)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(server.get("/api/users/me", &device).await.status, 200);
    server
        .post(
            "/api/tokens",
            &admin,
            json!({"username": "admin", "scope": "everything"}),
        )
        .await
        .assert_error(422, "invalid_field");
}

#[tokio::test]
async fn first_start_writes_a_private_admin_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let server = TestServer::with(|c| c.admin_password = None).await;
    let file = server.data_dir().join("admin-password");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let secret = server.data_dir().join("jwt-secret");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let password = std::fs::read_to_string(&file).unwrap();
    server.login("admin", password.trim()).await;
    // A restart does not make another admin or change the password.
    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |c| c.admin_password = None).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), password);
    server.login("admin", password.trim()).await;
}
