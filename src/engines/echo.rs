//! The built-in engine: answers with the user's own words, streamed word by word, with an
//! optional delay per word. Deterministic, so the daemon works out of the box and tests are fast.

use super::{
    assistant_event, text_delta_event, BoxFuture, Engine, Error, EventSink, Outcome, Turn, Usage,
};
use std::time::Duration;

/// The echo engine.
pub struct Echo {
    delay: Duration,
}

impl Echo {
    pub fn new(delay_ms: u64) -> Echo {
        Echo {
            delay: Duration::from_millis(delay_ms),
        }
    }
}

impl Engine for Echo {
    fn kind(&self) -> &'static str {
        "echo"
    }

    fn run<'a>(&'a self, turn: Turn, sink: EventSink) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            let words: Vec<&str> = turn.prompt.split_whitespace().collect();
            for (i, word) in words.iter().enumerate() {
                if !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                let piece = if i + 1 < words.len() {
                    format!("{word} ")
                } else {
                    (*word).to_string()
                };
                sink.send(text_delta_event(&piece));
            }
            let text = words.join(" ");
            let usage = Usage {
                input_tokens: words.len() as u64,
                output_tokens: words.len() as u64,
                ..Usage::default()
            };
            sink.send(assistant_event(&text, Some("echo"), &usage));
            Ok(Outcome {
                text,
                usage,
                cost_usd: 0.0,
                num_turns: 1,
                resume: None,
                tool_calls: Vec::new(),
                model: Some("echo".into()),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_word_by_word_then_the_whole_message() {
        let (sink, mut rx) = EventSink::channel();
        let turn = Turn {
            prompt: "hello  there world".into(),
            ..Turn::default()
        };
        let outcome = Echo::new(0).run(turn, sink).await.unwrap();
        assert_eq!(outcome.text, "hello there world");
        let mut deltas = String::new();
        let mut last = None;
        while let Ok(event) = rx.try_recv() {
            if event["type"] == "stream_event" {
                deltas.push_str(event["event"]["delta"]["text"].as_str().unwrap());
            }
            last = Some(event);
        }
        assert_eq!(deltas, "hello there world");
        let last = last.unwrap();
        assert_eq!(last["type"], "assistant");
        assert_eq!(last["message"]["content"][0]["text"], "hello there world");
        assert_eq!(outcome.usage.output_tokens, 3);
    }
}
