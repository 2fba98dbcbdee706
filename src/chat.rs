//! Chat: sessions of (agent, user) and turns in them. One turn at a time per session
//! (`session_busy`), at most `max_concurrent` per agent (`agent_busy`). The user message is
//! committed with the execution before the engine runs; the assistant message is committed
//! with the execution's final state.

mod sessions;

pub use sessions::{HistoryOwner, HistoryPage, SessionPage};

use crate::agents::{self, Agent, Slot};
use crate::clock::Timestamp;
use crate::engines::{HistoryMessage, Turn};
use crate::executions::{Executions, Finished, Live, RunSpec};
use crate::records::{Execution, ExecutionKind, ExecutionStatus, Message, Session, SessionStatus};
use crate::store::{self, IdempotencyRecord, Store, Tx};
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Largest message a turn accepts, in characters (chat and paid turns; visitors have their own).
pub const MAX_MESSAGE_CHARS: usize = 100_000;
/// How long an idempotency key holds.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// Earlier messages handed to engines that take the history.
const HISTORY_MESSAGES: usize = 50;

/// What can go wrong in chat.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Agent(#[from] agents::Error),
    #[error("session not found")]
    SessionNotFound,
    #[error("this session is answering another message")]
    SessionBusy { execution_id: String },
    #[error(
        "this session is closed; send without session_id or with new_session to start another"
    )]
    SessionClosed,
    #[error("a request with this Idempotency-Key is still running")]
    DuplicateInFlight { execution_id: String },
    #[error("this Idempotency-Key was used with another request; a new request needs a new key")]
    IdempotencyKeyReused,
    #[error("message must not be empty")]
    EmptyMessage,
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A turn to run.
pub struct TurnRequest {
    pub agent: Arc<Agent>,
    /// Whose session the turn belongs to.
    pub username: String,
    pub message: String,
    pub session_id: Option<String>,
    pub new_session: bool,
    pub model: Option<String>,
    pub idempotency_key: Option<String>,
    pub kind: ExecutionKind,
    /// The `source` of the stored messages (`text`, `voice`, `task`, …).
    pub source: &'static str,
}

