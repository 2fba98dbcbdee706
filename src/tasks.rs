//! Tasks: work that runs without its caller waiting. A bounded pool of workers, a queue per
//! agent (first in, first out) served round-robin across agents so one agent's flood cannot
//! starve another's work, and a queue that lives in the store: after any restart the queued
//! work runs, in order, and work that was running is `failed` / `interrupted`.
//!
//! A task takes a worker (`[pool] workers`) and one of its agent's run slots (shared with
//! chat turns) to start. A full queue is an answer, not a wait: `429 queue_full`, nothing stored.

mod start;
mod submit;

pub use submit::{Submitted, TaskRequest};

use crate::agents::Agents;
use crate::executions::{Executions, Live};
use crate::ids::{ExecutionId, SessionId};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{self, Store};
use crate::sync::lock;
use crate::turns::Turns;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// What can go wrong submitting or cancelling tasks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Turn(#[from] crate::turns::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A task waiting for a worker.
struct Queued {
    execution_id: ExecutionId,
    /// Its key in the durable queue.
    position: u64,
    session_id: Option<SessionId>,
    timeout: Duration,
    enqueued_at: Instant,
    live: Arc<Live>,
}

#[derive(Default)]
struct Queues {
    by_agent: BTreeMap<String, VecDeque<Queued>>,
    /// Submissions counted against capacity before their commit, per agent.
    reserved: BTreeMap<String, usize>,
    /// Queued plus reserved, over all agents.
    waiting: usize,
    /// Tasks holding a worker.
    running: usize,
    /// The agent served last, so the next round starts after it.
    last_served: Option<String>,
}

impl Queues {
    fn depth(&self, agent: &str) -> usize {
        self.by_agent.get(agent).map_or(0, VecDeque::len)
            + self.reserved.get(agent).copied().unwrap_or(0)
    }
}

/// Cheap-clone handle to the pool.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    executions: Executions,
    turns: Turns,
    agents: Arc<Agents>,
    metrics: Arc<Metrics>,
    workers: usize,
    capacity: usize,
    state: Mutex<Queues>,
    next_position: AtomicU64,
    /// Wakes the scheduler: a task was queued, or a slot or worker freed up.
    kick: Arc<Notify>,
}

impl Pool {
    pub fn new(
        store: Store,
        executions: Executions,
        turns: Turns,
        agents: Arc<Agents>,
        metrics: Arc<Metrics>,
        workers: usize,
        capacity: usize,
    ) -> Pool {
        let kick = agents.slot_freed();
        Pool {
            inner: Arc::new(Inner {
                store,
                executions,
                turns,
                agents,
                metrics,
                workers,
                capacity,
                state: Mutex::new(Queues::default()),
                next_position: AtomicU64::new(0),
                kick,
            }),
        }
    }

