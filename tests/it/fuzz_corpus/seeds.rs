//! Writes `seed-*` inputs for each fuzz target from real sources.

use outpost::fuzzing;
use outpost::paid::header;
use outpost::voice::{audio, opus};
use serde_json::{json, Value};
use std::path::Path;

pub fn write_all(corpus: &Path) {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    for (name, data) in stream_json() {
        write("stream_json", &name, &data);
    }
    for (name, data) in x402_header() {
        write("x402_header", name, data.as_bytes());
    }
    for (i, frame) in voice_text().iter().enumerate() {
        write("voice_text", &i.to_string(), frame.as_bytes());
    }
    for (name, data) in voice_opus() {
        write("voice_opus", name, &data);
    }
    for (name, data) in config() {
        write("config", name, data.as_bytes());
    }
    for (name, data) in http_request() {
        write("http_request", &name, &data);
    }
}

/// The stdout of the engine fixtures that speak stream-json.
fn stream_json() -> Vec<(String, Vec<u8>)> {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/engines");
    ["agent.sh", "error_result.sh", "whole.sh"]
        .iter()
        .map(|name| {
            let mut child = std::process::Command::new(fixtures.join(name))
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            // Some fixtures never read their input.
            let _ = child.stdin.take().unwrap().write_all(b"hello");
            let output = child.wait_with_output().unwrap();
            (name.trim_end_matches(".sh").to_string(), output.stdout)
        })
        .collect()
}

/// The spec's test vector (valid at `fuzzing::X402_NOW`) in both versions and alphabets, and
/// refused variants of it.
fn x402_header() -> Vec<(&'static str, String)> {
    let offer = fuzzing::x402_offer();
    let authorization = json!({
        "from": "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A",
        "to": "0x1563915e194D8CfBA1943570603F7606A3115508",
        "value": "10000", "validAfter": "0", "validBefore": "1900000000",
        "nonce": "0xc78bf66f6c3766ec7563452ef340be1013825f8c7b81ebd7666f7464a2848f13",
    });
    let signature = "0x6c45a2c1622c91513fe1e536c0442c1595c5c33264f86fb3533cb237b84dd6446e61f2f2a59c106d39a2957f80fd51132af9b28356885ab6bae726e8501169261c";
    let high_s = "0x6c45a2c1622c91513fe1e536c0442c1595c5c33264f86fb3533cb237b84dd644919e0d0d5a63ef92c65d6a807f02aeeb8fb52a6358c0458504eb37a48024d81b1b";
    let v2 = |authorization: &Value, signature: &str| {
        json!({
            "x402Version": 2,
            "accepted": offer.requirement_v2(),
            "payload": {"signature": signature, "authorization": authorization},
            "resource": offer.resource(),
        })
    };
    let v1 = json!({
        "x402Version": 1, "scheme": "exact", "network": "base-sepolia",
        "payload": {"signature": signature, "authorization": authorization},
    });
    let mut other_value = authorization.clone();
    other_value["value"] = json!("20000");
    let url_safe = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(v2(&authorization, signature).to_string())
    };
    vec![
        ("v2", header::encode(&v2(&authorization, signature))),
        ("v1", header::encode(&v1)),
        ("v2-url-safe", url_safe),
        ("v2-high-s", header::encode(&v2(&authorization, high_s))),
        ("v2-value", header::encode(&v2(&other_value, signature))),
    ]
}

/// Text frames of the spec, good and bad.
fn voice_text() -> Vec<&'static str> {
    vec![
        r#"{"type":"ping"}"#,
        r#"{"type":"end"}"#,
        r#"{"type":"interrupt"}"#,
        r#"{"type":"text","text":"what time is it?"}"#,
        r#"{"type":"text"}"#,
        r#"{"type":"dance"}"#,
        "not json",
    ]
}

