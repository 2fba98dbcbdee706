//! Driving one run: engine events in, batched appends to the store, one final commit.

use super::{result_event, Executions, Live, StopReason};
use crate::clock::Timestamp;
use crate::engines::{self, Engine, EventSink, Outcome, Turn};
use crate::records::{Execution, ExecutionStatus, Failure};
use crate::store::{self, Tx};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the final commit hook sees.
pub struct Finished<'a> {
    pub execution: &'a Execution,
    /// The engine's handle to resume the conversation, when it gave one.
    pub resume: Option<&'a str>,
}

/// Hook run inside the final transaction (e.g. storing the assistant message).
pub type FinishHook = Box<dyn FnOnce(&Tx<'_>, &Finished<'_>) -> Result<(), store::Error> + Send>;
/// Hook run after the final commit (e.g. releasing the session and the agent slot).
pub type AfterHook = Box<dyn FnOnce(&Execution) + Send>;

/// Everything a run needs besides its registration.
pub struct RunSpec {
    /// The record as committed at creation.
    pub execution: Execution,
    pub engine: Arc<dyn Engine>,
    pub turn: Turn,
    pub timeout: Duration,
    /// The `system/init` line, recorded as event 0.
    pub init_event: Value,
    pub finish: FinishHook,
    pub after: AfterHook,
}

/// How the engine part ended.
enum Ended {
    Engine(Result<Outcome, engines::Error>),
    TimedOut,
    Stopped(StopReason),
}

/// Text and tool calls seen in the events, for turns that end without an outcome.
#[derive(Default)]
struct Produced {
    assistant_text: String,
    delta_text: String,
    tool_calls: Vec<Value>,
}

impl Produced {
    fn observe(&mut self, event: &Value) {
        match event.get("type").and_then(Value::as_str) {
            Some("assistant") => {
                let blocks = event
                    .pointer("/message/content")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for block in blocks {
                    match block.get("type").and_then(Value::as_str) {
                        Some("text") => {
                            if let Some(text) = block.get("text").and_then(Value::as_str) {
                                self.assistant_text.push_str(text);
                            }
                        }
                        Some("tool_use") => self.tool_calls.push(block),
                        _ => {}
                    }
                }
            }
            Some("stream_event") => {
                if let Some(text) = event.pointer("/event/delta/text").and_then(Value::as_str) {
                    self.delta_text.push_str(text);
                }
            }
            _ => {}
        }
    }

    fn text(&self) -> &str {
        if self.assistant_text.is_empty() {
            &self.delta_text
        } else {
            &self.assistant_text
        }
    }
}

fn record(live: &Live, produced: &mut Produced, event: &Value) {
    produced.observe(event);
    live.lock().events.push(Arc::from(event.to_string()));
    live.bump();
}

/// Writes the events not yet durable.
async fn flush(executions: &Executions, live: &Live) {
    let (first, batch) = {
        let state = live.lock();
        let batch: Vec<String> = state.events[state.persisted..]
            .iter()
            .map(|e| e.to_string())
            .collect();
        (state.persisted, batch)
    };
    if batch.is_empty() {
        return;
    }
    let id = live.execution_id.clone();
    let n = batch.len();
    let written = executions
        .store()
        .write(move |tx| {
            if tx.has_execution(&id)? {
                tx.append_events(&id, first as u32, &batch)?;
            }
            Ok(())
        })
        .await;
    match written {
        Ok(()) => live.lock().persisted = first + n,
        Err(err) => {
            tracing::error!(cause = %err, execution_id = %live.execution_id, "appending events failed")
        }
    }
}

