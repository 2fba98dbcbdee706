//! The executions log of an agent: list, one, running, follow (SSE), terminate.

use super::{caller_with_any_scope, Query, READ_SCOPES};
use crate::agents::Agent;
use crate::app::App;
use crate::body::{self, Body};
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::error::{ApiError, ApiResult};
use crate::executions::StopReason;
use crate::records::{Execution, ExecutionKind, ExecutionRow, ExecutionStatus};
use crate::store::ExecutionFilter;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde_json::json;
use std::time::Duration;

/// Comment lines that keep idle SSE connections open through proxies.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

fn filter_for(agent: &Agent, caller: &Caller) -> ExecutionFilter {
    ExecutionFilter {
        username: (!agent.managed_by(caller)).then(|| caller.username.clone()),
        ..ExecutionFilter::default()
    }
}

/// `GET /api/agents/{name}/executions`
pub async fn list_executions(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_any_scope(app, request, READ_SCOPES)?;
    let agent = app.agents().visible(&caller, name)?;
    let query = Query::parse(request.uri().query());
    let mut filter = filter_for(&agent, &caller);
    filter.kind = query.parsed("kind", ExecutionKind::parse, "an execution kind")?;
    filter.status = query.parsed("status", ExecutionStatus::parse, "an execution status")?;
    filter.since = query.parsed("since", Timestamp::parse_rfc3339, "an RFC 3339 time")?;
    let cursor = query.get("cursor").map(str::to_string);
    if cursor
        .as_deref()
        .is_some_and(|c| !crate::ids::looks_like_id(c))
    {
        return Err(ApiError::bad_request("invalid cursor"));
    }
    let limit = query.limit()?;
    let agent_name = agent.name().to_string();
    let (executions, more) = app
        .store()
        .read(move |r| r.executions_of(&agent_name, &filter, cursor.as_deref(), limit))
        .await?;
    let next_cursor = more
        .then(|| executions.last().map(|e| e.id.clone()))
        .flatten();
    let rows: Vec<ExecutionRow> = executions.iter().map(Execution::row).collect();
    Ok(body::json(
        StatusCode::OK,
        &json!({"executions": rows, "next_cursor": next_cursor}),
    ))
}

/// `GET /api/agents/{name}/executions/running`
pub async fn running_executions(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_any_scope(app, request, READ_SCOPES)?;
    let agent = app.agents().visible(&caller, name)?;
    let mut filter = filter_for(&agent, &caller);
    filter.status = Some(ExecutionStatus::Running);
    let agent_name = agent.name().to_string();
    let (executions, _) = app
        .store()
        .read(move |r| r.executions_of(&agent_name, &filter, None, usize::MAX))
        .await?;
    let rows: Vec<ExecutionRow> = executions.iter().map(Execution::row).collect();
    Ok(body::json(StatusCode::OK, &json!({"executions": rows})))
}

/// The execution `id` of `agent`, if the caller may see it.
async fn visible_execution(
    app: &App,
    agent: &Agent,
    caller: &Caller,
    id: &str,
) -> Result<Execution, ApiError> {
    if !crate::ids::looks_like_id(id) {
        return Err(ApiError::not_found("execution"));
    }
    let execution_id = id.to_string();
    let execution = app
        .store()
        .read(move |r| r.execution(&execution_id))
        .await?;
    execution
        .filter(|e| e.agent == agent.name())
        .filter(|e| {
            agent.managed_by(caller) || e.username.as_deref() == Some(caller.username.as_str())
        })
        .ok_or_else(|| ApiError::not_found("execution"))
}

/// `GET /api/agents/{name}/executions/{id}`
pub async fn get_execution(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    id: &str,
) -> ApiResult {
    let caller = caller_with_any_scope(app, request, READ_SCOPES)?;
    let agent = app.agents().visible(&caller, name)?;
    let execution = visible_execution(app, &agent, &caller, id).await?;
    Ok(body::json(StatusCode::OK, &execution))
}

/// `GET /api/agents/{name}/executions/{id}/stream`: Server-Sent Events.
pub async fn stream_execution(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    id: &str,
) -> ApiResult {
    let caller = caller_with_any_scope(app, request, READ_SCOPES)?;
    let agent = app.agents().visible(&caller, name)?;
    let execution = visible_execution(app, &agent, &caller, id).await?;
    let query = Query::parse(request.uri().query());
    let last_event_id = request
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let after = match last_event_id.as_deref().or(query.get("after")) {
        None => None,
        Some(text) => Some(text.trim().parse::<u32>().map_err(|_| {
            ApiError::bad_request("Last-Event-ID / after must be an event sequence number")
        })?),
    };
    let mut follow = app.executions().follow(&execution.id, after).await?;
    let mut end = app.auth().session_end(&caller);
    let store = app.store().clone();
    let execution_id = execution.id.clone();
    let (tx, stream) = Body::channel();
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                next = tokio::time::timeout(KEEPALIVE_INTERVAL, follow.next_batch()) => next,
                // The caller's token is no longer accepted: one `error` event, then the end.
                () = end.wait() => {
                    let data = json!({"error": "unauthorized", "message": "this token is no longer accepted"});
                    let _ = tx.send(Bytes::from(format!("event: error\ndata: {data}\n\n"))).await;
                    return;
                }
            };
            let chunk = match next {
                Err(_) => ": keep-alive\n\n".to_string(),
                Ok(Some(batch)) => batch
                    .iter()
                    .map(|e| format!("id: {}\ndata: {}\n\n", e.seq, e.json))
                    .collect(),
                Ok(None) => break,
            };
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
        let id = execution_id.clone();
        let status = store
            .read(move |r| r.execution(&id))
            .await
            .ok()
            .flatten()
            .map(|e| e.status.as_str())
            .unwrap_or("failed");
        let end = format!(
            "event: end\ndata: {}\n\n",
            json!({"execution_id": execution_id, "status": status})
        );
        let _ = tx.send(Bytes::from(end)).await;
    });
    let mut response = hyper::Response::new(stream);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `POST /api/agents/{name}/executions/{id}/terminate`
pub async fn terminate_execution(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    id: &str,
) -> ApiResult {
    let caller = caller_with_any_scope(app, request, READ_SCOPES)?;
    let agent = app.agents().visible(&caller, name)?;
    let execution = visible_execution(app, &agent, &caller, id).await?;
    let status = match app.executions().live(&execution.id) {
        Some(_)
            if app
                .pool()
                .cancel_queued(agent.name(), &execution.id)
                .await? =>
        {
            "cancelled_while_queued"
        }
        Some(live) if live.try_finished().is_none() => {
            live.stop(StopReason::Terminated);
            let finished = live.finished().await;
            if finished.status == ExecutionStatus::Cancelled {
                "terminated"
            } else {
                "already_finished"
            }
        }
        _ => "already_finished",
    };
    Ok(body::json(
        StatusCode::OK,
        &json!({"status": status, "execution_id": execution.id}),
    ))
}
