//! A facilitator stub on 127.0.0.1:0 that speaks the x402 facilitator wire protocol
//! (`POST /verify`, `POST /settle`), records every body it gets, and behaves as told.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// How the stub answers. `/verify` says valid except in `Unfunded` and `Down`; the other
/// modes are about `/settle`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Settles: `{"success": true, "transaction", …}`.
    Accept,
    /// The payer holds too little: `/verify` answers `{"isValid": false, "invalidReason":
    /// "insufficient_funds"}` and `/settle` refuses the same way, as real facilitators do.
    Unfunded,
    /// Verifies, then refuses to settle: HTTP 400 `{"success": false, "errorReason":
    /// "insufficient_funds", …}` (the funds left between the two).
    Reject,
    /// `/settle` answers HTTP 500 with a body that is not JSON.
    Fail,
    /// Both routes answer HTTP 500.
    Down,
    /// `/settle` answers only after `delay`.
    Slow(Duration),
    /// `settlement_pending` every time.
    Pending,
    /// `settlement_pending` once, then settles.
    PendingOnce,
}

#[derive(Default)]
struct Record {
    settles: Vec<Value>,
    verifies: Vec<Value>,
}

/// The running stub; it stops with the test's runtime.
#[derive(Clone)]
pub struct Stub {
    pub url: String,
    mode: Arc<Mutex<Mode>>,
    record: Arc<Mutex<Record>>,
}

impl Stub {
    pub async fn start(mode: Mode) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stub = Stub {
            url: format!("http://{}", listener.local_addr().unwrap()),
            mode: Arc::new(Mutex::new(mode)),
            record: Arc::default(),
        };
        let serving = stub.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stub = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let stub = stub.clone();
                        async move { Ok::<_, std::convert::Infallible>(stub.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        stub
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Every `/settle` body received, in order.
    pub fn settles(&self) -> Vec<Value> {
        self.record.lock().unwrap().settles.clone()
    }

    /// Every `/verify` body received, in order.
    pub fn verifies(&self) -> Vec<Value> {
        self.record.lock().unwrap().verifies.clone()
    }

    async fn answer(&self, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let bytes = request.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let mode = *self.mode.lock().unwrap();
        let settled_before = {
            let mut record = self.record.lock().unwrap();
            let settled_before = record.settles.len();
            match path.as_str() {
                "/settle" => record.settles.push(body.clone()),
                "/verify" => record.verifies.push(body.clone()),
                _ => return reply(404, json!({"error": "no such route"})),
            }
            settled_before
        };
        let payer = body["paymentPayload"]["payload"]["authorization"]["from"].clone();
        let network = body["paymentRequirements"]["network"].clone();
        if path == "/verify" {
            return match mode {
                Mode::Unfunded => reply(
                    200,
                    json!({"isValid": false, "invalidReason": "insufficient_funds", "payer": payer}),
                ),
                Mode::Down => failure(),
                _ => reply(200, json!({"isValid": true, "payer": payer})),
            };
        }
        if let Mode::Slow(delay) = mode {
            tokio::time::sleep(delay).await;
        }
        let pending = json!({"success": false, "errorReason": "settlement_pending", "transaction": "", "network": network, "payer": payer});
        match mode {
            Mode::Reject | Mode::Unfunded => reply(
                400,
                json!({"success": false, "errorReason": "insufficient_funds", "errorMessage": "the payer has too little USDC", "transaction": "", "network": network, "payer": payer}),
            ),
            Mode::Fail | Mode::Down => failure(),
            Mode::Pending => reply(200, pending),
            Mode::PendingOnce if settled_before == 0 => reply(200, pending),
            _ => reply(
                200,
                json!({"success": true, "transaction": format!("0x{:064x}", settled_before + 1), "network": network, "payer": payer}),
            ),
        }
    }
}

fn failure() -> Response<Full<Bytes>> {
    Response::builder()
        .status(500)
        .body(Full::new(Bytes::from_static(b"internal error")))
        .unwrap()
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}
