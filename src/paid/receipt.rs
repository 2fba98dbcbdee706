//! Receipts: a paid turn whose settlement had no definite answer is collected later at
//! `GET /api/paid/{agent}/receipts/{id}`, authorised by the same payment header (its signature
//! and nonce must match the ones the turn was paid with; the id alone is never enough). The id
//! is the turn's execution id, or the payment's nonce for a payer who never got an answer.
//! A receipt still owed is settled again on redemption, at most once per interval.

use super::settle::pending;
use super::turn::{payment_key, proof_of, Delivery, Paid};
use super::{header, Error, Offer, Paywall};
use crate::evm::{parse_bytes32, Address};
use crate::ids::{AgentName, ExecutionId};
use crate::records::{Execution, ExecutionKind, ExecutionStatus, Failure};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// The least time between two settlement attempts of one payment asked for by its payer.
pub(super) const RETRY_INTERVAL: Duration = Duration::from_secs(10);

/// A receipt redemption as the handler read it.
pub struct ReceiptRequest {
    pub agent: AgentName,
    /// The absolute URL of the agent's paid chat route, for the offer.
    pub resource: String,
    pub receipt_id: ExecutionId,
    /// The payment header the turn was paid with, and its protocol version.
    pub payment: Option<(u8, String)>,
}

impl Paywall {
    /// The outcome of the paid turn `receipt_id` for the payer who proves the payment.
    pub async fn receipt(&self, request: ReceiptRequest) -> Result<Delivery, Error> {
        let offer = self.offer(&request.agent, &request.resource)?;
        let (version, payer, execution) = self.redeemable(&offer, &request).await?;
        if execution.status.is_final() && execution.status != ExecutionStatus::Success {
            return Err(Error::TurnFailed {
                timed_out: execution.why_failed() == Some(Failure::Timeout),
                execution_id: execution.id,
            });
        }
        let mut execution = execution;
        if state_of(&execution) == "needs_reconciliation" {
            execution = self.settle_again(execution).await?;
        }
        let payment = execution.payment.clone().unwrap_or_default();
        match state_of(&execution) {
            "settled" => Ok(Delivery::Settled(Box::new(Paid {
                receipt: json!({
                    "success": true,
                    "transaction": payment["transaction"],
                    "network": offer.network_name(version),
                    "payer": payer.checksummed(),
                }),
                execution,
                version,
            }))),
            "failed" => {
                let reason = payment["error"].as_str().unwrap_or("settlement_failed");
                let message = "the payment was not settled and the reply is not released";
                let (reason, message) = (reason.to_string(), message.to_string());
                Err(self.withheld(&offer, version, payer, &execution, reason, message))
            }
            "needs_reconciliation" => {
                let why = payment["error"].as_str().unwrap_or("no answer").to_string();
                Ok(Delivery::Pending(pending(&execution, why)))
            }
            _ => {
                let why = "the turn or its settlement is still under way".to_string();
                Ok(Delivery::Pending(pending(&execution, why)))
            }
        }
    }

