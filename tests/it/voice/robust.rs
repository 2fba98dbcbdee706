//! The socket under a misbehaving client or a noisy room: a client that stops reading is cut
//! off after `write_timeout_ms` with its transcript kept, and sounds over the agent's reply
//! shorter than `barge_in_ms` do not stop it.

use super::client::*;
use crate::support::*;
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use outpost::config::VoiceMode;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;

/// Long enough that the agent is still speaking when the test talks over it.
const REPLY: &str = "One fish. Two fish. Red fish. Blue fish. This reply goes on for a good \
    while yet, because it has to keep talking while somebody coughs, waits a moment, and \
    then finally decides to say something over it. And it still goes on after that.";

fn pipeline(
    adjust: impl FnOnce(&mut outpost::config::VoiceConfig),
) -> impl FnOnce(&mut outpost::config::Config) {
    let stt = command("sh", &["-c", &format!("cat > /dev/null; echo '{REPLY}'")]);
    voice_server(VoiceMode::Pipeline, move |v| {
        v.stt = Some(stt);
        v.tts = Some(command("espeak-ng", &["--stdout"]));
        adjust(v);
    })
}

/// Opens the socket over a TCP connection whose receive buffer is as small as the kernel
/// allows, so a client that stops reading soon leaves the server unable to write.
async fn connect_small(server: &TestServer, path: &str) -> Socket {
    let tcp = TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(2048).unwrap();
    let stream = tcp.connect(server.addr).await.unwrap();
    handshake(stream, path, None).await.unwrap()
}

