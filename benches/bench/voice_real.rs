//! Voice turns through the real offline speech engines: wyoming-faster-whisper (tiny.en,
//! int8) and wyoming-piper (en_US-joe-medium) from the venv `tests/run.sh` installs, a daemon
//! of its own with `[voice] mode = "pipeline"`, and one call of [`TURNS`] spoken turns to the
//! echo agent, each sent as 20 ms Opus packets in real time. Skipped, with a note, when the
//! venv is missing.

use crate::client::{Call, Conn};
use crate::conversation::{self, opus_packets};
use crate::daemon::Daemon;
use crate::speech_services::{self, SpeechServices, VOICE};
use crate::{progress, setup};
use anyhow::{bail, Context};
use hyper::StatusCode;
use serde_json::json;
use std::time::Duration;

/// Spoken turns in the run.
pub const TURNS: usize = 20;
/// What the caller says, in rotation.
const SAID: [&str; 4] = [
    "Turn on the kitchen lights.",
    "What is the weather like today?",
    "Play some music in the living room.",
    "Set a timer for ten minutes.",
];
/// The longest one turn may take, from its first word to the end of its reply.
const TURN_LIMIT: Duration = Duration::from_secs(60);

/// What the run measured, or why it did not run.
pub enum Outcome {
    Measured(VoiceResults),
    Skipped(String),
}

pub struct VoiceResults {
    /// The daemon's `speech_end_to_first_audio_ms` of each turn: from the moment it called
    /// the utterance over (after `end_silence_ms` of silence) to the reply's first packet.
    pub server: Latencies,
    /// From the client's last packet of speech to the reply's first packet, as it heard it.
    pub client: Latencies,
    /// The daemon's split of `server`: speech end → transcript (speech-to-text), and the
    /// reply's first token → its first packet (text-to-speech of the first sentence).
    pub transcript: Latencies,
    pub synthesis: Latencies,
}

/// Latencies of the turns, sorted.
#[derive(Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
    fn record(&mut self, latency: Duration) {
        let at = self.0.partition_point(|l| *l <= latency);
        self.0.insert(at, latency);
    }

    /// The nearest-rank percentile (`p` in 0..=100).
    pub fn percentile(&self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

pub async fn measure() -> anyhow::Result<Outcome> {
    let venv = match speech_services::venv() {
        Ok(venv) => venv,
        Err(message) => return Ok(Outcome::Skipped(message)),
    };
    progress("(g) voice turns, real speech engines: starting wyoming-faster-whisper and piper");
    let services = SpeechServices::start(&venv)
        .await
        .map_err(anyhow::Error::msg)?;
    let voice = format!(
        r#"
[voice]
mode = "pipeline"
stt = {{ kind = "wyoming", uri = "{}", language = "en" }}
tts = {{ kind = "wyoming", uri = "{}", voice = "{VOICE}" }}
"#,
        services.stt_uri, services.tts_uri
    );
    let daemon = Daemon::start_with(&voice).await?;
    let measured = turns(&daemon).await;
    if measured.is_err() {
        progress(&format!(
            "daemon log:\n{}\n{}",
            daemon.log_tail(),
            services.logs()
        ));
    }
    daemon.stop().await?;
    Ok(Outcome::Measured(measured?))
}

async fn turns(daemon: &Daemon) -> anyhow::Result<VoiceResults> {
    let mut conn = Conn::connect(daemon.addr).await?;
    let admin = setup::login(&mut conn).await?;
    let start = Call::post("/api/agents/echo/voice/start", Some(&admin), &json!({}));
    let started = conn.json(&start, StatusCode::CREATED).await?;
    let url = started["websocket_url"]
        .as_str()
        .context("voice/start gave no websocket_url")?;
    let socket = conversation::open(daemon.addr, url)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut spoken = Vec::new();
    for text in SAID {
        let output = tokio::process::Command::new("espeak-ng")
            .args(["--stdout", text])
            .output()
            .await
            .context("running espeak-ng (tests/run.sh installs it)")?;
        let pcm = outpost::voice::audio::from_wav(&output.stdout)?;
        let pcm = outpost::voice::audio::resample(&pcm, 16_000)?;
        spoken.push(opus_packets(&pcm));
    }
    let utterances = (0..TURNS).map(|i| spoken[i % SAID.len()].clone()).collect();
    progress(&format!("(g) {TURNS} spoken turns on one call"));
    let (turns, _) = conversation::converse(socket, utterances, TURN_LIMIT)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut server = Latencies::default();
    let mut client = Latencies::default();
    let mut transcript = Latencies::default();
    let mut synthesis = Latencies::default();
    for (number, turn) in turns.iter().enumerate() {
        let (Some(at_server), Some(at_client)) =
            (turn.speech_end_to_first_audio(), turn.heard_after)
        else {
            bail!("turn {number} had no spoken reply: {:?}", turn.events);
        };
        server.record(at_server);
        client.record(at_client);
        let timings = &turn.events_of("turn")[0]["timings"];
        let span = |key: &str| Duration::from_millis(timings[key].as_u64().unwrap_or(0));
        transcript.record(span("speech_end_to_transcript_ms"));
        synthesis.record(span("first_token_to_first_audio_ms"));
    }
    Ok(VoiceResults {
        server,
        client,
        transcript,
        synthesis,
    })
}
