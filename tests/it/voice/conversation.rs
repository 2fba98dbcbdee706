//! A spoken conversation over a voice call's socket, as a person has it: each utterance goes
//! out as 20 ms Opus packets in real time, then silence, until the reply has been heard in full
//! (the call says `listening` again after `thinking`). Shared by the integration tests and the
//! bench.

use fastwebsockets::{Frame, OpCode, Payload, WebSocket};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// 20 ms at 16 kHz.
const FRAME_SAMPLES: usize = 320;
const FRAME: Duration = Duration::from_millis(20);

pub type Socket = WebSocket<TokioIo<hyper::upgrade::Upgraded>>;

/// What came back during one turn: from its first packet of speech until `listening`.
#[derive(Default)]
pub struct Turn {
    pub events: Vec<Value>,
    /// The reply's Opus packets, as they came.
    pub packets: Vec<Vec<u8>>,
    /// From the utterance's last packet of speech to the reply's first packet, as the client
    /// saw it (it includes the silence the server waits for before it calls the utterance over).
    pub heard_after: Option<Duration>,
}

impl Turn {
    pub fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    /// The text of this turn's `transcript` event of `role`.
    pub fn transcript(&self, role: &str) -> Option<&str> {
        let events = self.events_of("transcript");
        let event = events.into_iter().find(|e| e["role"] == role)?;
        event["text"].as_str()
    }

    /// The server's `speech_end_to_first_audio_ms` of this turn.
    pub fn speech_end_to_first_audio(&self) -> Option<Duration> {
        let turn = self.events_of("turn").into_iter().next()?;
        let ms = turn["timings"]["speech_end_to_first_audio_ms"].as_u64()?;
        Some(Duration::from_millis(ms))
    }
}

/// 20 ms Opus packets (16 kHz mono) of `samples`, the last one padded with silence.
pub fn opus_packets(samples: &[i16]) -> Vec<Vec<u8>> {
    let mut encoder = opus::Encoder::new(16_000, opus::Channels::Mono, opus::Application::Voip)
        .expect("an Opus encoder");
    samples
        .chunks(FRAME_SAMPLES)
        .map(|chunk| {
            let mut frame = chunk.to_vec();
            frame.resize(FRAME_SAMPLES, 0);
            encoder.encode_vec(&frame, 1275).expect("encodes")
        })
        .collect()
}

/// Decodes a reply's packets at `rate`.
pub fn decode(packets: &[Vec<u8>], rate: u32) -> Vec<i16> {
    let mut decoder = opus::Decoder::new(rate, opus::Channels::Mono).expect("an Opus decoder");
    let mut frame = vec![0i16; 5760];
    let mut pcm = Vec::new();
    for packet in packets {
        let n = decoder.decode(packet, &mut frame, false).expect("decodes");
        pcm.extend_from_slice(&frame[..n]);
    }
    pcm
}

enum Heard {
    Audio(Vec<u8>, Instant),
    Event(Value),
    Closed,
}

/// Speaks each of `utterances` (Opus packets) in turn and waits up to `turn_limit` for each
/// reply; then ends the call. Returns each turn and the events after the last one (`saved`).
pub async fn converse(
    socket: Socket,
    utterances: Vec<Vec<Vec<u8>>>,
    turn_limit: Duration,
) -> Result<(Vec<Turn>, Vec<Value>), String> {
    let (mut reader, mut writer) = socket.split(tokio::io::split);
    let (heard_tx, mut heard) = mpsc::unbounded_channel();
    let reading = tokio::spawn(async move {
        let mut ignore = |_: Frame<'_>| async { Ok::<_, fastwebsockets::WebSocketError>(()) };
        while let Ok(frame) = reader.read_frame(&mut ignore).await {
            let item = match frame.opcode {
                OpCode::Binary => Heard::Audio(frame.payload.to_vec(), Instant::now()),
                OpCode::Text => match serde_json::from_slice(&frame.payload) {
                    Ok(event) => Heard::Event(event),
                    Err(_) => continue,
                },
                OpCode::Close => break,
                _ => continue,
            };
            if heard_tx.send(item).is_err() {
                return;
            }
        }
        let _ = heard_tx.send(Heard::Closed);
    });
    let silence = opus_packets(&[0; FRAME_SAMPLES]).remove(0);
    let mut turns = Vec::new();
    for (number, utterance) in utterances.into_iter().enumerate() {
        let mut turn = Turn::default();
        let mut thinking = false;
        let mut spoken_at = None;
        let started = Instant::now();
        let mut i = 0u32;
        let mut speech = utterance.into_iter();
        loop {
            tokio::time::sleep_until((started + FRAME * i).into()).await;
            i += 1;
            let packet = match speech.next() {
                Some(packet) => packet,
                None => {
                    spoken_at.get_or_insert_with(Instant::now);
                    silence.clone()
                }
            };
            let frame = Frame::binary(Payload::Owned(packet));
            writer
                .write_frame(frame)
                .await
                .map_err(|err| format!("turn {number}: sending audio: {err}"))?;
            let mut over = false;
            while let Ok(item) = heard.try_recv() {
                match item {
                    Heard::Audio(packet, at) => {
                        if turn.heard_after.is_none() {
                            turn.heard_after = spoken_at.map(|spoken| at.duration_since(spoken));
                        }
                        turn.packets.push(packet);
                    }
                    Heard::Event(event) => {
                        match event["state"].as_str() {
                            Some("thinking") => thinking = true,
                            Some("listening") if thinking => over = true,
                            _ => {}
                        }
                        turn.events.push(event);
                    }
                    Heard::Closed => {
                        return Err(format!(
                            "turn {number}: the call closed; events {:?}",
                            turn.events
                        ))
                    }
                }
            }
            if over {
                break;
            }
            if started.elapsed() > turn_limit {
                return Err(format!(
                    "turn {number}: no reply within {turn_limit:?}; events {:?}",
                    turn.events
                ));
            }
        }
        turns.push(turn);
    }
    let end = Payload::Owned(json!({"type": "end"}).to_string().into_bytes());
    writer
        .write_frame(Frame::text(end))
        .await
        .map_err(|err| format!("ending the call: {err}"))?;
    let mut after = Vec::new();
    let closing = async {
        while let Some(item) = heard.recv().await {
            match item {
                Heard::Event(event) => after.push(event),
                Heard::Closed => return,
                Heard::Audio(..) => {}
            }
        }
    };
    let closed = tokio::time::timeout(Duration::from_secs(10), closing).await;
    reading.abort();
    closed.map_err(|_| format!("the call did not close after end; events {after:?}"))?;
    Ok((turns, after))
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

/// The WebSocket handshake for `path` over `stream`, with a bearer `token` when given.
pub async fn handshake(
    stream: TcpStream,
    path: &str,
    token: Option<&str>,
) -> Result<Socket, fastwebsockets::WebSocketError> {
    let host = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let mut request = hyper::Request::get(path)
        .header("host", host)
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
    let request = request
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("a socket path the server gave is a valid URI");
    let (socket, _) = fastwebsockets::handshake::client(&Spawner, request, stream).await?;
    Ok(socket)
}

/// Opens a call's socket at `path` (a `websocket_url` with its ticket).
pub async fn open(addr: SocketAddr, path: &str) -> Result<Socket, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|err| format!("connecting to {addr}: {err}"))?;
    handshake(stream, path, None)
        .await
        .map_err(|err| format!("the voice socket handshake: {err}"))
}
