//! Routing: one match on (method, path segments). Each arm names its route template (the
//! metrics label) and calls one handler; handlers parse, call one service, render.

mod agents;
pub mod cache;
mod chat;
mod executions;
mod links;
#[cfg(test)]
mod openapi_check;
mod ops;
mod paid;
mod public;
mod query;
mod sessions;
mod tasks;
mod token;
mod tokens;
mod users;
mod voice;

use crate::app::App;
use crate::auth::Caller;
use crate::body::{self, Response};
use crate::error::{ApiError, ApiResult};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::net::SocketAddr;
use std::time::Instant;

pub use query::Query;
pub use token::check_scope;

/// Answers one request.
pub async fn handle(app: &App, request: Request<Incoming>, peer: SocketAddr) -> Response {
    let started = Instant::now();
    let head = request.method() == Method::HEAD;
    let (route, result) = dispatch(app, request, peer).await;
    let mut response = match result {
        Ok(response) => response,
        Err(err) => err.response(),
    };
    if head {
        response = without_body(response);
    }
    app.metrics()
        .record_request(route, response.status().as_u16(), started.elapsed());
    response
}

async fn dispatch(
    app: &App,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> (&'static str, ApiResult) {
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let method = request.method().clone();
    // HEAD is answered as GET, without the body (`handle` drops it).
    let routed = if method == Method::HEAD {
        Method::GET
    } else {
        method.clone()
    };
    use Method as M;
    match (&routed, segments.as_slice()) {
        (&M::GET, ["healthz"]) => ("/healthz", ops::healthz()),
        (&M::GET, ["readyz"]) => ("/readyz", ops::readyz(app).await),
        (&M::GET, ["metrics"]) => ("/metrics", ops::metrics(app, &request, peer)),
        (&M::GET, ["openapi.json"]) => ("/openapi.json", ops::openapi()),
        (&M::GET, ["docs"]) => ("/docs", ops::docs()),
        (&M::GET, ["voice"]) => ("/voice", voice::page()),
        (&M::POST, ["api", "token"]) | (&M::POST, ["token"]) => {
            ("/api/token", token::create_token(app, request, peer).await)
        }
        (&M::POST, ["api", "auth", "logout"]) => {
            ("/api/auth/logout", token::logout(app, request).await)
        }
        (&M::POST, ["api", "tokens"]) => {
            ("/api/tokens", token::issue_device_token(app, request).await)
        }
        (&M::GET, ["api", "tokens"]) => ("/api/tokens", tokens::list_tokens(app, &request).await),
        (&M::DELETE, ["api", "tokens", id]) => (
            "/api/tokens/{id}",
            tokens::revoke_token(app, &request, id).await,
        ),
        (&M::GET, ["api", "users", "me"]) => ("/api/users/me", users::me(app, &request).await),
        (&M::GET, ["api", "users"]) => ("/api/users", users::list_users(app, &request).await),
        (&M::POST, ["api", "users"]) => ("/api/users", users::create_user(app, request).await),
        (&M::PUT, ["api", "users", name, "password"]) => (
            "/api/users/{username}/password",
            users::set_password(app, request, name).await,
        ),
        (&M::DELETE, ["api", "users", name]) => (
            "/api/users/{username}",
            users::delete_user(app, &request, name).await,
        ),
        (&M::GET, ["api", "agents"]) => ("/api/agents", agents::list_agents(app, &request)),
        (&M::POST, ["api", "agents"]) => ("/api/agents", agents::create_agent(app, request).await),
        (&M::GET, ["api", "agents", name]) => {
            ("/api/agents/{name}", agents::get_agent(app, &request, name))
        }
        (&M::PATCH, ["api", "agents", name]) => (
            "/api/agents/{name}",
            agents::patch_agent(app, request, name).await,
        ),
        (&M::DELETE, ["api", "agents", name]) => (
            "/api/agents/{name}",
            agents::delete_agent(app, &request, name).await,
        ),
        (&M::POST, ["api", "agents", name, "start"]) => (
            "/api/agents/{name}/start",
            agents::set_agent_stopped(app, &request, name, false).await,
        ),
        (&M::POST, ["api", "agents", name, "stop"]) => (
            "/api/agents/{name}/stop",
            agents::set_agent_stopped(app, &request, name, true).await,
        ),
        (&M::GET, ["api", "agents", name, "shares"]) => (
            "/api/agents/{name}/shares",
            agents::list_shares(app, &request, name).await,
        ),
        (&M::POST, ["api", "agents", name, "shares"]) => (
            "/api/agents/{name}/shares",
            agents::add_share(app, request, name).await,
        ),
        (&M::DELETE, ["api", "agents", name, "shares", username]) => (
            "/api/agents/{name}/shares/{username}",
            agents::remove_share(app, &request, name, username).await,
        ),
        (&M::POST, ["api", "agents", name, "chat"]) => (
            "/api/agents/{name}/chat",
            chat::chat(app, request, name).await,
        ),
        (&M::POST, ["api", "agents", name, "task"]) => (
            "/api/agents/{name}/task",
            tasks::submit_task(app, request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "chat", "sessions"]) => (
            "/api/agents/{name}/chat/sessions",
            sessions::list_sessions(app, &request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "chat", "sessions", id]) => (
            "/api/agents/{name}/chat/sessions/{id}",
            sessions::get_session(app, &request, name, id).await,
        ),
        (&M::POST, ["api", "agents", name, "chat", "sessions", id, "close"]) => (
            "/api/agents/{name}/chat/sessions/{id}/close",
            sessions::close_session(app, &request, name, id).await,
        ),
        (&M::GET, ["api", "agents", name, "chat", "history", "persistent"]) => (
            "/api/agents/{name}/chat/history/persistent",
            sessions::persistent_history(app, &request, name).await,
        ),
        (&M::DELETE, ["api", "agents", name, "chat", "history"]) => (
            "/api/agents/{name}/chat/history",
            sessions::reset_history(app, &request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "activity"]) => (
            "/api/agents/{name}/activity",
            sessions::activity(app, &request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "executions"]) => (
            "/api/agents/{name}/executions",
            executions::list_executions(app, &request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "executions", "running"]) => (
            "/api/agents/{name}/executions/running",
            executions::running_executions(app, &request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "executions", id]) => (
            "/api/agents/{name}/executions/{id}",
            executions::get_execution(app, &request, name, id).await,
        ),
        (&M::GET, ["api", "agents", name, "executions", id, "stream"]) => (
            "/api/agents/{name}/executions/{id}/stream",
            executions::stream_execution(app, &request, name, id).await,
        ),
        (&M::POST, ["api", "agents", name, "executions", id, "terminate"]) => (
            "/api/agents/{name}/executions/{id}/terminate",
            executions::terminate_execution(app, &request, name, id).await,
        ),
        (&M::POST, ["api", "agents", name, "public-links"]) => (
            "/api/agents/{name}/public-links",
            links::create_link(app, request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "public-links"]) => (
            "/api/agents/{name}/public-links",
            links::list_links(app, &request, name).await,
        ),
        (&M::PATCH, ["api", "agents", name, "public-links", id]) => (
            "/api/agents/{name}/public-links/{link_id}",
            links::patch_link(app, request, name, id).await,
        ),
        (&M::DELETE, ["api", "agents", name, "public-links", id]) => (
            "/api/agents/{name}/public-links/{link_id}",
            links::delete_link(app, &request, name, id).await,
        ),
        (&M::GET, ["api", "public", "link", token]) => (
            "/api/public/link/{token}",
            public::get_link(app, &request, peer, token).await,
        ),
        (&M::POST, ["api", "public", "chat", token]) => (
            "/api/public/chat/{token}",
            public::chat(app, request, peer, token).await,
        ),
        (&M::GET, ["api", "public", "history", token]) => (
            "/api/public/history/{token}",
            public::history(app, &request, peer, token).await,
        ),
        (&M::GET, ["p", _token]) => ("/p/{token}", public::page()),
        (&M::GET, ["api", "paid", name, "info"]) => (
            "/api/paid/{agent}/info",
            paid::paid_info(app, &request, name),
        ),
        (&M::POST, ["api", "paid", name, "chat"]) => (
            "/api/paid/{agent}/chat",
            paid::paid_chat(app, request, name).await,
        ),
        (&M::GET, ["api", "paid", name, "receipts", id]) => (
            "/api/paid/{agent}/receipts/{id}",
            paid::paid_receipt(app, &request, name, id).await,
        ),
        (&M::OPTIONS, ["api", "paid", _, "receipts", _]) => {
            ("/api/paid/{agent}/receipts/{id}", paid::paid_preflight())
        }
        (&M::OPTIONS, ["api", "paid", _, "info"]) => {
            ("/api/paid/{agent}/info", paid::paid_preflight())
        }
        (&M::OPTIONS, ["api", "paid", _, "chat"]) => {
            ("/api/paid/{agent}/chat", paid::paid_preflight())
        }
        (&M::POST, ["api", "agents", name, "voice", "start"]) => (
            "/api/agents/{name}/voice/start",
            voice::start_voice(app, request, name).await,
        ),
        (&M::POST, ["api", "agents", name, "voice", "stop"]) => (
            "/api/agents/{name}/voice/stop",
            voice::stop_voice(app, request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "voice", "status"]) => (
            "/api/agents/{name}/voice/status",
            voice::voice_status(app, &request, name).await,
        ),
        (&M::GET, ["api", "agents", name, "voice", "ws"]) => (
            "/api/agents/{name}/voice/ws",
            voice::voice_socket(app, request, name).await,
        ),
        _ => ("unmatched", Ok(unmatched(&method, &segments))),
    }
}

/// The answer to HEAD: the GET answer's status and headers, its length when known, no body.
/// hyper leaves out the body of a HEAD answer on HTTP/1 but not in every case on HTTP/2, and
/// a streamed body would keep its producer running for nothing.
fn without_body(response: Response) -> Response {
    use hyper::body::Body as _;
    let (mut parts, body) = response.into_parts();
    if let Some(length) = body.size_hint().exact() {
        parts
            .headers
            .entry(hyper::header::CONTENT_LENGTH)
            .or_insert_with(|| length.into());
    }
    Response::from_parts(parts, body::Body::empty())
}

/// 405 for a known path with another method, with the methods it takes in `Allow` (RFC 9110
/// requires it), else 404.
fn unmatched(method: &Method, segments: &[&str]) -> Response {
    let known = [
        "healthz",
        "readyz",
        "metrics",
        "openapi.json",
        "docs",
        "voice",
        "token",
        "api",
        "p",
    ];
    let path_known = segments.first().is_some_and(|s| known.contains(s)) && segments.len() <= 7;
    if path_known && !matches!(segments, ["api"] | ["api", ""]) && is_route_path(segments) {
        let mut response = ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here"),
        )
        .response();
        if let Ok(allow) = hyper::header::HeaderValue::from_str(&ops::allowed_methods(segments)) {
            response.headers_mut().insert(hyper::header::ALLOW, allow);
        }
        response
    } else {
        ApiError::not_found("route").response()
    }
}

