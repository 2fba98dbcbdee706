//! The admission step: one job of the store's writer that checks everything before it writes
//! anything, so a refusal leaves nothing behind. And the step that begins a queued task.

use super::{Error, QueuePlace, SessionPolicy, TurnRequest, IDEMPOTENCY_WINDOW_MS};
use crate::clock::Timestamp;
use crate::ids::{ExecutionId, SessionId};
use crate::records::{Execution, ExecutionStatus, Message, Session, SessionStatus};
use crate::store::{self, IdempotencyRecord, Tx};
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::Mutex;

/// What the admission decided.
pub(super) enum Admission<H> {
    /// Stored: the execution, the session's resume handle, and what `take` gave.
    Accepted(Box<Execution>, Option<String>, H),
    Duplicate(IdempotencyRecord),
    Rejected(Error),
}

/// A request as the admission step needs it.
pub(super) struct Plan {
    request: TurnRequest,
    execution_id: ExecutionId,
    queued: Option<QueuePlace>,
    digest: String,
}

impl Plan {
    pub(super) fn new(
        request: TurnRequest,
        execution_id: ExecutionId,
        queued: Option<QueuePlace>,
    ) -> Plan {
        let digest = digest(&request, queued);
        Plan {
            request,
            execution_id,
            queued,
            digest,
        }
    }

    /// Decides and records the turn: the idempotency key, the agent, the session, the busy
    /// mark (noted in `marked`, so the caller can take it back), what `take` takes, and only
    /// then the writes.
    pub(super) fn admit<H>(
        self,
        tx: &Tx<'_>,
        busy: &Mutex<HashMap<SessionId, ExecutionId>>,
        marked: &Mutex<Option<SessionId>>,
        take: impl FnOnce() -> Result<H, Error>,
    ) -> Result<Admission<H>, store::Error> {
        let request = &self.request;
        let agent = request.agent.name();
        let key = request
            .idempotency_key
            .as_deref()
            .map(|key| [agent, request.username.as_str(), key]);
        if let Some(parts) = &key {
            if let Some(record) = tx.idempotency(parts)?.filter(fresh) {
                if !record.same_request(&self.digest) {
                    return Ok(Admission::Rejected(Error::IdempotencyKeyReused));
                }
                return Ok(Admission::Duplicate(record));
            }
        }
        // A task waits for a stopped agent; every other turn is refused at once.
        if self.queued.is_none() {
            if let Err(err) = request.agent.require_running() {
                return Ok(Admission::Rejected(err.into()));
            }
        }
        let now = Timestamp::now();
        let (session, fresh_session, to_close) = match resolve_session(tx, request, now)? {
            Ok(resolved) => resolved,
            Err(err) => return Ok(Admission::Rejected(err)),
        };
        // A queued task marks its session when it begins, not now. Only the writer's jobs
        // mark sessions, so the check and the mark need not share a lock: no other admission
        // can come between them. The lock is not held while `take` runs, which may take the
        // task pool's (whose scheduler asks this map while holding it).
        let marks = session.as_ref().filter(|_| self.queued.is_none());
        if let Some(session) = marks {
            if let Some(running) = lock(busy).get(&session.id) {
                return Ok(Admission::Rejected(Error::SessionBusy {
                    execution_id: running.clone(),
                }));
            }
        }
        let held = match take() {
            Ok(held) => held,
            Err(err) => return Ok(Admission::Rejected(err)),
        };
        if let Some(session) = marks {
            lock(busy).insert(session.id.clone(), self.execution_id.clone());
            *lock(marked) = Some(session.id.clone());
        }
        // Every check is behind us: from here on, only writes.
        if let Some(mut old) = to_close {
            old.status = SessionStatus::Closed;
            tx.put_session(&old)?;
        }
        if let (Some(session), true) = (&session, fresh_session) {
            tx.put_session(session)?;
            tx.set_active_session(agent, &request.username, Some(&session.id))?;
        }
        let execution = self.execution(session.as_ref(), now);
        tx.put_execution(&execution)?;
        let mut resume = None;
        match (self.queued, session) {
            (Some(place), _) => tx.enqueue_task(place.position, &execution.id)?,
            (None, Some(mut session)) => {
                resume = tx.engine_state(&session.id)?;
                let message = user_message(&execution, &session.id, now);
                tx.append_message(&mut session, message)?;
            }
            (None, None) => {}
        }
        let Plan {
            request, digest, ..
        } = self;
        if let Some(payment) = request.payment {
            (payment.on_admit)(tx, &execution)?;
        }
        if let Some(key) = &request.idempotency_key {
            let record = IdempotencyRecord {
                execution_id: execution.id.clone(),
                created_at: now,
                request_digest: Some(digest),
            };
            tx.put_idempotency(&[request.agent.name(), &request.username, key], &record)?;
        }
        Ok(Admission::Accepted(Box::new(execution), resume, held))
    }

