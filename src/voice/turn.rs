//! The helper work of a call, run as tasks the call owns: an echoed utterance, and a spoken
//! turn (speech-to-text, a chat turn of kind `voice`, the reply cut into sentences, each one
//! synthesized while the next is generated). Results go back to the call as [`Work`].

use super::audio::{self, Pcm, LISTEN_RATE};
use super::speech;
use crate::agents::Agent;
use crate::config::VoiceConfig;
use crate::executions::{Executions, Live};
use crate::ids::SessionId;
use crate::records::ExecutionKind;
use crate::turns::{SessionPolicy, Started, TurnRequest, Turns};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// What a helper task reports to its call; `generation` names the turn it belongs to.
pub(super) enum Work {
    Transcript {
        generation: u64,
        text: String,
    },
    Started {
        generation: u64,
        live: Arc<Live>,
        session_id: crate::ids::SessionId,
    },
    FirstToken {
        generation: u64,
    },
    /// Audio at the call's rate, with the text it speaks.
    Speech {
        generation: u64,
        pcm: Vec<i16>,
        text: Option<String>,
    },
    /// The turn is over (or had nothing to say): the full reply.
    Done {
        generation: u64,
        reply: Option<String>,
    },
    Failed {
        generation: u64,
        error: &'static str,
        message: String,
    },
}

impl Work {
    pub fn generation(&self) -> u64 {
        match self {
            Work::Transcript { generation, .. }
            | Work::Started { generation, .. }
            | Work::FirstToken { generation }
            | Work::Speech { generation, .. }
            | Work::Done { generation, .. }
            | Work::Failed { generation, .. } => *generation,
        }
    }
}

/// What starts a turn.
pub(super) enum Input {
    /// An utterance at 16 kHz, and when it ended.
    Speech(Vec<i16>, Instant),
    /// The transcript of an utterance streamed to speech-to-text while it was spoken.
    Streamed(super::stream::Transcript, Instant),
    Text(String),
}

impl Input {
    pub fn speech_end(&self) -> Option<Instant> {
        match self {
            Input::Speech(_, at) | Input::Streamed(_, at) => Some(*at),
            Input::Text(_) => None,
        }
    }
}

/// What a turn task needs.
pub(super) struct TurnContext {
    pub generation: u64,
    pub config: VoiceConfig,
    pub agent: Arc<Agent>,
    pub username: String,
    pub chat_session_id: Option<SessionId>,
    pub sample_rate: u32,
    pub preferences: speech::Preferences,
    pub speech_client: crate::outbound::Client,
    pub turns: Turns,
    pub executions: Executions,
    /// The call's previous turn: the next one starts after it has finished.
    pub previous: Option<Arc<Live>>,
    pub work: mpsc::Sender<Work>,
}

/// Plays an utterance back: resampled to the call's rate off the runtime.
pub(super) async fn echo(samples: Vec<i16>, rate: u32, generation: u64, work: mpsc::Sender<Work>) {
    let pcm = Pcm {
        sample_rate: LISTEN_RATE,
        samples,
    };
    let resampled = tokio::task::spawn_blocking(move || audio::resample(&pcm, rate)).await;
    let message = match resampled {
        Ok(Ok(pcm)) => Work::Speech {
            generation,
            pcm,
            text: None,
        },
        Ok(Err(err)) => Work::Failed {
            generation,
            error: "audio",
            message: err.to_string(),
        },
        Err(_) => return,
    };
    let _ = work.send(message).await;
    let _ = work
        .send(Work::Done {
            generation,
            reply: None,
        })
        .await;
}

/// Runs one spoken (or typed) turn to its end.
pub(super) async fn run(context: TurnContext, input: Input) {
    let generation = context.generation;
    let work = context.work.clone();
    if let Err((error, message)) = turn(context, input).await {
        let _ = work
            .send(Work::Failed {
                generation,
                error,
                message,
            })
            .await;
    }
}

