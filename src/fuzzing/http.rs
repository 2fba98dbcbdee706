//! The request path as a fuzz target: a real daemon on 127.0.0.1 (plain HTTP, its store on
//! tmpfs when there is one) with an echo agent, a paid agent and echo-mode voice; each input
//! is one request to one route that takes a body, sent as the admin over a fresh connection.
//! Any 5xx answer is a finding, as is a request that takes over 10 s.

use crate::config::{self, Config, Secret};
use crate::Daemon;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The admin's password in the target's daemon.
const PASSWORD: &str = "fuzzing-admin-password";
/// Longest a request may take.
const PATIENCE: Duration = Duration::from_secs(10);

/// The daemon's agents: `echo` (text), `helper` (paid) and voice in echo mode for both.
const CONFIG: &str = r#"
[agents.echo]
engine = { kind = "echo" }
[agents.helper]
engine = { kind = "echo" }
[agents.helper.paid]
price = "10000"
network = "eip155:84532"
pay_to = "0x1563915e194D8CfBA1943570603F7606A3115508"
max_timeout_seconds = 300
facilitator_url = "http://127.0.0.1:9"
[voice]
mode = "echo"
"#;

/// The routes an input picks from (first byte), with the ids of the objects made at start.
/// Every route that reads a body is here; a few without one keep the store's reads honest.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/api/token"),
    ("POST", "/token"),
    ("POST", "/api/tokens"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/users"),
    ("DELETE", "/api/users/someone"),
    ("POST", "/api/agents"),
    ("PATCH", "/api/agents/echo"),
    ("PATCH", "/api/agents/made"),
    ("POST", "/api/agents/echo/shares"),
    ("POST", "/api/agents/echo/chat"),
    ("POST", "/api/agents/echo/task"),
    ("POST", "/api/agents/echo/chat/sessions/{session}/close"),
    ("POST", "/api/agents/echo/executions/{execution}/terminate"),
    ("POST", "/api/agents/echo/public-links"),
    ("PATCH", "/api/agents/echo/public-links/{link}"),
    ("POST", "/api/public/chat/{token}"),
    ("POST", "/api/paid/helper/chat"),
    ("POST", "/api/agents/echo/voice/start"),
    ("POST", "/api/agents/echo/voice/stop"),
    ("POST", "/api/agents/echo/start"),
    ("GET", "/api/agents/echo/chat/sessions"),
    ("GET", "/api/agents/echo/executions"),
    ("GET", "/api/public/history/{token}"),
];

/// The content types an input picks from (second byte, low two bits; the next bit asks for
/// the default answer, NDJSON for chats, instead of one JSON document).
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
];

/// Sends one input to the process's target daemon, started on first use.
pub fn http_request(data: &[u8]) {
    static TARGET: OnceLock<HttpTarget> = OnceLock::new();
    TARGET.get_or_init(HttpTarget::start).request(data);
}