    /// The execution as first stored: running, or queued for a task.
    fn execution(&self, session: Option<&Session>, now: Timestamp) -> Execution {
        let request = &self.request;
        let status = match self.queued {
            Some(_) => ExecutionStatus::Queued,
            None => ExecutionStatus::Running,
        };
        Execution {
            id: self.execution_id.clone(),
            agent: request.agent.name().into(),
            kind: request.kind,
            status,
            username: Some(request.username.clone()),
            origin: None,
            message: request.message.clone(),
            created_at: now,
            started_at: self.queued.is_none().then_some(now),
            finished_at: None,
            duration_ms: None,
            cost_usd: 0.0,
            session_id: session.map(|s| s.id.clone()),
            response: None,
            error: None,
            tool_calls: Vec::new(),
            usage: serde_json::Value::Null,
            model: request.model.clone().or_else(|| request.agent.model()),
            num_turns: 0,
            events_count: 0,
            payment: request.payment.as_ref().map(|p| p.record.clone()),
            timeout_seconds: self.queued.map(|place| place.timeout.as_secs().max(1)),
            failure: None,
        }
    }
}

/// What beginning a queued task decided.
pub(super) enum Begin {
    /// Marked running: the execution and its session's resume handle.
    Running(Box<Execution>, Option<String>),
    SessionBusy,
    Gone,
}

/// Begins the queued task `execution_id` at `position` of the durable queue (see
/// [`super::Turns::begin_queued`]).
pub(super) fn begin_queued(
    tx: &Tx<'_>,
    execution_id: &str,
    position: u64,
    busy: &Mutex<HashMap<SessionId, ExecutionId>>,
) -> Result<Begin, store::Error> {
    let queued = tx
        .execution(execution_id)?
        .filter(|e| e.status == ExecutionStatus::Queued);
    let Some(mut execution) = queued else {
        tx.dequeue_task(position)?;
        return Ok(Begin::Gone);
    };
    let now = Timestamp::now();
    let mut resume = None;
    if let Some(session_id) = execution.session_id.clone() {
        let mut busy = lock(busy);
        if busy.contains_key(&session_id) {
            return Ok(Begin::SessionBusy);
        }
        if let Some(mut session) = tx.session(&session_id)? {
            resume = tx.engine_state(&session_id)?;
            let message = user_message(&execution, &session_id, now);
            tx.append_message(&mut session, message)?;
            busy.insert(session_id, execution.id.clone());
        }
    }
    execution.status = ExecutionStatus::Running;
    execution.started_at = Some(now);
    tx.put_execution(&execution)?;
    tx.dequeue_task(position)?;
    Ok(Begin::Running(Box::new(execution), resume))
}

/// The session the turn goes to, whether it is new, and the active one a new one replaces.
/// Reads only.
#[allow(clippy::type_complexity)]
fn resolve_session(
    tx: &Tx<'_>,
    request: &TurnRequest,
    now: Timestamp,
) -> Result<Result<(Option<Session>, bool, Option<Session>), Error>, store::Error> {
    let (agent, username) = (request.agent.name(), request.username.as_str());
    let new_session = match &request.session {
        SessionPolicy::Stateless => return Ok(Ok((None, false, None))),
        SessionPolicy::Existing(id) => {
            let session = tx
                .session(id)?
                .filter(|s| s.agent_name == agent && s.username == username);
            return Ok(match session {
                None => Err(Error::SessionNotFound),
                Some(s) if s.status == SessionStatus::Closed => Err(Error::SessionClosed),
                Some(s) => Ok((Some(s), false, None)),
            });
        }
        SessionPolicy::New => true,
        SessionPolicy::Active => false,
    };
    let active = match tx.active_session(agent, username)? {
        Some(id) => tx.session(&id)?,
        None => None,
    };
    if let Some(active) = &active {
        if !new_session {
            return Ok(Ok((Some(active.clone()), false, None)));
        }
    }
    let session = Session {
        id: SessionId::new_at(now),
        agent_name: agent.into(),
        username: username.to_string(),
        status: SessionStatus::Active,
        started_at: now,
        last_message_at: None,
        message_count: 0,
        total_cost_usd: 0.0,
        context_tokens: 0,
        title: None,
    };
    Ok(Ok((Some(session), true, active)))
}

/// The stored user message of a turn.
fn user_message(execution: &Execution, session_id: &SessionId, now: Timestamp) -> Message {
    Message {
        id: crate::ids::new_id_at(now),
        session_id: session_id.clone(),
        role: "user".into(),
        content: execution.message.clone(),
        created_at: now,
        source: execution.kind.source().into(),
        execution_id: Some(execution.id.clone()),
        cost_usd: None,
        usage: None,
        tool_calls: Vec::new(),
        duration_ms: None,
        status: None,
        seq: 0,
    }
}

fn fresh(record: &IdempotencyRecord) -> bool {
    Timestamp::now().0 - record.created_at.0 < IDEMPOTENCY_WINDOW_MS
}

/// The digest kept with an idempotency key: of the fields that make the request what it is,
/// so a key sent again with another message (or as a task instead of a turn) is refused
/// rather than answered with the first request's result.
fn digest(request: &TurnRequest, queued: Option<QueuePlace>) -> String {
    let mut fields = serde_json::json!({
        "kind": request.kind,
        "message": request.message,
        "session_id": request.session.session_id(),
        "model": request.model,
    });
    match queued {
        Some(place) => fields["timeout_seconds"] = place.timeout.as_secs().into(),
        None => fields["new_session"] = (request.session == SessionPolicy::New).into(),
    }
    crate::ids::sha256_hex(fields.to_string().as_bytes())
}
