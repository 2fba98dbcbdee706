//! Engines turn one turn (a prompt, the conversation so far or a resume handle) into a stream
//! of stream-json events and a final [`Outcome`]. They know nothing of HTTP, sessions or storage.
//!
//! An engine must stop its work when the future it returned is dropped: that is how timeouts
//! and cancellation reach it (the command engine kills its whole process group then).

pub mod command;
pub mod echo;
pub mod openai;

use crate::config::EngineSpec;
use crate::outbound::OutboundPolicy;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;

/// A boxed engine future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One earlier message of the conversation, for engines that take the history.
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryMessage {
    pub role: String,
    pub content: String,
}

/// What the engine is asked to do.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    /// The user's message.
    pub prompt: String,
    /// Earlier messages of the session, oldest first (not including `prompt`).
    pub history: Vec<HistoryMessage>,
    /// The engine's own handle for the conversation, from an earlier [`Outcome::resume`].
    pub resume: Option<String>,
    /// A model the caller asked for, if the engine lets callers choose.
    pub model: Option<String>,
}

/// Token counts of a turn.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
}

impl Usage {
    pub fn to_json(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
        })
    }

    /// Reads the usage object of a stream-json `assistant` message or `result` event.
    pub fn from_json(value: &Value) -> Usage {
        let count = |field: &str| value.get(field).and_then(Value::as_u64).unwrap_or(0);
        Usage {
            input_tokens: count("input_tokens"),
            output_tokens: count("output_tokens"),
            cache_read_input_tokens: count("cache_read_input_tokens"),
            cache_creation_input_tokens: count("cache_creation_input_tokens"),
        }
    }
}

/// How a turn ended, as far as the engine knows.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// The final assistant text.
    pub text: String,
    pub usage: Usage,
    pub cost_usd: f64,
    pub num_turns: u32,
    /// The engine's handle to continue this conversation next turn (command engine).
    pub resume: Option<String>,
    /// `tool_use` blocks seen during the turn.
    pub tool_calls: Vec<Value>,
    pub model: Option<String>,
}

/// Why an engine could not finish a turn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The engine could not be reached or started (503 to callers).
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The engine ran and reported a failure; `detail` may hold stderr or the server's text.
    #[error("engine failed: {message}")]
    Failed { message: String, detail: String },
}

/// Where an engine sends its stream-json events as they happen.
#[derive(Clone)]
pub struct EventSink {
    events: mpsc::UnboundedSender<Value>,
}

impl EventSink {
    /// A sink and the receiving end the executions spine reads.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Value>) {
        let (events, rx) = mpsc::unbounded_channel();
        (EventSink { events }, rx)
    }

    /// Sends one event; a closed receiver means nobody records the turn any more.
    pub fn send(&self, event: Value) {
        let _ = self.events.send(event);
    }
}

/// A source of agent turns.
pub trait Engine: Send + Sync {
    /// The kind name (`echo`, `command`, `openai`).
    fn kind(&self) -> &'static str;

    /// True when the engine wants the session's earlier messages in [`Turn::history`]
    /// (engines that keep their own conversation state resume from a handle instead).
    fn wants_history(&self) -> bool {
        false
    }

    /// Runs one turn, sending events to `sink` as they are produced.
    fn run<'a>(&'a self, turn: Turn, sink: EventSink) -> BoxFuture<'a, Result<Outcome, Error>>;
}

/// Builds the engine a configuration describes; `outbound` says where it may connect.
pub fn build(config: &EngineSpec, outbound: OutboundPolicy) -> Arc<dyn Engine> {
    match config {
        EngineSpec::Echo { delay_ms } => Arc::new(echo::Echo::new(*delay_ms)),
        EngineSpec::Command { .. } => Arc::new(command::Command::new(config.clone())),
        EngineSpec::OpenAi { .. } => Arc::new(openai::OpenAi::new(config.clone(), outbound)),
    }
}

/// A `stream_event` carrying one text delta, as Claude Code emits with partial messages.
pub fn text_delta_event(text: &str) -> Value {
    json!({
        "type": "stream_event",
        "event": {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": text},
        },
    })
}

/// A complete `assistant` event with one text block.
pub fn assistant_event(text: &str, model: Option<&str>, usage: &Usage) -> Value {
    json!({
        "type": "assistant",
        "message": {
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "usage": usage.to_json(),
        },
    })
}
