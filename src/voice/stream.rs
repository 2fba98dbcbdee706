//! Speech-to-text while the caller speaks: for engines that take audio as it comes, each
//! utterance opens a request at its first word and gets the audio as it is heard.
//!
//! The request is closed early, once the caller has been silent for half of `end_silence_ms`:
//! the engine transcribes while the end of the utterance is still being confirmed, so by the
//! time the call decides the caller has finished, most of the engine's work is done. Speech
//! after that early close means the caller only paused: that request is dropped and a new one
//! gets the whole utterance so far.

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
    /// Dropped to end the request; None once it was closed early.
    audio: Option<mpsc::Sender<Vec<i16>>>,
    /// Samples of the utterance sent so far.
    sent: usize,
    text: Transcript,
    task: AbortHandle,
    /// To ask again when the caller goes on after an early close.
    engine: SpeechEngine,
    preferences: Preferences,
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
        let task = self.tasks.spawn({
            let (engine, preferences) = (engine.clone(), preferences.clone());
            async move {
                let text = speech::transcribe_stream(&engine, &preferences, audio_rx).await;
                let _ = text_tx.send(text);
            }
        });
        self.open = Some(Open {
            audio: Some(audio),
            sent: 0,
            text,
            task,
            engine,
            preferences,
        });
    }

    /// Sends what was heard of the open utterance since last time (a full channel waits for
    /// the next call); closes the request once `silence_ms` reaches `early_ms`, and opens a
    /// new one when speech follows that.
    pub fn feed(&mut self, heard: &[i16], silence_ms: u64, early_ms: u64) {
        let Some(open) = &mut self.open else {
            return;
        };
        let Some(audio) = &open.audio else {
            if silence_ms >= early_ms || heard.is_empty() {
                return;
            }
            // The caller went on: the early transcript is of a part of the utterance.
            let (engine, preferences) = (open.engine.clone(), open.preferences.clone());
            open.task.abort();
            self.start(&engine, &preferences);
            return self.feed(heard, silence_ms, early_ms);
        };
        if heard.len() > open.sent && audio.try_send(heard[open.sent..].to_vec()).is_ok() {
            open.sent = heard.len();
        }
        if early_ms > 0 && silence_ms >= early_ms && open.sent == heard.len() {
            // Everything heard is out: the engine may start on it now.
            open.audio = None;
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
        // Closed early: what came after is the silence that ended the utterance.
        let Some(audio) = open.audio else {
            return Some(open.text);
        };
        let rest = samples.get(open.sent..).unwrap_or_default().to_vec();
        self.tasks.spawn(async move {
            if !rest.is_empty() {
                let _ = audio.send(rest).await;
            }
        });
        Some(open.text)
    }
}
