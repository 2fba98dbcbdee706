//! Users: who am I, and the admin's list, create and delete.

use super::{authenticate, Query};
use crate::app::App;
use crate::error::ApiResult;
use crate::http::body;
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

/// `DELETE /api/users/{username}` (admin)
pub async fn delete_user(app: &App, request: &Request<Incoming>, username: &str) -> ApiResult {
    authenticate(app, request)?.require_admin()?;
    app.users().remove(username).await?;
    app.auth().account_removed(username);
    Ok(body::json(
        StatusCode::OK,
        &json!({"deleted": true, "username": username}),
    ))
}
