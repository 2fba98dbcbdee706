//! Set-up through the public API: admin login, seeded history, device tokens and sessions for
//! the bench members. Everything goes over one sequential connection.

use crate::client::{field, Call, Conn};
use crate::daemon::ADMIN_PASSWORD;
use hyper::StatusCode;
use serde_json::json;

/// The chat route of the bench agent.
pub const CHAT: &str = "/api/agents/echo/chat";

/// Logs in as `admin` and returns the access token.
pub async fn login(conn: &mut Conn) -> anyhow::Result<String> {
    let body = json!({"username": "admin", "password": ADMIN_PASSWORD});
    let answer = conn
        .json(&Call::post("/api/token", None, &body), StatusCode::OK)
        .await?;
    field(&answer, "access_token")
}

/// One chat turn answered as a JSON document; returns the session id. `session_id: None`
/// starts a new session (closing the caller's active one).
pub async fn turn(
    conn: &mut Conn,
    token: &str,
    message: &str,
    session_id: Option<&str>,
) -> anyhow::Result<String> {
    let body = match session_id {
        Some(id) => json!({"message": message, "session_id": id}),
        None => json!({"message": message, "new_session": true}),
    };
    let answer = conn
        .json(&Call::post(CHAT, Some(token), &body), StatusCode::OK)
        .await?;
    anyhow::ensure!(
        answer["status"] == "success",
        "a seeding turn did not succeed: {answer}"
    );
    field(&answer, "session_id")
}

/// Gives the caller `sessions` sessions of `turns` turns each (two messages per turn).
pub async fn seed_history(
    conn: &mut Conn,
    token: &str,
    sessions: usize,
    turns: usize,
) -> anyhow::Result<()> {
    for session_idx in 0..sessions {
        let first = format!("seeded session {session_idx}, turn 0: what is the weather");
        let session_id = turn(conn, token, &first, None).await?;
        for turn_idx in 1..turns {
            let message = format!("seeded session {session_idx}, turn {turn_idx}: and then");
            turn(conn, token, &message, Some(&session_id)).await?;
        }
    }
    Ok(())
}

/// One bench user: a device token, and the id of their session once opened.
pub struct Member {
    pub token: String,
    pub session_id: String,
}

/// Mints each member (added before the daemon started) a chat token. Sessions are per
/// (agent, user), so concurrent sessions need distinct users.
pub async fn mint_member_tokens(
    conn: &mut Conn,
    admin_token: &str,
    usernames: &[String],
) -> anyhow::Result<Vec<Member>> {
    let mut members = Vec::with_capacity(usernames.len());
    for username in usernames {
        let wanted = json!({"username": username, "scope": "chat", "ttl": "1h"});
        let issued = conn
            .json(
                &Call::post("/api/tokens", Some(admin_token), &wanted),
                StatusCode::CREATED,
            )
            .await?;
        let token = field(&issued, "access_token")?;
        members.push(Member {
            token,
            session_id: String::new(),
        });
    }
    Ok(members)
}

/// Opens each member's session with a first turn, one after another.
pub async fn open_sessions(conn: &mut Conn, members: &mut [Member]) -> anyhow::Result<()> {
    for member in members {
        member.session_id = turn(conn, &member.token, "open the bench session", None).await?;
    }
    Ok(())
}

/// The request a member sends in the chat throughput run.
pub fn chat_call(token: &str, session_id: &str) -> Call {
    let body = json!({"message": "hello bench", "session_id": session_id});
    Call::post(CHAT, Some(token), &body)
}
