//! The `[voice]` section: speech mode, engines and limits. Without the section voice is off
//! and `voice/status` says why.

use super::{bounds, duration_within, invalid, Error};
use serde::Deserialize;
use std::time::Duration;

/// `[voice]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawVoice {
    pub mode: String,
    pub stt: Option<SpeechEngine>,
    pub tts: Option<SpeechEngine>,
    pub max_duration: String,
    pub idle_timeout: String,
    pub max_sessions: usize,
    pub max_per_user: usize,
    pub min_speech_ms: u64,
    pub end_silence_ms: u64,
    pub opus_complexity: i32,
    pub barge_in_ms: u64,
    pub write_timeout_ms: u64,
}

impl Default for RawVoice {
    fn default() -> Self {
        RawVoice {
            mode: "pipeline".into(),
            stt: None,
            tts: None,
            max_duration: "10m".into(),
            idle_timeout: "30s".into(),
            max_sessions: 32,
            max_per_user: 2,
            min_speech_ms: 200,
            end_silence_ms: 600,
            opus_complexity: 5,
            barge_in_ms: 250,
            write_timeout_ms: 5000,
        }
    }
}

/// A speech engine (speech-to-text or text-to-speech).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SpeechEngine {
    /// A program run once per request. STT: a WAV file on stdin, the text on stdout.
    /// TTS: the text on stdin, a WAV file on stdout (e.g. `espeak-ng --stdout`).
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
    },
    /// OpenAI-compatible `/audio/transcriptions` and `/audio/speech` (plain `http://`).
    #[serde(rename = "openai")]
    OpenAi {
        base_url: String,
        model: String,
        #[serde(default)]
        api_key: Option<String>,
        #[serde(default)]
        language: Option<String>,
        #[serde(default)]
        voice: Option<String>,
    },
    /// A Wyoming server (`wyoming-faster-whisper`, `wyoming-piper`, …) at `tcp://host:port`.
    Wyoming {
        uri: String,
        #[serde(default)]
        language: Option<String>,
        #[serde(default)]
        voice: Option<String>,
    },
}

impl SpeechEngine {
    pub fn kind(&self) -> &'static str {
        match self {
            SpeechEngine::Command { .. } => "command",
            SpeechEngine::Wyoming { .. } => "wyoming",
            SpeechEngine::OpenAi { .. } => "openai",
        }
    }
}

/// What the calls do with the caller's speech.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoiceMode {
    /// Speech-to-text, a chat turn, text-to-speech.
    Pipeline,
    /// Each utterance is played back (checks a device's audio path without speech engines).
    Echo,
}

/// `[voice]`, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct VoiceConfig {
    pub mode: VoiceMode,
    pub stt: Option<SpeechEngine>,
    pub tts: Option<SpeechEngine>,
    pub max_duration: Duration,
    /// A call that gets no frame from its client for this long is ended (1000).
    pub idle_timeout: Duration,
    /// Calls open at once over all users; more get 429.
    pub max_sessions: usize,
    pub max_per_user: usize,
    /// Speech needed before a pause can end an utterance.
    pub min_speech_ms: u64,
    /// Silence that ends an utterance.
    pub end_silence_ms: u64,
    /// Opus encoder complexity, 0-10.
    pub opus_complexity: i32,
    /// Speech needed while the agent speaks before it stops for the caller; shorter sounds
    /// (and utterances that never got this long) are ignored.
    pub barge_in_ms: u64,
    /// A frame the socket cannot write in this long ends the call (the client stopped
    /// reading); the call's transcript is kept.
    pub write_timeout: Duration,
}

