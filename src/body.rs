//! Response bodies (whole or streamed from a channel) and size- and time-limited request
//! bodies. A request body that cannot be read is an [`Error`] of its own; `error.rs` says
//! which answer each one gets.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// Why a request body was not read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request says its body is something other than JSON.
    #[error("send the body as application/json")]
    NotJson,
    /// The body is, or says it is, longer than its limit.
    #[error("request bodies are limited to {limit} bytes")]
    TooLarge { limit: usize },
    /// The whole body did not arrive within its deadline.
    #[error("the request body did not arrive within {seconds} s")]
    TimedOut { seconds: u64 },
    /// The connection failed while the body was read.
    #[error("reading the body failed: {0}")]
    Broken(String),
    /// The body is not JSON of the expected shape.
    #[error("invalid JSON body: {0}")]
    InvalidJson(String),
}

/// A response with our body type.
pub type Response = hyper::Response<Body>;

/// A response body: bytes known up front, or chunks sent by a producer task.
pub enum Body {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl Body {
    pub fn empty() -> Body {
        Body::Full(None)
    }

    /// A body fed through the returned sender; it ends when the sender is dropped, and the
    /// sender fails once the client has gone.
    pub fn channel() -> (mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = mpsc::channel(32);
        (tx, Body::Channel(rx))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Channel(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Channel(_) => SizeHint::default(),
        }
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize) -> Response {
    let bytes = serde_json::to_vec(value).expect("responses serialize");
    with_type(status, "application/json", Bytes::from(bytes))
}

/// A response of `content_type` with a whole body.
pub fn with_type(status: StatusCode, content_type: &'static str, bytes: Bytes) -> Response {
    let mut response = hyper::Response::new(Body::Full(Some(bytes)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// One of the daemon's own HTML pages: its content security `policy`, no Referer to other
/// sites, no sniffing, no caching.
pub fn page(html: &'static str, policy: &'static str) -> Response {
    let mut response = with_type(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(html.as_bytes()),
    );
    let headers = response.headers_mut();
    headers.insert("content-security-policy", HeaderValue::from_static(policy));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The time a request's whole body may take (`server.body_timeout_s`), put in each request's
/// extensions by the connection that read it.
#[derive(Clone)]
pub struct BodyDeadline {
    pub timeout: Duration,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Used when a request carries no [`BodyDeadline`] (requests made in tests without a socket).
const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads the whole request body, refusing more than `limit` bytes and a body that takes
/// longer than its deadline (a total for the whole body, so a trickle of a byte now and then
/// does not hold the request open).
pub async fn read<B>(request: Request<B>, limit: usize) -> Result<Bytes, Error>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    let deadline = request.extensions().get::<BodyDeadline>().cloned();
    let timeout = deadline
        .as_ref()
        .map_or(DEFAULT_BODY_TIMEOUT, |d| d.timeout);
    match tokio::time::timeout(timeout, read_untimed(request, limit)).await {
        Ok(read) => read,
        Err(_) => {
            if let Some(deadline) = deadline {
                deadline.metrics.body_timeout();
            }
            Err(Error::TimedOut {
                seconds: timeout.as_secs(),
            })
        }
    }
}

async fn read_untimed<B>(request: Request<B>, limit: usize) -> Result<Bytes, Error>
where
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Error::TooLarge { limit });
    }
    let limited = http_body_util::Limited::new(request.into_body(), limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err)
            if err
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(Error::TooLarge { limit })
        }
        Err(err) => Err(Error::Broken(err.to_string())),
    }
}

/// True when the request says its body is JSON (or says nothing).
pub fn is_json<B>(request: &Request<B>) -> bool {
    match request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    {
        None => true,
        Some(value) => {
            let media = value.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case("application/json") || media.ends_with("+json")
        }
    }
}

/// Reads a JSON body into `T`: refused when it says another content type, is too large, or
/// is not JSON of the expected shape.
pub async fn read_json<T, B>(request: Request<B>, limit: usize) -> Result<T, Error>
where
    T: DeserializeOwned,
    B: hyper::body::Body,
    B::Error: Into<BoxError>,
{
    if !is_json(&request) {
        return Err(Error::NotJson);
    }
    let bytes = read(request, limit).await?;
    parse_json(&bytes)
}

/// Parses JSON bytes into `T` (the error names what is wrong); a blank body is `{}`.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|err| Error::InvalidJson(err.to_string()))
}
