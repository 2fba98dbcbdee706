//! What a command agent said during one turn: which of its stream-json lines pass through to the
//! caller, and what its `init` and `result` events (absorbed) and `assistant` messages tell us.

use crate::engines::{Outcome, Usage};
use serde_json::Value;
use tracing::debug;

/// How a turn ended according to the agent's own `result` event.
#[derive(Debug)]
pub(super) enum Verdict {
    Success(Outcome),
    /// The agent reported `is_error`, with its result text when it gave one.
    Error(Option<String>),
}

/// The state gathered from the agent's stdout, line by line.
#[derive(Debug, Default)]
pub(super) struct Transcript {
    /// The CLI's conversation handle, from its `init` or `result` event.
    session_id: Option<String>,
    /// The model named by `init`, used when no `assistant` message names one.
    init_model: Option<String>,
    model: Option<String>,
    texts: Vec<String>,
    tool_calls: Vec<Value>,
    /// Usage per assistant message, last report wins: the CLI sends one `assistant` event per
    /// content block, each repeating its message's id and usage.
    message_usage: Vec<(Option<String>, Usage)>,
    result: Option<Value>,
}

impl Transcript {
    /// Takes one stdout line; returns the event to forward, if any. Blank lines, lines that are
    /// not a JSON object (partial writes, log output) and the absorbed events give `None`.
    pub(super) fn observe_line(&mut self, line: &[u8]) -> Option<Value> {
        let line = line.trim_ascii();
        if line.is_empty() {
            return None;
        }
        match serde_json::from_slice::<Value>(line) {
            Ok(event @ Value::Object(_)) => self.observe(event),
            Ok(_) | Err(_) => {
                let preview = String::from_utf8_lossy(&line[..line.len().min(200)]);
                debug!(line = %preview, "skipping agent output that is not a JSON object");
                None
            }
        }
    }

    fn observe(&mut self, event: Value) -> Option<Value> {
        let subtype = event.get("subtype").and_then(Value::as_str);
        match event.get("type").and_then(Value::as_str) {
            Some("system") if subtype == Some("init") => {
                self.note_session(&event);
                self.init_model = string_at(&event, "model");
                None
            }
            Some("result") => {
                self.note_session(&event);
                self.result = Some(event);
                None
            }
            Some("assistant") => {
                self.note_assistant(&event["message"]);
                Some(event)
            }
            _ => Some(event),
        }
    }

    fn note_session(&mut self, event: &Value) {
        if let Some(session_id) = string_at(event, "session_id") {
            self.session_id = Some(session_id);
        }
    }

    fn note_assistant(&mut self, message: &Value) {
        if let Some(model) = string_at(message, "model") {
            self.model = Some(model);
        }
        for block in message["content"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("text") => {
                    if let Some(text) = block["text"].as_str().filter(|text| !text.is_empty()) {
                        self.texts.push(text.to_string());
                    }
                }
                Some("tool_use")
                    if !self
                        .tool_calls
                        .iter()
                        .any(|seen| same_tool_use(seen, block)) =>
                {
                    self.tool_calls.push(block.clone());
                }
                _ => {}
            }
        }
        let id = string_at(message, "id");
        let usage = Usage::from_json(&message["usage"]);
        match self
            .message_usage
            .iter_mut()
            .find(|(seen, _)| id.is_some() && *seen == id)
        {
            Some((_, seen_usage)) => *seen_usage = usage,
            None => self.message_usage.push((id, usage)),
        }
    }

    /// The turn as the agent described it. Without a `result` event the text is every text
    /// block joined by blank lines, the usage the sum over messages, and no cost is known.
    pub(super) fn verdict(self) -> Verdict {
        let result = self.result.unwrap_or(Value::Null);
        let result_text = string_at(&result, "result");
        if result["is_error"].as_bool() == Some(true) {
            return Verdict::Error(result_text.filter(|text| !text.trim().is_empty()));
        }
        let usage = if result["usage"].is_object() {
            Usage::from_json(&result["usage"])
        } else {
            self.message_usage
                .iter()
                .fold(Usage::default(), |sum, (_, usage)| add(sum, usage))
        };
        let num_turns = result["num_turns"]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok());
        let n_messages = u32::try_from(self.message_usage.len()).unwrap_or(u32::MAX);
        Verdict::Success(Outcome {
            text: result_text.unwrap_or_else(|| self.texts.join("\n\n")),
            usage,
            cost_usd: result["total_cost_usd"].as_f64().unwrap_or(0.0),
            num_turns: num_turns.unwrap_or(n_messages.max(1)),
            resume: self.session_id,
            tool_calls: self.tool_calls,
            model: self.model.or(self.init_model),
        })
    }
}

