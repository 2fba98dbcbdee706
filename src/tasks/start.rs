//! Starting a picked task (one commit: running, out of the durable queue, and the user
//! message when it resumes a session), and finishing one cancelled while it waited.

use super::{Error, Pool, Queued};
use crate::agents::{Agent, Slot};
use crate::chat::{lock, store_reply};
use crate::clock::Timestamp;
use crate::engines::{HistoryMessage, Turn};
use crate::executions::{result_event, RunSpec};
use crate::records::{Execution, ExecutionStatus, Message};
use serde_json::json;
use std::sync::Arc;
use std::time::Instant;

enum Started {
    Running {
        execution: Box<Execution>,
        resume: Option<String>,
    },
    /// Its session runs a turn: back to the head of the queue.
    SessionBusy,
    /// Cancelled or gone meanwhile.
    Gone,
}

const HISTORY_MESSAGES: usize = 50;

impl Pool {
    pub(super) async fn start(&self, agent: Arc<Agent>, entry: Queued, slot: Slot) {
        self.inner.metrics.observe(
            "outpost_task_queue_wait_seconds",
            entry.enqueued_at.elapsed(),
        );
        let busy = self.inner.chat.busy_sessions();
        let (execution_id, position) = (entry.execution_id.clone(), entry.position);
        let started = self
            .inner
            .store
            .write(move |tx| {
                let Some(mut execution) = tx.execution(&execution_id)? else {
                    tx.dequeue_task(position)?;
                    return Ok(Started::Gone);
                };
                if execution.status != ExecutionStatus::Queued {
                    tx.dequeue_task(position)?;
                    return Ok(Started::Gone);
                }
                let now = Timestamp::now();
                let mut resume = None;
                if let Some(session_id) = execution.session_id.clone() {
                    let mut busy = lock(&busy);
                    if busy.contains_key(&session_id) {
                        return Ok(Started::SessionBusy);
                    }
                    if let Some(mut session) = tx.session(&session_id)? {
                        resume = tx.engine_state(&session_id)?;
                        let message = Message {
                            id: crate::ids::new_id_at(now),
                            session_id: session_id.clone(),
                            role: "user".into(),
                            content: execution.message.clone(),
                            created_at: now,
                            source: "task".into(),
                            execution_id: Some(execution.id.clone()),
                            cost_usd: None,
                            usage: None,
                            tool_calls: Vec::new(),
                            duration_ms: None,
                            status: None,
                            seq: 0,
                        };
                        tx.append_message(&mut session, message)?;
                        busy.insert(session_id, execution.id.clone());
                    }
                }
                execution.status = ExecutionStatus::Running;
                execution.started_at = Some(now);
                tx.put_execution(&execution)?;
                tx.dequeue_task(position)?;
                Ok(Started::Running {
                    execution: Box::new(execution),
                    resume,
                })
            })
            .await;
        match started {
            Ok(Started::Running { execution, resume }) => {
                self.run(agent, entry, slot, *execution, resume).await
            }
            Ok(Started::SessionBusy) => {
                self.requeue_front(agent.name(), entry);
                drop(slot);
            }
            Ok(Started::Gone) => {
                self.release_worker();
                drop(slot);
            }
            Err(err) => {
                // The store failed: the task stays queued in the store and runs after a restart.
                tracing::error!(cause = %err, execution_id = %entry.execution_id, "starting a task failed");
                self.release_worker();
                drop(slot);
            }
        }
    }

    async fn run(
        &self,
        agent: Arc<Agent>,
        entry: Queued,
        slot: Slot,
        execution: Execution,
        resume: Option<String>,
    ) {
        let history = match (&execution.session_id, agent.engine.wants_history()) {
            (Some(session_id), true) => {
                let id = session_id.clone();
                let earlier = self
                    .inner
                    .store
                    .read(move |r| r.messages(&id, None, HISTORY_MESSAGES + 1))
                    .await
                    .unwrap_or_default();
                let mut earlier: Vec<HistoryMessage> = earlier
                    .into_iter()
                    .filter(|m| !m.content.is_empty())
                    .map(|m| HistoryMessage {
                        role: m.role,
                        content: m.content,
                    })
                    .collect();
                earlier.pop(); // this task's own message
                earlier
            }
            _ => Vec::new(),
        };
        let init_event = json!({
            "type": "system",
            "subtype": "init",
            "session_id": execution.session_id,
            "execution_id": execution.id,
            "agent": agent.name(),
            "model": execution.model,
        });
        let pool = self.clone();
        let busy = self.inner.chat.busy_sessions();
        let started_at = Instant::now();
        let spec = RunSpec {
            turn: Turn {
                prompt: execution.message.clone(),
                history,
                resume,
                model: execution.model.clone(),
            },
            engine: agent.engine.clone(),
            timeout: entry.timeout.min(agent.config.timeout),
            init_event,
            finish: Box::new(|tx, finished| store_reply(tx, finished, "task")),
            after: Box::new(move |execution| {
                if let Some(session_id) = &execution.session_id {
                    lock(&busy).remove(session_id);
                }
                pool.inner
                    .metrics
                    .observe("outpost_task_run_seconds", started_at.elapsed());
                pool.release_worker();
                drop(slot); // wakes the scheduler
            }),
            execution,
        };
        self.inner.executions.spawn(entry.live, spec);
    }
}

/// Commits a queued task as `cancelled` (never started) and ends its followers.
pub(super) async fn finish_cancelled(pool: &Pool, entry: Queued) -> Result<(), Error> {
    let (execution_id, position) = (entry.execution_id.clone(), entry.position);
    let now = Timestamp::now();
    let finished = pool
        .inner
        .store
        .write(move |tx| {
            tx.dequeue_task(position)?;
            let Some(mut execution) = tx.execution(&execution_id)? else {
                return Ok(None);
            };
            execution.status = ExecutionStatus::Cancelled;
            execution.error = Some("cancelled".into());
            execution.finished_at = Some(now);
            execution.duration_ms = Some(0);
            execution.usage = crate::engines::Usage::default().to_json();
            let result = result_event(&execution, "cancelled", "cancelled");
            tx.append_events(&execution.id, 0, &[result.to_string()])?;
            execution.events_count = 1;
            tx.put_execution(&execution)?;
            Ok(Some((execution, result)))
        })
        .await?;
    if let Some((execution, result)) = finished {
        pool.inner
            .executions
            .finish_unstarted(&entry.live, execution, result);
    }
    Ok(())
}
