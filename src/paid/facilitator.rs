//! The facilitator client: `POST {facilitator_url}/settle` (and `/verify` when configured)
//! over the daemon's outbound client (`http://` or `https://`, see [`crate::outbound`]). A
//! reply that says `success` is an answer, whatever its status; anything else (no
//! connection, a timeout, a body without `success`) means the facilitator is unavailable.
//! `settlement_pending` is answered by one identical resend.

use crate::config::PaidConfig;
use crate::outbound::{self, Client, OutboundPolicy, Post};
use bytes::Bytes;
use hyper::header::AUTHORIZATION;
use hyper::Uri;
use serde_json::Value;
use std::time::Duration;

/// The most of a facilitator reply we read.
const MAX_REPLY_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How a settlement ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Settlement {
    /// The transfer is on chain.
    Settled {
        transaction: String,
        network: Option<String>,
        payer: Option<String>,
    },
    /// The facilitator answered that it did not settle.
    Refused { reason: String, message: String },
    /// No usable answer: the transfer may or may not have happened.
    Unavailable(String),
}

/// What `/verify` said.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Valid,
    Invalid(String),
    Unavailable(String),
}

/// Cheap-clone client, pooled across facilitators.
#[derive(Clone)]
pub struct Facilitator {
    client: Client,
}

impl Default for Facilitator {
    fn default() -> Self {
        Facilitator {
            client: Client::new(OutboundPolicy::Any, CONNECT_TIMEOUT),
        }
    }
}

impl Facilitator {
    /// Settles once, and once more with the identical body when the answer is
    /// `settlement_pending`.
    pub async fn settle(&self, config: &PaidConfig, body: &Value) -> Settlement {
        let body = Bytes::from(body.to_string());
        let first = self.settle_once(config, body.clone()).await;
        match first {
            Settlement::Refused { reason, .. } if reason == "settlement_pending" => {
                match self.settle_once(config, body).await {
                    Settlement::Refused { reason, .. } if reason == "settlement_pending" => {
                        Settlement::Unavailable("settlement still pending after a retry".into())
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    async fn settle_once(&self, config: &PaidConfig, body: Bytes) -> Settlement {
        let (ok, reply) = match self
            .post(config, "settle", body, config.settle_timeout)
            .await
        {
            Ok(reply) => reply,
            Err(why) => return Settlement::Unavailable(why),
        };
        let text = |name: &str| reply.get(name).and_then(Value::as_str).map(str::to_string);
        match reply.get("success").and_then(Value::as_bool) {
            Some(true) if ok => match text("transaction").filter(|t| !t.is_empty()) {
                Some(transaction) => Settlement::Settled {
                    transaction,
                    network: text("network"),
                    payer: text("payer"),
                },
                None => Settlement::Unavailable("a success without a transaction".into()),
            },
            Some(_) => Settlement::Refused {
                reason: text("errorReason").unwrap_or_else(|| "unexpected_settle_error".into()),
                message: text("errorMessage").unwrap_or_default(),
            },
            None => Settlement::Unavailable("a reply without success".into()),
        }
    }

    /// Asks the facilitator whether the payment is valid (only with `verify_with_facilitator`).
    pub async fn verify(&self, config: &PaidConfig, body: &Value) -> Verdict {
        let body = Bytes::from(body.to_string());
        let reply = match self
            .post(config, "verify", body, config.verify_timeout)
            .await
        {
            Ok((_, reply)) => reply,
            Err(why) => return Verdict::Unavailable(why),
        };
        match reply.get("isValid").and_then(Value::as_bool) {
            Some(true) => Verdict::Valid,
            Some(false) => Verdict::Invalid(
                reply
                    .get("invalidReason")
                    .and_then(Value::as_str)
                    .unwrap_or("invalid")
                    .to_string(),
            ),
            None => Verdict::Unavailable("a reply without isValid".into()),
        }
    }

    /// POSTs `body` to `{facilitator_url}/{path}` and returns whether the status was 2xx and
    /// the JSON object it answered (a failure reply may come with 4xx or 5xx).
    async fn post(
        &self,
        config: &PaidConfig,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(bool, Value), String> {
        let uri: Uri = format!("{}/{path}", config.facilitator_url)
            .parse()
            .map_err(|err| format!("facilitator url: {err}"))?;
        let mut post = Post::new(uri, "application/json", body);
        if let Some(auth) = &config.facilitator_auth_header {
            post = post.header(AUTHORIZATION, auth.0.as_str());
        }
        let reply = self
            .client
            .post(post, MAX_REPLY_BYTES, Some(timeout))
            .await
            .map_err(|err| match err {
                outbound::Error::Build(_) => format!("building the request: {err}"),
                outbound::Error::Send(_) => format!("facilitator unreachable: {err}"),
                outbound::Error::TimedOut(_) => {
                    format!("facilitator gave no answer within {timeout:?}")
                }
                outbound::Error::Read(_) | outbound::Error::TooLarge => {
                    format!("reading the facilitator's reply: {err}")
                }
            })?;
        match serde_json::from_slice::<Value>(&reply.body) {
            Ok(value @ Value::Object(_)) => Ok((reply.status.is_success(), value)),
            _ => Err(format!(
                "facilitator answered HTTP {} without JSON",
                reply.status
            )),
        }
    }
}