fn string_at(value: &Value, field: &str) -> Option<String> {
    value.get(field).and_then(Value::as_str).map(str::to_string)
}

fn same_tool_use(seen: &Value, block: &Value) -> bool {
    block["id"].is_string() && seen["id"] == block["id"]
}

fn add(sum: Usage, usage: &Usage) -> Usage {
    Usage {
        input_tokens: sum.input_tokens + usage.input_tokens,
        output_tokens: sum.output_tokens + usage.output_tokens,
        cache_read_input_tokens: sum.cache_read_input_tokens + usage.cache_read_input_tokens,
        cache_creation_input_tokens: sum.cache_creation_input_tokens
            + usage.cache_creation_input_tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Feeds `lines` and returns the forwarded events' types and the verdict.
    fn check(lines: &[&str]) -> (Vec<String>, Verdict) {
        let mut transcript = Transcript::default();
        let forwarded = lines
            .iter()
            .filter_map(|line| transcript.observe_line(line.as_bytes()))
            .map(|event| event["type"].as_str().unwrap_or("?").to_string())
            .collect();
        (forwarded, transcript.verdict())
    }

    fn outcome(verdict: Verdict) -> Outcome {
        match verdict {
            Verdict::Success(outcome) => outcome,
            Verdict::Error(text) => panic!("expected success, got error {text:?}"),
        }
    }

    #[test]
    fn skips_what_is_not_a_json_object() {
        let (forwarded, _) = check(&[
            "",
            "  ",
            "plain log text",
            "{\"type\":\"assi",
            "42",
            "[1]",
            "{\"type\":\"x\"}",
        ]);
        assert_eq!(forwarded, ["x"]);
    }

    #[test]
    fn absorbs_init_and_result_only() {
        let (forwarded, verdict) = check(&[
            r#"{"type":"system","subtype":"init","session_id":"s-1","model":"m-init"}"#,
            r#"{"type":"system","subtype":"compact_boundary"}"#,
            r#"{"type":"user","message":{"content":[]}}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s-2","num_turns":3,"total_cost_usd":0.5,"usage":{"input_tokens":7,"output_tokens":9}}"#,
        ]);
        assert_eq!(forwarded, ["system", "user"]);
        let outcome = outcome(verdict);
        assert_eq!(
            (outcome.text.as_str(), outcome.resume.as_deref()),
            ("done", Some("s-2"))
        );
        assert_eq!((outcome.num_turns, outcome.cost_usd), (3, 0.5));
        assert_eq!(
            (outcome.usage.input_tokens, outcome.usage.output_tokens),
            (7, 9)
        );
        assert_eq!(outcome.model.as_deref(), Some("m-init"));
    }

    #[test]
    fn without_a_result_collects_from_assistant_messages() {
        let usage = json!({"input_tokens": 10, "output_tokens": 2});
        let later_usage = json!({"input_tokens": 10, "output_tokens": 5});
        let tool =
            json!({"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}});
        let lines = [
            json!({"type": "assistant", "message": {"id": "m1", "model": "m-a", "usage": usage,
                "content": [{"type": "text", "text": "Looking."}]}}),
            json!({"type": "assistant", "message": {"id": "m1", "model": "m-a", "usage": later_usage,
                "content": [tool]}}),
            json!({"type": "assistant", "message": {"id": "m2", "model": "m-b", "usage": usage,
                "content": [{"type": "text", "text": "Found it."}, tool]}}),
        ]
        .map(|event| event.to_string());
        let (forwarded, verdict) = check(&lines.each_ref().map(String::as_str));
        assert_eq!(forwarded, ["assistant", "assistant", "assistant"]);
        let outcome = outcome(verdict);
        assert_eq!(outcome.text, "Looking.\n\nFound it.");
        assert_eq!(outcome.tool_calls, vec![tool]);
        assert_eq!(outcome.model.as_deref(), Some("m-b"));
        assert_eq!(
            (outcome.usage.input_tokens, outcome.usage.output_tokens),
            (20, 7)
        );
        assert_eq!((outcome.num_turns, outcome.resume), (2, None));
    }

    #[test]
    fn an_error_result_is_an_error() {
        let (_, verdict) = check(&[r#"{"type":"result","is_error":true,"result":"rate limited"}"#]);
        assert!(matches!(verdict, Verdict::Error(Some(text)) if text == "rate limited"));
        let (_, verdict) =
            check(&[r#"{"type":"result","subtype":"error_max_turns","is_error":true}"#]);
        assert!(matches!(verdict, Verdict::Error(None)));
    }
}
