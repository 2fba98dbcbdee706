//! Operations: health, readiness, metrics, the OpenAPI document and its offline docs page.

use super::authenticate;
use crate::app::App;
use crate::body;
use crate::error::ApiResult;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::OnceLock;

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("openapi.json");
/// The interactive page for it; it loads `/openapi.json` and nothing from elsewhere.
const DOCS_PAGE: &str = include_str!("docs.html");
/// The docs page runs its own inline script and style and talks to this origin, nothing else;
/// no other site may frame it.
const DOCS_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The methods `openapi.json` lists for the path `segments` (and HEAD beside GET), as a
/// 405's `Allow` names them.
/// A `{param}` segment matches any, and the paths with the most literal segments win, as
/// OpenAPI matches concrete paths before templated ones (`/api/users/me` is not
/// `/api/users/{username}`). The document is checked against the router
/// (`openapi_check.rs`), so this needs no second list of routes.
pub fn allowed_methods(segments: &[&str]) -> String {
    static PATHS: OnceLock<Vec<(Vec<String>, Vec<String>)>> = OnceLock::new();
    let paths = PATHS.get_or_init(|| {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json is JSON");
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        paths
            .into_iter()
            .map(|(template, item)| {
                let segments = template.split('/').skip(1).map(str::to_string).collect();
                let methods = item
                    .as_object()
                    .map(|item| {
                        let methods = ["get", "post", "put", "patch", "delete", "options", "head"];
                        let keys = item.keys().filter(|k| methods.contains(&k.as_str()));
                        keys.map(|m| m.to_uppercase()).collect()
                    })
                    .unwrap_or_default();
                (segments, methods)
            })
            .collect()
    });
    let fitting: Vec<(usize, &Vec<String>)> = paths
        .iter()
        .filter(|(template, _)| {
            template.len() == segments.len()
                && template
                    .iter()
                    .zip(segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
        .map(|(template, methods)| {
            let literals = template.iter().filter(|t| !t.starts_with('{')).count();
            (literals, methods)
        })
        .collect();
    let most = fitting.iter().map(|(literals, _)| *literals).max();
    let mut allowed: Vec<&str> = Vec::new();
    for (_, methods) in fitting.iter().filter(|(l, _)| Some(*l) == most) {
        for method in methods.iter() {
            if !allowed.contains(&method.as_str()) {
                allowed.push(method);
            }
        }
    }
    // Every GET route answers HEAD too.
    if allowed.contains(&"GET") {
        allowed.push("HEAD");
    }
    allowed.join(", ")
}

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
