//! What a visitor sees of a turn: the text of the answer and a generic word when it failed.
//! Tool calls, tool results, thinking, costs and the engine's own error text stay with the
//! owner (in the executions log); they never reach someone without an account.

use crate::records::{Execution, Failure};
use serde_json::{json, Value};

/// What a visitor is told when a turn failed, whatever the engine said.
pub const FAILED: &str = "the agent could not answer this message";
/// What a visitor is told when a turn ran out of time.
pub const TIMED_OUT: &str = "the agent did not answer in time";
/// What a visitor is told when a turn was stopped.
pub const CANCELLED: &str = "the answer was stopped";

/// The visitor's copy of one stream-json event, or None when the event is not for visitors.
pub fn visitor_event(json_line: &str) -> Option<String> {
    let event: Value = serde_json::from_str(json_line).ok()?;
    let kind = event.get("type").and_then(Value::as_str)?;
    let out = match kind {
        "system" if event["subtype"] == "init" => json!({
            "type": "system",
            "subtype": "init",
            "session_id": event["session_id"],
            "execution_id": event["execution_id"],
        }),
        "stream_event" => {
            let text = event.pointer("/event/delta/text").and_then(Value::as_str)?;
            json!({
                "type": "stream_event",
                "event": {
                    "type": "content_block_delta",
                    "index": event.pointer("/event/index").cloned().unwrap_or(json!(0)),
                    "delta": {"type": "text_delta", "text": text},
                },
            })
        }
        "assistant" => {
            let blocks: Vec<Value> = event
                .pointer("/message/content")
                .and_then(Value::as_array)?
                .iter()
                .filter(|b| b["type"] == "text" && b["text"].is_string())
                .map(|b| json!({"type": "text", "text": b["text"]}))
                .collect();
            if blocks.is_empty() {
                return None;
            }
            json!({"type": "assistant", "message": {"role": "assistant", "content": blocks}})
        }
        "result" => {
            let subtype = event["subtype"]
                .as_str()
                .unwrap_or("error_during_execution");
            let result = match subtype {
                "success" => event["result"].clone(),
                "error_timeout" => json!(TIMED_OUT),
                "cancelled" => json!(CANCELLED),
                _ => json!(FAILED),
            };
            json!({
                "type": "result",
                "subtype": subtype,
                "is_error": subtype != "success",
                "result": result,
                "session_id": event["session_id"],
                "execution_id": event["execution_id"],
                "duration_ms": event["duration_ms"],
            })
        }
        _ => return None,
    };
    Some(out.to_string())
}

/// The visitor's one-document answer: `{"response", "session_id", "execution_id", "status"}`
/// and, when the turn did not succeed, a generic `error`.
pub fn visitor_answer(execution: &Execution) -> Value {
    let mut answer = json!({
        "response": execution.response.clone().unwrap_or_default(),
        "session_id": execution.session_id,
        "execution_id": execution.id,
        "status": execution.status,
    });
    let error = execution.why_failed().map(|failure| match failure {
        Failure::Cancelled => CANCELLED,
        Failure::Timeout => TIMED_OUT,
        Failure::EngineUnavailable
        | Failure::EngineFailed
        | Failure::Interrupted
        | Failure::DiskFull
        | Failure::NotStored => FAILED,
    });
    if let Some(error) = error {
        answer["error"] = json!(error);
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: Value, expected: Option<Value>) {
        let got =
            visitor_event(&input.to_string()).map(|s| serde_json::from_str::<Value>(&s).unwrap());
        assert_eq!(got, expected, "{input}");
    }

    #[test]
    fn visitors_see_text_and_generic_failures_only() {
        check(
            json!({"type": "system", "subtype": "init", "session_id": "s", "execution_id": "e", "agent": "a", "model": "m"}),
            Some(
                json!({"type": "system", "subtype": "init", "session_id": "s", "execution_id": "e"}),
            ),
        );
        check(
            json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}}),
            Some(
                json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}}}),
            ),
        );
        check(
            json!({"type": "stream_event", "event": {"type": "content_block_delta", "delta": {"type": "input_json_delta", "partial_json": "{"}}}),
            None,
        );
        check(
            json!({"type": "assistant", "message": {"content": [{"type": "thinking", "thinking": "secret"}, {"type": "tool_use", "name": "Bash", "input": {"command": "cat /etc/shadow"}}, {"type": "text", "text": "done"}], "usage": {"input_tokens": 9}}}),
            Some(
                json!({"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "done"}]}}),
            ),
        );
        check(
            json!({"type": "assistant", "message": {"content": [{"type": "tool_use", "name": "Bash"}]}}),
            None,
        );
        check(
            json!({"type": "user", "message": {"content": [{"type": "tool_result", "content": "root:x:0:0"}]}}),
            None,
        );
        check(json!({"type": "probe"}), None);
        check(
            json!({"type": "result", "subtype": "error_during_execution", "is_error": true, "result": "engine failed: /srv/agent/secret.sh exited 1: permission denied", "session_id": "s", "execution_id": "e", "duration_ms": 5, "total_cost_usd": 0.3}),
            Some(
                json!({"type": "result", "subtype": "error_during_execution", "is_error": true, "result": FAILED, "session_id": "s", "execution_id": "e", "duration_ms": 5}),
            ),
        );
        check(
            json!({"type": "result", "subtype": "success", "is_error": false, "result": "hello", "session_id": "s", "execution_id": "e", "duration_ms": 5}),
            Some(
                json!({"type": "result", "subtype": "success", "is_error": false, "result": "hello", "session_id": "s", "execution_id": "e", "duration_ms": 5}),
            ),
        );
        assert_eq!(visitor_event("not json"), None);
    }
}