/// The state of the caller's only call, as `voice/status` lists it.
async fn call_state(server: &TestServer, token: &str) -> String {
    let status = server
        .get("/api/agents/echo/voice/status", token)
        .await
        .json();
    status["sessions"][0]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_after_the_write_timeout_and_its_transcript_kept() {
    let server = TestServer::with(pipeline(|v| v.write_timeout = Duration::from_millis(500))).await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let url = started["websocket_url"].as_str().unwrap();
    // This client writes and never reads.
    let (_reader, mut writer) = connect_small(&server, url).await.split(tokio::io::split);
    let question = packets(&speech("Tell me about fish.").await, 1000);
    for packet in question {
        writer
            .write_frame(Frame::binary(Payload::Owned(packet)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(Duration::from_secs(15), || async {
        let state = call_state(&server, &token).await;
        (state == "speaking" || state == "ended").then_some(())
    })
    .await;
    // Pings must be answered: the server has plenty to write and nobody reads it.
    let since = Instant::now();
    let flood = async {
        for _ in 0..20_000 {
            let ping = Frame::new(true, OpCode::Ping, None, Payload::Owned(vec![b'p'; 125]));
            if writer.write_frame(ping).await.is_err() {
                break;
            }
        }
        std::future::pending::<()>().await
    };
    let ended = async {
        eventually(Duration::from_secs(15), || async {
            (call_state(&server, &token).await == "ended").then_some(())
        })
        .await
    };
    tokio::select! {
        () = ended => {}
        () = flood => unreachable!(),
    }
    let took = since.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "the call ended after {took:?}"
    );

    let id = started["voice_session_id"].as_str().unwrap();
    let stopped = server
        .post(
            "/api/agents/echo/voice/stop",
            &token,
            json!({"voice_session_id": id}),
        )
        .await;
    assert_eq!(stopped.status, 200);
    let summary = stopped.json();
    assert_eq!(
        summary["transcript"][0],
        json!({"role": "user", "text": REPLY}),
        "{summary}"
    );
    assert_eq!(summary["messages_saved"], 2, "{summary}");
    // The slot is free again: another call may start.
    start(&server, &token, json!({})).await;
}

/// What the reader saw: an audio packet (None) or an event, with when it came.
type Seen = (Instant, Option<Value>);
type Writer = fastwebsockets::WebSocketWrite<
    tokio::io::WriteHalf<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>,
>;

/// The caller's side of a call: what it says, in real time, and what it has heard so far.
struct Caller {
    writer: Writer,
    seen: mpsc::UnboundedReceiver<Seen>,
    log: Vec<Seen>,
}

impl Caller {
    /// Sends `packets` one every 20 ms.
    async fn say(&mut self, packets: Vec<Vec<u8>>) {
        for packet in packets {
            self.writer
                .write_frame(Frame::binary(Payload::Owned(packet)))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(item) = self.seen.try_recv() {
                self.log.push(item);
            }
        }
    }

    /// Sends silence until `done` holds for what was heard.
    async fn silence_until(&mut self, done: impl Fn(&[Seen]) -> bool) {
        let silence = packets(&[], 20).remove(0);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.log) {
            assert!(
                Instant::now() < deadline,
                "never heard it: {:?}",
                self.events()
            );
            self.say(vec![silence.clone()]).await;
        }
    }

    fn audio(&self) -> usize {
        self.log.iter().filter(|(_, item)| item.is_none()).count()
    }

    fn events(&self) -> Vec<&Value> {
        self.log
            .iter()
            .filter_map(|(_, item)| item.as_ref())
            .collect()
    }

    fn first(&self, kind: &str) -> Option<Instant> {
        let of_kind = |(_, item): &&Seen| item.as_ref().is_some_and(|e| e["type"] == kind);
        self.log.iter().find(of_kind).map(|(at, _)| *at)
    }
}

#[tokio::test]
async fn sounds_over_the_reply_shorter_than_barge_in_ms_do_not_stop_it() {
    let barge_in_ms = 700;
    let server = TestServer::with(pipeline(|v| v.barge_in_ms = barge_in_ms)).await;
    let token = server.admin().await;
    let started = start(&server, &token, json!({})).await;
    let socket = connect(&server, started["websocket_url"].as_str().unwrap(), None)
        .await
        .unwrap();
    let (mut reader, writer) = socket.split(tokio::io::split);
    let (seen_tx, seen) = mpsc::unbounded_channel::<Seen>();
    let read = async move {
        let mut ignore = |_: Frame<'_>| async { Ok::<_, WebSocketError>(()) };
        while let Ok(frame) = reader.read_frame(&mut ignore).await {
            let item = match frame.opcode {
                OpCode::Binary => None,
                OpCode::Text => Some(serde_json::from_slice(&frame.payload).unwrap()),
                OpCode::Close => Some(json!({"type": "close"})),
                _ => continue,
            };
            let _ = seen_tx.send((Instant::now(), item));
        }
        std::future::pending::<()>().await
    };
    let question = packets(&speech("Tell me about fish.").await, 1000);
    let stop = speech("Stop, stop, please stop talking now.").await;
    // About a third of a second of speech: enough for an utterance (min_speech_ms), not
    // enough to barge in; then the silence that ends it.
    let cough = packets(&stop[..16 * 350], 1200);
    let interruption = packets(&stop, 600);
    let mut caller = Caller {
        writer,
        seen,
        log: Vec::new(),
    };
    let script = async move {
        caller.say(question).await;
        caller
            .silence_until(|log| log.iter().filter(|(_, i)| i.is_none()).count() >= 25)
            .await;
        let before = caller.audio();
        caller.say(cough).await;
        caller.say(packets(&[], 500)).await;
        assert_eq!(caller.first("interrupted"), None, "{:?}", caller.events());
        let played = caller.audio() - before;
        // Two seconds went by: the reply played on through the sound.
        assert!(played >= 50, "{played} packets during the cough");
        let heard_user = caller
            .events()
            .iter()
            .filter(|e| e["type"] == "transcript" && e["role"] == "user")
            .count();
        assert_eq!(heard_user, 1, "{:?}", caller.events());

        let speaking_from = Instant::now();
        caller.say(interruption).await;
        caller
            .silence_until(|log| {
                log.iter()
                    .any(|(_, i)| i.as_ref().is_some_and(|e| e["type"] == "interrupted"))
            })
            .await;
        let interrupted = caller.first("interrupted").unwrap();
        let after = interrupted.duration_since(speaking_from);
        assert!(
            after >= Duration::from_millis(barge_in_ms),
            "stopped {after:?} into the speech"
        );
        let end = Payload::Owned(json!({"type": "end"}).to_string().into_bytes());
        caller.writer.write_frame(Frame::text(end)).await.unwrap();
        caller
            .silence_until(|log| {
                log.iter()
                    .any(|(_, i)| i.as_ref().is_some_and(|e| e["type"] == "close"))
            })
            .await;
        caller.log
    };
    let log = tokio::select! {
        log = tokio::time::timeout(Duration::from_secs(60), script) => log.unwrap(),
        () = read => unreachable!(),
    };
    let interruptions = log
        .iter()
        .filter(|(_, i)| i.as_ref().is_some_and(|e| e["type"] == "interrupted"))
        .count();
    assert_eq!(interruptions, 1);
}

/// A caller hangs up while its microphone is still sending, as a browser does: audio is in
/// flight after `end`. The server must not reset the connection over that unread audio (a
/// reset can throw away its close frame: a browser then reports 1006): it sends its close,
/// waits for the caller's, and only then ends the connection.
#[tokio::test]
async fn a_caller_hanging_up_mid_stream_still_receives_the_close_frame() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let token = server.admin().await;
    for _ in 0..5 {
        let started = start(&server, &token, json!({})).await;
        let url = started["websocket_url"].as_str().unwrap();
        let (mut reader, mut writer) = connect(&server, url, None)
            .await
            .unwrap()
            .split(tokio::io::split);
        let talk = packets(&speech("Still talking while I hang up.").await, 0);
        for packet in &talk[..10] {
            let frame = Frame::binary(Payload::Owned(packet.clone()));
            writer.write_frame(frame).await.unwrap();
        }
        let end = Payload::Owned(json!({"type": "end"}).to_string().into_bytes());
        writer.write_frame(Frame::text(end)).await.unwrap();
        // The microphone goes on a moment after the hang-up, and nobody reads yet.
        for packet in &talk[10..40] {
            let frame = Frame::binary(Payload::Owned(packet.clone()));
            if writer.write_frame(frame).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut ignore = |_: Frame<'_>| async { Ok::<_, WebSocketError>(()) };
        let mut events = Vec::new();
        let close = loop {
            let frame =
                tokio::time::timeout(Duration::from_secs(5), reader.read_frame(&mut ignore))
                    .await
                    .expect("the server answers in time");
            match frame {
                Ok(frame) if frame.opcode == OpCode::Text => {
                    events.push(serde_json::from_slice::<Value>(&frame.payload).unwrap());
                }
                Ok(frame) if frame.opcode == OpCode::Close => {
                    break Ok(u16::from_be_bytes([frame.payload[0], frame.payload[1]]));
                }
                Ok(_) => {}
                Err(err) => break Err(err.to_string()),
            }
        };
        assert_eq!(close, Ok(1000), "{events:?}");
        assert!(events.iter().any(|e| e["type"] == "saved"), "{events:?}");
        // Our close answers the server's (a reset connection refuses it); then the server
        // ends the connection.
        writer.write_frame(Frame::close(1000, b"")).await.unwrap();
        let after = tokio::time::timeout(Duration::from_secs(3), reader.read_frame(&mut ignore))
            .await
            .expect("the server ends the connection after the closing handshake");
        assert!(after.is_err(), "nothing follows the close frame");
    }
}
