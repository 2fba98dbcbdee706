//! Voice calls end to end: real speech (espeak-ng) encoded with libopus, sent over a real
//! WebSocket to a daemon on 127.0.0.1, and the Opus packets and events that come back.

mod client;
mod conversation;
mod engines;
mod openai;
mod page;
mod real;
mod robust;
mod speech_services;
mod wer;
mod wyoming;

use crate::support::*;
use client::*;
use fastwebsockets::{Frame, OpCode, Payload};
use outpost::config::VoiceMode;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test]
async fn echo_mode_plays_each_utterance_back_in_real_time() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    assert_eq!(
        started["audio"],
        json!({"codec": "opus", "sample_rate": 16000, "channels": 1, "frame_ms": 20})
    );
    assert_eq!(started["ticket_expires_in"], 30);
    let url = started["websocket_url"].as_str().unwrap();
    let socket = connect(&server, url, None).await.unwrap();
    let spoken = speech("Hello there, this is a test of the voice bridge.").await;
    let spoken_ms = spoken.len() as u64 / 16;
    let packets = packets(&spoken, 1500);
    // Hang up once the echo has had time to play.
    let wait = Duration::from_millis(spoken_ms + 1500);
    let heard = call(socket, packets, vec![], wait + Duration::from_secs(10));
    let heard = tokio::time::timeout(wait + Duration::from_secs(20), async {
        // The call ends when the server closes; stop it from the REST side after the echo.
        let stopper = async {
            tokio::time::sleep(wait + Duration::from_millis(spoken_ms + 1500)).await;
            let id = started["voice_session_id"].as_str().unwrap();
            server
                .post(
                    "/api/agents/echo/voice/stop",
                    &token,
                    json!({"voice_session_id": id}),
                )
                .await
        };
        let (heard, stopped) = tokio::join!(heard, stopper);
        assert_eq!(
            stopped.status,
            200,
            "{}",
            String::from_utf8_lossy(&stopped.body)
        );
        heard
    })
    .await
    .unwrap();

    assert_eq!(heard.close, Some(1000));
    let states: Vec<&str> = heard
        .events_of("status")
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert!(states.starts_with(&["listening"]), "{states:?}");
    assert!(states.contains(&"speaking"), "{states:?}");
    assert_eq!(states.last(), Some(&"ended"), "{states:?}");
    assert_eq!(heard.events_of("saved").len(), 1);
    // The echo is about as long as what was said (VAD pre-roll and trailing silence).
    let echoed_ms = heard.packets.len() as u64 * 20;
    assert!(
        echoed_ms >= spoken_ms / 2,
        "{echoed_ms} ms back for {spoken_ms} ms said"
    );
    assert!(
        echoed_ms <= spoken_ms + 2000,
        "{echoed_ms} ms back for {spoken_ms} ms said"
    );
    let audio: Vec<Vec<u8>> = heard.packets.iter().map(|(_, p)| p.clone()).collect();
    assert!(energy(&audio, 16_000) > 100.0, "the echo has sound in it");
    // Paced in real time with at most 100 ms lead (some slack for a busy test machine).
    let first = heard.packets[0].0;
    let last = heard.packets.last().unwrap().0;
    let span = last.duration_since(first).as_millis() as u64;
    assert!(
        span + 100 + 60 >= echoed_ms - 20,
        "{} packets in {span} ms",
        heard.packets.len()
    );
}

#[tokio::test]
async fn refusals_come_before_the_handshake() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let admin = server.admin().await;
    let alice = server.user("alice").await;
    let started = start(&server, &admin, json!({})).await;
    let id = started["voice_session_id"].as_str().unwrap();
    let ws = "/api/agents/echo/voice/ws";
    assert_eq!(
        connect(&server, &format!("{ws}?ticket=nope"), None)
            .await
            .err(),
        Some(401)
    );
    let by_id = format!("{ws}?voice_session_id={id}");
    assert_eq!(connect(&server, &by_id, None).await.err(), Some(401));
    assert_eq!(
        connect(&server, &by_id, Some(&alice)).await.err(),
        Some(404)
    );
    let unknown = format!("{ws}?voice_session_id=0000");
    assert_eq!(
        connect(&server, &unknown, Some(&admin)).await.err(),
        Some(404)
    );
    // A ticket works once.
    let url = started["websocket_url"].as_str().unwrap();
    let socket = connect(&server, url, None).await.unwrap();
    assert_eq!(connect(&server, url, None).await.err(), Some(401));
    drop(socket);
}

