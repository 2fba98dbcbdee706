//! Sessions and history routes, and the agent's activity summary.

use super::{caller_with_scope, Api, Query};
use crate::agents::Agent;
use crate::app::App;
use crate::body;
use crate::caller::Caller;
use crate::chat::HistoryOwner;
use crate::chat::HistoryPage;
use crate::error::{ApiError, ApiResult};
use crate::records::{Message, Session, SessionStatus};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Serialize;
use serde_json::json;

/// `GET /api/agents/{name}/chat/sessions`
pub async fn list_sessions(app: &Api, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    let query = Query::parse(request.uri().query());
    let status = match query.get("status") {
        None => None,
        Some("active") => Some(SessionStatus::Active),
        Some("closed") => Some(SessionStatus::Closed),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status={other:?} is not active or closed"
            )))
        }
    };
    let (key, generation) = cache_key(app, "sessions", &agent, &caller, request);
    if let Some(bytes) = app.read_cache().get(&key, generation) {
        return Ok(body::with_type(StatusCode::OK, "application/json", bytes));
    }
    let page = app
        .chat()
        .list_sessions(&agent, &caller, status, query.get("cursor"), query.limit()?)
        .await?;
    #[derive(Serialize)]
    struct Body<'a> {
        sessions: &'a [Session],
        next_cursor: &'a Option<String>,
    }
    let body = Body {
        sessions: &page.sessions,
        next_cursor: &page.next_cursor,
    };
    Ok(cached(app, key, generation, &body))
}

/// The read cache's key for this request (route, agent, caller, whether they manage the
/// agent, query) and the store generation to tag a fresh answer with, read before any data.
fn cache_key(
    app: &App,
    route: &str,
    agent: &Agent,
    caller: &Caller,
    request: &Request<Incoming>,
) -> (String, u64) {
    let generation = app.store().generation();
    // The answer depends on who asks (unfiltered history is the caller's own, `?user=` is
    // the caller's own when it names them) and on whether they manage the agent.
    let managed = if agent.managed_by(caller) { "*" } else { "" };
    let query = request.uri().query().unwrap_or("");
    (
        format!(
            "{route}\0{}\0{}{managed}\0{query}",
            agent.name(),
            caller.username
        ),
        generation,
    )
}

/// Serializes a 200 answer, keeps it in the read cache, and returns it.
fn cached(
    app: &Api,
    key: String,
    generation: u64,
    value: &impl Serialize,
) -> crate::body::Response {
    let bytes = bytes::Bytes::from(serde_json::to_vec(value).expect("responses serialize"));
    app.read_cache().put(key, generation, bytes.clone());
    body::with_type(StatusCode::OK, "application/json", bytes)
}

/// `GET /api/agents/{name}/chat/sessions/{id}`
pub async fn get_session(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    id: &str,
) -> ApiResult {
    let caller = caller_with_scope(app, request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    let query = Query::parse(request.uri().query());
    let limit = query.number("limit", 100, 1, 500)? as usize;
    let session = app.chat().session(&agent, &caller, id).await?;
    let page = app
        .chat()
        .messages(&session, query.get("cursor"), limit)
        .await?;
    #[derive(Serialize)]
    struct Body<'a> {
        session: &'a Session,
        messages: &'a [Message],
        next_cursor: &'a Option<String>,
    }
    Ok(body::json(
        StatusCode::OK,
        &Body {
            session: &session,
            messages: &page.messages,
            next_cursor: &page.next_cursor,
        },
    ))
}

/// `POST /api/agents/{name}/chat/sessions/{id}/close`
pub async fn close_session(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    id: &str,
) -> ApiResult {
    let caller = caller_with_scope(app, request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    let session = app.chat().close_session(&agent, &caller, id).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"status": "closed", "session_id": session.id}),
    ))
}

/// `GET /api/agents/{name}/chat/history/persistent`
pub async fn persistent_history(app: &Api, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    let query = Query::parse(request.uri().query());
    let owner = if query.flag("all")? {
        HistoryOwner::Everyone
    } else {
        match query.get("user") {
            Some(user) if user != caller.username => HistoryOwner::User(user.to_string()),
            _ => HistoryOwner::Caller,
        }
    };
    let (key, generation) = cache_key(app, "history", &agent, &caller, request);
    if let Some(bytes) = app.read_cache().get(&key, generation) {
        return Ok(body::with_type(StatusCode::OK, "application/json", bytes));
    }
    let page = app
        .chat()
        .history(&agent, &caller, owner, query.get("cursor"), query.limit()?)
        .await?;
    Ok(cached(app, key, generation, &MessagePage::of(&page)))
}

/// `DELETE /api/agents/{name}/chat/history`
pub async fn reset_history(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    let all = Query::parse(request.uri().query()).flag("all")?;
    let closed = app.chat().reset(&agent, &caller, all).await?;
    let body = if all {
        json!({"status": "reset", "closed_session_ids": closed})
    } else {
        json!({"status": "reset", "closed_session_id": closed.first()})
    };
    Ok(body::json(StatusCode::OK, &body))
}

/// `GET /api/agents/{name}/activity`
pub async fn activity(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    let hours = Query::parse(request.uri().query()).number("hours", 24, 1, 720)?;
    let summary = crate::activity::summarize(app, &agent, &caller, hours).await?;
    Ok(body::json(StatusCode::OK, &summary))
}

/// `{"messages", "next_cursor"}`, serialized straight from the records.
#[derive(Serialize)]
struct MessagePage<'a> {
    messages: &'a [Message],
    next_cursor: &'a Option<String>,
}

impl<'a> MessagePage<'a> {
    fn of(page: &'a HistoryPage) -> MessagePage<'a> {
        MessagePage {
            messages: &page.messages,
            next_cursor: &page.next_cursor,
        }
    }
}
