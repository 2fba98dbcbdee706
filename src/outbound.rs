//! Outbound HTTP: the daemon's one client for model servers (the openai engine),
//! OpenAI-compatible speech servers and x402 facilitators, over `http://` or `https://`.
//!
//! A [`Client`] is one connection pool for one [`OutboundPolicy`] and connect timeout, made
//! once and reused by every request (clones share the pool). [`Client::post`] sends a
//! [`Post`] and reads its whole answer, at most so many bytes, within an optional deadline;
//! [`Client::stream`] sends one and hands back the answer as it arrives ([`Streamed`]: SSE,
//! NDJSON). Where connections may go is `policy.rs`; how they are made and whom HTTPS trusts,
//! `connect.rs`.

mod connect;
mod policy;

pub use policy::{AllowList, OutboundPolicy, Refused};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderName, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Request, StatusCode, Uri};
use std::time::Duration;

/// How long a [`Client::for_config_urls`] client waits for a connection.
const CONFIG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an outbound request got no usable answer. The texts are the underlying errors' own,
/// so callers put them after their own words.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request could not be built (a header value that is not one).
    #[error(transparent)]
    Build(hyper::http::Error),
    /// No answer: no connection, or the exchange failed before the status.
    #[error(transparent)]
    Send(hyper_util::client::legacy::Error),
    /// The answer's body broke off.
    #[error(transparent)]
    Read(hyper::Error),
    /// The answer's body was longer than the caller reads.
    #[error("length limit exceeded")]
    TooLarge,
    /// No whole answer within the deadline.
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
}

/// `https` or `http`, and a host: the URLs the client can ask.
pub fn check_url(uri: &Uri) -> Result<(), String> {
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some() => Ok(()),
        _ => Err(format!("{uri} is not an http:// or https:// URL")),
    }
}

/// One POST: its URL, content type, other headers and body.
pub struct Post {
    uri: Uri,
    content_type: String,
    headers: Vec<(HeaderName, String)>,
    body: Bytes,
}

impl Post {
    /// A POST of `body` as `content_type`.
    pub fn new(uri: Uri, content_type: &str, body: impl Into<Bytes>) -> Post {
        Post {
            uri,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A POST of a JSON document.
    pub fn json(uri: Uri, document: &serde_json::Value) -> Post {
        Post::new(uri, "application/json", document.to_string())
    }

    /// The same POST with one more header.
    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Post {
        self.headers.push((name, value.into()));
        self
    }

    /// The same POST with `Authorization: Bearer {key}` when there is a key.
    pub fn bearer(self, key: Option<&str>) -> Post {
        match key {
            Some(key) => self.header(AUTHORIZATION, format!("Bearer {key}")),
            None => self,
        }
    }

    fn request(self) -> Result<Request<Full<Bytes>>, Error> {
        let mut request = Request::post(self.uri).header(CONTENT_TYPE, self.content_type);
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        request.body(Full::new(self.body)).map_err(Error::Build)
    }
}

/// A whole answer.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// An answer whose body is read as it arrives.
pub struct Streamed {
    response: hyper::Response<Incoming>,
}

impl Streamed {
    pub fn status(&self) -> StatusCode {
        self.response.status()
    }

    /// The answer's `Content-Type`, when it is text.
    pub fn content_type(&self) -> Option<&str> {
        self.response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
    }

    /// The next piece of the body (trailers are skipped), or None at its end.
    pub async fn next(&mut self) -> Option<Result<Bytes, hyper::Error>> {
        loop {
            match self.response.body_mut().frame().await? {
                Ok(frame) => match frame.into_data() {
                    Ok(data) => return Some(Ok(data)),
                    Err(_) => continue,
                },
                Err(err) => return Some(Err(err)),
            }
        }
    }

    /// The rest of the body: at most `max_bytes`, more is [`Error::TooLarge`].
    pub async fn whole(mut self, max_bytes: usize) -> Result<Bytes, Error> {
        let mut bytes = BytesMut::new();
        while let Some(data) = self.next().await {
            let data = data.map_err(Error::Read)?;
            if bytes.len() + data.len() > max_bytes {
                return Err(Error::TooLarge);
            }
            bytes.extend_from_slice(&data);
        }
        Ok(bytes.freeze())
    }
}

/// A pooled outbound client: connects where its policy permits, within its connect timeout.
/// Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct Client {
    pool: connect::Pool,
}

impl Client {
    /// A client that connects where `policy` permits.
    pub fn new(policy: OutboundPolicy, connect_timeout: Duration) -> Client {
        Client {
            pool: connect::pool(policy, connect_timeout),
        }
    }

    /// A client for URLs of the configuration file (speech servers): it connects anywhere,
    /// within 5 s. Its owner keeps it, so every request reuses its connections.
    pub fn for_config_urls() -> Client {
        Client::new(OutboundPolicy::Any, CONFIG_CONNECT_TIMEOUT)
    }

    /// Sends `post` and reads the whole answer, at most `max_bytes` of it, within `deadline`
    /// when there is one (else the caller's own timeout bounds it).
    pub async fn post(
        &self,
        post: Post,
        max_bytes: usize,
        deadline: Option<Duration>,
    ) -> Result<Reply, Error> {
        let request = post.request()?;
        let exchange = async {
            let answer = self.send(request).await?;
            let status = answer.status();
            let body = answer.whole(max_bytes).await?;
            Ok(Reply { status, body })
        };
        match deadline {
            Some(deadline) => tokio::time::timeout(deadline, exchange)
                .await
                .map_err(|_| Error::TimedOut(deadline))?,
            None => exchange.await,
        }
    }

    /// Sends `post` and returns its answer once the status and headers are in; the body is
    /// read as it arrives. Dropping the answer closes the connection.
    pub async fn stream(&self, post: Post) -> Result<Streamed, Error> {
        self.send(post.request()?).await
    }

    /// True when a GET of `uri` gets an HTTP answer at all, whatever its status.
    pub async fn answers(&self, uri: Uri) -> bool {
        let Ok(request) = Request::get(uri).body(Full::new(Bytes::new())) else {
            return false;
        };
        self.pool.request(request).await.is_ok()
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<Streamed, Error> {
        let response = self.pool.request(request).await.map_err(Error::Send)?;
        Ok(Streamed { response })
    }
}
