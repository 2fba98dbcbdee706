//! The openai engine: a client of any OpenAI-compatible `/chat/completions` server with
//! streaming (llama.cpp server, Ollama, vLLM, LocalAI, or a cloud API), over the daemon's
//! outbound client ([`crate::outbound`]: `http://` or `https://`).
//!
//! Each turn sends the system prompt, the session's history and the new message, and maps the
//! server's SSE chunks onto `stream_event` text deltas, then one final `assistant` event.
//! `base_url` is the API root including its version path (`http://127.0.0.1:8080/v1`,
//! `https://api.openai.com/v1`); `https://` servers must present a certificate the system
//! trusts (or one from `SSL_CERT_FILE`), else every turn fails as unavailable.
//! Dropping the turn's future drops the response, which closes the connection and so stops
//! the generation on servers that notice a closed client.
//!
//! What the server said when it failed (an error body, an error event) goes to the log only:
//! the failure a caller sees is a short reason of ours, so an engine URL cannot be used to
//! read another server's answers through the chat.

mod completion;
mod sse;

use super::{
    assistant_event, text_delta_event, BoxFuture, Engine, Error, EventSink, Outcome, Turn,
};
use crate::config::EngineSpec;
use crate::outbound::{self, Client, OutboundPolicy, Post, Streamed};
use completion::Completion;
use hyper::header::ACCEPT;
use hyper::Uri;
use serde_json::{json, Value};
use sse::SseDecoder;
use std::time::Duration;
use tracing::debug;

/// The most one SSE event, or a whole unstreamed response, may hold.
const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
/// How much of an error response's body is kept as the failure's detail.
const MAX_DETAIL_BYTES: usize = 4 * 1024;
/// How long to wait for the TCP connection; the turn's own timeout covers the rest.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The openai engine.
pub struct OpenAi {
    /// Where and what to ask, or why this engine cannot ask anything.
    settings: Result<Settings, String>,
    /// Pooled, so consecutive turns reuse a kept-alive connection; it connects only where
    /// the engine's outbound policy permits.
    client: Client,
}

struct Settings {
    /// `{base_url}/chat/completions`.
    endpoint: Uri,
    base_url: String,
    model: String,
    api_key: Option<String>,
    system_prompt: Option<String>,
}

impl OpenAi {
    /// An engine for an `EngineSpec::OpenAi`; a bad `base_url` or another kind gives an
    /// engine whose turns fail as unavailable.
    pub fn new(config: EngineSpec, outbound: OutboundPolicy) -> OpenAi {
        let settings = match config {
            EngineSpec::OpenAi {
                base_url,
                model,
                api_key,
                system_prompt,
            } => endpoint(&base_url).map(|endpoint| Settings {
                endpoint,
                base_url,
                model,
                api_key,
                system_prompt,
            }),
            other => Err(format!(
                "the openai engine cannot run a {} configuration",
                other.kind()
            )),
        };
        let client = Client::new(outbound, CONNECT_TIMEOUT);
        OpenAi { settings, client }
    }
}

/// The completions URL under `base_url`, an `http://` or `https://` URL.
fn endpoint(base_url: &str) -> Result<Uri, String> {
    let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
    let uri: Uri = url
        .parse()
        .map_err(|err| format!("invalid base_url {base_url}: {err}"))?;
    outbound::check_url(&uri)
        .map_err(|_| format!("base_url must be an http:// or https:// URL: {base_url}"))?;
    Ok(uri)
}

impl Engine for OpenAi {
    fn kind(&self) -> &'static str {
        "openai"
    }

    /// The server keeps no conversation: every turn carries the session's history.
    fn wants_history(&self) -> bool {
        true
    }

    fn run<'a>(&'a self, turn: Turn, sink: EventSink) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            match &self.settings {
                Ok(settings) => self.run_turn(settings, turn, sink).await,
                Err(reason) => Err(Error::Unavailable(reason.clone())),
            }
        })
    }
}

impl OpenAi {
    async fn run_turn(
        &self,
        settings: &Settings,
        turn: Turn,
        sink: EventSink,
    ) -> Result<Outcome, Error> {
        let model = turn.model.clone().unwrap_or_else(|| settings.model.clone());
        let post = settings.request(&turn, &model);
        let mut response = self
            .client
            .stream(post)
            .await
            .map_err(|err| settings.unsent(err))?;
        let status = response.status();
        if !status.is_success() {
            let detail = read_detail(&mut response).await;
            tracing::warn!(base_url = %settings.base_url, %status, body = %detail, "the model server refused a turn");
            return Err(Error::Failed {
                message: format!("upstream answered {status}"),
                detail: String::new(),
            });
        }
        let is_whole_json = response
            .content_type()
            .is_some_and(|value| value.starts_with("application/json"));
        let completion = if is_whole_json {
            read_whole(response, &sink).await?
        } else {
            read_stream(response, &sink).await?
        };

        let model = completion.model.or(Some(model));
        let usage = completion.usage.unwrap_or_default();
        sink.send(assistant_event(&completion.text, model.as_deref(), &usage));
        Ok(Outcome {
            text: completion.text,
            usage,
            cost_usd: 0.0,
            num_turns: 1,
            resume: None,
            tool_calls: Vec::new(),
            model,
        })
    }
}