/// True when some route has this path (with any method).
fn is_route_path(segments: &[&str]) -> bool {
    matches!(
        segments,
        ["healthz"]
            | ["readyz"]
            | ["metrics"]
            | ["openapi.json"]
            | ["docs"]
            | ["voice"]
            | ["token"]
            | ["api", "token"]
            | ["api", "auth", "logout"]
            | ["api", "tokens"]
            | ["api", "tokens", _]
            | ["api", "users"]
            | ["api", "users", _]
            | ["api", "users", _, "password"]
            | ["api", "agents"]
            | ["api", "agents", _]
            | ["api", "agents", _, "start"]
            | ["api", "agents", _, "stop"]
            | ["api", "agents", _, "shares"]
            | ["api", "agents", _, "shares", _]
            | ["api", "agents", _, "chat"]
            | ["api", "agents", _, "task"]
            | ["api", "agents", _, "chat", "sessions"]
            | ["api", "agents", _, "chat", "sessions", _]
            | ["api", "agents", _, "chat", "sessions", _, "close"]
            | ["api", "agents", _, "chat", "history"]
            | ["api", "agents", _, "chat", "history", "persistent"]
            | ["api", "agents", _, "activity"]
            | ["api", "agents", _, "executions"]
            | ["api", "agents", _, "executions", _]
            | ["api", "agents", _, "executions", _, "stream"]
            | ["api", "agents", _, "executions", _, "terminate"]
            | ["api", "agents", _, "public-links"]
            | ["api", "agents", _, "public-links", _]
            | ["api", "public", "link", _]
            | ["api", "public", "chat", _]
            | ["api", "public", "history", _]
            | ["p", _]
            | ["api", "paid", _, "info"]
            | ["api", "paid", _, "chat"]
            | ["api", "paid", _, "receipts", _]
            | [
                "api",
                "agents",
                _,
                "voice",
                "start" | "stop" | "status" | "ws"
            ]
    )
}

/// The caller of a request with a bearer token, or 401.
pub fn authenticate(app: &App, request: &Request<Incoming>) -> Result<Caller, ApiError> {
    let header = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(crate::auth::Error::Missing)?;
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .ok_or(crate::auth::Error::Missing)?;
    Ok(app.auth().verify(token.trim())?)
}

/// The caller, who must be allowed `scope`.
pub fn caller_with_scope(
    app: &App,
    request: &Request<Incoming>,
    scope: &str,
) -> Result<Caller, ApiError> {
    let caller = authenticate(app, request)?;
    caller.require_scope(scope)?;
    Ok(caller)
}

/// The caller, who must be allowed one of `scopes`.
pub fn caller_with_any_scope(
    app: &App,
    request: &Request<Incoming>,
    scopes: &[&str],
) -> Result<Caller, ApiError> {
    let caller = authenticate(app, request)?;
    if !scopes
        .iter()
        .any(|scope| caller.require_scope(scope).is_ok())
    {
        caller.require_scope(scopes[0])?;
    }
    Ok(caller)
}

/// Who may see agents and their executions: chat devices, and task devices (which must find
/// their agent and follow, poll or stop the runs they submitted).
pub const READ_SCOPES: &[&str] = &["chat", "tasks"];
