//! Users: who am I, and the admin's list, create and delete.

use super::{authenticate, Query};
use crate::app::App;
use crate::auth::Require;
use crate::body;
use crate::error::{ApiError, ApiResult};
use crate::records::{Role, User};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

fn view(user: &User) -> Value {
    json!({"username": user.username, "role": user.role, "created_at": user.created_at})
}

/// `GET /api/users/me`
pub async fn me(app: &App, request: &Request<Incoming>) -> ApiResult {
    let caller = authenticate(app, request)?;
    let user = app.users().get(&caller.username).await?;
    Ok(body::json(StatusCode::OK, &view(&user)))
}

/// `GET /api/users` (admin)
pub async fn list_users(app: &App, request: &Request<Incoming>) -> ApiResult {
    authenticate(app, request)?.require_admin()?;
    let query = Query::parse(request.uri().query());
    let limit = query.limit()?;
    let users = app.users().list().await?;
    let after = query.get("cursor").map(str::to_string);
    let page: Vec<&User> = users
        .iter()
        .filter(|u| after.as_deref().is_none_or(|a| u.username.as_str() > a))
        .take(limit + 1)
        .collect();
    let next_cursor = (page.len() > limit).then(|| page[limit - 1].username.clone());
    let items: Vec<Value> = page.iter().take(limit).map(|u| view(u)).collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({"users": items, "next_cursor": next_cursor}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    username: String,
    password: String,
    #[serde(default = "default_role")]
    role: Role,
}

fn default_role() -> Role {
    Role::User
}

/// `POST /api/users` (admin)
pub async fn create_user(app: &App, request: Request<Incoming>) -> ApiResult {
    authenticate(app, &request)?.require_admin()?;
    let new: NewUser = body::read_json(request, app.config().max_body_bytes).await?;
    let user = app
        .users()
        .create(&new.username, &new.password, new.role)
        .await?;
    app.auth().account_added(&user);
    Ok(body::json(StatusCode::CREATED, &view(&user)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassword {
    password: String,
    /// Needed when users change their own password; an admin changes anyone's without it.
    #[serde(default)]
    current_password: Option<String>,
}

/// `PUT /api/users/{username}/password`: an admin sets anyone's, a user their own (giving the
/// current one). Every token minted before is refused from now on, and its streams and calls
/// end, the caller's own included.
pub async fn set_password(app: &App, request: Request<Incoming>, username: &str) -> ApiResult {
    let caller = authenticate(app, &request)?;
    if caller.scope.is_some() {
        return Err(crate::auth::Error::OutOfScope.into());
    }
    let own = caller.username == username;
    if !caller.is_admin() && !own {
        return Err(crate::auth::Error::AdminOnly.into());
    }
    let new: NewPassword = body::read_json(request, app.config().max_body_bytes).await?;
    if !caller.is_admin() {
        let current = new.current_password.as_deref().unwrap_or_default();
        if app.users().verify(username, current).await?.is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the current password is wrong",
            ));
        }
    }
    let user = app.users().set_password(username, &new.password).await?;
    app.auth().account_changed(&user);
    Ok(body::json(
        StatusCode::OK,
        &json!({"username": user.username, "password_changed": true}),
    ))
}

/// `DELETE /api/users/{username}` (admin): see `App::remove_account`.
pub async fn delete_user(app: &App, request: &Request<Incoming>, username: &str) -> ApiResult {
    let caller = authenticate(app, request)?;
    caller.require_admin()?;
    let (removed, heir) = app.remove_account(&caller, username).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"deleted": true, "username": username, "removed": removed, "agents_to": heir}),
    ))
}
