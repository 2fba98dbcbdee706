//! Each kind of speech engine through a whole spoken turn: Wyoming and OpenAI-compatible
//! servers (small fakes here), and an agent whose reply is not streamed.

use super::client::*;
use super::{openai, wyoming};
use crate::support::*;
use outpost::config::VoiceMode;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn wyoming_engines_transcribe_and_speak_a_turn() {
    let said = "Hello from the Wyoming side.";
    let (uri, seen) = wyoming::serve(said).await;
    let wyoming_engine = |uri: &str| outpost::config::SpeechEngine::Wyoming {
        uri: uri.to_string(),
        language: Some("en".into()),
        voice: None,
    };
    let (stt, tts) = (wyoming_engine(&uri), wyoming_engine(&uri));
    let server = TestServer::with(voice_server(VoiceMode::Pipeline, |v| {
        v.stt = Some(stt);
        v.tts = Some(tts);
    }))
    .await;
    let token = server.admin().await;
    let status = server
        .get("/api/agents/echo/voice/status", &token)
        .await
        .json();
    assert_eq!(status["available"], true, "{status}");
    assert_eq!(status["engines"]["stt"]["kind"], "wyoming");
    assert_eq!(status["engines"]["stt"]["ready"], true);
    assert_eq!(
        status["engines"]["tts"]["voices"],
        json!(["en_US-joe-medium"])
    );
    let choice = json!({"sample_rate": 24000, "voice": "en_US-joe-medium", "language": "de"});
    let started = start(&server, &token, choice).await;
    let heard = say_and_hang_up(&server, &started, "Hello there, Wyoming.", 4000).await;
    assert_eq!(heard.transcripts(), vec![said, said], "{:?}", heard.events);
    let audio = heard.audio();
    assert!(audio.len() > 25, "{} packets", audio.len());
    assert!(energy(&audio, 24_000) > 100.0);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&"language=de".to_string()), "{seen:?}");
    assert!(seen.contains(&"streamed".to_string()), "{seen:?}");
    assert!(
        seen.contains(&"voice=en_US-joe-medium".to_string()),
        "{seen:?}"
    );

    let closed = TestServer::with(voice_server(VoiceMode::Pipeline, |v| {
        v.stt = Some(wyoming_engine("tcp://127.0.0.1:9"));
        v.tts = Some(wyoming_engine("tcp://127.0.0.1:9"));
    }))
    .await;
    let token = closed.admin().await;
    let status = closed
        .get("/api/agents/echo/voice/status", &token)
        .await
        .json();
    assert_eq!(status["available"], false, "{status}");
    assert!(status["reason"].as_str().unwrap().contains("not reachable"));
}

/// The Wyoming request is closed once the caller has been silent for half of `end_silence_ms`,
/// so the engine's work overlaps the wait that confirms the end of the utterance.
#[tokio::test]
async fn speech_to_text_starts_before_the_end_of_the_utterance_is_confirmed() {
    let said = "Hello from the Wyoming side.";
    // Transcribing takes 500 ms; the end of an utterance is confirmed after 600 ms of silence,
    // 300 ms after the request was closed.
    let (uri, _seen) = wyoming::serve_slowly(said, Duration::from_millis(500)).await;
    let engine = outpost::config::SpeechEngine::Wyoming {
        uri,
        language: Some("en".into()),
        voice: None,
    };
    let server = TestServer::with(voice_server(VoiceMode::Pipeline, |v| {
        v.stt = Some(engine.clone());
        v.tts = Some(engine);
    }))
    .await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let heard = say_and_hang_up(&server, &started, "Hello there, Wyoming.", 3000).await;
    let turns = heard.events_of("turn");
    let timings = &turns.first().expect("a turn frame")["timings"];
    let waited = timings["speech_end_to_transcript_ms"].as_u64().unwrap();
    // Without the early close this is the whole 500 ms, and more.
    assert!(waited < 400, "{timings}");
    let transcripts = heard.events_of("transcript");
    assert_eq!(transcripts[0]["text"], said, "{:?}", heard.events);
}

#[tokio::test]
async fn openai_speech_endpoints_transcribe_and_speak_a_turn() {
    let said = "Hello from the OpenAI side.";
    let base_url = openai::serve(said).await;
    let engine = |base_url: &str| outpost::config::SpeechEngine::OpenAi {
        base_url: base_url.to_string(),
        model: "whisper-1".into(),
        api_key: Some("sk-local".into()),
        language: Some("en".into()),
        voice: Some("alloy".into()),
    };
    let (stt, tts) = (engine(&base_url), engine(&base_url));
    let server = TestServer::with(voice_server(VoiceMode::Pipeline, |v| {
        v.stt = Some(stt);
        v.tts = Some(tts);
    }))
    .await;
    let token = server.admin().await;
    let status = server
        .get("/api/agents/echo/voice/status", &token)
        .await
        .json();
    assert_eq!(status["available"], true, "{status}");
    assert_eq!(status["engines"]["tts"]["kind"], "openai");
    let started = start(&server, &token, json!({"sample_rate": 48000})).await;
    let heard = say_and_hang_up(&server, &started, "Hello there, OpenAI.", 4000).await;
    assert_eq!(heard.transcripts(), vec![said, said], "{:?}", heard.events);
    let audio = heard.audio();
    assert!(audio.len() > 25, "{} packets", audio.len());
    assert!(energy(&audio, 48_000) > 100.0);
}

#[tokio::test]
async fn a_reply_that_is_not_streamed_is_spoken_whole() {
    let stt = command("sh", &["-c", "cat > /dev/null; echo 'Say it all at once.'"]);
    let server = TestServer::with(|config| {
        voice_server(VoiceMode::Pipeline, |v| {
            v.stt = Some(stt);
            v.tts = Some(command("espeak-ng", &["--stdout"]));
        })(config);
        config.agents[0].engine = outpost::config::EngineSpec::Command {
            program: fixture("whole.sh"),
            args: Vec::new(),
            workdir: None,
            env: Default::default(),
            resume_args: Vec::new(),
        };
    })
    .await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let heard = say_and_hang_up(&server, &started, "Say it all at once.", 4000).await;
    let replies: Vec<&str> = heard
        .events_of("transcript")
        .iter()
        .filter(|e| e["role"] == "assistant")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        replies,
        vec!["The whole reply. In two sentences."],
        "{:?}",
        heard.events
    );
    assert_eq!(heard.events_of("turn").len(), 1, "{:?}", heard.events);
    assert!(heard.packets.len() > 25, "{} packets", heard.packets.len());
}
