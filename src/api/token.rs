//! Tokens: login (OAuth2 password form or JSON), logout, and scoped device tokens.

use super::{authenticate, Query};
use crate::app::App;
use crate::auth::Require;
use crate::body;
use crate::config::parse_duration;
use crate::error::{ApiError, ApiResult};
use crate::users::{MAX_PASSWORD_BYTES, MAX_USERNAME_BYTES};
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

/// A login body is at most this long: a 64-byte username and a 1 KiB password, JSON-escaped
/// at worst, fit; anything longer is refused (413) before it is read.
const LOGIN_BODY_BYTES: usize = 8 * 1024;

/// `POST /api/token` (and `/token`).
///
/// Cheap refusals first: an oversized body or field (413 / 422) before anything is kept, then
/// the throttle's reservation (429 `too_many_attempts`) before any hash, then the hashing
/// pool (429 `login_busy` when its queue is full).
pub async fn create_token(app: &App, request: Request<Incoming>, peer: SocketAddr) -> ApiResult {
    let metrics = app.metrics();
    let login = match read_login(request).await {
        Ok(login) => login,
        Err(err) => {
            if err.code == "body_too_large" || err.code == "invalid_field" {
                metrics.refuse_login("too_long");
            }
            return Err(err);
        }
    };
    let auth = app.auth();
    let reservation = match auth.reserve_login(&login.username, peer.ip()) {
        Ok(reservation) => reservation,
        Err(err) => {
            metrics.refuse_login("throttled");
            return Err(err.into());
        }
    };
    let user = match app.users().verify(&login.username, &login.password).await {
        Ok(user) => user,
        Err(crate::users::Error::Busy) => {
            reservation.not_evaluated();
            metrics.refuse_login("busy");
            return Err(crate::users::Error::Busy.into());
        }
        // Counted as a failure: the reservation is dropped as it is.
        Err(err) => return Err(err.into()),
    };
    let Some(user) = user else {
        metrics.refuse_login("bad_credentials");
        return Err(crate::auth::Error::BadCredentials.into());
    };
    reservation.succeeded();
    let issued = auth.issue(&user, auth.ttl(), None);
    Ok(body::json(StatusCode::OK, &issued))
}

/// The login form or JSON body, its fields within their limits.
async fn read_login(request: Request<Incoming>) -> Result<Login, ApiError> {
    let is_form = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let login: Login = if is_form {
        let bytes = body::read(request, LOGIN_BODY_BYTES).await?;
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
        body::read_json(request, LOGIN_BODY_BYTES).await?
    };
    if login.username.len() > MAX_USERNAME_BYTES || login.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::invalid(format!(
            "usernames are at most {MAX_USERNAME_BYTES} bytes and passwords at most \
             {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(login)
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
