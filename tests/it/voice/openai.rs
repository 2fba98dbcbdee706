//! A small OpenAI-compatible speech server for tests: `/v1/audio/transcriptions` always hears
//! the same words (and checks it got a WAV file), `/v1/audio/speech` answers espeak-ng's WAV.

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Serves until the test ends; returns its base URL (`http://127.0.0.1:port/v1`).
pub async fn serve(heard: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(answer(stream, heard));
        }
    });
    format!("http://{addr}/v1")
}

async fn answer(stream: TcpStream, heard: &'static str) {
    let mut stream = BufReader::new(stream);
    let mut head = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap();
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.unwrap();
    let (content_type, reply) = if head.starts_with("POST /v1/audio/transcriptions") {
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("name=\"file\"") && text.contains("RIFF"),
            "a WAV upload"
        );
        (
            "application/json",
            json!({"text": heard}).to_string().into_bytes(),
        )
    } else if head.starts_with("POST /v1/audio/speech") {
        let request: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(request["response_format"], "wav");
        let input = request["input"].as_str().unwrap().to_string();
        let output = tokio::process::Command::new("espeak-ng")
            .args(["--stdout", &input])
            .output()
            .await
            .unwrap();
        ("audio/wav", output.stdout)
    } else {
        (
            "application/json",
            json!({"data": []}).to_string().into_bytes(),
        )
    };
    let header = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        reply.len()
    );
    let stream = stream.get_mut();
    let _ = stream.write_all(header.as_bytes()).await;
    let _ = stream.write_all(&reply).await;
}