/// A daemon to send inputs to, and what a request needs: the admin's token and the ids of a
/// session, an execution and a public link. Dropping it stops the daemon and removes its data.
pub struct HttpTarget {
    runtime: tokio::runtime::Runtime,
    daemon: Option<Daemon>,
    addr: SocketAddr,
    dir: PathBuf,
    token: String,
    ids: Vec<(&'static str, String)>,
}

impl HttpTarget {
    /// Starts the daemon in a fresh data directory and makes the objects routes refer to.
    pub fn start() -> HttpTarget {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("outpost-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut config = Config::from_raw(config::parse(CONFIG).expect("it parses"))
            .expect("the target's config");
        config.listen = vec!["127.0.0.1:0".parse().expect("an address")];
        config.data_dir = dir.clone();
        config.admin_password = Some(Secret(PASSWORD.into()));
        config.login_attempts_per_minute = 1_000_000;
        config.public.requests_per_minute_per_ip = 1_000_000;
        let daemon = runtime
            .block_on(crate::start(config))
            .expect("the daemon starts");
        let addr = daemon.local_addrs()[0];
        let mut target = HttpTarget {
            runtime,
            daemon: Some(daemon),
            addr,
            dir,
            token: String::new(),
            ids: Vec::new(),
        };
        let login = json!({"username": "admin", "password": PASSWORD});
        target.token = target.setup("POST", "/api/token", login)["access_token"]
            .as_str()
            .expect("a token")
            .to_string();
        let chat = target.setup("POST", "/api/agents/echo/chat", json!({"message": "hi"}));
        let link = target.setup(
            "POST",
            "/api/agents/echo/public-links",
            json!({"name": "fuzz"}),
        );
        let agent = json!({"name": "made", "engine": {"kind": "echo"}});
        target.setup("POST", "/api/agents", agent);
        let text = |value: &Value| value.as_str().expect("an id").to_string();
        target.ids = vec![
            ("{session}", text(&chat["session_id"])),
            ("{execution}", text(&chat["execution_id"])),
            ("{link}", text(&link["id"])),
            ("{token}", text(&link["token"])),
        ];
        target
    }

    /// One input: `route (1 byte) ‖ content type (1 byte) ‖ body`. Panics on a 5xx answer.
    pub fn request(&self, data: &[u8]) {
        let [route, content_type, body @ ..] = data else {
            return;
        };
        let accept_json = content_type & 4 == 0;
        let (method, template) = ROUTES[usize::from(*route) % ROUTES.len()];
        let mut path = template.to_string();
        for (name, id) in &self.ids {
            path = path.replace(name, id);
        }
        let content_type = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()];
        let token = if path == "/api/auth/logout" {
            // Logging out its own token would lock the target out: it spends a fresh one.
            self.device_token()
        } else {
            self.token.clone()
        };
        let (status, answer) = self.send(
            method,
            &path,
            &token,
            content_type,
            accept_json,
            body.to_vec(),
        );
        assert!(
            status < 500,
            "{method} {path} answered {status}: {}",
            String::from_utf8_lossy(&answer)
        );
    }

    fn device_token(&self) -> String {
        let body = json!({"username": "admin", "scope": "chat", "ttl": "1h"});
        let (status, answer) = self.send(
            "POST",
            "/api/tokens",
            &self.token,
            None,
            true,
            body.to_string().into_bytes(),
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
        let answer: Value = serde_json::from_slice(&answer).expect("JSON");
        answer["access_token"]
            .as_str()
            .expect("a device token")
            .to_string()
    }

    /// A request the target needs to succeed; its JSON answer.
    fn setup(&self, method: &str, path: &str, body: Value) -> Value {
        let (status, answer) = self.send(
            method,
            path,
            &self.token,
            Some("application/json"),
            true,
            body.to_string().into_bytes(),
        );
        assert!(
            (200..300).contains(&status),
            "{method} {path}: {status} {}",
            String::from_utf8_lossy(&answer)
        );
        serde_json::from_slice(&answer).expect("a JSON answer")
    }

    /// Sends one request on a new connection and reads the whole answer (streams included).
    fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        content_type: Option<&str>,
        accept_json: bool,
        body: Vec<u8>,
    ) -> (u16, Bytes) {
        let mut request = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).expect("a method"))
            .uri(path)
            .header("host", self.addr.to_string());
        if accept_json {
            request = request.header("accept", "application/json");
        }
        if !token.is_empty() {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .expect("a request");
        let addr = self.addr;
        let exchange = async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, body))
        };
        let answer = self
            .runtime
            .block_on(async { tokio::time::timeout(PATIENCE, exchange).await });
        match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => panic!("{method} {path}: the exchange failed: {err:#}"),
            Err(_) => panic!("{method} {path}: no answer within {PATIENCE:?}"),
        }
    }
}

impl Drop for HttpTarget {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            self.runtime.block_on(daemon.stop());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
