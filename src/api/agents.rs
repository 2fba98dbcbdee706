//! Agents the caller may see.

use super::caller_with_scope;
use crate::app::App;
use crate::error::ApiResult;
use crate::http::body;
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::Value;

/// `GET /api/agents`
pub fn list_agents(app: &App, request: &Request<Incoming>) -> ApiResult {
    let caller = caller_with_scope(app, request, "chat")?;
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
    let caller = caller_with_scope(app, request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    Ok(body::json(StatusCode::OK, &agent.to_json(true)))
}
