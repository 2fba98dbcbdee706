//! A client of the Wyoming protocol (Home Assistant's local speech protocol), one TCP
//! connection per request. An event is a JSON header line `{"type", "data"?, "data_length"?,
//! "payload_length"?}`, then `data_length` bytes of JSON merged into `data`, then the payload.

use super::Error;
use crate::voice::audio::Pcm;
use serde_json::{json, Map, Value};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The longest header line read from a server.
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// The largest data block after a header: wyoming-piper's `info` lists every voice it can
/// fetch (86 KB for 2.5).
const MAX_DATA_BYTES: usize = 1024 * 1024;
/// The largest audio payload of one event.
const MAX_PAYLOAD_BYTES: usize = 4 * 1024 * 1024;
/// PCM sent per `audio-chunk` (100 ms at 16 kHz, 16-bit).
const CHUNK_BYTES: usize = 3200;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One event.
#[derive(Debug, PartialEq)]
pub struct Event {
    pub kind: String,
    pub data: Map<String, Value>,
    pub payload: Vec<u8>,
}

/// A connection to a Wyoming server.
pub struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    /// Connects to `tcp://host:port`.
    pub async fn open(uri: &str) -> Result<Connection, Error> {
        let addr = uri.strip_prefix("tcp://").unwrap_or(uri);
        let connect = TcpStream::connect(addr);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| Error::Protocol(format!("connecting to {uri} timed out")))?
            .map_err(|err| Error::Protocol(format!("connecting to {uri}: {err}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    /// Sends an event.
    pub async fn send(&mut self, kind: &str, data: Value, payload: &[u8]) -> Result<(), Error> {
        let mut header = json!({"type": kind, "data": data});
        if !payload.is_empty() {
            header["payload_length"] = payload.len().into();
        }
        let mut line = serde_json::to_vec(&header).expect("events serialize");
        line.push(b'\n');
        line.extend_from_slice(payload);
        let stream = self.stream.get_mut();
        stream.write_all(&line).await.map_err(io)?;
        Ok(())
    }

    /// Reads the next event.
    pub async fn next(&mut self) -> Result<Event, Error> {
        let mut line = Vec::new();
        let mut limited = (&mut self.stream).take(MAX_HEADER_BYTES as u64);
        if limited.read_until(b'\n', &mut line).await.map_err(io)? == 0 {
            return Err(Error::Protocol("the server closed the connection".into()));
        }
        let header: Value = serde_json::from_slice(&line)
            .map_err(|err| Error::Protocol(format!("bad event header: {err}")))?;
        let kind = header["type"].as_str().unwrap_or_default().to_string();
        let mut data = header["data"].as_object().cloned().unwrap_or_default();
        let length = |key: &str| header[key].as_u64().unwrap_or(0) as usize;
        let (data_length, payload_length) = (length("data_length"), length("payload_length"));
        if data_length > MAX_DATA_BYTES || payload_length > MAX_PAYLOAD_BYTES {
            return Err(Error::Protocol("event too large".into()));
        }
        if data_length > 0 {
            let mut extra = vec![0; data_length];
            self.stream.read_exact(&mut extra).await.map_err(io)?;
            if let Ok(Value::Object(extra)) = serde_json::from_slice(&extra) {
                data.extend(extra);
            }
        }
        let mut payload = vec![0; payload_length];
        self.stream.read_exact(&mut payload).await.map_err(io)?;
        Ok(Event {
            kind,
            data,
            payload,
        })
    }

    /// Reads events until one of `kind`.
    async fn until(&mut self, kind: &str) -> Result<Event, Error> {
        loop {
            let event = self.next().await?;
            if event.kind == kind {
                return Ok(event);
            }
            if event.kind == "error" {
                let text = event.data.get("text").and_then(Value::as_str).unwrap_or("");
                return Err(Error::Protocol(format!("the server said: {text}")));
            }
        }
    }
}

fn io(err: std::io::Error) -> Error {
    Error::Protocol(err.to_string())
}

/// `describe` ⇒ `info`: the server is up and speaks Wyoming.
pub async fn describe(uri: &str) -> Result<Map<String, Value>, Error> {
    let mut connection = Connection::open(uri).await?;
    connection.send("describe", json!({}), &[]).await?;
    Ok(connection.until("info").await?.data)
}

/// The voice names an `info` event lists under its text-to-speech programs.
pub fn voices(info: &Map<String, Value>) -> Vec<String> {
    let programs = info.get("tts").and_then(Value::as_array);
    programs
        .into_iter()
        .flatten()
        .filter_map(|program| program.get("voices")?.as_array())
        .flatten()
        .filter_map(|voice| voice.get("name")?.as_str().map(str::to_string))
        .collect()
}

/// Speech-to-text of 16-bit mono PCM.
pub async fn transcribe(uri: &str, language: Option<&str>, pcm: &Pcm) -> Result<String, Error> {
    let mut connection = Connection::open(uri).await?;
    let format = json!({"rate": pcm.sample_rate, "width": 2, "channels": 1});
    let mut transcribe = json!({});
    if let Some(language) = language {
        transcribe["language"] = language.into();
    }
    connection.send("transcribe", transcribe, &[]).await?;
    connection.send("audio-start", format.clone(), &[]).await?;
    let bytes: Vec<u8> = pcm.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    for chunk in bytes.chunks(CHUNK_BYTES) {
        connection
            .send("audio-chunk", format.clone(), chunk)
            .await?;
    }
    connection.send("audio-stop", json!({}), &[]).await?;
    let transcript = connection.until("transcript").await?;
    let text = transcript.data.get("text").and_then(Value::as_str);
    Ok(text.unwrap_or_default().trim().to_string())
}

/// Speech-to-text of 16 kHz audio sent while it is spoken: each chunk from `audio` goes out
/// as it comes, and the transcript is asked for when the channel closes.
pub async fn transcribe_stream(
    uri: &str,
    language: Option<&str>,
    mut audio: tokio::sync::mpsc::Receiver<Vec<i16>>,
) -> Result<String, Error> {
    let mut connection = Connection::open(uri).await?;
    let format = json!({"rate": 16_000, "width": 2, "channels": 1});
    let mut transcribe = json!({});
    if let Some(language) = language {
        transcribe["language"] = language.into();
    }
    connection.send("transcribe", transcribe, &[]).await?;
    connection.send("audio-start", format.clone(), &[]).await?;
    while let Some(samples) = audio.recv().await {
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        connection
            .send("audio-chunk", format.clone(), &bytes)
            .await?;
    }
    connection.send("audio-stop", json!({}), &[]).await?;
    let transcript = connection.until("transcript").await?;
    let text = transcript.data.get("text").and_then(Value::as_str);
    Ok(text.unwrap_or_default().trim().to_string())
}

/// Text-to-speech: the audio of `text` (its rate is the server's).
pub async fn synthesize(uri: &str, voice: Option<&str>, text: &str) -> Result<Pcm, Error> {
    let mut connection = Connection::open(uri).await?;
    let mut request = json!({"text": text});
    if let Some(voice) = voice {
        request["voice"] = json!({"name": voice});
    }
    connection.send("synthesize", request, &[]).await?;
    let start = connection.until("audio-start").await?;
    let rate = start
        .data
        .get("rate")
        .and_then(Value::as_u64)
        .unwrap_or(22_050) as u32;
    let width = start.data.get("width").and_then(Value::as_u64).unwrap_or(2);
    let channels = start
        .data
        .get("channels")
        .and_then(Value::as_u64)
        .unwrap_or(1) as usize;
    if width != 2 || channels == 0 {
        return Err(Error::Protocol("only 16-bit audio is read".into()));
    }
    let mut samples = Vec::new();
    loop {
        let event = connection.next().await?;
        match event.kind.as_str() {
            "audio-chunk" => samples.extend(
                event
                    .payload
                    .chunks_exact(2 * channels)
                    .map(|frame| i16::from_le_bytes([frame[0], frame[1]])),
            ),
            "audio-stop" => break,
            "error" => return Err(Error::Protocol("the server failed to synthesize".into())),
            _ => {}
        }
    }
    Ok(Pcm {
        sample_rate: rate,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server's side of a synthesis, as wyoming-piper writes it: data after the header line
    /// (`data_length`), 16-bit PCM as the payload; then an event with its data inline.
    const FROM_SERVER: &[u8] =
        b"{\"type\":\"audio-start\",\"version\":\"1.5.4\",\"data_length\":37}\n\
{\"rate\":22050,\"width\":2,\"channels\":1}\
{\"type\":\"audio-chunk\",\"data_length\":37,\"payload_length\":4}\n\
{\"rate\":22050,\"width\":2,\"channels\":1}\x01\x00\xff\xff\
{\"type\":\"audio-stop\",\"data\":{\"timestamp\":0}}\n";

    /// Serves `bytes` to the first client and hands back what that client wrote.
    async fn server(bytes: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri = format!("tcp://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let n = stream.read(&mut request).await.unwrap();
            request.truncate(n);
            stream.write_all(bytes).await.unwrap();
            stream.shutdown().await.unwrap();
            request
        });
        (uri, task)
    }

    #[tokio::test]
    async fn events_are_read_from_the_bytes_servers_write() {
        let (uri, served) = server(FROM_SERVER).await;
        let pcm = synthesize(&uri, Some("en_US-joe-medium"), "Hi.")
            .await
            .unwrap();
        assert_eq!(pcm.sample_rate, 22_050);
        assert_eq!(pcm.samples, vec![1, -1]);
        // What the client wrote: one header line with its data inline, no payload.
        let request = served.await.unwrap();
        assert_eq!(request.last(), Some(&b'\n'));
        let header: Value = serde_json::from_slice(&request).unwrap();
        let expected = json!({"type": "synthesize", "data": {"text": "Hi.", "voice": {"name": "en_US-joe-medium"}}});
        assert_eq!(header, expected);
    }

    #[tokio::test]
    async fn a_payload_follows_its_header_line() {
        let (uri, served) =
            server(b"{\"type\":\"transcript\",\"data\":{\"text\":\" on \"}}\n").await;
        let mut connection = Connection::open(&uri).await.unwrap();
        connection
            .send("audio-chunk", json!({"rate": 16000}), &[1, 0, 255, 255])
            .await
            .unwrap();
        let event = connection.until("transcript").await.unwrap();
        assert_eq!(event.data["text"], " on ");
        let request = served.await.unwrap();
        let (line, payload) =
            request.split_at(request.iter().position(|&b| b == b'\n').unwrap() + 1);
        assert_eq!(payload, [1, 0, 255, 255]);
        let header: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(
            header,
            json!({"type": "audio-chunk", "data": {"rate": 16000}, "payload_length": 4})
        );
    }

    #[tokio::test]
    async fn oversized_and_broken_events_are_errors() {
        let (uri, _) = server(b"{\"type\":\"info\",\"data_length\":99999999}\n").await;
        let mut connection = Connection::open(&uri).await.unwrap();
        connection.send("describe", json!({}), &[]).await.unwrap();
        assert!(connection
            .next()
            .await
            .unwrap_err()
            .to_string()
            .contains("too large"));
        let (uri, _) = server(b"not json\n").await;
        let mut connection = Connection::open(&uri).await.unwrap();
        connection.send("describe", json!({}), &[]).await.unwrap();
        assert!(connection
            .next()
            .await
            .unwrap_err()
            .to_string()
            .contains("bad event header"));
    }
}
