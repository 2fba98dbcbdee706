//! The chat page in a real headless Chromium, driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: no port, no download): load `/p/{token}`, send a message, watch
//! the reply stream in, reload and see the history, then a rate limit and a disabled link.

use super::make_link;
use crate::support::*;
use hyper::Method;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Debian's package puts it here; `tests/run.sh` installs it.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest wait for one protocol answer or one condition on the page.
const PATIENCE: Duration = Duration::from_secs(20);

/// One headless browser with one page attached.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    replies: BufReader<ChildStdout>,
    next_id: u64,
    /// The page's protocol session, once attached.
    page: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn launch() -> Browser {
        Browser::launch_with(&[]).await
    }

    /// A browser started with `extra` command-line switches too.
    pub async fn launch_with(extra: &[String]) -> Browser {
        assert!(
            Path::new(CHROMIUM).exists(),
            "the browser test needs Debian's chromium at {CHROMIUM}: run tests/run.sh, which \
             installs it, or `apt-get install chromium`"
        );
        let profile = tempfile::tempdir().unwrap();
        // The protocol pipe is fd 3 (commands in) and fd 4 (replies out): the shell moves our
        // stdin and stdout pipes there before it becomes the browser.
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(CHROMIUM)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-default-apps",
                "--no-first-run",
                "--mute-audio",
                "--remote-debugging-pipe",
            ])
            .args(extra)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting chromium");
        let commands = child.stdin.take().unwrap();
        let replies = BufReader::new(child.stdout.take().unwrap());
        Browser {
            child,
            commands,
            replies,
            next_id: 0,
            page: None,
            _profile: profile,
        }
    }

    /// Sends one command (to the page once attached) and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(page) = &self.page {
            message["sessionId"] = json!(page);
        }
        let mut bytes = message.to_string().into_bytes();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .await
            .expect("writing to chromium");
        loop {
            let mut frame = Vec::new();
            let read = tokio::time::timeout(PATIENCE, self.replies.read_until(0, &mut frame))
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"))
                .expect("reading from chromium");
            assert!(
                read > 0,
                "chromium closed its protocol pipe during {method}"
            );
            frame.pop();
            let reply: Value = serde_json::from_slice(&frame).expect("a protocol message");
            if reply["id"] == id {
                assert!(reply.get("error").is_none(), "{method}: {reply}");
                return reply["result"].clone();
            }
        }
    }

    /// Opens a page at `url` and attaches to it.
    pub async fn open(&mut self, url: &str) {
        let target = self
            .call("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let attached = self
            .call(
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await;
        self.page = Some(attached["sessionId"].as_str().unwrap().to_string());
        self.call("Page.navigate", json!({"url": url})).await;
    }

    /// Evaluates `expression` in the page (awaiting a promise) and returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {result}"
        );
        result["result"]["value"].clone()
    }

    /// Waits until `expression` is truthy in the page and returns its value.
    pub async fn wait_for(&mut self, expression: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let value = self.eval(expression).await;
            let truthy = !matches!(&value, Value::Null | Value::Bool(false))
                && value != json!("")
                && value != json!(0);
            if truthy {
                return value;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page never showed: {expression}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Reloads the page and waits until the new one has settled in `state`.
    async fn reload(&mut self, state: &str) {
        self.eval("window.beforeReload = true").await;
        self.call("Page.reload", json!({})).await;
        self.wait_for(&format!(
            "!window.beforeReload && document.body && document.body.dataset.state === '{state}'"
        ))
        .await;
    }

    pub async fn close(mut self) {
        self.page = None;
        self.call("Browser.close", json!({})).await;
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Records every text the newest reply shows, to see it grow.
const WATCH_REPLY: &str = "window.seen = [];
new MutationObserver(() => {
  const replies = document.querySelectorAll('.msg.assistant');
  if (replies.length) { window.seen.push(replies[replies.length - 1].textContent); }
}).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
true";

#[tokio::test]
async fn the_chat_page_streams_remembers_and_explains() {
    let server = TestServer::with(|c| {
        let mut agent = echo_agent("desk", 120, 2);
        agent.display_name = "Front Desk".into();
        c.agents = vec![agent];
    })
    .await;
    let admin = server.admin().await;
    let (id, token) = make_link(&server, &admin, "desk", json!({})).await;
    let mut browser = Browser::launch().await;
    browser
        .open(&format!("http://{}/p/{token}", server.addr))
        .await;
    browser
        .wait_for("document.body && document.body.dataset.state === 'ready'")
        .await;
    assert_eq!(
        browser
            .eval("document.getElementById('title').textContent")
            .await,
        "Front Desk"
    );
    assert_eq!(browser.eval("document.title").await, "Front Desk");

    // Send; the reply grows word by word, then stands whole.
    let words = "one two three four five";
    browser.eval(WATCH_REPLY).await;
    browser
        .eval(&format!(
            "document.getElementById('input').value = '{words}'; \
             document.getElementById('send').click(); true"
        ))
        .await;
    let reply = browser
        .wait_for(
            "(() => { const r = document.querySelector('.msg.assistant'); \
             return r && !r.dataset.pending && r.textContent; })()",
        )
        .await;
    assert_eq!(reply, words);
    let seen: Vec<String> = serde_json::from_value(browser.eval("window.seen").await).unwrap();
    assert!(
        seen.iter()
            .any(|t| !t.is_empty() && t.len() < words.len() && words.starts_with(t.trim_end())),
        "the reply did not stream: {seen:?}"
    );
    let key = format!("localStorage.getItem('outpost.visitor.{token}')");
    let session = browser.eval(&key).await;
    assert!(session.as_str().is_some_and(|s| s.len() == 36), "{session}");

    // Reload: the conversation comes back from the server.
    browser.reload("ready").await;
    let shown = browser
        .eval("[...document.querySelectorAll('.msg')].map(m => m.className + ': ' + m.textContent)")
        .await;
    assert_eq!(
        shown,
        json!([
            format!("msg user: {words}"),
            format!("msg assistant: {words}")
        ])
    );
    assert_eq!(browser.eval(&key).await, session);

    // Over the link's limit: the page says when to try again.
    let path = format!("/api/agents/desk/public-links/{id}");
    let limited = server
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"rate_limit_per_minute": 1})),
        )
        .await;
    assert_eq!(limited.status, 200);
    browser
        .eval("document.getElementById('input').value = 'more'; document.getElementById('send').click(); true")
        .await;
    let notice = browser
        .wait_for("(() => { const n = document.getElementById('notice'); return !n.hidden && n.textContent; })()")
        .await;
    assert!(
        notice
            .as_str()
            .unwrap()
            .contains("Too many messages right now"),
        "{notice}"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('send').disabled")
            .await,
        true
    );

    // Disabled by the owner: the page says the link is gone.
    server
        .call(
            Method::PATCH,
            &path,
            Some(&admin),
            Some(json!({"enabled": false})),
        )
        .await;
    browser.reload("gone").await;
    let notice = browser
        .eval("document.getElementById('notice').textContent")
        .await;
    assert!(
        notice
            .as_str()
            .unwrap()
            .contains("expired or is no longer available"),
        "{notice}"
    );
    assert_eq!(
        browser
            .eval("document.getElementById('composer').hidden")
            .await,
        true
    );
    browser.close().await;
}
