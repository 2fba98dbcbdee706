//! `POST /api/agents/{name}/chat`: NDJSON stream-json by default, one JSON document with
//! `Accept: application/json`. The turn runs on its own task: a client that goes away does
//! not stop it.

use super::caller_with_scope;
use crate::app::App;
use crate::auth::SessionEnd;
use crate::body::{self, Body, Response};
use crate::error::{turn_failure, ApiError, ApiResult, Audience};
use crate::executions::Follow;
use crate::ids::SessionId;
use crate::records::{Execution, ExecutionKind};
use crate::turns::{SessionPolicy, Started, TurnRequest};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatBody {
    message: String,
    #[serde(default)]
    session_id: Option<SessionId>,
    #[serde(default)]
    new_session: bool,
    #[serde(default)]
    model: Option<String>,
}

/// The request's `Idempotency-Key`, checked.
pub fn idempotency_key(request: &Request<Incoming>) -> Result<Option<String>, ApiError> {
    match request.headers().get("idempotency-key") {
        None => Ok(None),
        Some(value) => {
            let key = value
                .to_str()
                .map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?;
            if key.is_empty() || key.len() > 255 {
                return Err(ApiError::bad_request(
                    "Idempotency-Key must be 1-255 characters",
                ));
            }
            Ok(Some(key.to_string()))
        }
    }
}

/// True when the client asked for one JSON document rather than the stream.
fn wants_document(request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.contains("application/json") && !accept.contains("application/x-ndjson")
        })
}

pub async fn chat(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, &request, "chat")?;
    let agent = app.agents().visible(&caller, name)?;
    let document = wants_document(&request);
    let idempotency_key = idempotency_key(&request)?;
    let chat: ChatBody = body::read_json(request, app.config().max_body_bytes).await?;
    let session = SessionPolicy::asked(chat.session_id, chat.new_session);
    let mut turn = TurnRequest::new(
        agent,
        caller.username.clone(),
        chat.message,
        ExecutionKind::Chat,
        session,
    );
    turn.model = chat.model;
    turn.idempotency_key = idempotency_key;
    let started = app.turns().start(turn).await?;
    match started {
        Started::Live { live, .. } if document => {
            Ok(finished_document(&live.finished().await, false))
        }
        Started::Live { live, .. } => {
            let end = app.auth().session_end(&caller);
            Ok(ndjson(app.executions().follow_live(live), end, false))
        }
        Started::Replay(execution) if document => Ok(finished_document(&execution, true)),
        Started::Replay(execution) => {
            let follow = app.executions().follow(&execution.id, None).await?;
            Ok(ndjson(follow, app.auth().session_end(&caller), true))
        }
    }
}

/// The last line of a stream whose token stopped being accepted.
pub const SESSION_ENDED: &str =
    r#"{"type":"error","error":"unauthorized","message":"this token is no longer accepted"}"#;

/// Streams an execution's events as NDJSON, one event per line, flushed as they come. When
/// the caller's token stops being accepted (logout, revocation, password change, removal)
/// the stream ends with one `SESSION_ENDED` line; the turn goes on without it.
pub fn ndjson(mut follow: Follow, mut end: SessionEnd, replay: bool) -> Response {
    let (tx, stream) = Body::channel();
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                batch = follow.next_batch() => batch,
                () = end.wait() => {
                    let _ = tx.send(Bytes::from(format!("{SESSION_ENDED}\n"))).await;
                    break;
                }
            };
            let Some(batch) = batch else { break };
            let mut chunk = Vec::with_capacity(batch.iter().map(|e| e.json.len() + 1).sum());
            for event in batch {
                chunk.extend_from_slice(event.json.as_bytes());
                chunk.push(b'\n');
            }
            if tx.send(Bytes::from(chunk)).await.is_err() {
                break; // the client left; the turn goes on without it
            }
        }
    });
    let mut response = hyper::Response::new(stream);
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if replay {
        headers.insert("x-idempotent-replay", HeaderValue::from_static("true"));
    }
    response
}

/// The one-document answer for a finished turn (see [`turn_failure`] for the ones that are
/// errors); a turn that ran and failed is a 200 document whose `status` says so.
pub fn finished_document(execution: &Execution, replay: bool) -> Response {
    let mut response = match turn_failure(execution, Audience::Account) {
        Some(err) => err.response(),
        None => body::json(StatusCode::OK, &document(execution)),
    };
    if replay {
        response
            .headers_mut()
            .insert("x-idempotent-replay", HeaderValue::from_static("true"));
    }
    response
}

/// `{"response", "session_id", "execution_id", "status", "metadata"}`.
pub fn document(execution: &Execution) -> Value {
    let usage = |field: &str| {
        execution
            .usage
            .get(field)
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    let mut doc = json!({
        "response": execution.response.clone().unwrap_or_default(),
        "session_id": execution.session_id,
        "execution_id": execution.id,
        "status": execution.status,
        "metadata": {
            "cost_usd": execution.cost_usd,
            "duration_ms": execution.duration_ms.unwrap_or(0),
            "num_turns": execution.num_turns,
            "input_tokens": usage("input_tokens"),
            "output_tokens": usage("output_tokens"),
            "model": execution.model,
        },
    });
    if let Some(error) = &execution.error {
        doc["error"] = json!(error);
    }
    doc
}
