//! The spine: every run of every kind is an execution. It is created in the store before its
//! engine is called, its stream-json events get sequence numbers and are appended in batches
//! (one store write per burst, not per token), live followers see each event as it is recorded,
//! late followers replay from the store, and it is finished exactly once.
//!
//! A live execution keeps all its events in memory until it finishes, so a follower that
//! arrives mid-run replays from memory and then waits, with no gap between the two.

mod follow;
mod run;

pub use follow::Follow;
pub use run::{AfterHook, Finished, RunSpec};

use crate::clock::Timestamp;
use crate::ids::{AgentName, ExecutionId};
use crate::metrics::Metrics;
use crate::records::{Execution, ExecutionStatus, Failure};
use crate::store::{self, Store};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Why a run was stopped from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// A user asked (terminate): the run ends `cancelled`.
    Terminated,
    /// The daemon is stopping: the run ends `failed` with `error: "interrupted"`.
    Shutdown,
}

/// What can go wrong following or stopping executions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("execution not found")]
    NotFound,
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// An execution that is queued or running in this process.
pub struct Live {
    pub execution_id: ExecutionId,
    /// The agent it runs for.
    pub agent: AgentName,
    state: Mutex<LiveState>,
    /// Bumped after each change of `state`; followers wait on it.
    changed: watch::Sender<u64>,
    stop: watch::Sender<Option<StopReason>>,
}

struct LiveState {
    /// Every event so far; index = sequence number.
    events: Vec<Arc<str>>,
    /// Events below this index are durable.
    persisted: usize,
    /// Set once, when the final state is committed.
    /// Boxed: a queued task's registration stays small until it has a final record.
    finished: Option<Box<Execution>>,
}

