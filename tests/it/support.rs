//! The test harness: a real daemon on 127.0.0.1:0 with a temp data dir and a real redb file,
//! and small HTTP clients (plain, TLS, HTTP/2) that return status, headers and body.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use outpost::config::{AgentConfig, Config, EngineSpec, Secret, Tls};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// A finished response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// NDJSON lines, each parsed.
    pub fn lines(&self) -> Vec<Value> {
        String::from_utf8_lossy(&self.body)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and the error code of a JSON error body.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        let body = self.json();
        assert_eq!(body["error"], code, "body: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "body: {body}"
        );
    }
}

/// An echo agent with these knobs.
pub fn echo_agent(name: &str, delay_ms: u64, max_concurrent: usize) -> AgentConfig {
    AgentConfig {
        name: name.into(),
        display_name: name.into(),
        description: String::new(),
        owner: "admin".into(),
        shared_with: Vec::new(),
        engine: EngineSpec::Echo { delay_ms },
        max_concurrent,
        timeout: Duration::from_secs(60),
        queue_capacity: 100,
        voice: false,
        paid: None,
    }
}

/// The config a test server starts from: plain HTTP on 127.0.0.1:0, the echo agent.
pub fn test_config(data_dir: &Path) -> Config {
    Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        data_dir: data_dir.to_path_buf(),
        admin_password: Some(Secret(ADMIN_PASSWORD.into())),
        shutdown_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

/// A daemon running in this process.
pub struct TestServer {
    daemon: Option<outpost::Daemon>,
    pub addr: SocketAddr,
    pub dir: Arc<tempfile::TempDir>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::with(|_| {}).await
    }

    /// Starts with the test config changed by `adjust`.
    pub async fn with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        TestServer::in_dir(dir, adjust).await
    }

    /// Starts on an existing data dir (for restarts).
    pub async fn in_dir(
        dir: Arc<tempfile::TempDir>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = test_config(dir.path());
        adjust(&mut config);
        let tls_on = config.tls != Tls::Off;
        let daemon = outpost::start(config).await.expect("daemon starts");
        let addr = daemon.local_addrs()[0];
        let tls = tls_on.then(|| client_tls(&dir.path().join("tls/cert.pem"), false));
        TestServer {
            daemon: Some(daemon),
            addr,
            dir,
            tls,
        }
    }

    /// The clock public links judge expiry by; moving it forward expires links.
    pub fn link_clock(&self) -> outpost::links::Clock {
        self.daemon.as_ref().expect("the daemon runs").link_clock()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Stops the daemon and waits until the store is closed.
    pub async fn stop(mut self) -> Arc<tempfile::TempDir> {
        if let Some(daemon) = self.daemon.take() {
            daemon.stop().await;
        }
        self.dir.clone()
    }

    pub async fn send(&self, request: Request<Full<Bytes>>) -> Reply {
        send(self.addr, self.tls.clone(), false, request).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        self.send(build(method, path, token, body, &[])).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn login(&self, username: &str, password: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                "/api/token",
                None,
                Some(serde_json::json!({"username": username, "password": password})),
            )
            .await;
        assert_eq!(reply.status, 200, "login {username}: {:?}", reply.body);
        reply.json()["access_token"].as_str().unwrap().to_string()
    }

    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user (as admin) and returns its token.
    pub async fn user(&self, username: &str) -> String {
        let admin = self.admin().await;
        let password = format!("{username}-password");
        let reply = self
            .post(
                "/api/users",
                &admin,
                serde_json::json!({"username": username, "password": password}),
            )
            .await;
        assert_eq!(reply.status, 201, "{:?}", reply.body);
        self.login(username, &password).await
    }

    /// One chat turn as one JSON document.
    pub async fn chat_json(&self, agent: &str, token: &str, body: Value) -> Reply {
        let request = build(
            Method::POST,
            &format!("/api/agents/{agent}/chat"),
            Some(token),
            Some(body),
            &[("accept", "application/json")],
        );
        self.send(request).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            // A test that panicked: stop in the background; the runtime ends with the test.
            tokio::spawn(daemon.stop());
        }
    }
}

/// A request with an optional bearer token and JSON body.
pub fn build(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let bytes = match body {
        Some(body) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(body.to_string())
        }
        None => Bytes::new(),
    };
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(bytes)).unwrap()
}

/// A rustls client that trusts the certificate in `cert_pem`, offering h2 when asked.
pub fn client_tls(cert_pem: &Path, h2: bool) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cert_pem).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(config)
}

/// Sends one request on a new connection and reads the whole response.
pub async fn send(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    h2: bool,
    request: Request<Full<Bytes>>,
) -> Reply {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    match tls {
        Some(config) => {
            let connector = tokio_rustls::TlsConnector::from(config);
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let stream = connector.connect(name, tcp).await.expect("TLS handshake");
            exchange(TokioIo::new(stream), h2, request).await
        }
        None => exchange(TokioIo::new(tcp), h2, request).await,
    }
}

async fn exchange<I>(io: I, h2: bool, request: Request<Full<Bytes>>) -> Reply
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let response = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .expect("h2 handshake");
        tokio::spawn(conn);
        sender.send_request(request).await.expect("h2 request")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender.send_request(request).await.expect("request")
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Polls `check` every 20 ms until it returns Some, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The path of a fixture engine script.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/data/engines/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A command agent running a fixture script, with `OUTPOST_FIXTURE_DIR` pointing at `dir`
/// (where fixtures leave their traces), and resume arguments `--resume {session}`.
pub fn fixture_agent(
    name: &str,
    script: &str,
    dir: Option<&Path>,
    max_concurrent: usize,
) -> AgentConfig {
    let env = dir
        .map(|d| ("OUTPOST_FIXTURE_DIR".to_string(), d.display().to_string()))
        .into_iter()
        .collect();
    AgentConfig {
        engine: EngineSpec::Command {
            program: fixture(script),
            args: vec!["-p".into()],
            workdir: None,
            env,
            resume_args: vec!["--resume".into(), "{session}".into()],
        },
        ..echo_agent(name, 0, max_concurrent)
    }
}
