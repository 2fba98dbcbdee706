//! `POST /api/agents/{name}/task`: queue work; wait for it up to `wait_seconds`, or not.

use super::caller_with_scope;
use super::chat::{finished_document, idempotency_key};
use crate::app::App;
use crate::body;
use crate::config::bounds::{self, Number};
use crate::error::{ApiError, ApiResult};
use crate::tasks::{Submitted, TaskRequest};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskBody {
    message: String,
    #[serde(default)]
    async_mode: bool,
    #[serde(default)]
    session_id: Option<crate::ids::SessionId>,
    #[serde(default)]
    timeout_seconds: Option<Number>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    wait_seconds: Option<Number>,
}

const DEFAULT_WAIT_SECONDS: u64 = 120;

pub async fn submit_task(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, &request, "tasks")?;
    let agent = app.agents().visible(&caller, name)?;
    let idempotency_key = idempotency_key(&request)?;
    let task: TaskBody = body::read_json(request, app.config().max_body_bytes).await?;
    let cap = agent.config.timeout;
    let timeout = match task.timeout_seconds {
        None => cap,
        Some(seconds) => seconds
            .within("timeout_seconds", bounds::AGENT_TIMEOUT_SECONDS)
            .map(|s| Duration::from_secs(s).min(cap))
            .map_err(ApiError::invalid)?,
    };
    let wait = match task.wait_seconds {
        None => DEFAULT_WAIT_SECONDS,
        Some(seconds) => seconds
            .within("wait_seconds", bounds::TASK_WAIT_SECONDS)
            .map_err(ApiError::invalid)?,
    };
    let submitted = app
        .pool()
        .submit(TaskRequest {
            agent,
            username: caller.username.clone(),
            message: task.message,
            session_id: task.session_id,
            timeout,
            model: task.model,
            idempotency_key,
        })
        .await?;
    let (live, execution_id) = match submitted {
        Submitted::Replay(execution) => return Ok(finished_document(&execution, true)),
        Submitted::Accepted { live, execution_id } => (live, execution_id),
    };
    if task.async_mode {
        return Ok(body::json(
            StatusCode::ACCEPTED,
            &json!({"status": "queued", "execution_id": execution_id}),
        ));
    }
    match tokio::time::timeout(Duration::from_secs(wait), live.finished()).await {
        Ok(execution) => Ok(finished_document(&execution, false)),
        Err(_) => Ok(body::json(
            StatusCode::ACCEPTED,
            &json!({"status": "queued_timeout", "execution_id": execution_id}),
        )),
    }
}
