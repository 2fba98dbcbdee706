//! One entry point per fuzz target of `fuzz/`, shared with the test that replays their corpus
//! (`tests/it/fuzz_corpus.rs`). Each takes arbitrary bytes and runs the daemon's own code on
//! them: a panic, or a broken property asserted here, is a finding. Not part of the API.

mod http;

pub use http::{http_request, HttpTarget, ROUTES as HTTP_ROUTES};

use crate::config::{self, Config};
use crate::engines::command;
use crate::paid::{header, verify, Offer};
use crate::voice::audio::LISTEN_RATE;
use crate::voice::opus::Decoder;
use crate::voice::vad::{Heard, Vad};
use crate::voice::wire::ClientMessage;
use serde_json::Value;
use std::future::Future;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

/// A command agent's stdout, read as a turn reads it. The bytes are read twice, through a
/// 7-byte and an 8 KiB buffer, and both readings must agree: where reads split a line must
/// not matter. Lines over 4 KiB are skipped (the daemon's limit is 8 MiB; this one lets
/// short inputs reach the overlong-line path). Forwarded events are JSON objects and never
/// the absorbed `result`.
pub fn stream_json(data: &[u8]) {
    const MAX_LINE: usize = 4096;
    let read = |capacity| {
        let reader = tokio::io::BufReader::with_capacity(capacity, data);
        ready(command::replay_stdout(reader, MAX_LINE))
    };
    let (events, outcome) = read(7);
    let (events_again, outcome_again) = read(8192);
    assert_eq!(events, events_again, "the events depend on the read size");
    assert_eq!(format!("{outcome:?}"), format!("{outcome_again:?}"));
    for event in &events {
        assert!(event.is_object(), "forwarded a non-object: {event}");
        assert_ne!(event["type"], "result", "forwarded the result event");
    }
}

/// Unix time the x402 target verifies at: 200 s before the spec's test vector expires.
pub const X402_NOW: u64 = 1_899_999_800;

/// An x402 payment header checked against the offer of a paid agent configured like the
/// spec's test vector (Base Sepolia, 0.01 USDC to its payee), at [`X402_NOW`]. A payment that
/// passes must carry a real payer and our requirement in its version; what decodes re-encodes.
pub fn x402_header(data: &[u8]) {
    // Header values reach the handler as text (`HeaderValue::to_str`).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(value) = header::decode(text) {
        // What we decode we can encode and read back; numbers only nearly (serde_json parses
        // floats to within an ulp: `regressions/x402_header/float-not-exact`).
        let again = header::decode(&header::encode(&value)).expect("our encoding decodes");
        assert_eq!(
            again.as_object().map(|o| o.len()),
            value.as_object().map(|o| o.len())
        );
    }
    let offer = x402_offer();
    match verify::verify(text, offer, X402_NOW) {
        Ok(verified) => {
            assert!(!verified.payer.is_zero(), "the zero address paid");
            assert_eq!(verified.requirement, offer.requirement(verified.version));
            assert!(verified.valid_before > X402_NOW);
        }
        Err((reason, detail)) => assert!(!reason.code().is_empty() && !detail.is_empty()),
    }
}

/// The paid agent the x402 target pays, read from configuration like any other.
pub fn x402_offer() -> &'static Offer {
    static OFFER: OnceLock<Offer> = OnceLock::new();
    OFFER.get_or_init(|| {
        let config = load_config(
            r#"
            [agents.helper]
            engine = { kind = "echo" }
            [agents.helper.paid]
            price = "10000"
            network = "eip155:84532"
            pay_to = "0x1563915e194D8CfBA1943570603F7606A3115508"
            max_timeout_seconds = 300
            facilitator_url = "http://127.0.0.1:9"
            "#,
        )
        .expect("the x402 target's config loads");
        let agent = config.agents.into_iter().next().expect("one agent");
        Offer {
            agent: agent.name,
            config: agent.paid.expect("a paid agent"),
            resource: "http://127.0.0.1:8000/api/paid/helper/chat".into(),
        }
    })
}

/// A text frame of the voice socket: decoded as the socket does (lossy UTF-8), then read as
/// the call reads it; an unreadable frame's answer must be a `bad_message` error event.
pub fn voice_text(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(event) = ClientMessage::read(&text) {
        let answer: Value = serde_json::from_str(&event.to_json()).expect("events are JSON");
        assert_eq!(
            (&answer["type"], &answer["error"]),
            (&"error".into(), &"bad_message".into())
        );
    }
}

/// Samples in 2.5 ms, the shortest Opus frame, at [`LISTEN_RATE`].
const SHORTEST_FRAME: usize = 40;
/// Samples in 120 ms, the longest Opus packet, at [`LISTEN_RATE`].
const LONGEST_PACKET: usize = 1920;

/// A caller's audio frames, each `len (2 bytes, big-endian, low 11 bits) ‖ packet`, through
/// one call's decoder and voice-activity detector as `on_packet` does. Decoded audio comes in
/// whole Opus frames; utterances are never empty.
pub fn voice_opus(data: &[u8]) {
    let mut decoder = Decoder::new(LISTEN_RATE).expect("a decoder");
    let voice = crate::config::VoiceConfig::default();
    let mut vad = Vad::new(voice.min_speech_ms, voice.end_silence_ms);
    let mut rest = data;
    while let [high, low, tail @ ..] = rest {
        let len = (usize::from(*high) << 8 | usize::from(*low)) & 0x7ff;
        let (packet, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let Some(pcm) = decoder.decode_packet(packet) else {
            continue;
        };
        assert!(pcm.len() % SHORTEST_FRAME == 0 && pcm.len() <= LONGEST_PACKET);
        for heard in vad.push(pcm) {
            if let Heard::Utterance(samples) = heard {
                assert!(!samples.is_empty(), "an empty utterance");
            }
        }
    }
}

/// A configuration file through both stages, parse and checks. A loaded config has what the
/// daemon relies on; a refusal names a key or says what is wrong.
pub fn config(data: &[u8]) {
    // The file is read as UTF-8 text (`read_to_string`).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match load_config(text) {
        Ok(config) => {
            assert!(!config.listen.is_empty() && !config.agents.is_empty());
            assert!(config.workers > 0 && config.max_body_bytes > 0);
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

/// Parses and checks a configuration file's text.
fn load_config(text: &str) -> Result<Config, String> {
    let raw = config::parse(text)?;
    Config::from_raw(raw).map_err(|err| err.to_string())
}

/// Runs a future that never waits (its input is in memory) to its end.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("reading from memory waited"),
    }
}
