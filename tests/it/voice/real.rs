//! A voice call through the real offline speech engines: wyoming-faster-whisper (tiny.en)
//! hears the caller, the echo agent answers with what it heard, wyoming-piper
//! (en_US-joe-medium) speaks the reply, and the same Whisper server, asked by the test,
//! transcribes the Opus the caller got back. The venv comes from `tests/run.sh`.

use super::client::*;
use super::conversation::{self, decode, opus_packets};
use super::speech_services::{self, SpeechServices, VOICE};
use super::wer::wer;
use crate::support::*;
use outpost::config::{SpeechEngine, VoiceMode};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// What the caller says: a short command, and a longer sentence with a number in it.
const SAID: [&str; 2] = [
    "Turn on the kitchen lights.",
    "Please set a timer for ten minutes and remind me to take the bread out of the oven.",
];
/// The word error rate allowed each way.
const MAX_WER: f64 = 0.25;

#[tokio::test]
async fn real_speech_engines_hear_the_caller_and_speak_the_reply() {
    let venv = speech_services::venv().unwrap_or_else(|message| panic!("{message}"));
    let services = SpeechServices::start(&venv)
        .await
        .unwrap_or_else(|message| panic!("{message}"));
    let engine = |uri: &str| SpeechEngine::Wyoming {
        uri: uri.to_string(),
        language: Some("en".into()),
        voice: Some(VOICE.into()),
    };
    let (stt, tts) = (engine(&services.stt_uri), engine(&services.tts_uri));
    // The echo agent answers with the transcript, so the reply's text is what the caller said
    // as the server heard it: both directions of speech are checked against real words.
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
    let voices = status["engines"]["tts"]["voices"].as_array().unwrap();
    assert!(voices.contains(&json!(VOICE)), "{status}");

    let started = start(&server, &token, json!({})).await;
    let url = started["websocket_url"].as_str().unwrap();
    let socket = conversation::open(server.addr, url).await.unwrap();
    let mut utterances = Vec::new();
    for text in SAID {
        utterances.push(opus_packets(&speech(text).await));
    }
    let (turns, after) = conversation::converse(socket, utterances, Duration::from_secs(60))
        .await
        .unwrap_or_else(|err| panic!("{err}\n{}", services.logs()));

    let mut heard = Vec::new();
    for (turn, said) in turns.iter().zip(SAID) {
        let user = turn.transcript("user").unwrap_or_else(|| {
            panic!("no user transcript for {said:?}: {:?}", turn.events);
        });
        assert!(wer(said, user) <= MAX_WER, "said {said:?}, heard {user:?}");
        let reply = turn.transcript("assistant").expect("the reply's text");
        assert_eq!(reply, user, "the echo agent says back what it heard");
        assert!(
            turn.speech_end_to_first_audio().is_some(),
            "{:?}",
            turn.events
        );
        let pcm = decode(&turn.packets, 16_000);
        let spoken = pcm.len() as f64 / 16_000.0;
        assert!(spoken > 0.5, "{spoken} s of reply for {reply:?}");
        let back = transcribe(&services.stt_uri, &pcm).await;
        let error = wer(reply, &back);
        assert!(
            error <= MAX_WER,
            "the reply {reply:?} was heard back as {back:?} (WER {error:.2})"
        );
        let timings = &turn.events_of("turn")[0]["timings"];
        let mut log = std::io::stderr().lock();
        let _ = writeln!(
            log,
            "real speech: said {said:?}, heard {user:?}, reply heard back as {back:?}; {timings}"
        );
        heard.push(user.to_string());
    }
    let saved: Vec<&Value> = after.iter().filter(|e| e["type"] == "saved").collect();
    assert_eq!(saved.len(), 1, "{after:?}");
    assert_eq!(saved[0]["messages_saved"], 4, "{after:?}");

    let sessions = server
        .get("/api/agents/echo/chat/sessions", &token)
        .await
        .json();
    let session = sessions["sessions"][0]["id"].as_str().unwrap();
    let path = format!("/api/agents/echo/chat/sessions/{session}");
    let messages = server.get(&path, &token).await.json()["messages"].clone();
    let stored: Vec<(&str, &str, &str)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let field = |key: &str| m[key].as_str().unwrap_or_default();
            (field("role"), field("content"), field("source"))
        })
        .collect();
    let expected: Vec<(&str, &str, &str)> = heard
        .iter()
        .flat_map(|text| [("user", &**text, "voice"), ("assistant", &**text, "voice")])
        .collect();
    assert_eq!(stored, expected);
}

/// What the Whisper server hears in 16 kHz `pcm`, asked over Wyoming by the test itself.
async fn transcribe(uri: &str, pcm: &[i16]) -> String {
    let stream = TcpStream::connect(uri.trim_start_matches("tcp://"))
        .await
        .unwrap();
    let mut stream = BufReader::new(stream);
    let format = json!({"rate": 16_000, "width": 2, "channels": 1});
    let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut request = event("transcribe", json!({"language": "en"}), &[]);
    request.extend(event("audio-start", format.clone(), &[]));
    for chunk in bytes.chunks(3200) {
        request.extend(event("audio-chunk", format.clone(), chunk));
    }
    request.extend(event("audio-stop", json!({}), &[]));
    stream.get_mut().write_all(&request).await.unwrap();
    let read = async {
        loop {
            let mut line = String::new();
            assert!(stream.read_line(&mut line).await.unwrap() > 0, "closed");
            let header: Value = serde_json::from_str(&line).unwrap();
            let length = |key: &str| header[key].as_u64().unwrap_or(0) as usize;
            let mut data = vec![0; length("data_length")];
            stream.read_exact(&mut data).await.unwrap();
            let mut payload = vec![0; length("payload_length")];
            stream.read_exact(&mut payload).await.unwrap();
            let mut fields: Map<String, Value> =
                header["data"].as_object().cloned().unwrap_or_default();
            if let Ok(Value::Object(more)) = serde_json::from_slice(&data) {
                fields.extend(more);
            }
            if header["type"] == "transcript" {
                return fields["text"]
                    .as_str()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("a transcript in time")
}

fn event(kind: &str, data: Value, payload: &[u8]) -> Vec<u8> {
    let header = json!({"type": kind, "data": data, "payload_length": payload.len()});
    let mut bytes = format!("{header}\n").into_bytes();
    bytes.extend_from_slice(payload);
    bytes
}
