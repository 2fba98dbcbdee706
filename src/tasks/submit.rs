//! Accepting a task: a turn admitted as queued (see `turns`), whose place in the queue's
//! capacity is reserved inside the admission step; only once the admission is durable does
//! the task join the in-memory queue.

use super::{Error, Pool, Queued};
use crate::agents::Agent;
use crate::executions::Live;
use crate::ids::{ExecutionId, SessionId};
use crate::records::{Execution, ExecutionKind};
use crate::sync::lock;
use crate::turns::{self, QueuePlace, SessionPolicy, TurnRequest};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A task to queue.
pub struct TaskRequest {
    pub agent: Arc<Agent>,
    pub username: String,
    pub message: String,
    /// Resume this chat session of the caller (tasks are stateless otherwise).
    pub session_id: Option<SessionId>,
    /// Already clamped to the agent's cap.
    pub timeout: Duration,
    pub model: Option<String>,
    pub idempotency_key: Option<String>,
}

/// An accepted task, or the earlier one its idempotency key names (finished).
pub enum Submitted {
    Accepted {
        live: Arc<Live>,
        execution_id: ExecutionId,
    },
    Replay(Box<Execution>),
}

/// A submission counted against the queue's capacity until it is queued; dropped unqueued
/// (the task was refused, or the store failed), it gives its place back.
struct Reservation {
    pool: Pool,
    agent: String,
    queued: bool,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.queued {
            self.pool.unreserve(&self.agent);
        }
    }
}

impl Pool {
    /// Queues a task, durably, or says why not.
    pub async fn submit(&self, request: TaskRequest) -> Result<Submitted, Error> {
        let agent = request.agent.clone();
        let place = QueuePlace {
            timeout: request.timeout,
            position: self.inner.next_position.fetch_add(1, Ordering::SeqCst),
        };
        let session = match request.session_id.clone() {
            Some(id) => SessionPolicy::Existing(id),
            None => SessionPolicy::Stateless,
        };
        let mut turn = TurnRequest::new(
            agent.clone(),
            request.username,
            request.message,
            ExecutionKind::Task,
            session,
        );
        turn.model = request.model;
        turn.idempotency_key = request.idempotency_key;
        let pool = self.clone();
        let (name, capacity) = (agent.name().to_string(), agent.config.queue_capacity);
        let take = move || {
            pool.reserve(&name, capacity)?;
            Ok(Reservation {
                pool,
                agent: name,
                queued: false,
            })
        };
        match self.inner.turns.queue(turn, place, take).await? {
            turns::Queued::Accepted {
                live,
                execution_id,
                mut held,
            } => {
                let entry = Queued {
                    execution_id: execution_id.clone(),
                    position: place.position,
                    session_id: request.session_id,
                    timeout: request.timeout,
                    enqueued_at: Instant::now(),
                    live: live.clone(),
                };
                self.enqueue_reserved(agent.name(), entry);
                held.queued = true;
                Ok(Submitted::Accepted { live, execution_id })
            }
            turns::Queued::Replay(execution) => Ok(Submitted::Replay(execution)),
        }
    }

    /// Counts a submission against the global and the agent's capacity, or refuses it.
    fn reserve(&self, agent: &str, agent_capacity: usize) -> Result<(), turns::Error> {
        let mut state = lock(&self.inner.state);
        if state.waiting >= self.inner.capacity {
            return Err(turns::Error::QueueFull {
                scope: "all agents",
            });
        }
        if state.depth(agent) >= agent_capacity {
            return Err(turns::Error::QueueFull {
                scope: "this agent",
            });
        }
        state.waiting += 1;
        *state.reserved.entry(agent.to_string()).or_default() += 1;
        Ok(())
    }

    fn unreserve(&self, agent: &str) {
        let mut state = lock(&self.inner.state);
        state.waiting -= 1;
        if let Some(n) = state.reserved.get_mut(agent) {
            *n -= 1;
        }
    }

    fn enqueue_reserved(&self, agent: &str, entry: Queued) {
        {
            let mut state = lock(&self.inner.state);
            if let Some(n) = state.reserved.get_mut(agent) {
                *n -= 1;
            }
            // The queue is ordered by position: a later submission can commit first.
            let queue = state.by_agent.entry(agent.to_string()).or_default();
            let at = queue
                .iter()
                .rposition(|q| q.position < entry.position)
                .map_or(0, |i| i + 1);
            queue.insert(at, entry);
            self.publish(&state);
        }
        self.kick();
    }
}
