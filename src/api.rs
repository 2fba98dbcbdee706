//! Routing: the route table (`routes.rs`) names each route's method, path pattern (its
//! metrics label) and handler; handlers authenticate, parse, call one service, render.

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
mod routes;
mod sessions;
mod state;
mod tasks;
mod token;
mod tokens;
mod users;
mod voice;

use crate::app::App;
use crate::auth::Require;
use crate::body::{self, Response};
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use std::net::SocketAddr;
use std::time::Instant;

pub use query::Query;
use routes::Routed;
pub use state::Api;
pub use token::check_scope;

/// Answers one request.
pub async fn handle(app: &Api, request: Request<Incoming>, peer: SocketAddr) -> Response {
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

/// The route's metrics label and its answer.
async fn dispatch(
    app: &Api,
    request: Request<Incoming>,
    peer: SocketAddr,
) -> (&'static str, ApiResult) {
    // The handler may take the request, so the path is read from a clone of the URI, which
    // shares the request's bytes rather than copying them.
    let uri = request.uri().clone();
    let path = uri.path();
    // HEAD is answered as GET, without the body (`handle` drops it).
    let method = match request.method() {
        &Method::HEAD => &Method::GET,
        method => method,
    };
    match routes::find(method, path) {
        Some((route, params)) => {
            let routed = Routed {
                app,
                request,
                peer,
                params,
            };
            (route.label, route.answer(routed).await)
        }
        None => ("unmatched", Ok(unmatched(request.method(), path))),
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

/// 405 for a routed path with another method, with the methods it takes in `Allow`, else 404.
fn unmatched(method: &Method, path: &str) -> Response {
    let Some(allow) = routes::allowed(path) else {
        return ApiError::not_found("route").response();
    };
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed here"),
    )
    .response();
    if let Ok(allow) = hyper::header::HeaderValue::from_str(&allow) {
        response.headers_mut().insert(hyper::header::ALLOW, allow);
    }
    response
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