/// Packets as the target frames them (`len (2 bytes) ‖ packet`): espeak-ng speech then
/// silence through the daemon's encoder at 16 kHz, and a tone at 48 kHz.
fn voice_opus() -> Vec<(&'static str, Vec<u8>)> {
    let output = std::process::Command::new("espeak-ng")
        .args(["--stdout", "hello, can you hear me"])
        .output()
        .expect("espeak-ng runs (tests/run.sh installs it)");
    let speech = audio::resample(&audio::from_wav(&output.stdout).unwrap(), 16_000).unwrap();
    let mut samples = speech;
    samples.resize(samples.len() + 16 * 800, 0);
    let tone: Vec<i16> = (0..48_000 / 5)
        .map(|i| ((i as f64 / 48_000.0 * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16)
        .collect();
    vec![
        ("speech", framed(&samples, 16_000)),
        ("tone-48k", framed(&tone, 48_000)),
    ]
}

fn framed(samples: &[i16], rate: u32) -> Vec<u8> {
    let mut encoder = opus::Encoder::new(rate, 5).unwrap();
    let mut out = Vec::new();
    for frame in samples.chunks(encoder.frame_samples) {
        let packet = encoder.encode(frame).unwrap();
        out.extend_from_slice(&(packet.len() as u16).to_be_bytes());
        out.extend_from_slice(&packet);
    }
    out
}

/// The shipped config files and sections the example leaves commented out.
fn config() -> Vec<(&'static str, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |path: &str| std::fs::read_to_string(root.join(path)).unwrap();
    vec![
        ("example", read("config/outpost.toml")),
        ("packaged", read("packaging/outpost.toml")),
        (
            "agents",
            r#"
[server]
listen = ["0.0.0.0:8443"]
[tls]
mode = "auto"
[defaults]
engine = { kind = "command", program = "claude", args = ["-p"] }
[agents.coder]
engine = { kind = "command", program = "claude", args = ["-p", "--output-format", "stream-json", "--verbose"], resume_args = ["--resume", "{session}"] }
timeout = "15m"
max_concurrent = 2
shared_with = ["bob"]
[agents.local]
engine = { kind = "openai", base_url = "http://127.0.0.1:8080/v1", model = "qwen2.5-7b-instruct" }
[agents.helper.paid]
price = "10000"
network = "eip155:84532"
pay_to = "0x1563915e194D8CfBA1943570603F7606A3115508"
facilitator_url = "https://x402.org/facilitator"
[paid.networks."eip155:1"]
v1_name = "ethereum"
chain_id = 1
asset = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
name = "USD Coin"
version = "2"
[public]
trusted_proxies = ["127.0.0.1", "::1"]
"#
            .into(),
        ),
        (
            "voice",
            r#"
[voice]
mode = "pipeline"
stt = { kind = "openai", base_url = "http://127.0.0.1:8080/v1", model = "whisper-1", language = "en" }
tts = { kind = "wyoming", uri = "tcp://127.0.0.1:10200", voice = "en_US-joe-medium" }
max_duration = "10m"
min_speech_ms = 200
end_silence_ms = 600
opus_complexity = 5
"#
            .into(),
        ),
    ]
}

/// The example bodies of the API document, one per route of the target.
fn http_request() -> Vec<(String, Vec<u8>)> {
    let bodies: &[(&str, &str, u8, &str)] = &[
        (
            "POST",
            "/api/token",
            1,
            r#"{"username":"admin","password":"wrong"}"#,
        ),
        ("POST", "/token", 2, "username=admin&password=wrong"),
        (
            "POST",
            "/api/tokens",
            1,
            r#"{"username":"admin","scope":"chat","ttl":"30d"}"#,
        ),
        ("POST", "/api/auth/logout", 0, ""),
        (
            "POST",
            "/api/users",
            1,
            r#"{"username":"bob","password":"correct horse","role":"user"}"#,
        ),
        ("DELETE", "/api/users/someone", 0, ""),
        (
            "POST",
            "/api/agents",
            1,
            r#"{"name":"helper2","display_name":"Helper","engine":{"kind":"echo"}}"#,
        ),
        (
            "PATCH",
            "/api/agents/echo",
            1,
            r#"{"description":"now faster"}"#,
        ),
        (
            "PATCH",
            "/api/agents/made",
            1,
            r#"{"engine":{"kind":"echo","delay_ms":1},"max_concurrent":2}"#,
        ),
        (
            "POST",
            "/api/agents/echo/shares",
            1,
            r#"{"username":"dana"}"#,
        ),
        (
            "POST",
            "/api/agents/echo/chat",
            1,
            r#"{"message":"hi","session_id":null,"new_session":false}"#,
        ),
        (
            "POST",
            "/api/agents/echo/chat",
            5,
            r#"{"message":"hi again","new_session":true}"#,
        ),
        (
            "POST",
            "/api/agents/echo/task",
            1,
            r#"{"message":"write the report","async_mode":true}"#,
        ),
        (
            "POST",
            "/api/agents/echo/chat/sessions/{session}/close",
            0,
            "",
        ),
        (
            "POST",
            "/api/agents/echo/executions/{execution}/terminate",
            0,
            "",
        ),
        (
            "POST",
            "/api/agents/echo/public-links",
            1,
            r#"{"name":"website","max_messages_per_session":20}"#,
        ),
        (
            "PATCH",
            "/api/agents/echo/public-links/{link}",
            1,
            r#"{"enabled":false}"#,
        ),
        (
            "POST",
            "/api/public/chat/{token}",
            1,
            r#"{"message":"hello","session_id":null}"#,
        ),
        ("POST", "/api/paid/helper/chat", 1, r#"{"message":"hi"}"#),
        (
            "POST",
            "/api/agents/echo/voice/start",
            1,
            r#"{"sample_rate":16000}"#,
        ),
        (
            "POST",
            "/api/agents/echo/voice/stop",
            1,
            r#"{"voice_session_id":"v-1"}"#,
        ),
        ("POST", "/api/agents/echo/start", 0, ""),
        ("GET", "/api/agents/echo/chat/sessions", 0, ""),
        ("GET", "/api/agents/echo/executions", 0, ""),
        ("GET", "/api/public/history/{token}", 0, ""),
    ];
    bodies
        .iter()
        .enumerate()
        .map(|(i, (method, path, content_type, body))| {
            let route = fuzzing::HTTP_ROUTES
                .iter()
                .position(|route| route == &(*method, *path))
                .unwrap_or_else(|| panic!("{method} {path} is not a route of the target"));
            let mut data = vec![route as u8, *content_type];
            data.extend_from_slice(body.as_bytes());
            (format!("{i:02}"), data)
        })
        .collect()
}
