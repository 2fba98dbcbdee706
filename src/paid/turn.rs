//! One paid turn up to its start: request checks, local verification (on the blocking pool),
//! the session's payer, the nonce claim, the optional facilitator `/verify`, and the turn,
//! whose end and settlement then run on a task of their own.

use super::facilitator::Verdict;
use super::verify::{verify, Verified};
use super::{refusal, Error, Offer, Paywall, Reason};
use crate::evm::hex;
use crate::ids::{AgentName, ExecutionId, SessionId};
use crate::records::{Execution, ExecutionKind, Session, SessionStatus};
use crate::store::{NonceClaim, PendingSettlement};
use crate::turns::{self, AdmitHook, Payment, SessionPolicy, Started, TurnRequest};
use serde_json::{json, Value};
use std::time::Instant;
use tokio::sync::oneshot;

/// How long a nonce claim outlives its authorization's `validBefore`.
const NONCE_MARGIN_SECONDS: u64 = 3600;
/// The start of every paid visitor's username; real usernames never contain ':'.
pub(super) const VISITOR_PREFIX: &str = "paid:";

/// A paid chat request as the handler read it.
pub struct PaidTurn {
    pub agent: String,
    /// The absolute URL of the route, for the offer.
    pub resource: String,
    pub message: String,
    pub session_id: Option<SessionId>,
    /// The payment header and the protocol version its name implies (2 for
    /// `PAYMENT-SIGNATURE`, 1 for `X-PAYMENT`).
    pub payment: Option<(u8, String)>,
}

/// A settled turn.
#[derive(Debug)]
pub struct Paid {
    pub execution: Execution,
    /// `{"success": true, "transaction", "network", "payer"}`.
    pub receipt: Value,
    pub version: u8,
}

/// How a paid turn that ran reaches its payer.
#[derive(Debug)]
pub enum Delivery {
    /// Settled: the reply and its receipt.
    Settled(Box<Paid>),
    /// The facilitator gave no definite answer, so the transfer may still happen: the payer
    /// must not pay again, and collects the reply (or the news that it was never settled)
    /// at `GET /api/paid/{agent}/receipts/{receipt_id}` with the same payment header.
    Pending(Pending),
}

/// A turn whose settlement is not decided yet.
#[derive(Debug)]
pub struct Pending {
    pub agent: AgentName,
    /// The receipt id: the execution's id.
    pub receipt_id: ExecutionId,
    pub session_id: Option<SessionId>,
    /// Why it is not decided, for people.
    pub detail: String,
}

impl Paywall {
    /// Runs one paid turn: the reply comes back only once its payment is settled.
    pub async fn chat(&self, request: PaidTurn) -> Result<Delivery, Error> {
        let agent = self.paid_agent(&request.agent)?;
        let offer = self.offer(&request.agent, &request.resource)?;
        turns::check_message(ExecutionKind::Paid, &request.message)?;
        agent.require_running()?;
        let session = match &request.session_id {
            Some(id) => Some(self.visitor_session(agent.name(), id).await?),
            None => None,
        };
        let Some((version, header)) = request.payment else {
            let detail = format!(
                "a turn with {} costs {} atomic units of {} on {}: pay with PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (v1)",
                agent.name(),
                offer.config.price,
                offer.config.network.asset,
                offer.config.network.id
            );
            return Err(refusal(&offer, Reason::PaymentRequired, detail, 2));
        };
        let now = self.now();
        let verified = {
            let offer = offer.clone();
            tokio::task::spawn_blocking(move || verify(&header, &offer, now))
                .await
                .map_err(|_| Error::Interrupted)?
        };
        let verified =
            verified.map_err(|(reason, detail)| refusal(&offer, reason, detail, version))?;
        let visitor = format!("{VISITOR_PREFIX}0x{}:", hex(&verified.payer.0));
        if session
            .as_ref()
            .is_some_and(|s| !s.username.starts_with(&visitor))
        {
            return Err(Error::SessionNotFound);
        }
        let key = nonce_key(&offer, &verified);
        let claim = NonceClaim {
            agent: agent.name().into(),
            expires_at: verified.valid_before + NONCE_MARGIN_SECONDS,
            execution_id: None,
        };
        let claim_key = key.clone();
        let claimed = self
            .inner
            .store
            .write(move |tx| tx.claim_nonce(&claim_key, &claim, now))
            .await?;
        let (payer, nonce) = (
            verified.payer.checksummed(),
            format!("0x{}", hex(&verified.nonce)),
        );
        if !claimed {
            tracing::info!(agent = %agent.name(), %payer, %nonce, "payment refused: nonce already used");
            let detail = "this authorization was used already; sign a new one";
            return Err(refusal(&offer, Reason::NonceUsed, detail, version));
        }
        tracing::info!(agent = %agent.name(), %payer, %nonce, value = %offer.config.price, "payment verified and claimed");
        let body = json!({
            "x402Version": verified.version,
            "paymentPayload": verified.payload,
            "paymentRequirements": verified.requirement,
        });
        if offer.config.verify_with_facilitator {
            let refused = match self.inner.facilitator.verify(&offer.config, &body).await {
                Verdict::Valid => None,
                Verdict::Invalid(why) => Some((Reason::RejectedByFacilitator, why)),
                Verdict::Unavailable(why) => Some((Reason::FacilitatorUnavailable, why)),
            };
            if let Some((reason, why)) = refused {
                self.release(key).await;
                let detail = format!("the facilitator did not accept the payment: {why}");
                return Err(refusal(&offer, reason, detail, version));
            }
        }
        // Without the facilitator's word on funds, the turn may go unpaid: only so many a
        // minute may, for the agent as a whole (fresh keys cost nothing).
        let place = if offer.config.verify_with_facilitator {
            None
        } else {
            let limit = offer.config.unverified_turns_per_minute;
            match self
                .inner
                .unverified
                .take(agent.name(), limit, Instant::now())
            {
                Ok(place) => Some(place),
                Err(wait) => {
                    self.release(key).await;
                    tracing::warn!(agent = %agent.name(), %payer, "unverified paid turn refused: unpaid-work cap reached");
                    return Err(Error::UnpaidCap {
                        retry_after: wait.as_secs().max(1),
                    });
                }
            }
        };
        let username = match session {
            Some(session) => session.username,
            None => format!("{visitor}{}", crate::ids::new_id()),
        };
        let mut pending = PendingSettlement {
            agent: agent.name().into(),
            valid_before: verified.valid_before,
            body: body.clone(),
            resume_before: None,
            resume: None,
        };
        let paid_key = key.clone();
        let owe: AdmitHook = Box::new(move |tx, execution| {
            if let Some(session_id) = &execution.session_id {
                pending.resume_before = tx.engine_state(session_id)?;
            }
            tx.put_pending_settlement(&execution.id, &pending)?;
            // The payment names its turn, so a payer who never got an answer finds it.
            tx.attach_nonce_execution(&paid_key, &execution.id)
        });
        let mut turn = TurnRequest::new(
            agent.clone(),
            username,
            request.message,
            ExecutionKind::Paid,
            SessionPolicy::asked(request.session_id, false),
        );
        turn.payment = Some(Payment {
            record: payment_record(&offer, &verified),
            on_admit: owe,
        });
        let started = self.inner.turns.start(turn).await;
        let live = match started {
            Ok(Started::Live { live, .. }) => live,
            Ok(Started::Replay(_)) => unreachable!("paid turns carry no idempotency key"),
            Err(err) => {
                // Refused before any work: the authorization may be used again.
                self.release(key).await;
                if let Some(place) = place {
                    self.inner.unverified.give_back(place);
                }
                return Err(err.into());
            }
        };
        let (done, outcome) = oneshot::channel();
        let this = self.clone();
        let payer = verified.payer;
        self.spawn(async move {
            let outcome = this.finish(live, offer, version, payer, body).await;
            if let (Ok(Delivery::Settled(_)), Some(place)) = (&outcome, place) {
                this.inner.unverified.give_back(place);
            }
            let _ = done.send(outcome);
        });
        outcome.await.unwrap_or(Err(Error::Interrupted))
    }

