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

    /// "Turn on the kitchen lights" from espeak-ng (22 050 Hz), at the detector's 16 kHz, from
    /// its first to its last audible sample.
    fn speech() -> Vec<i16> {
        let wav = include_bytes!("../../tests/data/voice/lights.wav");
        let pcm = crate::voice::audio::from_wav(wav).expect("a WAV");
        let samples = crate::voice::audio::resample(&pcm, 16_000).expect("resampled");
        // Without the quiet espeak-ng puts around the words.
        let loud = |s: &i16| s.unsigned_abs() > 300;
        let first = samples.iter().position(loud).expect("sound");
        let last = samples.iter().rposition(loud).expect("sound");
        samples[first..=last].to_vec()
    }

    /// Feeds `audio` as 20 ms packets, as a call does.
    fn heard(vad: &mut Vad, audio: &[i16]) -> Vec<Heard> {
        audio
            .chunks(320)
            .flat_map(|packet| vad.push(packet))
            .collect()
    }

    fn ms(samples: usize) -> u64 {
        samples as u64 * 1000 / 16_000
    }

    #[test]
    fn speech_between_silences_is_one_utterance() {
        let (speech, silence) = (speech(), vec![0i16; 16_000]);
        let mut vad = Vad::new(200, 600);
        let heard = heard(&mut vad, &[&silence[..], &speech, &silence].concat());
        assert_eq!(
            heard.len(),
            2,
            "{:?}",
            heard.iter().map(label).collect::<Vec<_>>()
        );
        assert_eq!(heard[0], Heard::SpeechStarted);
        let Heard::Utterance(utterance) = &heard[1] else {
            panic!("no utterance: {:?}", label(&heard[1]));
        };
        // The words, the pre-roll before them and the silence that ended them; no more.
        let (spoken, kept) = (ms(speech.len()), ms(utterance.len()));
        assert!(
            kept >= spoken / 2,
            "kept {kept} ms of {spoken} ms of speech"
        );
        assert!(
            kept <= spoken + 200 + 600 + 100,
            "kept {kept} ms of {spoken} ms"
        );
        assert!(!vad.in_speech());
    }

    #[test]
    fn a_pause_shorter_than_end_silence_does_not_end_the_utterance() {
        let speech = speech();
        let (pause, silence) = (vec![0i16; 16 * 300], vec![0i16; 16_000]);
        let mut vad = Vad::new(200, 600);
        let heard = heard(&mut vad, &[&speech[..], &pause, &speech, &silence].concat());
        let utterances: Vec<usize> = heard
            .iter()
            .filter_map(|h| match h {
                Heard::Utterance(samples) => Some(samples.len()),
                _ => None,
            })
            .collect();
        assert_eq!(
            utterances.len(),
            1,
            "{:?}",
            heard.iter().map(label).collect::<Vec<_>>()
        );
        assert!(ms(utterances[0]) >= ms(speech.len()) * 2);
    }

    #[test]
    fn speech_shorter_than_min_speech_is_discarded() {
        let speech = speech();
        // The loudest 100 ms of the sentence, alone between silences.
        let loudest = (0..speech.len() - 1600)
            .step_by(160)
            .max_by_key(|&i| {
                speech[i..i + 1600]
                    .iter()
                    .map(|s| s.unsigned_abs() as u64)
                    .sum::<u64>()
            })
            .unwrap();
        let click = &speech[loudest..loudest + 1600];
        let silence = vec![0i16; 16_000];
        let mut vad = Vad::new(200, 600);
        let heard = heard(&mut vad, &[&silence[..], click, &silence].concat());
        assert!(
            !heard.iter().any(|h| matches!(h, Heard::Utterance(_))),
            "{:?}",
            heard.iter().map(label).collect::<Vec<_>>()
        );
    }

    fn label(heard: &Heard) -> String {
        match heard {
            Heard::SpeechStarted => "started".into(),
            Heard::Utterance(samples) => format!("utterance of {} ms", ms(samples.len())),
            Heard::Discarded => "discarded".into(),
        }
    }

    #[test]
    fn silence_is_not_speech() {
        let mut vad = Vad::new(200, 600);
        assert!(vad.push(&vec![0i16; 16_000]).is_empty());
        assert!(!vad.in_speech());
    }
}