    /// The paid execution `receipt_id` of the agent, when the header proves its payment:
    /// the same payer, nonce and signature. Anything else is `ReceiptNotFound`, whatever
    /// the reason, so that probing tells nothing.
    async fn redeemable(
        &self,
        offer: &Offer,
        request: &ReceiptRequest,
    ) -> Result<(u8, Address, Execution), Error> {
        let (version, header_value) = request.payment.as_ref().ok_or(Error::ReceiptNotFound)?;
        let by_nonce = request
            .receipt_id
            .starts_with("0x")
            .then(|| parse_bytes32(&request.receipt_id))
            .flatten();
        if by_nonce.is_none() && !crate::ids::looks_like_id(&request.receipt_id) {
            return Err(Error::ReceiptNotFound);
        }
        let payment = header::decode(header_value).map_err(|_| Error::ReceiptNotFound)?;
        let proof = proof_of(&payment).ok_or(Error::ReceiptNotFound)?;
        let authorization = &payment["payload"]["authorization"];
        let payer = text(authorization, "from").and_then(Address::parse);
        let nonce = text(authorization, "nonce").and_then(parse_bytes32);
        let id = match (by_nonce, payer, nonce) {
            (None, _, _) => request.receipt_id.clone(),
            (Some(named), Some(payer), Some(nonce)) if named == nonce => {
                let key = payment_key(offer, &payer, &nonce);
                let claim = self.inner.store.read(move |r| r.nonce_claim(&key)).await?;
                claim
                    .and_then(|c| c.execution_id)
                    .ok_or(Error::ReceiptNotFound)?
            }
            _ => return Err(Error::ReceiptNotFound),
        };
        let execution = self.inner.store.read(move |r| r.execution(&id)).await?;
        let execution = execution
            .filter(|e| e.kind == ExecutionKind::Paid && e.agent == request.agent)
            .ok_or(Error::ReceiptNotFound)?;
        let record = execution.payment.as_ref().ok_or(Error::ReceiptNotFound)?;
        let recorded_payer = text(record, "payer").and_then(Address::parse);
        let matches = payer.is_some()
            && payer == recorded_payer
            && nonce.is_some()
            && nonce == text(record, "nonce").and_then(parse_bytes32)
            && Some(proof) == text(record, "proof").and_then(parse_bytes32);
        match (matches, payer) {
            (true, Some(payer)) => Ok((*version, payer, execution)),
            _ => Err(Error::ReceiptNotFound),
        }
    }

    /// Sends a settlement still owed once more (unless one is in flight or was tried within
    /// [`RETRY_INTERVAL`]) and answers the execution as recorded afterwards. The attempt runs
    /// on a task the `Paywall` owns, so a payer who leaves cannot cut it halfway.
    async fn settle_again(&self, execution: Execution) -> Result<Execution, Error> {
        let id = execution.id.clone();
        let lookup = id.clone();
        let owed = self
            .inner
            .store
            .read(move |r| r.pending_settlement(&lookup))
            .await?;
        let config = self
            .paid_agent(&execution.agent)
            .ok()
            .and_then(|a| a.config.paid.clone());
        let (Some(owed), Some(config)) = (owed, config) else {
            return Ok(execution);
        };
        if !self.begin_attempt(&id, Instant::now()) {
            return Ok(execution);
        }
        let (done, outcome) = oneshot::channel();
        let this = self.clone();
        self.spawn(async move {
            let recorded = if this.now() > owed.valid_before {
                this.expire(&id).await
            } else {
                this.settle_owed(&id, &config, &owed.body)
                    .await
                    .map(|(recorded, _)| recorded)
            };
            this.end_attempt(&id, Instant::now());
            let _ = done.send(recorded);
        });
        match outcome.await {
            Ok(Ok(Some(recorded))) => Ok(recorded),
            Ok(Ok(None)) | Err(_) => Ok(execution),
            Ok(Err(err)) => Err(err.into()),
        }
    }

    /// Marks a settlement attempt of `id` as started, unless one is in flight or the last one
    /// ended less than [`RETRY_INTERVAL`] ago.
    pub(super) fn begin_attempt(&self, id: &str, now: Instant) -> bool {
        let mut attempts = crate::sync::lock(&self.inner.attempts);
        attempts.retain(|_, ended| ended.is_none_or(|at| now.duration_since(at) < RETRY_INTERVAL));
        if attempts.contains_key(id) {
            return false;
        }
        attempts.insert(id.to_string(), None);
        true
    }

    /// Marks the attempt of `id` as ended at `now`.
    pub(super) fn end_attempt(&self, id: &str, now: Instant) {
        crate::sync::lock(&self.inner.attempts).insert(id.to_string(), Some(now));
    }
}

/// The payment state of an execution (`claimed`, `settled`, `failed`, `needs_reconciliation`).
fn state_of(execution: &Execution) -> &str {
    execution
        .payment
        .as_ref()
        .and_then(|p| p["state"].as_str())
        .unwrap_or("")
}

fn text<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}
