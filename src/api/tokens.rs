//! Device tokens on record: list them and revoke one (`POST /api/tokens` mints them).

use super::{authenticate, Query};
use crate::app::App;
use crate::auth::Error;
use crate::body;
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::records::DeviceToken;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{json, Value};

/// A device token as the API shows it (never the token itself, which is not kept).
pub fn view(token: &DeviceToken) -> Value {
    json!({
        "id": token.id,
        "username": token.username,
        "scope": token.scope,
        "label": token.label,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
    })
}

/// Managing tokens takes a full token: a scoped device token can only log itself out.
fn full_caller(app: &App, request: &Request<Incoming>) -> Result<Caller, ApiError> {
    let caller = authenticate(app, request)?;
    if caller.scope.is_some() {
        return Err(Error::OutOfScope.into());
    }
    Ok(caller)
}

/// `GET /api/tokens`: the caller's device tokens; an admin's list has everyone's
/// (`?username=` narrows it to one user).
pub async fn list_tokens(app: &App, request: &Request<Incoming>) -> ApiResult {
    let caller = full_caller(app, request)?;
    let query = Query::parse(request.uri().query());
    let mut tokens = app.auth().device_tokens(&caller, true).await?;
    if let Some(username) = query.get("username") {
        tokens.retain(|t| t.username == username);
    }
    let items: Vec<Value> = tokens.iter().map(view).collect();
    Ok(body::json(StatusCode::OK, &json!({"tokens": items})))
}

/// `DELETE /api/tokens/{id}`: revokes a device token, the caller's own or (admin) anyone's;
/// its open streams and calls end.
pub async fn revoke_token(app: &App, request: &Request<Incoming>, id: &str) -> ApiResult {
    let caller = full_caller(app, request)?;
    let token = app.auth().revoke_device_token(&caller, id).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"revoked": true, "token": view(&token)}),
    ))
}
