//! Speech engines: speech-to-text and text-to-speech requests, one at a time. Engines know
//! nothing of calls, sessions or HTTP: audio and text in, text and audio out.

mod openai;
mod wyoming;

use super::audio::{self, Pcm};
use crate::config::SpeechEngine;
use crate::outbound::Client;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The longest a speech request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What can go wrong asking a speech engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running {program}: {cause}")]
    Spawn {
        program: String,
        cause: std::io::Error,
    },
    #[error("{program} exited with {status}")]
    Failed { program: String, status: String },
    #[error("the speech engine took longer than {0:?}")]
    Timeout(Duration),
    #[error("wyoming: {0}")]
    Protocol(String),
    #[error(transparent)]
    Audio(#[from] audio::Error),
}

/// A call's own choice of voice and language, over the engine's configured ones.
#[derive(Clone, Debug, Default)]
pub struct Preferences {
    pub voice: Option<String>,
    pub language: Option<String>,
}

/// True for a voice or language name a client may pass on (`en`, `en_US-joe-medium`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// True when the engine can be asked (its program exists, its server answers `describe`).
pub async fn ready(client: &Client, engine: &SpeechEngine) -> bool {
    describe(client, engine).await.is_some()
}

/// The voices the engine offers (empty when it does not say), or None when it is not ready.
pub async fn describe(client: &Client, engine: &SpeechEngine) -> Option<Vec<String>> {
    match engine {
        SpeechEngine::Command { program, .. } => program_exists(program).then(Vec::new),
        SpeechEngine::OpenAi { .. } => reachable(client, engine).await.then(Vec::new),
        SpeechEngine::Wyoming { uri, .. } => {
            let described = tokio::time::timeout(Duration::from_secs(3), wyoming::describe(uri));
            let info = described.await.ok()?.ok()?;
            Some(wyoming::voices(&info))
        }
    }
}

fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

/// True when the engine takes audio while it is spoken (so only the end is left to wait for).
pub fn streams(engine: &SpeechEngine) -> bool {
    matches!(engine, SpeechEngine::Wyoming { .. })
}

/// The text of 16 kHz audio sent through `audio` while it is spoken; for engines that
/// [`streams`] says yes to.
pub async fn transcribe_stream(
    engine: &SpeechEngine,
    preferences: &Preferences,
    audio: tokio::sync::mpsc::Receiver<Vec<i16>>,
) -> Result<String, Error> {
    match engine {
        SpeechEngine::Wyoming { uri, language, .. } => {
            let language = preferences.language.as_deref().or(language.as_deref());
            timed(wyoming::transcribe_stream(uri, language, audio)).await
        }
        _ => Err(Error::Protocol("this engine takes whole utterances".into())),
    }
}

/// The text spoken in `pcm`.
pub async fn transcribe(
    client: &Client,
    engine: &SpeechEngine,
    preferences: &Preferences,
    pcm: Pcm,
) -> Result<String, Error> {
    let chosen = preferences.language.as_deref();
    let (program, args) = match engine {
        SpeechEngine::Command { program, args } => (program, args),
        SpeechEngine::Wyoming { uri, language, .. } => {
            let request = wyoming::transcribe(uri, chosen.or(language.as_deref()), &pcm);
            return timed(request).await;
        }
        SpeechEngine::OpenAi { language, .. } => {
            let endpoint = endpoint(client, engine).expect("an openai engine");
            let wav = tokio::task::spawn_blocking(move || audio::to_wav(&pcm))
                .await
                .unwrap_or_default();
            let language = chosen.or(language.as_deref());
            return timed(openai::transcribe(&endpoint, language, wav)).await;
        }
    };
    let wav = tokio::task::spawn_blocking(move || audio::to_wav(&pcm))
        .await
        .unwrap_or_default();
    let stdout = run(program, args, wav).await?;
    Ok(String::from_utf8_lossy(&stdout).trim().to_string())
}

/// `text`, spoken.
pub async fn synthesize(
    client: &Client,
    engine: &SpeechEngine,
    preferences: &Preferences,
    text: &str,
) -> Result<Pcm, Error> {
    let chosen = preferences.voice.as_deref();
    let (program, args) = match engine {
        SpeechEngine::Command { program, args } => (program, args),
        SpeechEngine::Wyoming { uri, voice, .. } => {
            let voice = chosen.or(voice.as_deref());
            return timed(wyoming::synthesize(uri, voice, text)).await;
        }
        SpeechEngine::OpenAi { voice, .. } => {
            let endpoint = endpoint(client, engine).expect("an openai engine");
            let voice = chosen.or(voice.as_deref());
            return timed(openai::synthesize(&endpoint, voice, text)).await;
        }
    };
    let stdout = run(program, args, text.as_bytes().to_vec()).await?;
    let pcm = tokio::task::spawn_blocking(move || audio::from_wav(&stdout))
        .await
        .map_err(|_| audio::Error::Wav("reader panicked"))??;
    Ok(pcm)
}

fn endpoint<'a>(client: &'a Client, engine: &'a SpeechEngine) -> Option<openai::Endpoint<'a>> {
    match engine {
        SpeechEngine::OpenAi {
            base_url,
            model,
            api_key,
            ..
        } => Some(openai::Endpoint {
            client,
            base_url,
            model,
            api_key: api_key.as_deref(),
        }),
        _ => None,
    }
}

async fn reachable(client: &Client, engine: &SpeechEngine) -> bool {
    let Some(endpoint) = endpoint(client, engine) else {
        return false;
    };
    let probe = tokio::time::timeout(Duration::from_secs(3), endpoint.reachable());
    probe.await.unwrap_or(false)
}

async fn timed<T>(
    request: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(REQUEST_TIMEOUT, request)
        .await
        .map_err(|_| Error::Timeout(REQUEST_TIMEOUT))?
}

/// Runs `program` with `input` on stdin and returns its stdout.
async fn run(program: &str, args: &[String], input: Vec<u8>) -> Result<Vec<u8>, Error> {
    let spawn_error = |cause| Error::Spawn {
        program: program.to_string(),
        cause,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let writer = async move {
        // A program that stops reading early is its own business; its exit status tells.
        let _ = stdin.write_all(&input).await;
    };
    let output = async {
        let (_, output) = tokio::join!(writer, child.wait_with_output());
        output
    };
    let output = tokio::time::timeout(REQUEST_TIMEOUT, output)
        .await
        .map_err(|_| Error::Timeout(REQUEST_TIMEOUT))?
        .map_err(spawn_error)?;
    if !output.status.success() {
        return Err(Error::Failed {
            program: program.to_string(),
            status: output.status.to_string(),
        });
    }
    Ok(output.stdout)
}