impl Live {
    fn new(execution_id: ExecutionId, agent: AgentName) -> Live {
        Live {
            execution_id,
            agent,
            state: Mutex::new(LiveState {
                events: Vec::new(),
                persisted: 0,
                finished: None,
            }),
            changed: watch::channel(0).0,
            stop: watch::channel(None).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Asks the run to stop; the first reason wins.
    pub fn stop(&self, reason: StopReason) {
        self.stop.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }

    async fn stopped(&self) -> StopReason {
        let mut rx = self.stop.subscribe();
        loop {
            if let Some(reason) = *rx.borrow_and_update() {
                return reason;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Waits until the execution is finished and returns its final record.
    pub async fn finished(&self) -> Execution {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(execution) = self.lock().finished.clone() {
                return *execution;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The final record, when there is one.
    pub fn try_finished(&self) -> Option<Execution> {
        self.lock().finished.as_deref().cloned()
    }
}

/// Cheap-clone handle to the executions spine.
#[derive(Clone)]
pub struct Executions {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<ExecutionId, Arc<Live>>>,
    runs: Mutex<JoinSet<()>>,
}

impl Executions {
    pub fn new(store: Store, metrics: Arc<Metrics>) -> Executions {
        Executions {
            inner: Arc::new(Inner {
                store,
                metrics,
                live: Mutex::new(HashMap::new()),
                runs: Mutex::new(JoinSet::new()),
            }),
        }
    }

    fn live_map(&self) -> std::sync::MutexGuard<'_, HashMap<ExecutionId, Arc<Live>>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an execution as live before its record is committed, so that no follower
    /// can find it in neither place.
    pub fn register(&self, execution_id: &ExecutionId, agent: &str) -> Arc<Live> {
        let live = Arc::new(Live::new(execution_id.clone(), agent.into()));
        self.live_map().insert(execution_id.clone(), live.clone());
        live
    }

    /// Forgets a registration whose record was never committed.
    pub fn abandon(&self, live: &Live) {
        self.live_map().remove(&live.execution_id);
    }

    /// The live execution with this id, if it is queued or running here.
    pub fn live(&self, execution_id: &str) -> Option<Arc<Live>> {
        self.live_map().get(execution_id).cloned()
    }

    /// The live executions of one agent.
    pub fn live_of(&self, agent: &str) -> Vec<Arc<Live>> {
        self.live_map()
            .values()
            .filter(|l| l.agent == agent)
            .cloned()
            .collect()
    }

    /// Ids of every live execution.
    pub fn live_ids(&self) -> Vec<ExecutionId> {
        self.live_map().keys().cloned().collect()
    }

    /// Starts the run of a registered execution whose record is committed.
    pub fn spawn(&self, live: Arc<Live>, spec: RunSpec) {
        let this = self.clone();
        self.inner.metrics.add_running(1);
        let mut runs = self.inner.runs.lock().unwrap_or_else(|p| p.into_inner());
        // Reap finished runs so the set does not grow with history.
        while runs.try_join_next().is_some() {}
        runs.spawn(async move {
            run::drive(&this, &live, spec).await;
            this.inner.metrics.add_running(-1);
            this.live_map().remove(&live.execution_id);
        });
    }

    /// Finishes a registered execution that never ran (a task cancelled while queued):
    /// its final record is committed by the caller; followers now see the end.
    pub fn finish_unstarted(&self, live: &Live, execution: Execution, result: Value) {
        {
            let mut state = live.lock();
            state.events.push(Arc::from(result.to_string()));
            state.persisted = state.events.len();
            state.finished = Some(Box::new(execution.clone()));
        }
        live.bump();
        self.inner
            .metrics
            .record_execution(execution.kind, execution.status);
        self.live_map().remove(&live.execution_id);
    }

    /// Follows a live execution from its first event.
    pub fn follow_live(&self, live: Arc<Live>) -> Follow {
        Follow::live(live, None)
    }

    /// Follows an execution's events after `after` (from the start with None): replay, then
    /// live until it finishes.
    pub async fn follow(&self, execution_id: &str, after: Option<u32>) -> Result<Follow, Error> {
        if let Some(live) = self.live(execution_id) {
            return Ok(Follow::live(live, after));
        }
        let id = execution_id.to_string();
        let events = self
            .inner
            .store
            .read(move |r| r.events_after(&id, after))
            .await?;
        Ok(Follow::stored(events))
    }

    /// Stops every live run for shutdown and waits for them, at most until `deadline`.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        let mut runs =
            std::mem::take(&mut *self.inner.runs.lock().unwrap_or_else(|p| p.into_inner()));
        let waited = tokio::time::timeout_at(deadline, async {
            while runs.join_next().await.is_some() {}
        })
        .await;
        if waited.is_err() {
            let live: Vec<_> = self.live_map().values().cloned().collect();
            for run in live {
                run.stop(StopReason::Shutdown);
            }
            // The runs now finish quickly: their engines are dropped and they commit once.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while runs.join_next().await.is_some() {}
            })
            .await;
        }
    }

    /// At start: executions left running by a crash become `failed` with
    /// `error: "interrupted"`, and their event logs get the `result` line they never wrote.
    /// Returns how many were marked. Queued work is left to its owner (the task pool).
    pub async fn recover_interrupted(&self) -> Result<usize, Error> {
        let now = Timestamp::now();
        let count = self
            .inner
            .store
            .write(move |tx| {
                let mut marked = 0;
                for mut execution in tx.unfinished_executions()? {
                    if execution.status != ExecutionStatus::Running {
                        continue;
                    }
                    let next_seq = tx.next_event_seq(&execution.id)?;
                    execution.status = ExecutionStatus::Failed;
                    execution.failure = Some(Failure::Interrupted);
                    execution.error = Some(Failure::Interrupted.text().into());
                    execution.finished_at = Some(now);
                    execution.duration_ms =
                        execution.started_at.map(|s| (now.0 - s.0).max(0) as u64);
                    let result = result_event(
                        &execution,
                        "error_during_execution",
                        Failure::Interrupted.text(),
                    );
                    tx.append_events(&execution.id, next_seq, &[result.to_string()])?;
                    execution.events_count = next_seq + 1;
                    tx.put_execution(&execution)?;
                    marked += 1;
                }
                Ok(marked)
            })
            .await?;
        Ok(count)
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// The one `result` line that ends every stream.
pub fn result_event(execution: &Execution, subtype: &str, result_text: &str) -> Value {
    json!({
        "type": "result",
        "subtype": subtype,
        "is_error": subtype != "success",
        "result": result_text,
        "session_id": execution.session_id,
        "execution_id": execution.id,
        "duration_ms": execution.duration_ms.unwrap_or(0),
        "num_turns": execution.num_turns,
        "total_cost_usd": execution.cost_usd,
        "usage": execution.usage,
    })
}