impl VoiceConfig {
    /// The second stage of `[voice]`.
    pub fn from_raw(raw: RawVoice) -> Result<VoiceConfig, Error> {
        let mode = match raw.mode.as_str() {
            "pipeline" => VoiceMode::Pipeline,
            "echo" => VoiceMode::Echo,
            other => {
                return Err(invalid(
                    "voice.mode",
                    format!("{other:?} is not \"pipeline\" or \"echo\""),
                ))
            }
        };
        for (key, engine) in [("voice.stt", &raw.stt), ("voice.tts", &raw.tts)] {
            match engine {
                Some(SpeechEngine::Command { program, .. }) if program.trim().is_empty() => {
                    return Err(invalid(format!("{key}.program"), "must not be empty"));
                }
                Some(SpeechEngine::OpenAi { base_url, .. })
                    if !base_url
                        .parse::<hyper::Uri>()
                        .is_ok_and(|uri| crate::outbound::check_url(&uri).is_ok()) =>
                {
                    return Err(invalid(
                        format!("{key}.base_url"),
                        "must be an http:// or https:// URL",
                    ));
                }
                Some(SpeechEngine::Wyoming { uri, .. }) if !uri.starts_with("tcp://") => {
                    return Err(invalid(format!("{key}.uri"), "must be tcp://host:port"));
                }
                _ => {}
            }
        }
        for (key, value) in [
            ("voice.max_sessions", raw.max_sessions),
            ("voice.max_per_user", raw.max_per_user),
        ] {
            bounds::VOICE_CALLS
                .check_usize(key, value)
                .map_err(|m| invalid(key, m))?;
        }
        for (key, value) in [
            ("voice.min_speech_ms", raw.min_speech_ms),
            ("voice.end_silence_ms", raw.end_silence_ms),
            ("voice.barge_in_ms", raw.barge_in_ms),
        ] {
            bounds::VOICE_SPEECH_MS
                .check(key, value)
                .map_err(|m| invalid(key, m))?;
        }
        if !(0..=10).contains(&raw.opus_complexity) {
            return Err(invalid("voice.opus_complexity", "must be between 0 and 10"));
        }
        if !(100..=600_000).contains(&raw.write_timeout_ms) {
            return Err(invalid(
                "voice.write_timeout_ms",
                "must be between 100 and 600000",
            ));
        }
        Ok(VoiceConfig {
            mode,
            stt: raw.stt,
            tts: raw.tts,
            max_duration: duration_within(
                "voice.max_duration",
                &raw.max_duration,
                bounds::VOICE_DURATION_SECONDS,
            )?,
            idle_timeout: duration_within(
                "voice.idle_timeout",
                &raw.idle_timeout,
                bounds::VOICE_DURATION_SECONDS,
            )?,
            max_sessions: raw.max_sessions,
            max_per_user: raw.max_per_user,
            min_speech_ms: raw.min_speech_ms,
            end_silence_ms: raw.end_silence_ms,
            opus_complexity: raw.opus_complexity,
            barge_in_ms: raw.barge_in_ms,
            write_timeout: Duration::from_millis(raw.write_timeout_ms),
        })
    }
}

impl Default for VoiceConfig {
    fn default() -> Self {
        VoiceConfig::from_raw(RawVoice::default()).expect("built-in voice defaults are valid")
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, Config};

    fn check(engine: &str) -> Result<(), String> {
        let text = format!("[voice]\nstt = {engine}\n");
        parse(&text).and_then(|raw| Config::from_raw(raw).map(|_| ()).map_err(|e| e.to_string()))
    }

    #[test]
    fn speech_engine_addresses() {
        let openai =
            |url: &str| format!("{{ kind = \"openai\", base_url = \"{url}\", model = \"m\" }}");
        assert_eq!(check(&openai("http://127.0.0.1:8080/v1")), Ok(()));
        assert_eq!(check(&openai("https://speech.example/v1")), Ok(()));
        for bad in ["ftp://127.0.0.1/v1", "127.0.0.1:8080", "https://"] {
            let error = check(&openai(bad)).unwrap_err();
            assert!(error.contains("voice.stt.base_url"), "{bad}: {error}");
        }
        let wyoming = "{ kind = \"wyoming\", uri = \"http://127.0.0.1:10300\" }";
        assert!(check(wyoming).unwrap_err().contains("voice.stt.uri"));
    }
}