#[tokio::test]
async fn status_start_and_stop_follow_the_configuration() {
    let off = TestServer::start().await;
    let token = off.admin().await;
    let status = off
        .get("/api/agents/echo/voice/status", &token)
        .await
        .json();
    assert_eq!(status["available"], false);
    assert!(
        status["reason"].as_str().unwrap().contains("[voice]"),
        "{status}"
    );
    off.post("/api/agents/echo/voice/start", &token, json!({}))
        .await
        .assert_error(503, "voice_unavailable");

    let server = TestServer::with(voice_server(VoiceMode::Echo, |v| v.max_per_user = 1)).await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({"sample_rate": 48000})).await;
    assert_eq!(started["audio"]["sample_rate"], 48000);
    server
        .post("/api/agents/echo/voice/start", &token, json!({}))
        .await
        .assert_error(429, "voice_limit");
    server
        .post(
            "/api/agents/echo/voice/start",
            &token,
            json!({"sample_rate": 44100}),
        )
        .await
        .assert_error(422, "invalid_field");
    server
        .post(
            "/api/agents/echo/voice/start",
            &token,
            json!({"voice": "../x y"}),
        )
        .await
        .assert_error(422, "invalid_field");
    let status = server
        .get("/api/agents/echo/voice/status", &token)
        .await
        .json();
    assert_eq!(status["available"], true, "{status}");
    assert_eq!(status["sessions"].as_array().unwrap().len(), 1);
    let id = started["voice_session_id"].as_str().unwrap();
    let stop = json!({"voice_session_id": id});
    let first = server
        .post("/api/agents/echo/voice/stop", &token, stop.clone())
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["messages_saved"], 0);
    let again = server
        .post("/api/agents/echo/voice/stop", &token, stop)
        .await;
    assert_eq!(again.json()["transcript"], json!([]));
    server
        .post(
            "/api/agents/echo/voice/stop",
            &token,
            json!({"voice_session_id": "nope"}),
        )
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_spoken_turn_becomes_a_voice_chat_turn_spoken_back() {
    let stt = command(
        "sh",
        &[
            "-c",
            "cat > /dev/null; echo 'Hello agent. How are you today?'",
        ],
    );
    let tts = command("espeak-ng", &["--stdout"]);
    let server = TestServer::with(voice_server(VoiceMode::Pipeline, |v| {
        v.stt = Some(stt);
        v.tts = Some(tts);
    }))
    .await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let socket = connect(&server, started["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    let packets = packets(&speech("Hello agent, how are you today?").await, 1500);
    let heard = call(socket, packets, vec![], Duration::from_secs(8));
    let stopper = async {
        tokio::time::sleep(Duration::from_secs(7)).await;
        let id = started["voice_session_id"].as_str().unwrap();
        server
            .post(
                "/api/agents/echo/voice/stop",
                &token,
                json!({"voice_session_id": id}),
            )
            .await
    };
    let (heard, stopped) = tokio::join!(heard, stopper);
    let transcripts: Vec<(&str, &str)> = heard
        .events_of("transcript")
        .iter()
        .map(|e| (e["role"].as_str().unwrap(), e["text"].as_str().unwrap()))
        .collect();
    let said = "Hello agent. How are you today?";
    assert_eq!(transcripts, vec![("user", said), ("assistant", said)]);
    let turns = heard.events_of("turn");
    assert_eq!(turns.len(), 1, "{:?}", heard.events);
    assert!(turns[0]["timings"]["speech_end_to_first_audio_ms"].is_u64());
    let audio: Vec<Vec<u8>> = heard.packets.iter().map(|(_, p)| p.clone()).collect();
    assert!(audio.len() > 50, "{} packets", audio.len());
    assert!(energy(&audio, 16_000) > 100.0);
    let stopped = stopped.json();
    assert_eq!(stopped["messages_saved"], 2, "{stopped}");

    let sessions = server
        .get("/api/agents/echo/chat/sessions", &token)
        .await
        .json();
    let session_id = sessions["sessions"][0]["id"].as_str().unwrap();
    let path = format!("/api/agents/echo/chat/sessions/{session_id}");
    let messages = server.get(&path, &token).await.json()["messages"].clone();
    let stored: Vec<(&str, &str, &str)> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap(),
                m["content"].as_str().unwrap(),
                m["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        vec![("user", said, "voice"), ("assistant", said, "voice")]
    );
    let execution_id = turns[0]["execution_id"].as_str().unwrap();
    let execution = server
        .get(
            &format!("/api/agents/echo/executions/{execution_id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(execution["kind"], "voice", "{execution}");
}

#[tokio::test]
async fn speech_during_the_reply_stops_it_and_keeps_only_what_was_said() {
    let reply = "One fish. Two fish. Red fish. Blue fish. This reply goes on for a good while yet.";
    let stt = command("sh", &["-c", &format!("cat > /dev/null; echo '{reply}'")]);
    let server = TestServer::with(voice_server(VoiceMode::Pipeline, |v| {
        v.stt = Some(stt);
        v.tts = Some(command("espeak-ng", &["--stdout"]));
    }))
    .await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let socket = connect(&server, started["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    let (mut reader, mut writer) = socket.split(tokio::io::split);
    let question = packets(&speech("Tell me about fish.").await, 1000);
    let interruption = packets(&speech("Stop, stop, please stop talking now.").await, 0);
    let (heard_tx, mut heard_rx) = tokio::sync::mpsc::unbounded_channel::<Option<Value>>();
    let read = async move {
        let mut ignore = |_: Frame<'_>| async { Ok::<_, fastwebsockets::WebSocketError>(()) };
        while let Ok(frame) = reader.read_frame(&mut ignore).await {
            let item = match frame.opcode {
                OpCode::Binary => None,
                OpCode::Text => Some(serde_json::from_slice(&frame.payload).unwrap()),
                OpCode::Close => Some(json!({"type": "close"})),
                _ => continue,
            };
            let _ = heard_tx.send(item);
        }
        // The script decides when the test is over.
        std::future::pending::<()>().await;
    };
    let script = async move {
        let send = |packet: Vec<u8>| Frame::binary(Payload::Owned(packet));
        for packet in question {
            writer.write_frame(send(packet)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Keep sending silence until the reply has played for a while.
        let silence = packets(&[], 20).remove(0);
        let mut events = Vec::new();
        let mut audio = 0;
        while audio < 40 {
            match heard_rx.try_recv() {
                Ok(None) => audio += 1,
                Ok(Some(event)) => events.push(event),
                Err(_) => {
                    writer.write_frame(send(silence.clone())).await.unwrap();
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        for packet in interruption {
            writer.write_frame(send(packet)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(item) = heard_rx.try_recv() {
                match item {
                    None => audio += 1,
                    Some(event) => events.push(event),
                }
            }
        }
        let end = Payload::Owned(json!({"type": "end"}).to_string().into_bytes());
        writer.write_frame(Frame::text(end)).await.unwrap();
        let mut after = 0;
        let mut interrupted = events.iter().any(|e| e["type"] == "interrupted");
        while let Some(item) = heard_rx.recv().await {
            match item {
                None if interrupted => after += 1,
                None => audio += 1,
                Some(event) => {
                    interrupted |= event["type"] == "interrupted";
                    let close = event["type"] == "close";
                    events.push(event);
                    if close {
                        break;
                    }
                }
            }
        }
        (events, audio, after)
    };
    let (events, audio, after) = tokio::select! {
        done = tokio::time::timeout(Duration::from_secs(30), script) => done.unwrap(),
        () = read => unreachable!(),
    };
    let interrupted: Vec<&Value> = events
        .iter()
        .filter(|e| e["type"] == "interrupted")
        .collect();
    assert_eq!(interrupted.len(), 1, "{events:?}");
    let spoken = interrupted[0]["spoken_text"].as_str().unwrap();
    assert!(
        !spoken.is_empty() && reply.starts_with(spoken),
        "{spoken:?}"
    );
    assert!(spoken.len() < reply.len(), "{spoken:?}");
    assert!(audio >= 40);
    // Counted from when the client saw `interrupted`: nothing of the old reply follows.
    assert_eq!(after, 0, "{events:?}");
    let saved: Vec<&Value> = events.iter().filter(|e| e["type"] == "saved").collect();
    assert_eq!(saved[0]["messages_saved"], 2, "{events:?}");

    let sessions = server
        .get("/api/agents/echo/chat/sessions", &token)
        .await
        .json();
    let session_id = sessions["sessions"][0]["id"].as_str().unwrap();
    let path = format!("/api/agents/echo/chat/sessions/{session_id}");
    let messages = server.get(&path, &token).await.json()["messages"].clone();
    assert_eq!(messages[0]["content"], reply, "{messages}");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["content"], spoken, "{messages}");
}

#[tokio::test]
async fn a_device_token_with_scope_voice_calls_by_bearer_until_the_daemon_stops() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let admin = server.admin().await;
    let device = |scope: &'static str| {
        let body = json!({"username": "admin", "scope": scope});
        let server = &server;
        let admin = admin.clone();
        async move {
            let reply = server.post("/api/tokens", &admin, body).await;
            reply.json()["access_token"].as_str().unwrap().to_string()
        }
    };
    let chat_only = device("chat").await;
    server
        .post("/api/agents/echo/voice/start", &chat_only, json!({}))
        .await
        .assert_error(403, "forbidden");
    let speaker = device("voice").await;
    let started = start(&server, &speaker, json!({})).await;
    let id = started["voice_session_id"].as_str().unwrap();
    let url = format!("/api/agents/echo/voice/ws?voice_session_id={id}");
    assert_eq!(
        connect(&server, &url, Some(&chat_only)).await.err(),
        Some(403)
    );
    let mut socket = connect(&server, &url, Some(&speaker)).await.unwrap();
    let ping = Payload::Owned(br#"{"type":"ping"}"#.to_vec());
    socket.write_frame(Frame::text(ping)).await.unwrap();
    let stopping = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.stop().await;
    });
    let (events, code) = read_to_close(&mut socket).await;
    assert_eq!(code, Some(1001), "{events:?}");
    assert!(events.iter().any(|e| e["type"] == "pong"), "{events:?}");
    assert_eq!(events.last().unwrap()["state"], "ended", "{events:?}");
    stopping.await.unwrap();
}

#[tokio::test]
async fn undecodable_packets_end_the_call_with_4008() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let mut socket = connect(&server, started["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    for _ in 0..20 {
        let oversized = Payload::Owned(vec![0x78; 1300]);
        socket.write_frame(Frame::binary(oversized)).await.unwrap();
    }
    let (events, code) = read_to_close(&mut socket).await;
    assert_eq!(code, Some(4008), "{events:?}");
}

#[tokio::test]
async fn a_call_past_max_duration_is_warned_then_closed_with_4009() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |v| {
        v.max_duration = Duration::from_secs(1)
    }))
    .await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    assert_eq!(started["max_duration_s"], 1);
    let mut socket = connect(&server, started["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    let (events, code) = read_to_close(&mut socket).await;
    assert_eq!(code, Some(4009), "{events:?}");
    assert!(
        events.iter().any(|e| e["reason"] == "time_warning"),
        "{events:?}"
    );
    assert!(events.iter().any(|e| e["type"] == "saved"), "{events:?}");
}

/// Logging out ends a call started with that token (4001) within a second, and a ticket
/// minted before the logout no longer connects.
#[tokio::test]
async fn logout_ends_the_call_with_4001_and_refuses_earlier_tickets() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let unused = start(&server, &token, json!({})).await;
    let mut socket = connect(&server, started["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    let logout = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let reply = server
            .call(hyper::Method::POST, "/api/auth/logout", Some(&token), None)
            .await;
        assert_eq!(reply.status, 200);
        std::time::Instant::now()
    };
    let closing = async {
        let heard = tokio::time::timeout(Duration::from_secs(5), read_to_close(&mut socket)).await;
        (heard.expect("the call ended"), std::time::Instant::now())
    };
    let (logged_out, ((events, code), closed)) = tokio::join!(logout, closing);
    assert_eq!(code, Some(4001), "{events:?}");
    let after = closed.saturating_duration_since(logged_out);
    assert!(after < Duration::from_secs(1), "the call went on {after:?}");
    let url = unused["websocket_url"].as_str().unwrap();
    assert_eq!(connect(&server, url, None).await.err(), Some(401));
}

/// A new account of a removed one's name finds none of its calls.
#[tokio::test]
async fn a_recreated_account_sees_none_of_the_removed_ones_calls() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let admin = server.admin().await;
    let share = json!({"username": "dave"});
    let dave = server.user("dave").await;
    let shared = server
        .post("/api/agents/echo/shares", &admin, share.clone())
        .await;
    assert_eq!(shared.status, 201, "{:?}", shared.body);
    start(&server, &dave, json!({})).await;
    let removed = server
        .call(hyper::Method::DELETE, "/api/users/dave", Some(&admin), None)
        .await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    let dave = server.user("dave").await;
    server.post("/api/agents/echo/shares", &admin, share).await;
    let status = server.get("/api/agents/echo/voice/status", &dave).await;
    assert_eq!(status.json()["sessions"], json!([]), "{:?}", status.body);
}
