//! A small Wyoming server for tests: `describe` ⇒ `info`, a transcription that always hears
//! the same words, and speech made by espeak-ng at its own rate (22 050 Hz).

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// What the server was asked for: `language=…` and `voice=…` lines.
pub type Seen = Arc<Mutex<Vec<String>>>;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Serves until the test ends; returns its `tcp://` URI and what it was asked for.
pub async fn serve(heard: &'static str) -> (String, Seen) {
    serve_slowly(heard, std::time::Duration::ZERO).await
}

/// The same, taking `thinking` after the end of the audio to answer with the transcript.
pub async fn serve_slowly(heard: &'static str, thinking: std::time::Duration) -> (String, Seen) {
    let seen = Seen::default();
    let seen_by_server = seen.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(connection(stream, heard, thinking, seen_by_server.clone()));
        }
    });
    (format!("tcp://{addr}"), seen)
}

async fn send(stream: &mut BufReader<TcpStream>, kind: &str, data: Value, payload: &[u8]) {
    // The data goes after the header line, as real servers send it.
    let data = data.to_string();
    let header = json!({"type": kind, "data_length": data.len(), "payload_length": payload.len()});
    let mut bytes = format!("{header}\n{data}").into_bytes();
    bytes.extend_from_slice(payload);
    stream.get_mut().write_all(&bytes).await.unwrap();
}

async fn connection(
    stream: TcpStream,
    heard: &'static str,
    thinking: std::time::Duration,
    seen: Seen,
) {
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let mut first_chunk = None;
    while stream.read_line(&mut line).await.unwrap_or(0) > 0 {
        let header: Value = serde_json::from_str(&line).unwrap();
        line.clear();
        let mut payload = vec![0; header["payload_length"].as_u64().unwrap_or(0) as usize];
        stream.read_exact(&mut payload).await.unwrap();
        match header["type"].as_str().unwrap() {
            "transcribe" => {
                let language = header["data"]["language"].as_str().unwrap_or("");
                seen.lock().unwrap().push(format!("language={language}"));
            }
            "describe" => {
                let voices = json!([{"name": "en_US-joe-medium"}]);
                // As long as wyoming-piper's (86 KB: every voice it can fetch).
                let description = "a voice ".repeat(11_000);
                let piper = json!({"name": "piper", "description": description, "voices": voices});
                let info = json!({"asr": [], "tts": [piper]});
                send(&mut stream, "info", info, &[]).await
            }
            "audio-chunk" => {
                first_chunk.get_or_insert_with(std::time::Instant::now);
            }
            "audio-stop" => {
                // Audio that came while it was spoken arrives well before the end.
                let first: Option<std::time::Instant> = first_chunk;
                if first.is_some_and(|at| at.elapsed() > std::time::Duration::from_millis(400)) {
                    seen.lock().unwrap().push("streamed".into());
                }
                tokio::time::sleep(thinking).await;
                send(&mut stream, "transcript", json!({"text": heard}), &[]).await
            }
            "synthesize" => {
                let text = header["data"]["text"].as_str().unwrap().to_string();
                let voice = header["data"]["voice"]["name"].as_str().unwrap_or("");
                seen.lock().unwrap().push(format!("voice={voice}"));
                let wav = tokio::process::Command::new("espeak-ng")
                    .args(["--stdout", &text])
                    .output()
                    .await
                    .unwrap()
                    .stdout;
                let pcm = &wav[44..];
                let format = json!({"rate": 22050, "width": 2, "channels": 1});
                send(&mut stream, "audio-start", format.clone(), &[]).await;
                for chunk in pcm.chunks(4096) {
                    send(&mut stream, "audio-chunk", format.clone(), chunk).await;
                }
                send(&mut stream, "audio-stop", json!({}), &[]).await;
            }
            _ => {}
        }
    }
}
