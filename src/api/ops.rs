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
    let health = app.store().health().state();
    let readable = app.store().read(|r| r.schema_version()).await.is_ok();
    let store_ok = readable && health == crate::store::health::State::Writable;
    let agents = app.agents().all().len();
    let min_free = app.config().store_min_free_bytes;
    let free = app.store().health().free_bytes();
    let mut warnings = Vec::new();
    if let Some(free) = free.filter(|free| *free < min_free) {
        warnings.push(format!(
            "the data dir's file system has {} MiB free, below store.min_free_mb ({} MiB)",
            free >> 20,
            min_free >> 20
        ));
    }
    let status = if store_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok(body::json(
        status,
        &json!({"status": if store_ok { "ready" } else { "not_ready" }, "store": store_ok, "store_state": health.as_str(), "store_free_bytes": free, "warnings": warnings, "agents": agents}),
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
        Bytes::from({
            store_gauges(app);
            app.metrics().render()
        }),
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

/// The store's health as gauges, read when the metrics are.
fn store_gauges(app: &App) {
    let (store, metrics) = (app.store(), app.metrics());
    let health = store.health();
    let counts = health.counts();
    let writable = health.state() == crate::store::health::State::Writable;
    metrics.set_gauge("outpost_store_writable".into(), i64::from(writable));
    metrics.set_gauge("outpost_store_refused_writes".into(), counts.refused as i64);
    metrics.set_gauge("outpost_store_io_errors".into(), counts.io_errors as i64);
    metrics.set_gauge("outpost_store_reopened".into(), counts.reopened as i64);
    if let Some(free) = health.free_bytes() {
        metrics.set_gauge("outpost_store_free_bytes".into(), free as i64);
    }
    if let Ok(file) = std::fs::metadata(store.path()) {
        metrics.set_gauge("outpost_store_file_bytes".into(), file.len() as i64);
    }
}
