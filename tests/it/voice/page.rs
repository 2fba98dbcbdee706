//! The voice test page in a real headless Chromium: its fake microphone plays a WAV of
//! espeak-ng speech, the page signs in, starts a call on an echo-mode daemon, encodes the
//! microphone with WebCodecs Opus, and plays the echo that comes back; then it interrupts
//! an echo and hangs up.

use super::client::{speech, voice_server};
use crate::links::browser::Browser;
use crate::support::*;
use outpost::config::VoiceMode;
use outpost::voice::audio::{self, Pcm};
use serde_json::Value;

/// The page's counters, as JSON.
const STATS: &str = "JSON.stringify(window.outpostVoice)";

#[tokio::test]
async fn the_voice_page_calls_from_a_browser_and_hears_the_echo() {
    let server = TestServer::with(voice_server(VoiceMode::Echo, |_| {})).await;
    let page = server.get("/voice", "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));

    // The fake microphone loops this file: about two seconds of speech, then silence long
    // enough for the echo to play out before the speech comes round again.
    let said = speech("Hello from the browser, this is a voice page test.").await;
    let mut samples = audio::resample(
        &Pcm {
            sample_rate: 16_000,
            samples: said.clone(),
        },
        48_000,
    )
    .unwrap();
    samples.resize(samples.len() + 48_000 * 5, 0);
    let wav = server.dir.path().join("microphone.wav");
    let pcm = Pcm {
        sample_rate: 48_000,
        samples,
    };
    std::fs::write(&wav, audio::to_wav(&pcm)).unwrap();

    let mut browser = Browser::launch_with(&[
        "--use-fake-ui-for-media-stream".into(),
        "--use-fake-device-for-media-stream".into(),
        format!("--use-file-for-fake-audio-capture={}", wav.display()),
        "--autoplay-policy=no-user-gesture-required".into(),
    ])
    .await;
    browser.open(&format!("http://{}/voice", server.addr)).await;
    browser
        .wait_for("document.body && document.body.dataset.state === 'signed-out'")
        .await;
    browser
        .eval(&format!(
            "document.getElementById('username').value = 'admin'; \
             document.getElementById('password').value = '{ADMIN_PASSWORD}'; \
             document.getElementById('login').requestSubmit(); true"
        ))
        .await;
    let agent = browser
        .wait_for(
            "document.body.dataset.state === 'ready' && document.getElementById('agent').value",
        )
        .await;
    assert_eq!(agent, "echo");

    browser
        .eval("document.getElementById('start').click(); true")
        .await;
    browser
        .wait_for("window.outpostVoice.ticket && window.outpostVoice.socket === 'open'")
        .await;
    // Speech went out as Opus, and its echo came back and was decoded and played.
    let stats = browser
        .wait_for(&format!(
            "window.outpostVoice.sent > 75 && window.outpostVoice.received > 40 && \
             window.outpostVoice.played > 20 && {STATS}"
        ))
        .await;
    let stats: Value = serde_json::from_str(stats.as_str().unwrap()).unwrap();
    assert_eq!(stats["encoder"]["codec"], "opus", "{stats}");
    assert_eq!(stats["encoder"]["sampleRate"], 16_000, "{stats}");
    let states: Vec<&str> = stats["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "status")
        .filter_map(|e| e["state"].as_str())
        .collect();
    assert!(states.starts_with(&["listening"]), "{states:?}");
    assert!(states.contains(&"speaking"), "{states:?}");
    let shown = browser
        .eval("Number(document.getElementById('received').textContent)")
        .await;
    assert!(shown.as_u64().unwrap() > 0, "{shown}");

    // Interrupt while the echo plays: the server stops it and says so.
    browser
        .wait_for("document.body.dataset.state === 'speaking'")
        .await;
    browser
        .eval("document.getElementById('interrupt').click(); true")
        .await;
    browser
        .wait_for("window.outpostVoice.events.some(e => e.type === 'interrupted')")
        .await;

    // Hang up: the server says what it saved and closes normally.
    browser
        .eval("document.getElementById('hangup').click(); true")
        .await;
    let code = browser.wait_for("window.outpostVoice.closeCode").await;
    assert_eq!(code, 1000);
    assert_eq!(browser.eval("document.body.dataset.state").await, "ended");
    let saved = browser
        .eval("window.outpostVoice.events.filter(e => e.type === 'saved').length")
        .await;
    assert_eq!(saved, 1);
    browser.close().await;
}
