//! The one turn recipe. Every kind of turn — chat, voice, public, paid, task — is a
//! [`TurnRequest`] handed to [`Turns`]: admitted in one step of the store's writer (the
//! idempotency key, the agent, the session, the session's busy mark, the capacity the turn
//! takes, then the stored execution and user message), run by the executions engine with the
//! session's history, and finished in the run's final commit (the reply and the engine's
//! resume handle), after which the session and the capacity are given back.
//!
//! A task is admitted as queued (its place in the durable queue rides in the admission) and
//! begins later, when the pool picks it ([`Turns::begin_queued`]); every other kind begins at
//! once. One turn at a time per session: the busy map lives here and is changed only inside
//! store write jobs and by a run's after-hook, so the check and the mark are one step.

mod admit;
mod run;

use crate::agents::{self, Agent};
use crate::executions::{AfterHook, Executions, Live};
use crate::ids::{ExecutionId, SessionId};
use crate::records::{Execution, ExecutionKind};
use crate::store::{self, Durable, IdempotencyRecord, Store, Tx};
use crate::sync::lock;
use admit::{Admission, Plan};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest message of an account's turn, in characters (chat, voice, paid).
pub const MAX_MESSAGE_CHARS: usize = 100_000;
/// Largest message of a public link's visitor, in characters.
pub const MAX_VISITOR_MESSAGE_CHARS: usize = 20_000;
/// How long an idempotency key holds.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// What can go wrong admitting a turn (and reading the sessions turns live in).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Agent(#[from] agents::Error),
    #[error("session not found")]
    SessionNotFound,
    #[error("this session is answering another message")]
    SessionBusy { execution_id: ExecutionId },
    #[error(
        "this session is closed; send without session_id or with new_session to start another"
    )]
    SessionClosed,
    #[error("a request with this Idempotency-Key is still running")]
    DuplicateInFlight { execution_id: ExecutionId },
    #[error("this Idempotency-Key was used with another request; a new request needs a new key")]
    IdempotencyKeyReused,
    #[error("message must not be empty")]
    EmptyMessage,
    #[error("message is longer than {max} characters")]
    MessageTooLong { max: usize },
    #[error("the task queue is full ({scope}); try again shortly")]
    QueueFull { scope: &'static str },
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Which session a turn goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionPolicy {
    /// The caller's active session, or a new one when there is none.
    Active,
    /// A new session, which closes the active one.
    New,
    /// This session of the caller's; it must exist and be open.
    Existing(SessionId),
    /// None: the turn stands alone (a task without `session_id`).
    Stateless,
}

impl SessionPolicy {
    /// The policy a request's `session_id` and `new_session` ask for (an id wins).
    pub fn asked(session_id: Option<SessionId>, new_session: bool) -> SessionPolicy {
        match session_id {
            Some(id) => SessionPolicy::Existing(id),
            None if new_session => SessionPolicy::New,
            None => SessionPolicy::Active,
        }
    }

    fn session_id(&self) -> Option<&str> {
        match self {
            SessionPolicy::Existing(id) => Some(id),
            _ => None,
        }
    }
}

/// Writes that ride in a turn's admission commit, after its execution is stored (a paid turn
/// stores the settlement it owes). They run after every check, so they must not refuse.
pub type AdmitHook = Box<dyn FnOnce(&Tx<'_>, &Execution) -> Result<(), store::Error> + Send>;

/// A payment a turn carries from its admission on.
pub struct Payment {
    /// The execution record's `payment`.
    pub record: serde_json::Value,
    pub on_admit: AdmitHook,
}

/// A turn to admit.
pub struct TurnRequest {
    pub agent: Arc<Agent>,
    /// Whose session the turn belongs to.
    pub username: String,
    pub message: String,
    pub session: SessionPolicy,
    pub model: Option<String>,
    pub idempotency_key: Option<String>,
    pub kind: ExecutionKind,
    pub payment: Option<Payment>,
}

impl TurnRequest {
    /// A turn of `kind` by `username` in the session `policy` names, with nothing else asked.
    pub fn new(
        agent: Arc<Agent>,
        username: String,
        message: String,
        kind: ExecutionKind,
        session: SessionPolicy,
    ) -> TurnRequest {
        TurnRequest {
            agent,
            username,
            message,
            session,
            model: None,
            idempotency_key: None,
            kind,
            payment: None,
        }
    }
}

/// How a task waits: its run's limit and its key in the durable queue.
#[derive(Clone, Copy, Debug)]
pub struct QueuePlace {
    pub timeout: Duration,
    pub position: u64,
}

/// A turn that began, or the earlier one its idempotency key points at (finished).
pub enum Started {
    Live {
        live: Arc<Live>,
        execution_id: ExecutionId,
        session_id: SessionId,
    },
    Replay(Box<Execution>),
}

/// A task that was queued, holding what its caller took for it, or the earlier one its
/// idempotency key points at (finished).
pub enum Queued<H> {
    Accepted {
        live: Arc<Live>,
        execution_id: ExecutionId,
        held: H,
    },
    Replay(Box<Execution>),
}

/// What beginning a queued task came to.
pub enum Begun {
    Running,
    /// Its session is answering another turn: it waits again.
    SessionBusy,
    /// Cancelled or removed meanwhile.
    Gone,
}

/// The rules a message of `kind` must meet, checked before anything is kept.
pub fn check_message(kind: ExecutionKind, message: &str) -> Result<(), Error> {
    if message.trim().is_empty() {
        return Err(Error::EmptyMessage);
    }
    let max = match kind {
        ExecutionKind::Public => MAX_VISITOR_MESSAGE_CHARS,
        ExecutionKind::Task => return Ok(()),
        ExecutionKind::Chat | ExecutionKind::Voice | ExecutionKind::Paid => MAX_MESSAGE_CHARS,
    };
    // Cheap first: a message of no more bytes than the limit has no more characters.
    if message.len() > max && message.chars().count() > max {
        return Err(Error::MessageTooLong { max });
    }
    Ok(())
}

/// Cheap-clone handle to the turn service.
#[derive(Clone)]
pub struct Turns {
    store: Store,
    executions: Executions,
    /// session id → the execution running in it.
    busy: Arc<Mutex<HashMap<SessionId, ExecutionId>>>,
}

impl Turns {
    pub fn new(store: Store, executions: Executions) -> Turns {
        Turns {
            store,
            executions,
            busy: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits a turn and begins it, or replays the one its idempotency key names.
    pub async fn start(&self, request: TurnRequest) -> Result<Started, Error> {
        check_message(request.kind, &request.message)?;
        let agent = request.agent.clone();
        let slots = agent.clone();
        let model = request.model.clone();
        let take = move || slots.try_slot().map_err(Error::from);
        let (execution, resume, slot, on_disk, live) = match self.admit(request, None, take).await?
        {
            Admitted::Accepted {
                execution,
                resume,
                held,
                on_disk,
                live,
            } => (execution, resume, held, on_disk, live),
            Admitted::Replay(execution) => return Ok(Started::Replay(execution)),
        };
        let (execution_id, session_id) = (execution.id.clone(), execution.session_id.clone());
        let run = run::Run {
            prompt: execution.message.clone(),
            timeout: agent.config.timeout,
            agent,
            execution: *execution,
            model,
            resume,
        };
        self.run(live.clone(), run, Box::new(move |_| drop(slot)))
            .await;
        // The engine starts while the admission reaches the disk; the caller hears of the
        // turn only once it has (for a quick engine, the final commit takes both at once).
        if let Err(err) = on_disk.wait().await {
            // A failed commit dropped the admission: the run stores nothing of itself (its
            // record is not there); stop it and answer once it has given the session back.
            live.stop(crate::executions::StopReason::Shutdown);
            live.finished().await;
            return Err(err.into());
        }
        Ok(Started::Live {
            live,
            execution_id,
            session_id: session_id.unwrap_or_default(),
        })
    }

    /// Admits a task as queued at `place`, with `take` taking its place in the caller's queue
    /// inside the admission step (after every check, before the first write). What `take`
    /// gave comes back with the accepted task, and is dropped when the task is refused.
    pub async fn queue<H: Send + 'static>(
        &self,
        request: TurnRequest,
        place: QueuePlace,
        take: impl FnOnce() -> Result<H, Error> + Send + 'static,
    ) -> Result<Queued<H>, Error> {
        check_message(request.kind, &request.message)?;
        match self.admit(request, Some(place), take).await? {
            Admitted::Accepted {
                execution,
                held,
                on_disk,
                live,
                ..
            } => {
                if let Err(err) = on_disk.wait().await {
                    self.executions.abandon(&live);
                    return Err(err.into());
                }
                Ok(Queued::Accepted {
                    live,
                    execution_id: execution.id,
                    held,
                })
            }
            Admitted::Replay(execution) => Ok(Queued::Replay(execution)),
        }
    }

    /// Begins a queued task the pool picked: one commit marks it running, takes it out of the
    /// durable queue and, when it continues a session, stores its user message and marks the
    /// session busy. `after` runs once the run's final state is committed; it is dropped
    /// unrun when the task does not begin.
    pub async fn begin_queued(
        &self,
        agent: Arc<Agent>,
        live: Arc<Live>,
        place: QueuePlace,
        after: AfterHook,
    ) -> Result<Begun, store::Error> {
        let busy = self.busy.clone();
        let execution_id = live.execution_id.clone();
        let begun = self
            .store
            .write(move |tx| admit::begin_queued(tx, &execution_id, place.position, &busy))
            .await?;
        let (execution, resume) = match begun {
            admit::Begin::Running(execution, resume) => (*execution, resume),
            admit::Begin::SessionBusy => return Ok(Begun::SessionBusy),
            admit::Begin::Gone => return Ok(Begun::Gone),
        };
        let run = run::Run {
            prompt: execution.message.clone(),
            model: execution.model.clone(),
            timeout: place.timeout.min(agent.config.timeout),
            agent,
            execution,
            resume,
        };
        self.run(live, run, after).await;
        Ok(Begun::Running)
    }

    /// The running execution of a session, if any.
    pub fn running_in(&self, session_id: &str) -> Option<ExecutionId> {
        lock(&self.busy).get(session_id).cloned()
    }

    /// The admission step, and what follows from its answer: a refused or replayed turn
    /// leaves no registration and no busy mark behind.
    async fn admit<H: Send + 'static>(
        &self,
        request: TurnRequest,
        queued: Option<QueuePlace>,
        take: impl FnOnce() -> Result<H, Error> + Send + 'static,
    ) -> Result<Admitted<H>, Error> {
        let execution_id = ExecutionId::new();
        let live = self
            .executions
            .register(&execution_id, request.agent.name());
        let marked = Arc::new(Mutex::new(None::<SessionId>));
        let admitted = {
            let (busy, marked) = (self.busy.clone(), marked.clone());
            let plan = Plan::new(request, execution_id, queued);
            self.store
                .write_deferred(move |tx| plan.admit(tx, &busy, &marked, take))
                .await
        };
        if let Ok((Admission::Accepted(execution, resume, held), on_disk)) = admitted {
            return Ok(Admitted::Accepted {
                execution,
                resume,
                held,
                on_disk,
                live,
            });
        }
        self.executions.abandon(&live);
        if let Some(session_id) = lock(&marked).take() {
            lock(&self.busy).remove(&session_id);
        }
        match admitted {
            Ok((Admission::Duplicate(record), _)) => {
                Ok(Admitted::Replay(self.replay_or_conflict(record).await?))
            }
            Ok((Admission::Rejected(err), _)) => Err(err),
            Err(err) => Err(err.into()),
            Ok((Admission::Accepted(..), _)) => unreachable!("handled above"),
        }
    }

    async fn replay_or_conflict(&self, record: IdempotencyRecord) -> Result<Box<Execution>, Error> {
        let id = record.execution_id.clone();
        let execution = self.store.read(move |r| r.execution(&id)).await?;
        match execution {
            Some(execution) if execution.status.is_final() => Ok(Box::new(execution)),
            _ => Err(Error::DuplicateInFlight {
                execution_id: record.execution_id,
            }),
        }
    }
}

/// What the admission came to, for its caller.
enum Admitted<H> {
    Accepted {
        execution: Box<Execution>,
        resume: Option<String>,
        held: H,
        on_disk: Durable,
        live: Arc<Live>,
    },
    Replay(Box<Execution>),
}
