//! `/api/agents/{name}/public-links`: the owner's (or an admin's) side of public links.
//! The token and the URL are shown once, in the answer to the creation.

use super::{authenticate, Query};
use crate::app::App;
use crate::body;
use crate::caller::Caller;
use crate::config::Tls;
use crate::error::{ApiError, ApiResult};
use crate::links::{LinkPatch, NewLink};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

/// `POST /api/agents/{name}/public-links`
pub async fn create_link(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let caller = full_caller(app, &request)?;
    let base = base_url(app, &request);
    let new: NewLink = body::read_json(request, app.config().max_body_bytes).await?;
    let created = app.links().create(&caller, name, new).await?;
    let mut link = app.links().to_json(&created.link);
    link["url"] = json!(format!("{base}/p/{}", created.token));
    link["token"] = json!(created.token);
    Ok(body::json(StatusCode::CREATED, &link))
}

/// `GET /api/agents/{name}/public-links`
pub async fn list_links(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = full_caller(app, request)?;
    let query = Query::parse(request.uri().query());
    let limit = query.limit()?;
    let page = app
        .links()
        .list(&caller, name, query.get("cursor"), limit)
        .await?;
    let links: Vec<Value> = page.links.iter().map(|l| app.links().to_json(l)).collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({"links": links, "next_cursor": page.next_cursor}),
    ))
}

/// `PATCH /api/agents/{name}/public-links/{link_id}`
pub async fn patch_link(app: &App, request: Request<Incoming>, name: &str, id: &str) -> ApiResult {
    let caller = full_caller(app, &request)?;
    let patch: LinkPatch = body::read_json(request, app.config().max_body_bytes).await?;
    let link = app.links().patch(&caller, name, id, patch).await?;
    Ok(body::json(StatusCode::OK, &app.links().to_json(&link)))
}

/// `DELETE /api/agents/{name}/public-links/{link_id}`
pub async fn delete_link(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    id: &str,
) -> ApiResult {
    let caller = full_caller(app, request)?;
    app.links().delete(&caller, name, id).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"deleted": true, "id": id, "agent": name}),
    ))
}

/// The caller, who must hold a full (unscoped) token: device tokens do not manage links.
fn full_caller(app: &App, request: &Request<Incoming>) -> Result<Caller, ApiError> {
    let caller = authenticate(app, request)?;
    if caller.scope.is_some() {
        return Err(crate::auth::Error::OutOfScope.into());
    }
    Ok(caller)
}

/// Where visitors reach this box: `[server] public_url`, else the address the owner used.
fn base_url(app: &App, request: &Request<Incoming>) -> String {
    if let Some(url) = &app.config().public_url {
        return url.trim_end_matches('/').to_string();
    }
    let scheme = if app.config().tls == Tls::Off {
        "http"
    } else {
        "https"
    };
    let host = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic() && b != b'/'));
    match host {
        Some(host) => format!("{scheme}://{host}"),
        None => String::new(),
    }
}
