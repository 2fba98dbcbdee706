//! Running an admitted turn: the session's history, the `init` event, and the final commit's
//! reply; then the busy mark and the capacity go back.

use super::Turns;
use crate::agents::Agent;
use crate::clock::Timestamp;
use crate::engines::{HistoryMessage, Turn};
use crate::executions::{AfterHook, Finished, Live, RunSpec};
use crate::records::{Execution, ExecutionKind, Message};
use crate::store::{self, Tx};
use crate::sync::lock;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Earlier messages handed to engines that take the history.
const HISTORY_MESSAGES: usize = 50;

/// An admitted turn, ready to run.
pub(super) struct Run {
    pub agent: Arc<Agent>,
    /// The record as committed.
    pub execution: Execution,
    pub prompt: String,
    /// The model the caller asked for, if any.
    pub model: Option<String>,
    /// The engine's handle to the session's conversation.
    pub resume: Option<String>,
    pub timeout: Duration,
}

impl Turns {
    /// Starts the engine on an admitted turn; `after` runs once its final state is committed,
    /// after the session's busy mark is gone.
    pub(super) async fn run(&self, live: Arc<Live>, run: Run, after: AfterHook) {
        let history = match (&run.execution.session_id, run.agent.engine.wants_history()) {
            (Some(session_id), true) => self.history(session_id).await,
            _ => Vec::new(),
        };
        let execution = &run.execution;
        let init_event = json!({
            "type": "system",
            "subtype": "init",
            "session_id": execution.session_id,
            "execution_id": execution.id,
            "agent": run.agent.name(),
            "model": execution.model,
        });
        let busy = self.busy.clone();
        let spec = RunSpec {
            engine: run.agent.engine.clone(),
            turn: Turn {
                prompt: run.prompt,
                history,
                resume: run.resume,
                model: run.model,
            },
            timeout: run.timeout,
            init_event,
            finish: Box::new(store_reply),
            after: Box::new(move |execution| {
                if let Some(session_id) = &execution.session_id {
                    lock(&busy).remove(session_id);
                }
                after(execution);
            }),
            execution: run.execution,
        };
        self.executions.spawn(live, spec);
    }

    /// The session's messages before this turn's, as engines take them: without empty ones
    /// and without paid replies whose settlement has not gone through. A store that cannot
    /// be read gives no history (the turn runs on what it has; the cause is logged).
    async fn history(&self, session_id: &str) -> Vec<HistoryMessage> {
        let id = session_id.to_string();
        let earlier = self
            .store
            .read_current(move |r| {
                let mut earlier = r.messages(&id, None, HISTORY_MESSAGES + 1)?;
                earlier.pop(); // the message of this turn
                let mut kept = Vec::with_capacity(earlier.len());
                for message in earlier {
                    if !message.content.is_empty() && r.released(&message)? {
                        kept.push(message);
                    }
                }
                Ok(kept)
            })
            .await;
        match earlier {
            Ok(earlier) => earlier
                .into_iter()
                .map(|m| HistoryMessage {
                    role: m.role,
                    content: m.content,
                })
                .collect(),
            Err(err) => {
                tracing::error!(cause = %err, %session_id, "reading a session's history failed; the turn runs without it");
                Vec::new()
            }
        }
    }
}

/// The final-commit hook of a turn: the assistant message and the engine's resume handle.
fn store_reply(tx: &Tx<'_>, finished: &Finished<'_>) -> Result<(), store::Error> {
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
        source: execution.kind.source().into(),
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
