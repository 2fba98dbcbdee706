//! Turn-taking on the caller's 16 kHz audio: `earshot` scores 16 ms frames; an utterance ends
//! after `end_silence_ms` of silence that follows at least `min_speech_ms` of speech.

use earshot::Detector;

/// Samples in one detector frame (16 ms at 16 kHz).
const FRAME_SAMPLES: usize = 256;
const FRAME_MS: u64 = 16;
/// A frame scoring at least this is speech.
const SPEECH_SCORE: f32 = 0.5;
/// Audio kept before the first speech frame, so the first syllable is not cut.
const PREROLL_FRAMES: usize = 12;
/// The longest utterance kept (the rest of a monologue starts the next one).
const MAX_UTTERANCE_MS: u64 = 30_000;

/// What the detector noticed after a chunk of audio.
#[derive(Debug, PartialEq)]
pub enum Heard {
    /// Speech started (it may still turn out too short to be an utterance).
    SpeechStarted,
    /// An utterance ended: its 16 kHz samples.
    Utterance(Vec<i16>),
    /// The speech that started was too short to be an utterance.
    Discarded,
}

/// Per-call voice activity state.
pub struct Vad {
    detector: Box<Detector>,
    pending: Vec<i16>,
    /// Audio of the utterance so far (with pre-roll), empty when not in speech.
    utterance: Vec<i16>,
    preroll: std::collections::VecDeque<[i16; FRAME_SAMPLES]>,
    speech_ms: u64,
    silence_ms: u64,
    in_speech: bool,
    min_speech_ms: u64,
    end_silence_ms: u64,
}

impl Vad {
    pub fn new(min_speech_ms: u64, end_silence_ms: u64) -> Vad {
        Vad {
            detector: Detector::default_boxed(),
            pending: Vec::with_capacity(FRAME_SAMPLES * 2),
            utterance: Vec::new(),
            preroll: std::collections::VecDeque::with_capacity(PREROLL_FRAMES),
            speech_ms: 0,
            silence_ms: 0,
            in_speech: false,
            min_speech_ms,
            end_silence_ms,
        }
    }

    /// True while the caller is speaking (an utterance is open).
    pub fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Speech heard in the open utterance so far (its frames called speech), in ms.
    pub fn speech_ms(&self) -> u64 {
        if self.in_speech {
            self.speech_ms
        } else {
            0
        }
    }

    /// Silence since the open utterance's last speech frame, in ms (0 when not in speech).
    pub fn silence_ms(&self) -> u64 {
        if self.in_speech {
            self.silence_ms
        } else {
            0
        }
    }

    /// The open utterance so far (with pre-roll); empty when not in speech.
    pub fn utterance(&self) -> &[i16] {
        &self.utterance
    }

    /// Feeds 16 kHz samples; returns what happened in them.
    pub fn push(&mut self, samples: &[i16]) -> Vec<Heard> {
        self.pending.extend_from_slice(samples);
        let mut heard = Vec::new();
        let mut offset = 0;
        while self.pending.len() - offset >= FRAME_SAMPLES {
            let mut frame = [0i16; FRAME_SAMPLES];
            frame.copy_from_slice(&self.pending[offset..offset + FRAME_SAMPLES]);
            offset += FRAME_SAMPLES;
            if let Some(event) = self.frame(frame) {
                heard.push(event);
            }
        }
        self.pending.drain(..offset);
        heard
    }

    fn frame(&mut self, frame: [i16; FRAME_SAMPLES]) -> Option<Heard> {
        let speech = self.detector.predict_i16(&frame) >= SPEECH_SCORE;
        if !self.in_speech {
            if !speech {
                if self.preroll.len() == PREROLL_FRAMES {
                    self.preroll.pop_front();
                }
                self.preroll.push_back(frame);
                return None;
            }
            self.in_speech = true;
            self.speech_ms = FRAME_MS;
            self.silence_ms = 0;
            self.utterance.clear();
            for earlier in self.preroll.drain(..) {
                self.utterance.extend_from_slice(&earlier);
            }
            self.utterance.extend_from_slice(&frame);
            return Some(Heard::SpeechStarted);
        }
        self.utterance.extend_from_slice(&frame);
        if speech {
            self.speech_ms += FRAME_MS;
            self.silence_ms = 0;
        } else {
            self.silence_ms += FRAME_MS;
        }
        let too_long = self.utterance.len() as u64 * 1000 / 16_000 >= MAX_UTTERANCE_MS;
        if self.silence_ms >= self.end_silence_ms || too_long {
            self.in_speech = false;
            let audio = std::mem::take(&mut self.utterance);
            if self.speech_ms >= self.min_speech_ms {
                return Some(Heard::Utterance(audio));
            }
            return Some(Heard::Discarded);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_not_speech() {
        let mut vad = Vad::new(200, 600);
        assert!(vad.push(&vec![0i16; 16_000]).is_empty());
        assert!(!vad.in_speech());
    }
}
