//! A bare keep-alive HTTP/1.1 connection, used both by the load generator and for set-up calls
//! (login, users, seeding), so every number is measured through the same client code.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use tokio::net::TcpStream;

/// One request, prepared once and sent many times.
#[derive(Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    /// Sent as `Authorization: Bearer …` when present.
    pub token: Option<String>,
    /// A JSON body; `None` sends no body and no content type.
    pub json: Option<Bytes>,
    /// Further request headers, such as an x402 payment.
    pub headers: Vec<(&'static str, String)>,
}

impl Call {
    /// A `GET` with an optional bearer token.
    pub fn get(path: &str, token: Option<&str>) -> Call {
        Call {
            method: Method::GET,
            path: path.to_string(),
            token: token.map(str::to_string),
            json: None,
            headers: Vec::new(),
        }
    }

    /// A `POST` of a JSON document with an optional bearer token.
    pub fn post(path: &str, token: Option<&str>, body: &Value) -> Call {
        Call {
            method: Method::POST,
            path: path.to_string(),
            token: token.map(str::to_string),
            json: Some(Bytes::from(body.to_string())),
            headers: Vec::new(),
        }
    }

    /// The same request with one more header.
    pub fn with_header(mut self, name: &'static str, value: String) -> Call {
        self.headers.push((name, value));
        self
    }
}

/// A client connection; requests go one after another over the same socket.
pub struct Conn {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    /// Connects and runs the HTTP/1.1 handshake; the connection task is spawned on the runtime.
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(async move {
            // Ends when the sender is dropped or the peer closes; either is fine here.
            let _ = connection.await;
        });
        Ok(Conn {
            sender,
            host: addr.to_string(),
        })
    }

    /// Sends one request and reads the whole response body.
    pub async fn send(&mut self, call: &Call) -> anyhow::Result<(StatusCode, Bytes)> {
        // A reused connection must be ready before the next request goes out.
        self.sender.ready().await.context("connection not ready")?;
        let mut request = Request::builder()
            .method(call.method.clone())
            .uri(call.path.as_str())
            .header(HOST, self.host.as_str())
            .header(ACCEPT, "application/json");
        if let Some(token) = &call.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in &call.headers {
            request = request.header(*name, value.as_str());
        }
        let body = match &call.json {
            Some(json) => {
                request = request.header(CONTENT_TYPE, "application/json");
                json.clone()
            }
            None => Bytes::new(),
        };
        let response = self
            .sender
            .send_request(request.body(Full::new(body))?)
            .await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends one request and parses a JSON answer, failing on any status but `expected`.
    pub async fn json(&mut self, call: &Call, expected: StatusCode) -> anyhow::Result<Value> {
        let (status, body) = self.send(call).await?;
        if status != expected {
            bail!(
                "{} {} answered {status}: {}",
                call.method,
                call.path,
                String::from_utf8_lossy(&body)
            );
        }
        serde_json::from_slice(&body)
            .with_context(|| format!("{} {} answered with invalid JSON", call.method, call.path))
    }
}

/// The string at `key` of a JSON object, or an error naming it.
pub fn field(value: &Value, key: &str) -> anyhow::Result<String> {
    value[key]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no string {key:?} in {value}"))
}