type Failure = (&'static str, String);

async fn turn(context: TurnContext, input: Input) -> Result<(), Failure> {
    let generation = context.generation;
    let send = |message: Work| {
        let work = context.work.clone();
        async move {
            let _ = work.send(message).await;
        }
    };
    let text = match input {
        Input::Text(text) => text,
        Input::Speech(..) | Input::Streamed(..) => {
            let text = transcript(&context, input).await.map_err(|err| {
                tracing::warn!(cause = %err, "speech-to-text failed");
                (
                    "stt_failed",
                    "speech-to-text failed; the cause is in the server log".into(),
                )
            })?;
            if text.is_empty() {
                send(Work::Done {
                    generation,
                    reply: None,
                })
                .await;
                return Ok(());
            }
            send(Work::Transcript {
                generation,
                text: text.clone(),
            })
            .await;
            text
        }
    };
    if let Some(previous) = &context.previous {
        previous.finished().await;
    }
    let session = SessionPolicy::asked(context.chat_session_id.clone(), false);
    let started = context
        .turns
        .start(TurnRequest::new(
            context.agent.clone(),
            context.username.clone(),
            text,
            ExecutionKind::Voice,
            session,
        ))
        .await
        .map_err(|err| ("turn_failed", err.to_string()))?;
    let Started::Live {
        live, session_id, ..
    } = started
    else {
        return Err(("turn_failed", "the turn was not started".into()));
    };
    send(Work::Started {
        generation,
        live: live.clone(),
        session_id,
    })
    .await;
    let (sentences_tx, sentences_rx) = mpsc::channel::<String>(16);
    let generate = follow_reply(&context, live.clone(), sentences_tx);
    let speak = speak(&context, sentences_rx);
    let ((), ()) = tokio::join!(generate, speak);
    let execution = live.finished().await;
    let reply = execution.response.filter(|r| !r.is_empty());
    send(Work::Done { generation, reply }).await;
    Ok(())
}

/// The text of a spoken input.
async fn transcript(context: &TurnContext, input: Input) -> Result<String, speech::Error> {
    let no_engine = || speech::Error::Protocol("no stt engine".into());
    match input {
        Input::Streamed(text, _) => text.await.map_err(|_| no_engine())?,
        Input::Speech(samples, _) => {
            let stt = context.config.stt.as_ref().ok_or_else(no_engine)?;
            let pcm = Pcm {
                sample_rate: LISTEN_RATE,
                samples,
            };
            speech::transcribe(&context.speech_client, stt, &context.preferences, pcm).await
        }
        Input::Text(text) => Ok(text),
    }
}

/// Follows the turn's events and hands each finished sentence to `sentences`.
async fn follow_reply(context: &TurnContext, live: Arc<Live>, sentences: mpsc::Sender<String>) {
    let mut follow = context.executions.follow_live(live.clone());
    let mut pending = String::new();
    let mut first = true;
    while let Some(batch) = follow.next_batch().await {
        for event in batch {
            let Some(delta) = text_delta(&event.json) else {
                continue;
            };
            if first {
                first = false;
                first_token(context).await;
            }
            pending.push_str(&delta);
            for sentence in cut_sentences(&mut pending) {
                let _ = sentences.send(sentence).await;
            }
        }
    }
    if first {
        // An engine that does not stream: speak its whole reply.
        pending = live.finished().await.response.unwrap_or_default();
        first_token(context).await;
        for sentence in cut_sentences(&mut pending) {
            let _ = sentences.send(sentence).await;
        }
    }
    let rest = pending.trim();
    if !rest.is_empty() {
        let _ = sentences.send(rest.to_string()).await;
    }
}

async fn first_token(context: &TurnContext) {
    let generation = context.generation;
    let _ = context.work.send(Work::FirstToken { generation }).await;
}

/// Synthesizes sentences in order, sending each one's audio as soon as it is ready.
async fn speak(context: &TurnContext, mut sentences: mpsc::Receiver<String>) {
    let Some(tts) = &context.config.tts else {
        return;
    };
    while let Some(sentence) = sentences.recv().await {
        let pcm =
            match speech::synthesize(&context.speech_client, tts, &context.preferences, &sentence)
                .await
            {
                Ok(pcm) => pcm,
                Err(err) => {
                    tracing::warn!(cause = %err, "text-to-speech failed");
                    continue;
                }
            };
        let rate = context.sample_rate;
        let Ok(Ok(pcm)) = tokio::task::spawn_blocking(move || audio::resample(&pcm, rate)).await
        else {
            continue;
        };
        let message = Work::Speech {
            generation: context.generation,
            pcm,
            text: Some(sentence),
        };
        let _ = context.work.send(message).await;
    }
}

/// The text of a stream-json text delta event.
fn text_delta(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let delta = value.get("event")?.get("delta")?;
    (delta.get("type")? == "text_delta").then(|| delta.get("text")?.as_str().map(str::to_string))?
}

/// Takes the complete sentences off the front of `text`.
fn cut_sentences(text: &mut String) -> Vec<String> {
    let mut sentences = Vec::new();
    loop {
        let cut = text.char_indices().find_map(|(i, c)| {
            let next = text[i + c.len_utf8()..].chars().next();
            let ends =
                matches!(c, '.' | '!' | '?' | ';' | ':') && next.is_some_and(char::is_whitespace);
            (ends || c == '\n').then_some(i + c.len_utf8())
        });
        let Some(cut) = cut else {
            return sentences;
        };
        let sentence = text[..cut].trim().to_string();
        text.replace_range(..cut, "");
        if !sentence.is_empty() {
            sentences.push(sentence);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &[&str], rest: &str) {
        let mut text = input.to_string();
        assert_eq!(cut_sentences(&mut text), expected, "{input:?}");
        assert_eq!(text, rest, "{input:?}");
    }

    #[test]
    fn sentences() {
        check("Hello there", &[], "Hello there");
        check("Hello. Th", &["Hello."], " Th");
        check("One! Two? Three.", &["One!", "Two?"], " Three.");
        check("3.14 is pi. ", &["3.14 is pi."], " ");
        check("line\nnext", &["line"], "next");
    }

    #[test]
    fn deltas() {
        let event = crate::engines::text_delta_event("hi ").to_string();
        assert_eq!(text_delta(&event).as_deref(), Some("hi "));
        assert_eq!(text_delta(r#"{"type":"assistant"}"#), None);
    }
}
