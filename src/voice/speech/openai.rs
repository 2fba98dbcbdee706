//! OpenAI-compatible speech endpoints (LocalAI, speaches, OpenAI itself):
//! `POST {base_url}/audio/transcriptions` (multipart WAV) and `POST {base_url}/audio/speech`
//! (JSON in, WAV out), over the voice service's outbound client (`http://` or `https://`,
//! see [`crate::outbound`]).

use super::Error;
use crate::outbound::{self, Client, Post};
use crate::voice::audio::{self, Pcm};
use bytes::Bytes;
use hyper::{StatusCode, Uri};
use serde_json::{json, Value};

/// The largest answer read (a few minutes of 24 kHz WAV).
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
const BOUNDARY: &str = "outpost-voice-boundary-7d1e";

/// Where and how to ask.
pub struct Endpoint<'a> {
    pub client: &'a Client,
    pub base_url: &'a str,
    pub model: &'a str,
    pub api_key: Option<&'a str>,
}

impl Endpoint<'_> {
    fn uri(&self, path: &str) -> Result<Uri, Error> {
        let url = format!("{}/{path}", self.base_url.trim_end_matches('/'));
        let uri: Uri = url
            .parse()
            .map_err(|err| Error::Protocol(format!("invalid base_url: {err}")))?;
        outbound::check_url(&uri).map_err(Error::Protocol)?;
        Ok(uri)
    }

    /// POSTs `body` to `{base_url}/{path}` and returns the answer of a 200.
    async fn post(&self, path: &str, content_type: &str, body: Vec<u8>) -> Result<Bytes, Error> {
        let post = Post::new(self.uri(path)?, content_type, body).bearer(self.api_key);
        let reply = self
            .client
            .post(post, MAX_RESPONSE_BYTES, None)
            .await
            .map_err(|err| match err {
                outbound::Error::Build(_) => Error::Protocol(err.to_string()),
                other => Error::Protocol(format!("{path}: {other}")),
            })?;
        if reply.status != StatusCode::OK {
            return Err(Error::Protocol(format!("{path} answered {}", reply.status)));
        }
        Ok(reply.body)
    }

    /// True when the server answers HTTP at all (`GET {base_url}/models`).
    pub async fn reachable(&self) -> bool {
        let Ok(uri) = self.uri("models") else {
            return false;
        };
        self.client.answers(uri).await
    }
}

/// The text of a WAV, as `multipart/form-data` with `file`, `model` and `language`.
pub async fn transcribe(
    endpoint: &Endpoint<'_>,
    language: Option<&str>,
    wav: Vec<u8>,
) -> Result<String, Error> {
    let mut body = Vec::with_capacity(wav.len() + 512);
    let mut field = |name: &str, value: &str| {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    };
    field("model", endpoint.model);
    field("response_format", "json");
    if let Some(language) = language {
        field("language", language);
    }
    body.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"speech.wav\"\r\nContent-Type: audio/wav\r\n\r\n")
            .as_bytes(),
    );
    body.extend_from_slice(&wav);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let answer = endpoint
        .post("audio/transcriptions", &content_type, body)
        .await?;
    let answer: Value = serde_json::from_slice(&answer)
        .map_err(|err| Error::Protocol(format!("transcription is not JSON: {err}")))?;
    Ok(answer["text"]
        .as_str()
        .unwrap_or_default()
        .trim()
        .to_string())
}

/// `text`, spoken as WAV by `voice`.
pub async fn synthesize(
    endpoint: &Endpoint<'_>,
    voice: Option<&str>,
    text: &str,
) -> Result<Pcm, Error> {
    let request = json!({
        "model": endpoint.model,
        "input": text,
        "voice": voice.unwrap_or("alloy"),
        "response_format": "wav",
    });
    let wav = endpoint
        .post(
            "audio/speech",
            "application/json",
            request.to_string().into_bytes(),
        )
        .await?;
    let pcm = tokio::task::spawn_blocking(move || audio::from_wav(&wav))
        .await
        .map_err(|_| audio::Error::Wav("reader panicked"))??;
    Ok(pcm)
}
