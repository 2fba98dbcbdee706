//! An instant x402 facilitator inside the bench process: `POST /verify` and `POST /settle` on
//! 127.0.0.1:0, answered at once with success in the real wire format, settlements counted.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The running stub; [`Facilitator::stop`] stops accepting.
pub struct Facilitator {
    /// `http://127.0.0.1:PORT`, the `facilitator_url` of the paid agent.
    pub url: String,
    settles: Arc<AtomicU64>,
    accept_loop: JoinHandle<()>,
}

impl Facilitator {
    /// Binds `127.0.0.1:0` and serves until stopped.
    pub async fn start() -> anyhow::Result<Facilitator> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let settles = Arc::new(AtomicU64::new(0));
        let counter = settles.clone();
        let accept_loop = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let counter = counter.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let counter = counter.clone();
                        async move { Ok::<_, Infallible>(answer(request, &counter).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Facilitator {
            url,
            settles,
            accept_loop,
        })
    }

    /// How many `/settle` requests were answered.
    pub fn settles(&self) -> u64 {
        self.settles.load(Ordering::Relaxed)
    }

    /// Stops accepting; open connections end when the daemon closes them.
    pub fn stop(self) {
        self.accept_loop.abort();
    }
}

/// Success for `/verify` and `/settle`, echoing the payer and network of the request.
async fn answer(
    request: Request<hyper::body::Incoming>,
    settles: &AtomicU64,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let bytes = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let payer = body["paymentPayload"]["payload"]["authorization"]["from"].clone();
    let network = body["paymentRequirements"]["network"].clone();
    let (status, reply) = match path.as_str() {
        "/verify" => (StatusCode::OK, json!({"isValid": true, "payer": payer})),
        "/settle" => {
            let n = settles.fetch_add(1, Ordering::Relaxed) + 1;
            let transaction = format!("0x{n:064x}");
            let reply = json!({"success": true, "transaction": transaction, "network": network, "payer": payer});
            (StatusCode::OK, reply)
        }
        _ => (StatusCode::NOT_FOUND, json!({"error": "no such route"})),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
