//! The visitor routes of public links (no account): what a token opens, chat, history, and
//! the chat page at `/p/{token}`. Visitors get the text of answers only: see
//! `links::answer`. The client address comes from `X-Forwarded-For` only behind a trusted
//! proxy.

use super::Query;
use crate::app::App;
use crate::body::{self, Body, Response};
use crate::error::{turn_failure, ApiError, ApiResult, Audience};
use crate::executions::Follow;
use crate::links;
use crate::records::Execution;
use crate::turns::Started;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

/// The chat page; it reads its token from its own address and loads nothing from elsewhere.
const PAGE: &str = include_str!("public_page.html");
/// The page may run its own inline script and style and talk to this origin, nothing else.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VisitorMessage {
    message: String,
    #[serde(default)]
    session_id: Option<crate::ids::SessionId>,
}

/// The client's address: the peer, or what a trusted proxy says it forwarded for.
fn client(app: &App, request: &Request<Incoming>, peer: SocketAddr) -> IpAddr {
    let forwarded = request
        .headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok());
    links::client_ip(peer.ip(), forwarded, &app.config().public.trusted_proxies)
}

/// `GET /api/public/link/{token}`
pub async fn get_link(
    app: &App,
    request: &Request<Incoming>,
    peer: SocketAddr,
    token: &str,
) -> ApiResult {
    let ip = client(app, request, peer);
    let info = app.links().info(ip, token).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"valid": true, "agent_display_name": info.display_name, "description": info.description}),
    ))
}

/// `POST /api/public/chat/{token}`: one JSON document by default, NDJSON stream-json with
/// `Accept: application/x-ndjson`.
pub async fn chat(
    app: &App,
    request: Request<Incoming>,
    peer: SocketAddr,
    token: &str,
) -> ApiResult {
    let ip = client(app, &request, peer);
    let stream = request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/x-ndjson"));
    let visitor: VisitorMessage = body::read_json(request, app.config().max_body_bytes).await?;
    let turn = app
        .links()
        .chat(ip, token, visitor.message, visitor.session_id)
        .await?;
    match turn.started {
        Started::Live { live, .. } if stream => {
            Ok(visitor_stream(app.executions().follow_live(live)))
        }
        Started::Live { live, .. } => Ok(visitor_document(&live.finished().await)),
        Started::Replay(execution) => Ok(visitor_document(&execution)),
    }
}

/// `GET /api/public/history/{token}?session_id=`
pub async fn history(
    app: &App,
    request: &Request<Incoming>,
    peer: SocketAddr,
    token: &str,
) -> ApiResult {
    let ip = client(app, request, peer);
    let query = Query::parse(request.uri().query());
    let session_id = query
        .get("session_id")
        .ok_or_else(|| ApiError::bad_request("session_id is required"))?;
    let limit = query.number("limit", 100, 1, 500)? as usize;
    let history = app
        .links()
        .history(ip, token, session_id, query.get("cursor"), limit)
        .await?;
    let messages: Vec<Value> = history
        .messages
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "role": m.role,
                "content": m.content,
                "created_at": m.created_at,
                "status": m.status,
            })
        })
        .collect();
    let mut response = body::json(
        StatusCode::OK,
        &json!({"session_id": history.session_id, "messages": messages, "next_cursor": history.next_cursor}),
    );
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /p/{token}`: the chat page. The same page for every token; it asks the API whether
/// its token is good, so serving it tells nothing.
pub fn page() -> ApiResult {
    // The token is in the address: the page's no-referrer policy keeps it from other sites.
    Ok(body::page(PAGE, PAGE_POLICY))
}

/// Streams the visitor's copy of a turn's events as NDJSON, flushed as they come.
fn visitor_stream(mut follow: Follow) -> Response {
    let (tx, stream) = Body::channel();
    tokio::spawn(async move {
        while let Some(batch) = follow.next_batch().await {
            let mut chunk = Vec::new();
            for line in batch.iter().filter_map(|e| links::visitor_event(&e.json)) {
                chunk.extend_from_slice(line.as_bytes());
                chunk.push(b'\n');
            }
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                break; // the visitor left; the turn goes on without them
            }
        }
    });
    let mut response = hyper::Response::new(stream);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// The visitor's one-document answer: the errors are chat's (see [`turn_failure`]) with
/// generic messages; a turn that ran and failed is a 200 whose `status` says so.
fn visitor_document(execution: &Execution) -> Response {
    match turn_failure(execution, Audience::Visitor) {
        Some(err) => err.response(),
        None => body::json(StatusCode::OK, &links::visitor_answer(execution)),
    }
}
