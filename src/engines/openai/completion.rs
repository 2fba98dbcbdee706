//! What a chat completion said, gathered from its streamed chunks (or from one whole response
//! when a server ignores `stream`): the text, the usage and the model that answered.

use crate::engines::Usage;
use serde_json::Value;

/// The completion so far.
#[derive(Debug, Default)]
pub(super) struct Completion {
    pub(super) text: String,
    /// From the chunk that carries it (the last one, with `include_usage`).
    pub(super) usage: Option<Usage>,
    pub(super) model: Option<String>,
}

impl Completion {
    /// Takes one streamed chunk; returns the text it adds, or the server's message when the
    /// chunk reports an error instead.
    pub(super) fn apply(&mut self, chunk: &Value) -> Result<Option<String>, String> {
        if let Some(error) = chunk.get("error") {
            return Err(error_message(error));
        }
        self.note(chunk);
        let delta = chunk["choices"][0]["delta"]["content"]
            .as_str()
            .filter(|text| !text.is_empty());
        if let Some(delta) = delta {
            self.text.push_str(delta);
        }
        Ok(delta.map(str::to_string))
    }

    /// A whole, unstreamed `chat.completion` response.
    pub(super) fn from_response(response: &Value) -> Result<Completion, String> {
        let mut completion = Completion::default();
        if let Some(error) = response.get("error") {
            return Err(error_message(error));
        }
        completion.note(response);
        let content = &response["choices"][0]["message"]["content"];
        completion.text = content.as_str().unwrap_or_default().to_string();
        Ok(completion)
    }

    fn note(&mut self, chunk: &Value) {
        if let Some(model) = chunk["model"].as_str().filter(|model| !model.is_empty()) {
            self.model = Some(model.to_string());
        }
        if chunk["usage"].is_object() {
            self.usage = Some(usage(&chunk["usage"]));
        }
    }
}

/// OpenAI's usage object in Outpost's terms.
fn usage(usage: &Value) -> Usage {
    let count = |field: &str| usage[field].as_u64().unwrap_or(0);
    Usage {
        input_tokens: count("prompt_tokens"),
        output_tokens: count("completion_tokens"),
        ..Usage::default()
    }
}

fn error_message(error: &Value) -> String {
    match error {
        Value::String(message) => message.clone(),
        _ => error["message"]
            .as_str()
            .map_or_else(|| error.to_string(), str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gathers_text_model_and_usage_from_chunks() {
        let mut completion = Completion::default();
        let chunks = [
            json!({"model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"model": "m", "choices": [{"index": 0, "delta": {"content": "Hel"}}]}),
            json!({"model": "m", "choices": [{"index": 0, "delta": {"content": "lo"}}]}),
            json!({"model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"model": "m", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}),
        ];
        let deltas: Vec<Option<String>> = chunks
            .iter()
            .map(|chunk| completion.apply(chunk).unwrap())
            .collect();
        assert_eq!(
            deltas,
            [None, Some("Hel".into()), Some("lo".into()), None, None]
        );
        assert_eq!(completion.text, "Hello");
        assert_eq!(completion.model.as_deref(), Some("m"));
        let usage = completion.usage.unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens), (5, 2));
    }

    #[test]
    fn an_error_chunk_is_an_error() {
        let mut completion = Completion::default();
        let chunk = json!({"error": {"message": "context length exceeded", "type": "invalid_request_error"}});
        assert_eq!(
            completion.apply(&chunk),
            Err("context length exceeded".into())
        );
        assert_eq!(
            completion.apply(&json!({"error": "overloaded"})),
            Err("overloaded".into())
        );
    }

    #[test]
    fn reads_a_whole_response() {
        let response = json!({"model": "m", "choices": [{"message": {"role": "assistant", "content": "Hi"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1}});
        let completion = Completion::from_response(&response).unwrap();
        assert_eq!(
            (completion.text.as_str(), completion.model.as_deref()),
            ("Hi", Some("m"))
        );
        assert_eq!(completion.usage.map(|usage| usage.output_tokens), Some(1));
    }
}
