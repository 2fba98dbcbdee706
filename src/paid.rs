//! Paid chat over x402: the offer (`/info` and the 402 challenge), local verification of
//! payments, replay protection in the store, and settlement through the facilitator.
//!
//! Order of a paid turn, never otherwise: verify locally → claim the nonce in the store →
//! run the turn (an execution of kind `paid`) → settle → only then hand over the reply.
//! A failed turn is never settled; a failed settlement withholds the reply.

mod budget;
pub mod eip712;
pub mod facilitator;
pub mod header;
pub mod offer;
mod receipt;
mod settle;
mod turn;
pub mod verify;

pub use offer::Offer;
pub use receipt::ReceiptRequest;
pub use turn::{Delivery, Paid, PaidTurn, Pending};

use crate::agents::{self, Agent, Agents};
use crate::store::{self, Store};
use crate::turns::{self, Turns};
use facilitator::Facilitator;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::task::JoinSet;

/// Why a payment was refused: the x402 error code of the 402.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    PaymentRequired,
    InvalidPayload,
    InvalidRequirements,
    UnsupportedScheme,
    RecipientMismatch,
    ValueMismatch,
    ValidAfter,
    ValidBefore,
    Signature,
    NonceUsed,
    RejectedByFacilitator,
    FacilitatorUnavailable,
    SettlementFailed,
}

impl Reason {
    /// The stable code, as x402 clients know it.
    pub fn code(self) -> &'static str {
        match self {
            Reason::PaymentRequired => "payment_required",
            Reason::InvalidPayload => "invalid_payload",
            Reason::InvalidRequirements => "invalid_payment_requirements",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::RecipientMismatch => "invalid_exact_evm_payload_recipient_mismatch",
            Reason::ValueMismatch => "invalid_exact_evm_payload_authorization_value_mismatch",
            Reason::ValidAfter => "invalid_exact_evm_payload_authorization_valid_after",
            Reason::ValidBefore => "invalid_exact_evm_payload_authorization_valid_before",
            Reason::Signature => "invalid_exact_evm_payload_signature",
            Reason::NonceUsed => "invalid_exact_evm_nonce_already_used",
            Reason::RejectedByFacilitator => "payment_rejected",
            Reason::FacilitatorUnavailable => "facilitator_unavailable",
            Reason::SettlementFailed => "settlement_failed",
        }
    }
}

/// A 402 answer: why, a fresh challenge in both protocol versions, and a failure receipt
/// when a settlement failed.
#[derive(Debug)]
pub struct Refusal {
    pub reason: Reason,
    pub detail: String,
    /// The protocol version the client used (2 when it sent no payment).
    pub version: u8,
    /// The JSON of the `PAYMENT-REQUIRED` header.
    pub payment_required: Value,
    /// The `accepts` list of the v1 body.
    pub accepts_v1: Value,
    /// `{"success": false, …}` for the receipt header, after a failed settlement.
    pub receipt: Option<Value>,
    pub execution_id: Option<crate::ids::ExecutionId>,
}

/// What can go wrong on the paid routes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agent not found")]
    NotFound,
    #[error("session not found")]
    SessionNotFound,
    /// No such receipt, or the payment header does not prove its payment.
    #[error("receipt not found")]
    ReceiptNotFound,
    #[error("{}", .0.detail)]
    Refused(Box<Refusal>),
    #[error("the agent could not finish this turn; you were not charged")]
    TurnFailed {
        execution_id: crate::ids::ExecutionId,
        timed_out: bool,
    },
    #[error("this agent runs as many turns as it may before they are paid for; try again later")]
    UnpaidCap { retry_after: u64 },
    #[error("the daemon is stopping; you were not charged unless a receipt says so")]
    Interrupted,
    #[error(transparent)]
    Agent(#[from] agents::Error),
    #[error(transparent)]
    Turn(#[from] turns::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Unix seconds now; injectable so tests can move time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock as a [`Clock`].
pub fn system_clock() -> Clock {
    Arc::new(|| crate::clock::Timestamp::now().unix_seconds().max(0) as u64)
}

/// Cheap-clone handle to the paid-chat service.
#[derive(Clone)]
pub struct Paywall {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    turns: Turns,
    agents: Arc<Agents>,
    facilitator: Facilitator,
    clock: Clock,
    /// Turns waiting for their end and settlement: they outlive the request that started
    /// them, so a client that leaves cannot stop a settlement halfway.
    settlements: Mutex<JoinSet<()>>,
    /// Places of turns run without the facilitator's `/verify`, per agent.
    unverified: budget::Budget,
    /// Owed settlements sent again (at start or on redemption), by execution id: `None`
    /// while in flight, else when the last attempt ended. One payment is never sent twice
    /// at once.
    attempts: Mutex<HashMap<String, Option<Instant>>>,
}

impl Paywall {
    pub fn new(store: Store, turns: Turns, agents: Arc<Agents>, clock: Clock) -> Paywall {
        Paywall {
            inner: Arc::new(Inner {
                store,
                turns,
                agents,
                facilitator: Facilitator::default(),
                clock,
                settlements: Mutex::new(JoinSet::new()),
                attempts: Mutex::new(HashMap::new()),
                unverified: budget::Budget::default(),
            }),
        }
    }

    /// The agent `name` when it takes payments; else `NotFound`, as for no agent at all.
    fn paid_agent(&self, name: &str) -> Result<Arc<Agent>, Error> {
        self.inner
            .agents
            .get(name)
            .filter(|a| a.config.paid.is_some())
            .ok_or(Error::NotFound)
    }

    /// The offer of agent `name` for the route at `resource` (an absolute URL).
    pub fn offer(&self, name: &str, resource: &str) -> Result<Offer, Error> {
        let agent = self.paid_agent(name)?;
        Ok(Offer {
            agent: agent.name().to_string(),
            config: agent.config.paid.clone().expect("paid_agent checked"),
            resource: resource.to_string(),
        })
    }

    /// `GET /api/paid/{agent}/info`.
    pub fn info(&self, name: &str, resource: &str) -> Result<Value, Error> {
        Ok(self.offer(name, resource)?.info())
    }

    fn now(&self) -> u64 {
        (self.inner.clock)()
    }

    fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = crate::sync::lock(&self.inner.settlements);
        while set.try_join_next().is_some() {}
        set.spawn(work);
    }

    /// Waits for settlements in flight until `deadline`; those cut short stay owed in the
    /// store and are taken up at the next start.
    pub async fn drain(&self, deadline: tokio::time::Instant) {
        let mut set = std::mem::take(&mut *crate::sync::lock(&self.inner.settlements));
        let _ =
            tokio::time::timeout_at(deadline, async { while set.join_next().await.is_some() {} })
                .await;
        set.abort_all();
    }
}

/// A 402 with a fresh challenge.
fn refusal(offer: &Offer, reason: Reason, detail: impl Into<String>, version: u8) -> Error {
    Error::Refused(Box::new(Refusal {
        reason,
        detail: detail.into(),
        version,
        payment_required: offer.payment_required(reason.code()),
        accepts_v1: offer.v1_accepts(),
        receipt: None,
        execution_id: None,
    }))
}