/// Writes that ride in a turn's creation commit, after its execution is stored (a paid turn
/// stores the settlement it owes). It runs after every check, so it must not refuse.
pub type AdmitHook = Box<dyn FnOnce(&Tx<'_>, &Execution) -> Result<(), store::Error> + Send>;

/// A turn that was accepted, or the earlier one an idempotency key points at.
pub enum Started {
    Live {
        live: Arc<Live>,
        execution_id: String,
        session_id: String,
    },
    Replay(Box<Execution>),
}

/// What the creation transaction decided.
enum Admission {
    Accepted {
        session: Session,
        resume: Option<String>,
        execution: Box<Execution>,
        slot: Slot,
    },
    Duplicate(IdempotencyRecord),
    Rejected(Error),
}

/// Cheap-clone handle to the chat service.
#[derive(Clone)]
pub struct Chat {
    store: Store,
    executions: Executions,
    /// session id → the execution running in it. Changed only by store write jobs and by
    /// the run's after-hook, so the check and the mark are one step.
    busy: Arc<Mutex<HashMap<String, String>>>,
}

impl Chat {
    pub fn new(store: Store, executions: Executions) -> Chat {
        Chat {
            store,
            executions,
            busy: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Accepts a turn and starts it, or replays the one its idempotency key names.
    pub async fn start_turn(&self, request: TurnRequest) -> Result<Started, Error> {
        self.start_turn_with(request, None, None).await
    }

    /// [`Chat::start_turn`] for a turn whose execution carries a `payment` from its creation,
    /// with `on_admit` run inside the creation commit.
    pub async fn start_turn_with(
        &self,
        request: TurnRequest,
        payment: Option<serde_json::Value>,
        on_admit: Option<AdmitHook>,
    ) -> Result<Started, Error> {
        if request.message.trim().is_empty() {
            return Err(Error::EmptyMessage);
        }
        if let Some(replay) = self.idempotent_replay(&request).await? {
            return Ok(replay);
        }
        request.agent.require_running()?;
        let execution_id = crate::ids::new_id();
        let live = self
            .executions
            .register(&execution_id, request.agent.name());
        let marked = Arc::new(Mutex::new(None::<String>));
        let admitted = {
            let busy = self.busy.clone();
            let marked = marked.clone();
            let mut plan = Plan::from(&request, execution_id.clone());
            plan.payment = payment;
            plan.on_admit = on_admit;
            self.store
                .write_deferred(move |tx| plan.admit(tx, &busy, &marked))
                .await
        };
        let (admitted, on_disk) = match admitted {
            Ok((admitted, on_disk)) => (Ok(admitted), Some(on_disk)),
            Err(err) => (Err(err), None),
        };
        let (session, resume, execution, permit) = match admitted {
            Ok(Admission::Accepted {
                session,
                resume,
                execution,
                slot,
            }) => (session, resume, execution, slot),
            other => {
                self.executions.abandon(&live);
                if let Some(session_id) = lock(&marked).take() {
                    lock(&self.busy).remove(&session_id);
                }
                return match other {
                    Ok(Admission::Duplicate(record)) => self.replay_or_conflict(record).await,
                    Ok(Admission::Rejected(err)) => Err(err),
                    Err(err) => Err(err.into()),
                    Ok(Admission::Accepted { .. }) => unreachable!("handled above"),
                };
            }
        };

        let history = if request.agent.engine.wants_history() {
            let id = session.id.clone();
            let earlier = self
                .store
                .read(move |r| {
                    let mut earlier = r.messages(&id, None, HISTORY_MESSAGES + 1)?;
                    earlier.pop(); // the message of this turn
                    let mut kept = Vec::with_capacity(earlier.len());
                    for message in earlier {
                        if !message.content.is_empty() && crate::paid::released(r, &message)? {
                            kept.push(message);
                        }
                    }
                    Ok(kept)
                })
                .await?;
            earlier
                .into_iter()
                .map(|m| HistoryMessage {
                    role: m.role,
                    content: m.content,
                })
                .collect()
        } else {
            Vec::new()
        };
        let init_event = json!({
            "type": "system",
            "subtype": "init",
            "session_id": session.id,
            "execution_id": execution_id,
            "agent": request.agent.name(),
            "model": execution.model,
        });
        let busy = self.busy.clone();
        let session_id = session.id.clone();
        let source = request.source;
        let spec = RunSpec {
            execution: *execution,
            engine: request.agent.engine.clone(),
            turn: Turn {
                prompt: request.message,
                history,
                resume,
                model: request.model,
            },
            timeout: request.agent.config.timeout,
            init_event,
            finish: Box::new(move |tx, finished| store_reply(tx, finished, source)),
            after: Box::new(move |execution| {
                if let Some(session_id) = &execution.session_id {
                    lock(&busy).remove(session_id);
                }
                drop(permit);
            }),
        };
        // The engine starts while the admission reaches the disk; the caller hears of the
        // turn only once it has (for a quick engine, the final commit takes both at once).
        self.executions.spawn(live.clone(), spec);
        if let Some(on_disk) = on_disk {
            on_disk.wait().await?;
        }
        Ok(Started::Live {
            live,
            execution_id,
            session_id,
        })
    }

    async fn idempotent_replay(&self, request: &TurnRequest) -> Result<Option<Started>, Error> {
        let Some(key) = request.idempotency_key.clone() else {
            return Ok(None);
        };
        let (agent, user) = (request.agent.name().to_string(), request.username.clone());
        let found = self
            .store
            .read(move |r| r.idempotency(&[&agent, &user, &key]))
            .await?;
        match found.filter(fresh) {
            Some(record) if !record.same_request(&request.digest()) => {
                Err(Error::IdempotencyKeyReused)
            }
            Some(record) => self.replay_or_conflict(record).await.map(Some),
            None => Ok(None),
        }
    }

    async fn replay_or_conflict(&self, record: IdempotencyRecord) -> Result<Started, Error> {
        let id = record.execution_id.clone();
        let execution = self.store.read(move |r| r.execution(&id)).await?;
        match execution {
            Some(execution) if execution.status.is_final() => {
                Ok(Started::Replay(Box::new(execution)))
            }
            _ => Err(Error::DuplicateInFlight {
                execution_id: record.execution_id,
            }),
        }
    }

    /// The map of busy sessions, shared with the task pool (same rules: check and mark
    /// inside a store write job).
    pub(crate) fn busy_sessions(&self) -> Arc<Mutex<HashMap<String, String>>> {
        self.busy.clone()
    }

    /// The running execution of a session, if any.
    pub fn running_in(&self, session_id: &str) -> Option<String> {
        lock(&self.busy).get(session_id).cloned()
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn fresh(record: &IdempotencyRecord) -> bool {
    Timestamp::now().0 - record.created_at.0 < IDEMPOTENCY_WINDOW_MS
}

/// The digest kept with an idempotency key: of the fields that make the request what it is,
/// so a key sent again with another message (or as a task instead of a turn) is refused
/// rather than answered with the first request's result.
pub(crate) fn request_digest(request: &serde_json::Value) -> String {
    crate::ids::sha256_hex(request.to_string().as_bytes())
}

impl TurnRequest {
    fn digest(&self) -> String {
        request_digest(&serde_json::json!({
            "kind": self.kind,
            "message": self.message,
            "session_id": self.session_id,
            "new_session": self.new_session,
            "model": self.model,
        }))
    }
}

/// The parts of a request the creation transaction needs.
struct Plan {
    agent: String,
    slots: Arc<Agent>,
    username: String,
    message: String,
    session_id: Option<String>,
    new_session: bool,
    model: Option<String>,
    idempotency_key: Option<String>,
    request_digest: String,
    kind: ExecutionKind,
    source: &'static str,
    execution_id: String,
    payment: Option<serde_json::Value>,
    on_admit: Option<AdmitHook>,
}

impl Plan {
    fn from(request: &TurnRequest, execution_id: String) -> Plan {
        Plan {
            agent: request.agent.name().to_string(),
            slots: request.agent.clone(),
            username: request.username.clone(),
            message: request.message.clone(),
            session_id: request.session_id.clone(),
            new_session: request.new_session,
            model: request.model.clone().or_else(|| request.agent.model()),
            idempotency_key: request.idempotency_key.clone(),
            request_digest: request.digest(),
            kind: request.kind,
            source: request.source,
            execution_id,
            payment: None,
            on_admit: None,
        }
    }

    /// Decides and records the turn in one step of the writer: checks before writes.
    fn admit(
        self,
        tx: &Tx<'_>,
        busy: &Mutex<HashMap<String, String>>,
        marked: &Mutex<Option<String>>,
    ) -> Result<Admission, store::Error> {
        let key_parts = self
            .idempotency_key
            .as_ref()
            .map(|key| [self.agent.clone(), self.username.clone(), key.clone()]);
        if let Some(parts) = &key_parts {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            if let Some(record) = tx.idempotency(&parts)?.filter(fresh) {
                if !record.same_request(&self.request_digest) {
                    return Ok(Admission::Rejected(Error::IdempotencyKeyReused));
                }
                return Ok(Admission::Duplicate(record));
            }
        }
        let now = Timestamp::now();
        let (mut session, fresh_session, to_close) = match self.resolve_session(tx, now)? {
            Ok(resolved) => resolved,
            Err(err) => return Ok(Admission::Rejected(err)),
        };
        // Every check comes before the first write: a rejection leaves nothing behind.
        let mut busy = lock(busy);
        if let Some(running) = busy.get(&session.id) {
            return Ok(Admission::Rejected(Error::SessionBusy {
                execution_id: running.clone(),
            }));
        }
        let slot = match self.slots.try_slot() {
            Ok(slot) => slot,
            Err(err) => return Ok(Admission::Rejected(err.into())),
        };
        busy.insert(session.id.clone(), self.execution_id.clone());
        *lock(marked) = Some(session.id.clone());
        drop(busy);
        if let Some(mut old) = to_close {
            old.status = SessionStatus::Closed;
            tx.put_session(&old)?;
        }
        if fresh_session {
            tx.put_session(&session)?;
            tx.set_active_session(&self.agent, &self.username, Some(&session.id))?;
        }
        let resume = tx.engine_state(&session.id)?;
        let execution = Execution {
            id: self.execution_id.clone(),
            agent: self.agent.clone(),
            kind: self.kind,
            status: ExecutionStatus::Running,
            username: Some(self.username.clone()),
            origin: None,
            message: self.message.clone(),
            created_at: now,
            started_at: Some(now),
            finished_at: None,
            duration_ms: None,
            cost_usd: 0.0,
            session_id: Some(session.id.clone()),
            response: None,
            error: None,
            tool_calls: Vec::new(),
            usage: serde_json::Value::Null,
            model: self.model.clone(),
            num_turns: 0,
            events_count: 0,
            payment: self.payment.clone(),
            timeout_seconds: None,
        };
        tx.put_execution(&execution)?;
        if let Some(hook) = self.on_admit {
            hook(tx, &execution)?;
        }
        let message = Message {
            id: crate::ids::new_id_at(now),
            session_id: session.id.clone(),
            role: "user".into(),
            content: self.message,
            created_at: now,
            source: self.source.into(),
            execution_id: Some(self.execution_id.clone()),
            cost_usd: None,
            usage: None,
            tool_calls: Vec::new(),
            duration_ms: None,
            status: None,
            seq: 0,
        };
        tx.append_message(&mut session, message)?;
        if let Some(parts) = &key_parts {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let record = IdempotencyRecord {
                execution_id: self.execution_id.clone(),
                created_at: now,
                request_digest: Some(self.request_digest.clone()),
            };
            tx.put_idempotency(&parts, &record)?;
        }
        Ok(Admission::Accepted {
            session,
            resume,
            execution: Box::new(execution),
            slot,
        })
    }

    /// The session the turn goes to: an existing one, or a new one (and the active one it
    /// replaces). Reads only.
    #[allow(clippy::type_complexity)]
    fn resolve_session(
        &self,
        tx: &Tx<'_>,
        now: Timestamp,
    ) -> Result<Result<(Session, bool, Option<Session>), Error>, store::Error> {
        if let Some(id) = &self.session_id {
            let session = tx
                .session(id)?
                .filter(|s| s.agent_name == self.agent && s.username == self.username);
            return Ok(match session {
                None => Err(Error::SessionNotFound),
                Some(s) if s.status == SessionStatus::Closed => Err(Error::SessionClosed),
                Some(s) => Ok((s, false, None)),
            });
        }
        let active = match tx.active_session(&self.agent, &self.username)? {
            Some(id) => tx.session(&id)?,
            None => None,
        };
        if let Some(active) = &active {
            if !self.new_session {
                return Ok(Ok((active.clone(), false, None)));
            }
        }
        let session = Session {
            id: crate::ids::new_id_at(now),
            agent_name: self.agent.clone(),
            username: self.username.clone(),
            status: SessionStatus::Active,
            started_at: now,
            last_message_at: None,
            message_count: 0,
            total_cost_usd: 0.0,
            context_tokens: 0,
            title: None,
        };
        Ok(Ok((session, true, active)))
    }
}

/// The final-commit hook of a chat turn: the assistant message and the engine's resume handle.
pub(crate) fn store_reply(
    tx: &Tx<'_>,
    finished: &Finished<'_>,
    source: &str,
) -> Result<(), store::Error> {
    let execution = finished.execution;
    let Some(session_id) = &execution.session_id else {
        return Ok(());
    };
    let Some(mut session) = tx.session(session_id)? else {
        return Ok(());
    };
    let now = execution.finished_at.unwrap_or_else(Timestamp::now);
    let message = Message {
        id: crate::ids::new_id_at(now),
        session_id: session.id.clone(),
        role: "assistant".into(),
        content: execution.response.clone().unwrap_or_default(),
        created_at: now,
        source: source.into(),
        execution_id: Some(execution.id.clone()),
        cost_usd: Some(execution.cost_usd),
        usage: Some(execution.usage.clone()),
        tool_calls: execution.tool_calls.clone(),
        duration_ms: execution.duration_ms,
        status: Some(execution.status.as_str().into()),
        seq: 0,
    };
    tx.append_message(&mut session, message)?;
    if let Some(handle) = finished.resume {
        // A paid turn's handle waits for its settlement (see `paid`): the engine's own
        // conversation holds the reply, which stays withheld until then.
        let held =
            execution.kind == ExecutionKind::Paid && tx.hold_paid_resume(&execution.id, handle)?;
        if !held {
            tx.set_engine_state(session_id, Some(handle))?;
        }
    }
    Ok(())
}
