//! Beginning a picked task (see `turns::Turns::begin_queued`), and finishing one cancelled
//! while it waited.

use super::{Error, Pool, Queued};
use crate::agents::{Agent, Slot};
use crate::clock::Timestamp;
use crate::executions::result_event;
use crate::records::{Execution, ExecutionStatus, Failure};
use crate::turns::{Begun, QueuePlace};
use std::sync::Arc;
use std::time::Instant;

impl Pool {
    pub(super) async fn start(&self, agent: Arc<Agent>, entry: Queued, slot: Slot) {
        self.inner.metrics.observe(
            "outpost_task_queue_wait_seconds",
            entry.enqueued_at.elapsed(),
        );
        let place = QueuePlace {
            timeout: entry.timeout,
            position: entry.position,
        };
        let pool = self.clone();
        let began_at = Instant::now();
        let after = Box::new(move |_: &Execution| {
            pool.inner
                .metrics
                .observe("outpost_task_run_seconds", began_at.elapsed());
            pool.release_worker();
            drop(slot); // wakes the scheduler
        });
        let begun = self
            .inner
            .turns
            .begin_queued(agent.clone(), entry.live.clone(), place, after)
            .await;
        // Unless it runs, `after` is dropped unrun here, and the slot with it.
        match begun {
            Ok(Begun::Running) => {}
            Ok(Begun::SessionBusy) => self.requeue_front(agent.name(), entry),
            Ok(Begun::Gone) => self.release_worker(),
            Err(err) => {
                // The store failed: the task stays queued in the store and runs after a restart.
                tracing::error!(cause = %err, execution_id = %entry.execution_id, "starting a task failed");
                self.release_worker();
            }
        }
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
            execution.failure = Some(Failure::Cancelled);
            execution.error = Some(Failure::Cancelled.text().into());
            execution.finished_at = Some(now);
            execution.duration_ms = Some(0);
            execution.usage = crate::engines::Usage::default().to_json();
            let result = result_event(&execution, "cancelled", Failure::Cancelled.text());
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
