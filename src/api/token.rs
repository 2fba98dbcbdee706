//! Tokens: login (OAuth2 password form or JSON), logout, and scoped device tokens.

use super::{authenticate, Query};
use crate::app::App;
use crate::config::parse_duration;
use crate::error::{ApiError, ApiResult};
use crate::http::body;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    username: String,
    password: String,
    // OAuth2 clients send these; they change nothing here.
    #[serde(default)]
    #[allow(dead_code)]
    grant_type: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    scope: Option<String>,
}

/// `POST /api/token` (and `/token`).
pub async fn create_token(app: &App, request: Request<Incoming>, peer: SocketAddr) -> ApiResult {
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let login: Login = if is_form {
        let bytes = body::read(request, app.config().max_body_bytes).await?;
        let form = Query::parse(Some(&String::from_utf8_lossy(&bytes)));
        let field = |name: &str| {
            form.get(name)
                .map(str::to_string)
                .ok_or_else(|| ApiError::bad_request(format!("the form needs {name}")))
        };
        Login {
            username: field("username")?,
            password: field("password")?,
            grant_type: None,
            scope: None,
        }
    } else {
        body::read_json(request, app.config().max_body_bytes).await?
    };
    let auth = app.auth();
    auth.check_throttle(&login.username, peer.ip())?;
    let user = app.users().verify(&login.username, &login.password).await?;
    let Some(user) = user else {
        auth.record_failure(&login.username, peer.ip());
        return Err(crate::auth::Error::BadCredentials.into());
    };
    auth.record_success(&user.username);
    let issued = auth.issue(&user, auth.ttl(), None);
    Ok(body::json(StatusCode::OK, &issued))
}

/// `POST /api/auth/logout`: revokes the presented token.
pub async fn logout(app: &App, request: Request<Incoming>) -> ApiResult {
    let caller = authenticate(app, &request)?;
    app.auth().revoke(&caller).await?;
    Ok(body::json(StatusCode::OK, &json!({"status": "logged_out"})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceTokenRequest {
    username: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    ttl: Option<String>,
    /// A name to tell the token apart by in `GET /api/tokens`.
    #[serde(default)]
    label: Option<String>,
}

/// The scopes a device token may carry.
pub const SCOPES: [&str; 3] = ["chat", "voice", "tasks"];
/// Device tokens live this long unless asked otherwise.
pub const DEVICE_TOKEN_TTL: &str = "30d";

/// Checks a scope string: space-separated names from `SCOPES`.
pub fn check_scope(scope: &str) -> Result<String, String> {
    let names: Vec<&str> = scope.split_whitespace().collect();
    if names.is_empty() {
        return Err("scope must name at least one of chat, voice, tasks".into());
    }
    if let Some(bad) = names.iter().find(|n| !SCOPES.contains(n)) {
        return Err(format!(
            "unknown scope {bad:?}; scopes are chat, voice, tasks"
        ));
    }
    Ok(names.join(" "))
}

/// `POST /api/tokens` (admin): a long-lived, optionally scoped token for a device.
pub async fn issue_device_token(app: &App, request: Request<Incoming>) -> ApiResult {
    let caller = authenticate(app, &request)?;
    caller.require_admin()?;
    let wanted: DeviceTokenRequest = body::read_json(request, app.config().max_body_bytes).await?;
    let ttl = parse_duration(wanted.ttl.as_deref().unwrap_or(DEVICE_TOKEN_TTL))
        .map_err(|m| ApiError::invalid(format!("ttl: {m}")))?;
    if ttl.is_zero() || ttl.as_secs() > 3 * 365 * 86_400 {
        return Err(ApiError::invalid("ttl must be between 1 s and 3 years"));
    }
    let scope = wanted
        .scope
        .as_deref()
        .map(check_scope)
        .transpose()
        .map_err(ApiError::invalid)?;
    if wanted
        .label
        .as_ref()
        .is_some_and(|l| l.chars().count() > 200)
    {
        return Err(ApiError::invalid("label is at most 200 characters"));
    }
    let user = app.users().get(&wanted.username).await?;
    let (issued, record) = app
        .auth()
        .issue_device(&user, ttl, scope, wanted.label)
        .await?;
    let mut answer = serde_json::to_value(&issued).unwrap_or_default();
    answer["id"] = json!(record.id);
    Ok(body::json(StatusCode::CREATED, &answer))
}
