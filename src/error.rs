//! The one place errors become HTTP: every area's error maps to a status, a stable code and a
//! safe message (`{"error", "message", …}`); causes go to the log, never to the client.
//! [`ApiError::response`] is the answer itself.

use crate::body::{self, Response};
use crate::records::{Execution, Failure};
use crate::{agents, auth, executions, links, paid, store, tasks, turns, users, voice};
use hyper::header::HeaderValue;
use hyper::StatusCode;
use serde_json::{json, Map, Value};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub extra: Map<String, Value>,
    pub retry_after: Option<u64>,
}

/// What handlers return.
pub type ApiResult<T = Response> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl ToString) -> ApiError {
        ApiError {
            status,
            code,
            message: message.to_string(),
            extra: Map::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl ToString) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn invalid(message: impl ToString) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", message)
    }

    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// Logs the cause and answers 500 with a generic message.
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!(cause = %cause, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the cause is in the server log",
        )
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> ApiError {
        self.extra.insert(key.to_string(), value.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> ApiError {
        self.retry_after = Some(seconds);
        self.extra.insert("retry_after".into(), seconds.into());
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), self.code.into());
        body.insert("message".into(), self.message.clone().into());
        for (key, value) in &self.extra {
            body.insert(key.clone(), value.clone());
        }
        Value::Object(body)
    }

    /// The error answer: status, JSON body, `Retry-After` when it has one.
    pub fn response(&self) -> Response {
        let mut response = body::json(self.status, &self.body());
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

impl From<body::Error> for ApiError {
    fn from(err: body::Error) -> ApiError {
        use body::Error::*;
        match err {
            NotJson => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                &err,
            ),
            TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", &err),
            TimedOut { .. } => ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", &err),
            Broken(_) | InvalidJson(_) => ApiError::bad_request(&err),
        }
    }
}

/// Who reads a finished turn's answer: an account is told which part failed, a public link's
/// visitor gets a generic word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Account,
    Visitor,
}

/// The error answer of a finished turn whose failure the caller must act on: a timeout is 504
/// and an unreachable engine 503 (with `Retry-After`). Any other outcome, failures included,
/// is an answer whose `status` says how it went: None.
pub fn turn_failure(execution: &Execution, audience: Audience) -> Option<ApiError> {
    let visitor = audience == Audience::Visitor;
    let err = match execution.why_failed()? {
        Failure::Timeout => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "engine_timeout",
            if visitor {
                links::TIMED_OUT
            } else {
                "the agent did not answer in time"
            },
        ),
        Failure::EngineUnavailable => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "engine_unavailable",
            if visitor {
                "the agent is not available right now; try again later"
            } else {
                "the agent's engine is not reachable"
            },
        )
        .retry_after(5),
        Failure::DiskFull => ApiError::from(store::Error::Full),
        Failure::NotStored => ApiError::from(store::Error::Unavailable),
        Failure::EngineFailed | Failure::Cancelled | Failure::Interrupted => return None,
    };
    Some(
        err.with("execution_id", execution.id.clone())
            .with("session_id", execution.session_id.clone()),
    )
}

impl From<store::Error> for ApiError {
    fn from(err: store::Error) -> ApiError {
        match err {
            store::Error::Full => ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                &err,
            )
            .retry_after(10),
            store::Error::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", &err)
                    .retry_after(5)
            }
            other => ApiError::internal(other),
        }
    }
}

impl From<agents::Error> for ApiError {
    fn from(err: agents::Error) -> ApiError {
        match err {
            agents::Error::NotFound => ApiError::not_found("agent"),
            agents::Error::NotOwner => ApiError::new(StatusCode::FORBIDDEN, "forbidden", &err),
            agents::Error::Busy { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "agent_busy", &err).retry_after(1)
            }
            agents::Error::Stopped(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent_stopped", &err)
            }
            agents::Error::Exists(_) => ApiError::new(StatusCode::CONFLICT, "agent_exists", &err),
            agents::Error::ManagedByConfig(_) => {
                ApiError::new(StatusCode::CONFLICT, "managed_by_config", &err)
            }
            agents::Error::CreateForbidden | agents::Error::CommandEngineAdminOnly => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", &err)
            }
            agents::Error::Invalid(_) => ApiError::invalid(&err),
            agents::Error::OutboundNotAllowed { .. } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "outbound_not_allowed",
                &err,
            ),
            agents::Error::Store(cause) => cause.into(),
        }
    }
}

impl From<auth::Error> for ApiError {
    fn from(err: auth::Error) -> ApiError {
        use auth::Error::*;
        match err {
            Missing | Invalid | Revoked | NoAccount | BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", &err)
            }
            OutOfScope | AdminOnly => ApiError::new(StatusCode::FORBIDDEN, "forbidden", &err),
            Throttled { retry_after } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts", &err)
                    .retry_after(retry_after)
            }
            TokenNotFound => ApiError::not_found("device token"),
            Secret { .. } => ApiError::internal(err),
            Store(cause) => cause.into(),
        }
    }
}

