//! Operations: health, readiness, metrics, the OpenAPI document and its offline docs page.

use super::authenticate;
use crate::app::App;
use crate::auth::Require;
use crate::body;
use crate::error::ApiResult;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use std::net::SocketAddr;

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("openapi.json");
/// The interactive page for it; it loads `/openapi.json` and nothing from elsewhere.
const DOCS_PAGE: &str = include_str!("docs.html");
/// The docs page runs its own inline script and style and talks to this origin, nothing else;
/// no other site may frame it.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /healthz`
pub fn healthz() -> ApiResult {
    Ok(body::json(StatusCode::OK, &json!({"status": "ok"})))
}

/// `GET /readyz`: the store answers and the agents are loaded.
pub async fn readyz(app: &App) -> ApiResult {
    let store_ok = app.store().read(|r| r.schema_version()).await.is_ok();
    let agents = app.agents().all().len();
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(body::json(
        status,
        &json!({"status": if store_ok { "ready" } else { "not_ready" }, "store": store_ok, "agents": agents}),
    ))
}

/// `GET /metrics`: for an admin token, or any caller on loopback.
pub fn metrics(app: &App, request: &Request<Incoming>, peer: SocketAddr) -> ApiResult {
    if !peer.ip().is_loopback() {
        authenticate(app, request)?.require_admin()?;
    }
    Ok(body::with_type(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        Bytes::from(app.metrics().render()),
    ))
}

/// `GET /openapi.json`
pub fn openapi() -> ApiResult {
    Ok(body::with_type(
        StatusCode::OK,
        "application/json",
        Bytes::from_static(OPENAPI.as_bytes()),
    ))
}

/// `GET /docs`
pub fn docs() -> ApiResult {
    Ok(body::page(DOCS_PAGE, DOCS_POLICY))
}
