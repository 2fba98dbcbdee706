//! Accepting a task: capacity is reserved first, the execution and its queue entry are
//! committed in one write, and only then does the task join the in-memory queue.

use super::{Error, Pool, Queued};
use crate::agents::Agent;
use crate::chat::{lock, request_digest, IDEMPOTENCY_WINDOW_MS};
use crate::clock::Timestamp;
use crate::executions::Live;
use crate::records::{Execution, ExecutionKind, ExecutionStatus, SessionStatus};
use crate::store::IdempotencyRecord;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A task to queue.
pub struct TaskRequest {
    pub agent: Arc<Agent>,
    pub username: String,
    pub message: String,
    /// Resume this chat session of the caller (tasks are stateless otherwise).
    pub session_id: Option<String>,
    /// Already clamped to the agent's cap.
    pub timeout: Duration,
    pub model: Option<String>,
    pub idempotency_key: Option<String>,
}

/// An accepted task, or the earlier one its idempotency key names (finished).
pub enum Submitted {
    Accepted {
        live: Arc<Live>,
        execution_id: String,
    },
    Replay(Box<Execution>),
}

enum Admission {
    Accepted,
    Duplicate(IdempotencyRecord),
    /// The key names an earlier, different request.
    Reused,
    SessionNotFound,
}

fn fresh(record: &IdempotencyRecord) -> bool {
    Timestamp::now().0 - record.created_at.0 < IDEMPOTENCY_WINDOW_MS
}

impl Pool {
    /// Queues a task, durably, or says why not.
    pub async fn submit(&self, request: TaskRequest) -> Result<Submitted, Error> {
        if request.message.trim().is_empty() {
            return Err(crate::chat::Error::EmptyMessage.into());
        }
        let agent_name = request.agent.name().to_string();
        let digest = request_digest(&serde_json::json!({
            "kind": ExecutionKind::Task,
            "message": request.message,
            "session_id": request.session_id,
            "timeout_seconds": request.timeout.as_secs(),
            "model": request.model,
        }));
        if let Some(key) = &request.idempotency_key {
            let parts = [agent_name.clone(), request.username.clone(), key.clone()];
            let found = self
                .inner
                .store
                .read(move |r| r.idempotency(&[&parts[0], &parts[1], &parts[2]]))
                .await?;
            if let Some(record) = found.filter(fresh) {
                if !record.same_request(&digest) {
                    return Err(crate::chat::Error::IdempotencyKeyReused.into());
                }
                return self.replay_or_conflict(record).await;
            }
        }
        self.reserve(&agent_name, request.agent.config.queue_capacity)?;
        let execution_id = crate::ids::new_id();
        let live = self.inner.executions.register(&execution_id, &agent_name);
        let position = self.inner.next_position.fetch_add(1, Ordering::SeqCst);
        let now = Timestamp::now();
        let execution = Execution {
            id: execution_id.clone(),
            agent: agent_name.clone(),
            kind: ExecutionKind::Task,
            status: ExecutionStatus::Queued,
            username: Some(request.username.clone()),
            origin: None,
            message: request.message.clone(),
            created_at: now,
            started_at: None,
            finished_at: None,
            duration_ms: None,
            cost_usd: 0.0,
            session_id: request.session_id.clone(),
            response: None,
            error: None,
            tool_calls: Vec::new(),
            usage: serde_json::Value::Null,
            model: request.model.clone().or_else(|| request.agent.model()),
            num_turns: 0,
            events_count: 0,
            payment: None,
            timeout_seconds: Some(request.timeout.as_secs().max(1)),
        };
        let key = request
            .idempotency_key
            .clone()
            .map(|key| [agent_name.clone(), request.username.clone(), key]);
        let username = request.username.clone();
        let admitted = self
            .inner
            .store
            .write(move |tx| {
                if let Some(parts) = &key {
                    let parts = [parts[0].as_str(), parts[1].as_str(), parts[2].as_str()];
                    if let Some(record) = tx.idempotency(&parts)?.filter(fresh) {
                        if !record.same_request(&digest) {
                            return Ok(Admission::Reused);
                        }
                        return Ok(Admission::Duplicate(record));
                    }
                }
                if let Some(session_id) = &execution.session_id {
                    let session = tx.session(session_id)?.filter(|s| {
                        s.agent_name == execution.agent
                            && s.username == username
                            && s.status == SessionStatus::Active
                    });
                    if session.is_none() {
                        return Ok(Admission::SessionNotFound);
                    }
                }
                tx.put_execution(&execution)?;
                tx.enqueue_task(position, &execution.id)?;
                if let Some(parts) = &key {
                    let parts = [parts[0].as_str(), parts[1].as_str(), parts[2].as_str()];
                    let record = IdempotencyRecord {
                        execution_id: execution.id.clone(),
                        created_at: execution.created_at,
                        request_digest: Some(digest),
                    };
                    tx.put_idempotency(&parts, &record)?;
                }
                Ok(Admission::Accepted)
            })
            .await;
        match admitted {
            Ok(Admission::Accepted) => {
                let entry = Queued {
                    execution_id: execution_id.clone(),
                    position,
                    session_id: request.session_id,
                    timeout: request.timeout,
                    enqueued_at: Instant::now(),
                    live: live.clone(),
                };
                self.enqueue_reserved(&agent_name, entry);
                Ok(Submitted::Accepted { live, execution_id })
            }
            other => {
                self.unreserve(&agent_name);
                self.inner.executions.abandon(&live);
                match other {
                    Ok(Admission::Duplicate(record)) => self.replay_or_conflict(record).await,
                    Ok(Admission::SessionNotFound) => {
                        Err(crate::chat::Error::SessionNotFound.into())
                    }
                    Ok(Admission::Reused) => Err(crate::chat::Error::IdempotencyKeyReused.into()),
                    Err(err) => Err(err.into()),
                    Ok(Admission::Accepted) => unreachable!("handled above"),
                }
            }
        }
    }

    async fn replay_or_conflict(&self, record: IdempotencyRecord) -> Result<Submitted, Error> {
        let id = record.execution_id.clone();
        let execution = self.inner.store.read(move |r| r.execution(&id)).await?;
        match execution {
            Some(execution) if execution.status.is_final() => {
                Ok(Submitted::Replay(Box::new(execution)))
            }
            _ => Err(crate::chat::Error::DuplicateInFlight {
                execution_id: record.execution_id,
            }
            .into()),
        }
    }

    /// Counts a submission against the global and the agent's capacity, or refuses it.
    fn reserve(&self, agent: &str, agent_capacity: usize) -> Result<(), Error> {
        let mut state = lock(&self.inner.state);
        if state.waiting >= self.inner.capacity {
            return Err(Error::QueueFull {
                scope: "all agents",
            });
        }
        if state.depth(agent) >= agent_capacity {
            return Err(Error::QueueFull {
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