impl From<users::Error> for ApiError {
    fn from(err: users::Error) -> ApiError {
        use users::Error::*;
        match err {
            Exists(_) => ApiError::new(StatusCode::CONFLICT, "user_exists", &err),
            NotFound => ApiError::not_found("user"),
            InvalidName | WeakPassword | LongPassword => ApiError::invalid(&err),
            Busy => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "login_busy", &err).retry_after(1),
            LastAdmin => ApiError::new(StatusCode::CONFLICT, "last_admin", &err),
            File { .. } => ApiError::internal(err),
            Store(cause) => cause.into(),
        }
    }
}

impl From<turns::Error> for ApiError {
    fn from(err: turns::Error) -> ApiError {
        use turns::Error::*;
        match err {
            Agent(cause) => cause.into(),
            SessionNotFound => ApiError::not_found("session"),
            SessionBusy { ref execution_id } => {
                let id = execution_id.clone();
                ApiError::new(StatusCode::CONFLICT, "session_busy", &err).with("execution_id", id)
            }
            SessionClosed => ApiError::new(StatusCode::CONFLICT, "session_closed", &err),
            DuplicateInFlight { ref execution_id } => {
                let id = execution_id.clone();
                ApiError::new(StatusCode::CONFLICT, "idempotent_in_flight", &err)
                    .with("execution_id", id)
            }
            IdempotencyKeyReused => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                &err,
            ),
            EmptyMessage | MessageTooLong { .. } => ApiError::invalid(&err),
            QueueFull { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", &err).retry_after(2)
            }
            BadCursor => ApiError::bad_request(&err),
            Store(cause) => cause.into(),
        }
    }
}

impl From<tasks::Error> for ApiError {
    fn from(err: tasks::Error) -> ApiError {
        match err {
            tasks::Error::Turn(cause) => cause.into(),
            tasks::Error::Store(cause) => cause.into(),
        }
    }
}

impl From<executions::Error> for ApiError {
    fn from(err: executions::Error) -> ApiError {
        match err {
            executions::Error::NotFound => ApiError::not_found("execution"),
            executions::Error::Store(cause) => cause.into(),
        }
    }
}

impl From<links::Error> for ApiError {
    fn from(err: links::Error) -> ApiError {
        use links::Error::*;
        match err {
            // One answer for unknown, disabled, expired and deleted tokens: no oracle.
            NotFound => ApiError::not_found("link"),
            SessionNotFound => ApiError::not_found("session"),
            RateLimited { retry_after } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &err)
                    .retry_after(retry_after)
            }
            SessionLimit { .. } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "session_limit", &err)
            }
            Unavailable => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agent_stopped", &err)
                .retry_after(60),
            Invalid(_) => ApiError::invalid(&err),
            BadCursor => ApiError::bad_request(&err),
            Agent(cause) => cause.into(),
            Turn(cause) => cause.into(),
            Store(cause) => cause.into(),
        }
    }
}

impl From<paid::Error> for ApiError {
    fn from(err: paid::Error) -> ApiError {
        use paid::Error::*;
        match err {
            NotFound => ApiError::not_found("agent"),
            SessionNotFound => ApiError::not_found("session"),
            ReceiptNotFound => ApiError::not_found("receipt"),
            Refused(refusal) => {
                // The body is also the x402 v1 answer: `error`, `x402Version`, `accepts`.
                let mut answer = ApiError::new(
                    StatusCode::PAYMENT_REQUIRED,
                    refusal.reason.code(),
                    &refusal.detail,
                )
                .with("x402Version", 1)
                .with("accepts", refusal.accepts_v1);
                if let Some(id) = refusal.execution_id {
                    answer = answer.with("execution_id", id);
                }
                answer
            }
            TurnFailed {
                ref execution_id,
                timed_out,
            } => {
                let id = execution_id.clone();
                let answer = if timed_out {
                    ApiError::new(StatusCode::GATEWAY_TIMEOUT, "engine_timeout", &err)
                } else {
                    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "turn_failed", &err)
                        .retry_after(5)
                };
                answer.with("execution_id", id)
            }
            UnpaidCap { retry_after } => {
                ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", &err)
                    .retry_after(retry_after)
            }
            Interrupted => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "interrupted", &err).retry_after(5)
            }
            Agent(cause) => cause.into(),
            Turn(cause) => cause.into(),
            Store(cause) => cause.into(),
        }
    }
}

impl From<voice::Error> for ApiError {
    fn from(err: voice::Error) -> ApiError {
        use voice::Error::*;
        match err {
            Unavailable(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "voice_unavailable", &err)
            }
            TooMany(limit) => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "voice_limit", &err)
                .with("limit", limit)
                .retry_after(5),
            NotFound => ApiError::not_found("voice session"),
            NotYours => ApiError::new(StatusCode::FORBIDDEN, "forbidden", &err),
            BadTicket => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", &err),
            Taken => ApiError::new(StatusCode::CONFLICT, "voice_session_taken", &err),
            Invalid(_) => ApiError::invalid(&err),
            Turn(cause) => cause.into(),
        }
    }
}

/// `json!` re-exported for handlers that build small bodies.
pub fn message_body(code: &str, message: &str) -> Value {
    json!({"error": code, "message": message})
}
