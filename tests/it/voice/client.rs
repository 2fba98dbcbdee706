//! The client side of a voice call in tests: speech from espeak-ng, Opus packets, a
//! WebSocket client, and readers that collect what the server sends.

use crate::support::*;
use fastwebsockets::{Frame, OpCode, Payload};
use outpost::config::{Config, SpeechEngine, VoiceConfig, VoiceMode};
use outpost::voice::audio;
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Says `text` with espeak-ng, at 16 kHz.
pub async fn speech(text: &str) -> Vec<i16> {
    let output = tokio::process::Command::new("espeak-ng")
        .args(["--stdout", text])
        .output()
        .await
        .expect("espeak-ng runs (tests/run.sh installs it)");
    let pcm = audio::from_wav(&output.stdout).unwrap();
    audio::resample(&pcm, 16_000).unwrap()
}

/// 20 ms Opus packets of `samples` (16 kHz), then `silence_ms` of silence.
pub fn packets(samples: &[i16], silence_ms: usize) -> Vec<Vec<u8>> {
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

pub fn energy(packets: &[Vec<u8>], rate: u32) -> f64 {
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

pub fn voice_server(
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

pub use super::conversation::{handshake, Socket};

/// Opens the socket at `path_and_query`; the status of a refusal otherwise.
pub async fn connect(server: &TestServer, path: &str, token: Option<&str>) -> Result<Socket, u16> {
    let stream = TcpStream::connect(server.addr).await.unwrap();
    match handshake(stream, path, token).await {
        Ok(socket) => Ok(socket),
        Err(fastwebsockets::WebSocketError::InvalidStatusCode(status)) => Err(status),
        Err(err) => panic!("handshake: {err}"),
    }
}

/// What came back on a call.
#[derive(Default)]
pub struct Heard {
    pub packets: Vec<(Instant, Vec<u8>)>,
    pub events: Vec<Value>,
    pub close: Option<u16>,
}

impl Heard {
    pub fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    /// The texts of the `transcript` events, in order.
    pub fn transcripts(&self) -> Vec<&str> {
        let events = self.events_of("transcript");
        events.iter().map(|e| e["text"].as_str().unwrap()).collect()
    }

    /// The Opus packets, without their arrival times.
    pub fn audio(&self) -> Vec<Vec<u8>> {
        self.packets.iter().map(|(_, p)| p.clone()).collect()
    }
}

/// One spoken turn on the call `started` (a `voice/start` answer): `text` in espeak-ng's
/// voice, `silence_ms` of silence, then the caller hangs up; what came back within 20 s.
pub async fn say_and_hang_up(
    server: &TestServer,
    started: &Value,
    text: &str,
    silence_ms: usize,
) -> Heard {
    let url = started["websocket_url"].as_str().unwrap();
    let socket = connect(server, url, None).await.unwrap();
    let packets = packets(&speech(text).await, silence_ms);
    let end = vec![serde_json::json!({"type": "end"})];
    call(socket, packets, end, Duration::from_secs(20)).await
}

/// Sends `packets` in real time, then `after` as text frames, and reads until the server
/// closes or `limit` passes.
pub async fn call(
    socket: Socket,
    packets: Vec<Vec<u8>>,
    after: Vec<Value>,
    limit: Duration,
) -> Heard {
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

pub async fn start(server: &TestServer, token: &str, body: Value) -> Value {
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

pub fn command(program: &str, args: &[&str]) -> SpeechEngine {
    SpeechEngine::Command {
        program: program.into(),
        args: args.iter().map(|a| a.to_string()).collect(),
    }
}

/// Reads text frames until the close frame; returns them and the close code.
pub async fn read_to_close(socket: &mut Socket) -> (Vec<Value>, Option<u16>) {
    let mut events = Vec::new();
    let read = async {
        while let Ok(frame) = socket.read_frame().await {
            match frame.opcode {
                OpCode::Text => events.push(serde_json::from_slice(&frame.payload).unwrap()),
                OpCode::Close => {
                    return Some(u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                }
                _ => {}
            }
        }
        None
    };
    let code = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server closed in time");
    (events, code)
}
