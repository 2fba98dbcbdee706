//! Voice calls end to end: real speech (espeak-ng) encoded with libopus, sent over a real
//! WebSocket to a daemon on 127.0.0.1, and the Opus packets and events that come back.

use crate::support::*;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use hyper::body::Bytes;
use outpost::config::{Config, SpeechEngine, VoiceConfig, VoiceMode};
use outpost::voice::audio;
use serde_json::{json, Value};
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Says `text` with espeak-ng, at 16 kHz.
async fn speech(text: &str) -> Vec<i16> {
    let output = tokio::process::Command::new("espeak-ng")
        .args(["--stdout", text])
        .output()
        .await
        .expect("espeak-ng runs (tests/run.sh installs it)");
    let pcm = audio::from_wav(&output.stdout).unwrap();
    audio::resample(&pcm, 16_000).unwrap()
}

/// 20 ms Opus packets of `samples` (16 kHz), then `silence_ms` of silence.
fn packets(samples: &[i16], silence_ms: usize) -> Vec<Vec<u8>> {
    let mut encoder =
        opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let mut all = samples.to_vec();
    all.resize(samples.len() + silence_ms * 16, 0);
    all.chunks(320)
        .map(|chunk| {
            let mut frame = chunk.to_vec();
            frame.resize(320, 0);
            encoder.encode_vec(&frame, 1275).unwrap()
        })
        .collect()
}

fn energy(packets: &[Vec<u8>], rate: u32) -> f64 {
    let mut decoder = opus::Decoder::new(rate, opus::Channels::Mono).unwrap();
    let mut pcm = vec![0i16; 5760];
    let mut sum = 0f64;
    let mut samples = 0usize;
    for packet in packets {
        let n = decoder.decode(packet, &mut pcm, false).unwrap();
        sum += pcm[..n].iter().map(|s| (*s as f64).powi(2)).sum::<f64>();
        samples += n;
    }
    (sum / samples.max(1) as f64).sqrt()
}

fn voice_server(
    mode: VoiceMode,
    adjust: impl FnOnce(&mut VoiceConfig),
) -> impl FnOnce(&mut Config) {
    move |config: &mut Config| {
        let mut voice = VoiceConfig {
            mode,
            ..VoiceConfig::default()
        };
        adjust(&mut voice);
        config.voice = Some(voice);
        for agent in &mut config.agents {
            agent.voice = true;
        }
    }
}

struct Spawner;

impl<Fut> hyper::rt::Executor<Fut> for Spawner
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, fut: Fut) {
        tokio::spawn(fut);
    }
}

type Socket = WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Opens the socket at `path_and_query`; the status of a refusal otherwise.
async fn connect(server: &TestServer, path: &str, token: Option<&str>) -> Result<Socket, u16> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let mut request = hyper::Request::get(path)
        .header("host", server.addr.to_string())
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header(
            "sec-websocket-key",
            fastwebsockets::handshake::generate_key(),
        )
        .header("sec-websocket-version", "13");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(http_body_util::Empty::<Bytes>::new()).unwrap();
    match fastwebsockets::handshake::client(&Spawner, request, stream).await {
        Ok((socket, _)) => Ok(socket),
        Err(fastwebsockets::WebSocketError::InvalidStatusCode(status)) => Err(status),
        Err(err) => panic!("handshake: {err}"),
    }
}

/// What came back on a call.
#[derive(Default)]
struct Heard {
    packets: Vec<(Instant, Vec<u8>)>,
    events: Vec<Value>,
    close: Option<u16>,
}

impl Heard {
    fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }
}

/// Sends `packets` in real time, then `after` as text frames, and reads until the server
/// closes or `limit` passes.
async fn call(socket: Socket, packets: Vec<Vec<u8>>, after: Vec<Value>, limit: Duration) -> Heard {
    let (mut reader, mut writer) = socket.split(tokio::io::split);
    let send = async move {
        let start = Instant::now();
        for (i, packet) in packets.into_iter().enumerate() {
            tokio::time::sleep_until((start + Duration::from_millis(20 * i as u64)).into()).await;
            if writer
                .write_frame(Frame::binary(Payload::Owned(packet)))
                .await
                .is_err()
            {
                return;
            }
        }
        for message in after {
            let text = Payload::Owned(message.to_string().into_bytes());
            let _ = writer.write_frame(Frame::text(text)).await;
        }
        std::future::pending::<()>().await;
    };
    let read = async move {
        let mut heard = Heard::default();
        let mut ignore = |_: Frame<'_>| async { Ok::<_, fastwebsockets::WebSocketError>(()) };
        while let Ok(frame) = reader.read_frame(&mut ignore).await {
            match frame.opcode {
                OpCode::Binary => heard.packets.push((Instant::now(), frame.payload.to_vec())),
                OpCode::Text => heard
                    .events
                    .push(serde_json::from_slice(&frame.payload).unwrap()),
                OpCode::Close => {
                    heard.close = Some(u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                    break;
                }
                _ => {}
            }
        }
        heard
    };
    tokio::select! {
        heard = tokio::time::timeout(limit, read) => heard.expect("the call ended in time"),
        () = send => unreachable!(),
    }
}

async fn start(server: &TestServer, token: &str, body: Value) -> Value {
    let reply = server
        .post("/api/agents/echo/voice/start", token, body)
        .await;
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

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

fn command(program: &str, args: &[&str]) -> SpeechEngine {
    SpeechEngine::Command {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
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
