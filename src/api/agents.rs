//! Agents the caller may see.

use super::{authenticate, caller_with_any_scope, READ_SCOPES};
use crate::agents::{AgentPatch, NewAgent};
use crate::app::App;
use crate::body;
use crate::error::{ApiError, ApiResult};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// `GET /api/agents`
pub fn list_agents(app: &App, request: &Request<Incoming>) -> ApiResult {
    let caller = caller_with_any_scope(app, request, READ_SCOPES)?;
    let agents: Vec<Value> = app
        .agents()
        .list_visible(&caller)
        .iter()
        .map(|a| a.to_json(false))
        .collect();
    // A bare array, as clients of the original platform expect.
    Ok(body::json(StatusCode::OK, &Value::Array(agents)))
}

/// `GET /api/agents/{name}`
pub fn get_agent(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_any_scope(app, request, READ_SCOPES)?;
    let agent = app.agents().visible(&caller, name)?;
    Ok(body::json(StatusCode::OK, &agent.to_json(true)))
}

/// `POST /api/agents`
pub async fn create_agent(app: &App, request: Request<Incoming>) -> ApiResult {
    let caller = full_caller(app, &request)?;
    let new: NewAgent = body::read_json(request, app.config().max_body_bytes).await?;
    let config = app.config();
    let agent = app
        .agents()
        .create(
            &caller,
            new,
            &config.default_engine,
            config.users_may_create_agents,
        )
        .await?;
    Ok(body::json(StatusCode::CREATED, &agent.to_json(true)))
}

/// `PATCH /api/agents/{name}`
pub async fn patch_agent(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let caller = full_caller(app, &request)?;
    app.agents()
        .visible(&caller, name)?
        .require_manager(&caller)?;
    let patch: AgentPatch = body::read_json(request, app.config().max_body_bytes).await?;
    let agent = app.agents().patch(&caller, name, patch).await?;
    Ok(body::json(StatusCode::OK, &agent.to_json(true)))
}

/// `DELETE /api/agents/{name}`
pub async fn delete_agent(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = full_caller(app, request)?;
    let removed = app.delete_agent(&caller, name).await?;
    Ok(body::json(
        StatusCode::OK,
        &json!({"deleted": true, "name": name, "removed": removed}),
    ))
}

/// `POST /api/agents/{name}/start` and `/stop`
pub async fn set_agent_stopped(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    stopped: bool,
) -> ApiResult {
    let caller = full_caller(app, request)?;
    let agent = app.agents().set_stopped(&caller, name, stopped).await?;
    Ok(body::json(StatusCode::OK, &agent.to_json(true)))
}

/// `GET /api/agents/{name}/shares`
pub async fn list_shares(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = full_caller(app, request)?;
    let agent = app.agents().visible(&caller, name)?;
    agent.require_manager(&caller)?;
    let shares: Vec<Value> = agent
        .config
        .shared_with
        .iter()
        .map(|u| json!({"username": u}))
        .collect();
    Ok(body::json(StatusCode::OK, &json!({"shares": shares})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewShare {
    username: String,
}

/// `POST /api/agents/{name}/shares`
pub async fn add_share(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let caller = full_caller(app, &request)?;
    app.agents()
        .visible(&caller, name)?
        .require_manager(&caller)?;
    let share: NewShare = body::read_json(request, app.config().max_body_bytes).await?;
    app.users().get(&share.username).await?;
    app.agents()
        .add_share(&caller, name, &share.username)
        .await?;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({"agent": name, "username": share.username}),
    ))
}

/// `DELETE /api/agents/{name}/shares/{username}`
pub async fn remove_share(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    username: &str,
) -> ApiResult {
    let caller = full_caller(app, request)?;
    if !app.agents().remove_share(&caller, name, username).await? {
        return Err(ApiError::not_found("share"));
    }
    Ok(body::json(
        StatusCode::OK,
        &json!({"deleted": true, "agent": name, "username": username}),
    ))
}

/// The caller, who must hold a full (unscoped) token: device tokens do not manage agents.
fn full_caller(app: &App, request: &Request<Incoming>) -> Result<crate::caller::Caller, ApiError> {
    let caller = authenticate(app, request)?;
    if caller.scope.is_some() {
        return Err(crate::auth::Error::OutOfScope.into());
    }
    Ok(caller)
}