    /// Starts the scheduler; it stops starting work when `shutdown` fires.
    pub fn spawn_scheduler(&self, shutdown: Shutdown) -> JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            loop {
                pool.schedule();
                tokio::select! {
                    _ = pool.inner.kick.notified() => {}
                    _ = shutdown.wait() => break,
                }
            }
        })
    }

    fn kick(&self) {
        self.inner.kick.notify_one();
    }

    /// Starts every queued task that can start now: round-robin over agents, one task per
    /// agent per round, while workers and the agents' slots allow.
    fn schedule(&self) {
        let mut picks = Vec::new();
        {
            let mut state = lock(&self.inner.state);
            let mut names: Vec<String> = state
                .by_agent
                .iter()
                .filter(|(_, q)| !q.is_empty())
                .map(|(name, _)| name.clone())
                .collect();
            if let Some(last) = &state.last_served {
                let split = names.iter().position(|n| n > last).unwrap_or(names.len());
                names.rotate_left(split);
            }
            let mut progress = true;
            while progress && state.running < self.inner.workers {
                progress = false;
                for name in &names {
                    if state.running >= self.inner.workers {
                        break;
                    }
                    let Some(agent) = self.inner.agents.get(name).filter(|a| !a.is_stopped())
                    else {
                        continue;
                    };
                    let Some(head) = state.by_agent.get(name).and_then(|q| q.front()) else {
                        continue;
                    };
                    if head
                        .session_id
                        .as_deref()
                        .is_some_and(|s| self.inner.turns.running_in(s).is_some())
                    {
                        continue;
                    }
                    let Ok(slot) = agent.try_slot() else {
                        continue;
                    };
                    let entry = state
                        .by_agent
                        .get_mut(name)
                        .and_then(VecDeque::pop_front)
                        .expect("head exists");
                    state.running += 1;
                    state.waiting -= 1;
                    state.last_served = Some(name.clone());
                    picks.push((agent, entry, slot));
                    progress = true;
                }
            }
            self.publish(&state);
        }
        for (agent, entry, slot) in picks {
            let pool = self.clone();
            tokio::spawn(async move { pool.start(agent, entry, slot).await });
        }
    }

    /// Gives a worker back.
    fn release_worker(&self) {
        let mut state = lock(&self.inner.state);
        state.running -= 1;
        self.publish(&state);
    }

    /// Puts a task back at the head of its agent's queue (its session was busy after all).
    fn requeue_front(&self, agent: &str, entry: Queued) {
        let mut state = lock(&self.inner.state);
        state.running -= 1;
        state.waiting += 1;
        state
            .by_agent
            .entry(agent.to_string())
            .or_default()
            .push_front(entry);
        self.publish(&state);
    }

    fn publish(&self, state: &Queues) {
        let metrics = &self.inner.metrics;
        metrics.set_gauge("outpost_task_workers_busy".into(), state.running as i64);
        metrics.set_gauge("outpost_task_workers".into(), self.inner.workers as i64);
        for (name, queue) in &state.by_agent {
            metrics.set_gauge(
                format!("outpost_task_queue_depth{{agent=\"{name}\"}}"),
                queue.len() as i64,
            );
        }
    }

    /// Tasks waiting, over all agents.
    pub fn waiting(&self) -> usize {
        lock(&self.inner.state).waiting
    }

    /// At start: puts the stored queue back in memory, in submission order.
    pub async fn recover(&self) -> Result<usize, Error> {
        let queue = self.inner.store.read(|r| r.task_queue()).await?;
        let next = queue.last().map_or(0, |(position, _)| position + 1);
        self.inner.next_position.store(next, Ordering::SeqCst);
        let mut restored = 0;
        for (position, execution_id) in queue {
            let id = execution_id.clone();
            let execution = match self.inner.store.read(move |r| r.execution(&id)).await {
                Ok(execution) => execution,
                Err(err) => {
                    tracing::error!(%execution_id, cause = %err, "a queued task's execution cannot be read; it is set aside");
                    continue;
                }
            };
            let Some(execution) =
                execution.filter(|e| e.status == crate::records::ExecutionStatus::Queued)
            else {
                self.inner
                    .store
                    .write(move |tx| tx.dequeue_task(position))
                    .await?;
                continue;
            };
            let live = self
                .inner
                .executions
                .register(&execution.id, &execution.agent);
            let entry = Queued {
                execution_id: execution.id.clone(),
                position,
                session_id: execution.session_id.clone(),
                timeout: Duration::from_secs(execution.timeout_seconds.unwrap_or(600)),
                enqueued_at: Instant::now(),
                live,
            };
            let mut state = lock(&self.inner.state);
            state.waiting += 1;
            state
                .by_agent
                .entry(execution.agent.to_string())
                .or_default()
                .push_back(entry);
            restored += 1;
        }
        self.kick();
        Ok(restored)
    }

    /// Forgets every queued task of an agent that is being deleted (its rows go with it).
    pub fn drop_agent(&self, agent: &str) {
        let mut state = lock(&self.inner.state);
        if let Some(queue) = state.by_agent.remove(agent) {
            state.waiting -= queue.len();
            for entry in queue {
                self.inner.executions.abandon(&entry.live);
            }
        }
        self.inner
            .metrics
            .set_gauge(format!("outpost_task_queue_depth{{agent=\"{agent}\"}}"), 0);
    }

    /// Takes a queued task out of the queue and finishes it `cancelled`. False when it is not
    /// waiting (any more).
    pub async fn cancel_queued(&self, agent: &str, execution_id: &str) -> Result<bool, Error> {
        let entry = {
            let mut state = lock(&self.inner.state);
            let queue = state.by_agent.get_mut(agent);
            let found = queue.and_then(|q| {
                let index = q.iter().position(|e| e.execution_id == execution_id)?;
                q.remove(index)
            });
            if found.is_some() {
                state.waiting -= 1;
                self.publish(&state);
            }
            found
        };
        let Some(entry) = entry else {
            return Ok(false);
        };
        start::finish_cancelled(self, entry).await?;
        Ok(true)
    }
}
