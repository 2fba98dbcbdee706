//! A small HTTP/1.1 client: one keep-alive connection per [`Conn`], requests prepared as
//! [`Call`]s, every answer read whole. Errors are transport errors; statuses are answers.

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// The longest one request may take before it counts as failed.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// One request, sent as often as needed.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Bytes>,
}

impl Call {
    pub fn get(path: impl Into<String>, token: Option<&str>) -> Call {
        let call = Call {
            method: Method::GET,
            path: path.into(),
            headers: Vec::new(),
            body: None,
        };
        match token {
            Some(token) => call.header("authorization", format!("Bearer {token}")),
            None => call,
        }
    }

    /// A JSON `POST`, answered as one JSON document unless an `accept` header says otherwise.
    pub fn post(path: impl Into<String>, token: Option<&str>, body: &Value) -> Call {
        let mut call = Call::get(path, token);
        call.method = Method::POST;
        call.body = Some(Bytes::from(body.to_string()));
        call.header("content-type", "application/json")
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Call {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn request(&self, host: &str) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str())
            .header("host", host);
        if !self.headers.iter().any(|(name, _)| name == "accept") {
            builder = builder.header("accept", "application/json");
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let body = self.body.clone().unwrap_or_default();
        Ok(builder.body(Full::new(body))?)
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "{} answered with a body that is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// One keep-alive connection.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        Conn::over(stream, addr).await
    }

    /// Connects from the local address `from` (a loopback address other than 127.0.0.1
    /// looks like another client).
    pub async fn connect_from(addr: SocketAddr, from: std::net::IpAddr) -> anyhow::Result<Conn> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::new(from, 0))
            .with_context(|| format!("binding {from}"))?;
        let stream = socket
            .connect(addr)
            .await
            .with_context(|| format!("connecting to {addr} from {from}"))?;
        Conn::over(stream, addr).await
    }

    async fn over(stream: TcpStream, addr: SocketAddr) -> anyhow::Result<Conn> {
        stream.set_nodelay(true)?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    pub async fn send(&mut self, call: &Call) -> anyhow::Result<Reply> {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(call.request(&self.host)?).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok(Reply { status, body })
        };
        tokio::time::timeout(REQUEST_LIMIT, exchange)
            .await
            .with_context(|| format!("{} {} took over {REQUEST_LIMIT:?}", call.method, call.path))?
    }

    /// Sends and insists on `status`, returning the JSON answer.
    pub async fn expect(&mut self, call: &Call, status: u16) -> anyhow::Result<Value> {
        let reply = self.send(call).await?;
        insist(call, &reply, status)
    }

    /// As `expect`, but a `429` (a busy password hasher, say) is asked again after its
    /// `retry_after`, as a well-behaved client does, up to a minute in all.
    pub async fn expect_patiently(&mut self, call: &Call, status: u16) -> anyhow::Result<Value> {
        for _ in 0..60 {
            let reply = self.send(call).await?;
            if reply.status != 429 {
                return insist(call, &reply, status);
            }
            let wait = reply.json()?["retry_after"].as_u64().unwrap_or(1);
            tokio::time::sleep(std::time::Duration::from_secs(wait.clamp(1, 5))).await;
        }
        anyhow::bail!("{} {} was busy for a minute", call.method, call.path)
    }
}

/// The JSON answer of `reply`, which must have `status`.
fn insist(call: &Call, reply: &Reply, status: u16) -> anyhow::Result<Value> {
    anyhow::ensure!(
        reply.status == status,
        "{} {} answered {} (wanted {status}): {}",
        call.method,
        call.path,
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// One request on a connection of its own.
pub async fn once(addr: SocketAddr, call: &Call) -> anyhow::Result<Reply> {
    Conn::connect(addr).await?.send(call).await
}

/// The string at `key`, or an error naming it.
pub fn text(value: &Value, key: &str) -> anyhow::Result<String> {
    value[key]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no string {key:?} in {value}"))
}