impl Settings {
    fn request(&self, turn: &Turn, model: &str) -> Post {
        let mut messages = Vec::with_capacity(turn.history.len() + 2);
        if let Some(system_prompt) = &self.system_prompt {
            messages.push(json!({"role": "system", "content": system_prompt}));
        }
        for message in &turn.history {
            messages.push(json!({"role": message.role, "content": message.content}));
        }
        messages.push(json!({"role": "user", "content": turn.prompt}));
        let body = json!({
            "model": model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": messages,
        });
        Post::json(self.endpoint.clone(), &body)
            .header(ACCEPT, "text/event-stream")
            .bearer(self.api_key.as_deref())
    }

    /// The failure of a request that got no answer.
    fn unsent(&self, err: outbound::Error) -> Error {
        match err {
            outbound::Error::Build(err) => Error::Unavailable(format!(
                "cannot build a request for {}: {err}",
                self.base_url
            )),
            outbound::Error::Send(err) if err.is_connect() => Error::Unavailable(format!(
                "cannot connect to {}: {}",
                self.base_url,
                chain(&err)
            )),
            err => Error::Failed {
                message: format!("the request to {} failed", self.base_url),
                detail: chain(&err),
            },
        }
    }
}

/// Reads the SSE stream to `data: [DONE]` (or its end), sending each text delta as it comes.
async fn read_stream(mut body: Streamed, sink: &EventSink) -> Result<Completion, Error> {
    let mut decoder = SseDecoder::new(MAX_EVENT_BYTES);
    let mut completion = Completion::default();
    let mut events = Vec::new();
    loop {
        let ended = match body.next().await {
            Some(Ok(data)) => {
                decoder.feed(&data, &mut events).map_err(|_| oversized())?;
                false
            }
            Some(Err(err)) => {
                return Err(Error::Failed {
                    message: "the server's stream broke off".into(),
                    detail: chain(&err),
                })
            }
            None => {
                decoder.finish(&mut events);
                true
            }
        };
        for data in events.drain(..) {
            if data.trim() == "[DONE]" {
                return Ok(completion);
            }
            let Ok(chunk) = serde_json::from_str::<Value>(&data) else {
                debug!(data = %data.chars().take(200).collect::<String>(), "skipping an event that is not JSON");
                continue;
            };
            let delta = completion.apply(&chunk).map_err(reported)?;
            if let Some(delta) = delta {
                sink.send(text_delta_event(&delta));
            }
        }
        if ended {
            return Ok(completion);
        }
    }
}

/// Reads a whole `chat.completion` from a server that did not stream, as one delta.
async fn read_whole(body: Streamed, sink: &EventSink) -> Result<Completion, Error> {
    let bytes = body.whole(MAX_EVENT_BYTES).await.map_err(|err| match err {
        outbound::Error::Read(err) => Error::Failed {
            message: "the server's answer broke off".into(),
            detail: chain(&err),
        },
        _ => oversized(),
    })?;
    let response: Value = serde_json::from_slice(&bytes).map_err(|err| {
        tracing::warn!(cause = %err, "the model server's answer is not a chat completion");
        Error::Failed {
            message: "the server's answer is not a chat completion".into(),
            detail: String::new(),
        }
    })?;
    let completion = Completion::from_response(&response).map_err(reported)?;
    if !completion.text.is_empty() {
        sink.send(text_delta_event(&completion.text));
    }
    Ok(completion)
}

/// The start of an error response's body, as text for the failure's detail.
async fn read_detail(body: &mut Streamed) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < MAX_DETAIL_BYTES {
        match body.next().await {
            Some(Ok(data)) => bytes.extend_from_slice(&data),
            Some(Err(err)) => {
                debug!(cause = %err, "stopped reading an error response");
                break;
            }
            None => break,
        }
    }
    let cut = bytes.len() > MAX_DETAIL_BYTES;
    bytes.truncate(MAX_DETAIL_BYTES);
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_end_matches('\u{FFFD}').trim();
    if cut {
        format!("{text}…")
    } else {
        text.to_string()
    }
}

/// An error the server reported in its answer: its text goes to the log, not to the caller.
fn reported(message: String) -> Error {
    tracing::warn!(reported = %message, "the model server reported an error");
    Error::Failed {
        message: "the server reported an error".into(),
        detail: String::new(),
    }
}

fn oversized() -> Error {
    Error::Failed {
        message: "the server sent an oversized answer".into(),
        detail: format!("an event or response exceeded {MAX_EVENT_BYTES} bytes"),
    }
}

/// An error and its causes on one line: hyper's own messages name only the outer layer.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