    /// The paid visitor session `id` of `agent`: one Outpost minted for a paid turn.
    async fn visitor_session(&self, agent: &str, id: &str) -> Result<Session, Error> {
        if !crate::ids::looks_like_id(id) {
            return Err(Error::SessionNotFound);
        }
        let lookup = id.to_string();
        let session = self.inner.store.read(move |r| r.session(&lookup)).await?;
        match session {
            Some(s) if s.agent_name == agent && s.username.starts_with(VISITOR_PREFIX) => {
                if s.status == SessionStatus::Closed {
                    return Err(turns::Error::SessionClosed.into());
                }
                Ok(s)
            }
            _ => Err(Error::SessionNotFound),
        }
    }

    async fn release(&self, key: Vec<u8>) {
        if let Err(err) = self
            .inner
            .store
            .write(move |tx| tx.release_nonce(&key))
            .await
        {
            tracing::error!(cause = %err, "releasing a payment nonce failed; it stays used");
        }
    }
}

/// The replay key: chain id ‖ asset ‖ payer ‖ nonce, all as bytes.
fn nonce_key(offer: &Offer, verified: &Verified) -> Vec<u8> {
    payment_key(offer, &verified.payer, &verified.nonce)
}

/// The replay key of the payment by `payer` with `nonce`.
pub(super) fn payment_key(offer: &Offer, payer: &crate::evm::Address, nonce: &[u8; 32]) -> Vec<u8> {
    let network = &offer.config.network;
    let mut key = Vec::with_capacity(80);
    key.extend_from_slice(&network.chain_id.to_be_bytes());
    key.extend_from_slice(&network.asset.0);
    key.extend_from_slice(&payer.0);
    key.extend_from_slice(nonce);
    key
}

/// The payment as the execution record shows it, from the claim on.
fn payment_record(offer: &Offer, verified: &Verified) -> Value {
    let config = &offer.config;
    json!({
        "scheme": "exact",
        "x402_version": verified.version,
        "payer": verified.payer.checksummed(),
        "amount": config.price,
        "asset": config.network.asset.checksummed(),
        "network": config.network.id,
        "pay_to": config.pay_to.checksummed(),
        "nonce": format!("0x{}", hex(&verified.nonce)),
        "proof": proof_of(&verified.payload).map(|p| format!("0x{}", hex(&p))),
        "valid_before": verified.valid_before,
        "state": "claimed",
        "transaction": null,
        "error": null,
    })
}

/// What redeeming a receipt must show: keccak256 of the payment's signature bytes. Only the
/// payer (and the facilitator it was sent to) holds the signature before it settles, and the
/// receipt id it goes with is never on chain.
pub(super) fn proof_of(payment: &Value) -> Option<[u8; 32]> {
    let signature = payment["payload"]["signature"].as_str()?;
    let bytes = crate::evm::hex_bytes(signature)?;
    Some(super::eip712::keccak(&[&bytes]))
}