pub(super) async fn drive(executions: &Executions, live: &Arc<Live>, spec: RunSpec) {
    let RunSpec {
        mut execution,
        engine,
        turn,
        timeout,
        init_event,
        finish,
        after,
    } = spec;
    let started = Instant::now();
    let mut produced = Produced::default();
    record(live, &mut produced, &init_event);
    let (sink, mut events) = EventSink::channel();

    let ended = {
        let run = async {
            let engine_run = engine.run(turn, sink);
            tokio::pin!(engine_run);
            let mut result = None;
            loop {
                tokio::select! {
                    event = events.recv() => match event {
                        Some(event) => {
                            record(live, &mut produced, &event);
                            while let Ok(event) = events.try_recv() {
                                record(live, &mut produced, &event);
                            }
                            // While the engine still works, make the burst durable; once it
                            // is done, the final commit takes the rest in the same fsync.
                            if result.is_none() {
                                flush(executions, live).await;
                            }
                        }
                        None => break,
                    },
                    outcome = &mut engine_run, if result.is_none() => result = Some(outcome),
                }
            }
            result.unwrap_or_else(|| {
                Err(engines::Error::Unavailable(
                    "engine ended without a result".into(),
                ))
            })
        };
        tokio::select! {
            // A stop asked before the run began wins over starting the engine.
            biased;
            reason = live.stopped() => Ended::Stopped(reason),
            outcome = tokio::time::timeout(timeout, run) => match outcome {
                Ok(outcome) => Ended::Engine(outcome),
                Err(_) => Ended::TimedOut,
            },
        }
    };
    // The engine future is gone now; keep what it sent before it went.
    while let Ok(event) = events.try_recv() {
        record(live, &mut produced, &event);
    }

    let now = Timestamp::now();
    execution.finished_at = Some(now);
    execution.duration_ms = Some(started.elapsed().as_millis() as u64);
    let mut resume = None;
    let (subtype, result_text) = match ended {
        Ended::Engine(Ok(outcome)) => {
            execution.status = ExecutionStatus::Success;
            execution.usage = outcome.usage.to_json();
            execution.cost_usd = outcome.cost_usd;
            execution.num_turns = outcome.num_turns;
            execution.model = outcome.model.or(execution.model.take());
            execution.tool_calls = if outcome.tool_calls.is_empty() {
                std::mem::take(&mut produced.tool_calls)
            } else {
                outcome.tool_calls
            };
            resume = outcome.resume;
            execution.response = Some(outcome.text.clone());
            ("success", outcome.text)
        }
        Ended::Engine(Err(err)) => {
            let failure = match &err {
                engines::Error::Unavailable(_) => Failure::EngineUnavailable,
                engines::Error::Failed { .. } => Failure::EngineFailed,
            };
            let message = err.to_string();
            execution.error = Some(match &err {
                engines::Error::Failed { detail, .. } if !detail.is_empty() => {
                    format!("{message}\n{detail}")
                }
                _ => message.clone(),
            });
            failed(&mut execution, &produced, failure);
            ("error_during_execution", message)
        }
        Ended::TimedOut => {
            failed(&mut execution, &produced, Failure::Timeout);
            ("error_timeout", Failure::Timeout.text().to_string())
        }
        Ended::Stopped(StopReason::Terminated) => {
            failed(&mut execution, &produced, Failure::Cancelled);
            ("cancelled", Failure::Cancelled.text().to_string())
        }
        Ended::Stopped(StopReason::Shutdown) => {
            failed(&mut execution, &produced, Failure::Interrupted);
            (
                "error_during_execution",
                Failure::Interrupted.text().to_string(),
            )
        }
    };
    if execution.usage.is_null() {
        execution.usage = engines::Usage::default().to_json();
    }
    let result = result_event(&execution, subtype, &result_text);
    record(live, &mut produced, &result);

    let (first, rest) = {
        let state = live.lock();
        let rest: Vec<String> = state.events[state.persisted..]
            .iter()
            .map(|e| e.to_string())
            .collect();
        (state.persisted as u32, rest)
    };
    execution.events_count = first + rest.len() as u32;
    let final_record = execution.clone();
    let committed = executions
        .store()
        .write(move |tx| {
            if !tx.has_execution(&final_record.id)? {
                // Its admission never reached the disk (a failed commit dropped it): nothing
                // of it is kept. Not an error of this job: that would abort its whole batch.
                return Ok(false);
            }
            tx.append_events(&final_record.id, first, &rest)?;
            tx.put_execution(&final_record)?;
            finish(
                tx,
                &Finished {
                    execution: &final_record,
                    resume: resume.as_deref(),
                },
            )?;
            Ok(true)
        })
        .await
        .and_then(|kept| kept.then_some(()).ok_or(store::Error::Unavailable));
    if let Err(err) = committed {
        // The record stays `running` in the store and is marked interrupted at next start;
        // the caller hears that the reply was not kept, never that it was.
        tracing::error!(cause = %err, execution_id = %execution.id, "finishing an execution failed");
        let failure = match err {
            crate::store::Error::Full => Failure::DiskFull,
            _ => Failure::NotStored,
        };
        execution.error = None;
        failed(&mut execution, &produced, failure);
    }
    executions
        .metrics()
        .record_execution(execution.kind, execution.status);
    {
        let mut state = live.lock();
        state.persisted = state.events.len();
        state.finished = Some(Box::new(execution.clone()));
    }
    live.bump();
    after(&execution);
}

/// Ends the record as `failure` says, keeping what the engine produced before it stopped; the
/// `error` text is the failure's own unless the engine gave one.
fn failed(execution: &mut Execution, produced: &Produced, failure: Failure) {
    execution.status = match failure {
        Failure::Cancelled => ExecutionStatus::Cancelled,
        _ => ExecutionStatus::Failed,
    };
    execution.failure = Some(failure);
    execution
        .error
        .get_or_insert_with(|| failure.text().to_string());
    let text = produced.text();
    execution.response = (!text.is_empty()).then(|| text.to_string());
    execution.tool_calls = produced.tool_calls.clone();
}
