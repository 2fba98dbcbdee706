//! The paid routes (x402): `GET /api/paid/{agent}/info`, `POST /api/paid/{agent}/chat`,
//! `GET /api/paid/{agent}/receipts/{id}` and their CORS preflight. No bearer token: the payment is the credential. Every answer carries
//! `Cache-Control: no-store` and the CORS headers browser x402 clients need.

use crate::app::App;
use crate::body::{self, Body, Response};
use crate::config::Tls;
use crate::error::{ApiError, ApiResult};
use crate::paid::{self, header, Delivery, Paid, PaidTurn, Pending, ReceiptRequest};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, HOST};
use hyper::{Request, StatusCode};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PaidChatBody {
    message: String,
    #[serde(default)]
    session_id: Option<crate::ids::SessionId>,
}

/// `GET /api/paid/{agent}/info`
pub fn paid_info(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let resource = resource_url(app, request, name);
    let answer = match app.paywall().info(name, &resource) {
        Ok(info) => body::json(StatusCode::OK, &info),
        Err(err) => ApiError::from(err).response(),
    };
    Ok(x402_headers(answer))
}

/// `POST /api/paid/{agent}/chat`
pub async fn paid_chat(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let resource = resource_url(app, &request, name);
    let payment = payment_header(&request);
    let chat: PaidChatBody = match body::read_json(request, app.config().max_body_bytes).await {
        Ok(chat) => chat,
        Err(err) => return Ok(x402_headers(ApiError::from(err).response())),
    };
    let outcome = app
        .paywall()
        .chat(PaidTurn {
            agent: name.into(),
            resource,
            message: chat.message,
            session_id: chat.session_id,
            payment,
        })
        .await;
    Ok(x402_headers(render(outcome)))
}

/// `GET /api/paid/{agent}/receipts/{id}`: the outcome of a paid turn whose settlement was
/// undecided, for the payer who sends the same payment header again.
pub async fn paid_receipt(
    app: &App,
    request: &Request<Incoming>,
    name: &str,
    id: &str,
) -> ApiResult {
    let outcome = app
        .paywall()
        .receipt(ReceiptRequest {
            agent: name.into(),
            resource: resource_url(app, request, name),
            receipt_id: id.into(),
            payment: payment_header(request),
        })
        .await;
    Ok(x402_headers(render(outcome)))
}

/// The payment header and its protocol version; with both, `PAYMENT-SIGNATURE` (v2) wins.
fn payment_header(request: &Request<Incoming>) -> Option<(u8, String)> {
    let header_text = |name: &str| {
        let value = request.headers().get(name)?;
        Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
    };
    header_text("payment-signature")
        .map(|h| (2, h))
        .or_else(|| header_text("x-payment").map(|h| (1, h)))
}

/// `OPTIONS` on the paid routes: the CORS preflight.
pub fn paid_preflight() -> ApiResult {
    let mut response = hyper::Response::new(Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    headers.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "PAYMENT-SIGNATURE, X-PAYMENT, Access-Control-Expose-Headers, Content-Type",
        ),
    );
    headers.insert("access-control-max-age", HeaderValue::from_static("600"));
    Ok(x402_headers(response))
}

fn render(outcome: Result<Delivery, paid::Error>) -> Response {
    match outcome {
        Ok(Delivery::Settled(paid)) => settled(*paid),
        Ok(Delivery::Pending(pending)) => undecided(&pending),
        Err(paid::Error::Refused(refusal)) => {
            let required = header::encode(&refusal.payment_required);
            let receipt = refusal.receipt.clone().map(|r| (refusal.version, r));
            let mut response = ApiError::from(paid::Error::Refused(refusal)).response();
            if let Ok(value) = HeaderValue::from_str(&required) {
                response.headers_mut().insert("payment-required", value);
            }
            if let Some((version, receipt)) = receipt {
                put_receipt(&mut response, version, &receipt);
            }
            response
        }
        Err(err) => ApiError::from(err).response(),
    }
}

/// 200: the reply of a settled turn and its receipt header.
fn settled(paid: Paid) -> Response {
    let execution = &paid.execution;
    let document = json!({
        "response": execution.response.clone().unwrap_or_default(),
        "session_id": execution.session_id,
        "execution_id": execution.id,
        "payment": {
            "payer": paid.receipt["payer"],
            "transaction": paid.receipt["transaction"],
            "network": paid.receipt["network"],
        },
    });
    let mut response = body::json(StatusCode::OK, &document);
    put_receipt(&mut response, paid.version, &paid.receipt);
    response
}

/// How long a payer should wait before asking for an undecided receipt again, in seconds.
const RECEIPT_RETRY_AFTER_SECONDS: u64 = 10;

/// 202: the turn ran, its settlement is undecided; no reply text, no new challenge (paying
/// again could charge twice), and where to collect the outcome.
fn undecided(pending: &Pending) -> Response {
    let document = json!({
        "status": "settlement_pending",
        "receipt_id": pending.receipt_id,
        "receipt_url": format!("/api/paid/{}/receipts/{}", pending.agent, pending.receipt_id),
        "execution_id": pending.receipt_id,
        "session_id": pending.session_id,
        "message": pending.detail,
    });
    let mut response = body::json(StatusCode::ACCEPTED, &document);
    response.headers_mut().insert(
        hyper::header::RETRY_AFTER,
        HeaderValue::from(RECEIPT_RETRY_AFTER_SECONDS),
    );
    response
}

/// The receipt header of the client's protocol version.
fn put_receipt(response: &mut Response, version: u8, receipt: &serde_json::Value) {
    let name = if version == 1 {
        "x-payment-response"
    } else {
        "payment-response"
    };
    if let Ok(value) = HeaderValue::from_str(&header::encode(receipt)) {
        response.headers_mut().insert(name, value);
    }
}

fn x402_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    headers.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE"),
    );
    response
}

/// The absolute URL of the agent's paid chat route: under `server.public_url` when set,
/// else as the client addressed this box.
fn resource_url(app: &App, request: &Request<Incoming>, name: &str) -> String {
    let path = format!("/api/paid/{name}/chat");
    if let Some(public) = &app.config().public_url {
        return format!("{}{path}", public.trim_end_matches('/'));
    }
    let scheme = if app.config().tls == Tls::Off {
        "http"
    } else {
        "https"
    };
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))
        .filter(|h| {
            h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| app.config().listen[0].to_string());
    format!("{scheme}://{host}{path}")
}
