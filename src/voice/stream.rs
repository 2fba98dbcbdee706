//! Speech-to-text while the caller speaks: for engines that take audio as it comes, each
//! utterance opens a request at its first word, gets the audio as it is heard, and is closed
//! at the utterance's end, so only the engine's last bit of work is left to wait for.

use super::speech::{self, Preferences};
use crate::config::SpeechEngine;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

/// Chunks of audio that may wait for the engine.
const STREAM_CHUNKS: usize = 64;

/// The transcript a stream will give.
pub(super) type Transcript = oneshot::Receiver<Result<String, speech::Error>>;

/// An utterance on its way to speech-to-text.
struct Open {
    /// Dropped to end the request.
    audio: mpsc::Sender<Vec<i16>>,
    /// Samples of the utterance sent so far.
    sent: usize,
    text: Transcript,
    task: AbortHandle,
}

/// A call's streaming speech-to-text: at most one utterance open at a time.
#[derive(Default)]
pub(super) struct Streams {
    open: Option<Open>,
    /// Requests in flight; dropping the set (the call's end) stops them. Barge-in does not:
    /// it comes before the utterance it is part of.
    tasks: JoinSet<()>,
}

impl Streams {
    /// Opens a request for the utterance that just started.
    pub fn start(&mut self, engine: &SpeechEngine, preferences: &Preferences) {
        let (audio, audio_rx) = mpsc::channel(STREAM_CHUNKS);
        let (text_tx, text) = oneshot::channel();
        let (engine, preferences) = (engine.clone(), preferences.clone());
        let task = self.tasks.spawn(async move {
            let text = speech::transcribe_stream(&engine, &preferences, audio_rx).await;
            let _ = text_tx.send(text);
        });
        self.open = Some(Open {
            audio,
            sent: 0,
            text,
            task,
        });
    }

    /// Sends what was heard of the open utterance since last time; a full channel waits.
    pub fn feed(&mut self, heard: &[i16]) {
        let Some(open) = &mut self.open else {
            return;
        };
        if heard.len() > open.sent && open.audio.try_send(heard[open.sent..].to_vec()).is_ok() {
            open.sent = heard.len();
        }
    }

    /// The speech was too short to be an utterance: the request is dropped.
    pub fn discard(&mut self) {
        if let Some(open) = self.open.take() {
            open.task.abort();
        }
    }

    /// The utterance `samples` ended: the rest goes out, the request is closed, and its
    /// transcript is what to wait for (None when no stream was open).
    pub fn finish(&mut self, samples: &[i16]) -> Option<Transcript> {
        let open = self.open.take()?;
        let rest = samples.get(open.sent..).unwrap_or_default().to_vec();
        let audio = open.audio;
        self.tasks.spawn(async move {
            if !rest.is_empty() {
                let _ = audio.send(rest).await;
            }
        });
        Some(open.text)
    }
}
