//! After the turn: a failed turn is never settled; a finished one is settled through the
//! facilitator and its payment state recorded with the execution before the reply goes out.
//! A settlement without a definite answer stays owed and its payer gets a receipt to redeem;
//! at start, settlements still owed from the last run are reconciled.

use super::facilitator::Settlement;
use super::turn::{Delivery, Paid, Pending};
use super::{Error, Offer, Paywall, Reason, Refusal};
use crate::config::PaidConfig;
use crate::evm::Address;
use crate::executions::Live;
use crate::records::{Execution, ExecutionStatus, Failure};
use crate::store;
use serde_json::{json, Value};
use std::sync::Arc;

/// The answer for a turn whose settlement is not decided.
pub(super) fn pending(execution: &Execution, why: String) -> Pending {
    Pending {
        agent: execution.agent.clone(),
        receipt_id: execution.id.clone(),
        session_id: execution.session_id.clone(),
        detail: format!(
            "the facilitator has not confirmed the settlement ({why}); do not pay again: the reply is released at the receipt once the payment settles"
        ),
    }
}

/// A settled turn's engine handle becomes the session's, unless a later turn moved the
/// session on meanwhile (then its conversation stays where it is).
fn release_resume(
    tx: &store::Tx<'_>,
    execution: &Execution,
    owed: Option<store::PendingSettlement>,
) -> Result<(), store::Error> {
    let (Some(owed), Some(session_id)) = (owed, &execution.session_id) else {
        return Ok(());
    };
    let Some(handle) = &owed.resume else {
        return Ok(());
    };
    if tx.engine_state(session_id)? == owed.resume_before {
        tx.set_engine_state(session_id, Some(handle))?;
    }
    Ok(())
}

/// Where a payment stands, as the execution record shows it.
struct State {
    name: &'static str,
    transaction: Option<String>,
    error: Option<String>,
    /// Whether the settlement stays owed (to be tried again at the next start).
    owed: bool,
}

impl State {
    fn of(settlement: &Settlement) -> State {
        match settlement {
            Settlement::Settled { transaction, .. } => State {
                name: "settled",
                transaction: Some(transaction.clone()),
                error: None,
                owed: false,
            },
            Settlement::Refused { reason, .. } => State::failed(reason.clone()),
            Settlement::Unavailable(why) => State {
                name: "needs_reconciliation",
                transaction: None,
                error: Some(format!("facilitator_unavailable: {why}")),
                owed: true,
            },
        }
    }

    fn failed(error: String) -> State {
        State {
            name: "failed",
            transaction: None,
            error: Some(error),
            owed: false,
        }
    }
}

impl Paywall {
    /// Waits for the turn, settles it if it succeeded, and answers for the client.
    pub(super) async fn finish(
        &self,
        live: Arc<Live>,
        offer: Offer,
        version: u8,
        payer: Address,
        body: Value,
    ) -> Result<Delivery, Error> {
        let execution = live.finished().await;
        if execution.status != ExecutionStatus::Success {
            let why = format!("turn_{}", execution.status.as_str());
            self.record(&execution.id, State::failed(why)).await?;
            return Err(Error::TurnFailed {
                timed_out: execution.why_failed() == Some(Failure::Timeout),
                execution_id: execution.id,
            });
        }
        let (recorded, settlement) = self
            .settle_owed(&execution.id, &offer.config, &body)
            .await?;
        let execution = recorded.unwrap_or(execution);
        let network = offer.network_name(version).to_string();
        match settlement {
            Settlement::Settled {
                transaction,
                network: settled_on,
                ..
            } => Ok(Delivery::Settled(Box::new(Paid {
                receipt: json!({
                    "success": true,
                    "transaction": transaction,
                    "network": settled_on.unwrap_or(network),
                    "payer": payer.checksummed(),
                }),
                execution,
                version,
            }))),
            Settlement::Refused { reason, message } => {
                Err(self.withheld(&offer, version, payer, &execution, reason, message))
            }
            // The transfer may still happen (or have happened): telling the payer to pay
            // again could charge them twice, so they get a receipt to collect the outcome.
            Settlement::Unavailable(why) => Ok(Delivery::Pending(pending(&execution, why))),
        }
    }

    /// The 402 of a turn whose settlement failed: a failure receipt and no reply text.
    pub(super) fn withheld(
        &self,
        offer: &Offer,
        version: u8,
        payer: Address,
        execution: &Execution,
        reason: String,
        message: String,
    ) -> Error {
        let detail = format!("the payment could not be settled ({reason}); the reply is withheld");
        Error::Refused(Box::new(Refusal {
            reason: Reason::SettlementFailed,
            payment_required: offer.payment_required(Reason::SettlementFailed.code()),
            accepts_v1: offer.v1_accepts(),
            receipt: Some(json!({
                "success": false,
                "errorReason": reason,
                "errorMessage": message,
                "transaction": "",
                "network": offer.network_name(version),
                "payer": payer.checksummed(),
            })),
            execution_id: Some(execution.id.clone()),
            detail,
            version,
        }))
    }

    /// Sends the owed settlement and records how it went with the execution.
    pub(super) async fn settle_owed(
        &self,
        execution_id: &str,
        config: &PaidConfig,
        body: &Value,
    ) -> Result<(Option<Execution>, Settlement), store::Error> {
        let settlement = self.inner.facilitator.settle(config, body).await;
        let state = State::of(&settlement);
        match &state.error {
            None => {
                tracing::info!(%execution_id, transaction = ?state.transaction, "payment settled")
            }
            Some(error) => {
                tracing::warn!(%execution_id, state = state.name, %error, "payment not settled")
            }
        }
        let recorded = self.record(execution_id, state).await?;
        Ok((recorded, settlement))
    }

    /// Records that an owed settlement's authorization ran out before it settled.
    pub(super) async fn expire(
        &self,
        execution_id: &str,
    ) -> Result<Option<Execution>, store::Error> {
        self.record(execution_id, State::failed("expired".into()))
            .await
    }

    /// Writes the payment state into the execution record (and drops the owed settlement
    /// unless it stays owed), in one commit.
    async fn record(
        &self,
        execution_id: &str,
        state: State,
    ) -> Result<Option<Execution>, store::Error> {
        let id = execution_id.to_string();
        let now = crate::clock::Timestamp::now();
        self.inner
            .store
            .write(move |tx| {
                let owed = tx.pending_settlement(&id)?;
                if !state.owed {
                    tx.remove_pending_settlement(&id)?;
                }
                let Some(mut execution) = tx.execution(&id)? else {
                    return Ok(None);
                };
                if state.name == "settled" {
                    release_resume(tx, &execution, owed)?;
                }
                let mut payment = execution.payment.take().unwrap_or_else(|| json!({}));
                payment["state"] = json!(state.name);
                payment["transaction"] = json!(state.transaction);
                payment["error"] = json!(state.error);
                payment["updated_at"] = json!(now);
                execution.payment = Some(payment);
                tx.put_execution(&execution)?;
                Ok(Some(execution))
            })
            .await
    }

    /// At start: every settlement still owed is taken up. A turn that did not succeed is
    /// marked failed and never settled; an expired authorization is marked failed; a
    /// finished turn is settled now, in the background. Returns how many are being settled.
    pub async fn reconcile(&self) -> Result<usize, Error> {
        let owed = self.inner.store.read(|r| r.pending_settlements()).await?;
        let now = self.now();
        let mut settling = 0;
        for (execution_id, pending) in owed {
            let id = execution_id.clone();
            let execution = match self.inner.store.read(move |r| r.execution(&id)).await {
                Ok(execution) => execution,
                Err(err @ crate::store::Error::Corrupt { .. }) => {
                    // Kept as owed: neither settled nor given up on a record we cannot read.
                    tracing::error!(%execution_id, cause = %err, "the turn of an owed settlement cannot be read; it is set aside");
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let status = execution.as_ref().map(|e| e.status);
            let config = self
                .paid_agent(&pending.agent)
                .ok()
                .and_then(|a| a.config.paid.clone());
            match (status, config) {
                (None, _) => {
                    self.inner
                        .store
                        .write(move |tx| tx.remove_pending_settlement(&execution_id))
                        .await?;
                }
                (Some(ExecutionStatus::Success), _) if now > pending.valid_before => {
                    self.expire(&execution_id).await?;
                }
                (Some(ExecutionStatus::Success), Some(config)) => {
                    tracing::warn!(%execution_id, "a paid turn ended without its settlement; settling it now");
                    let this = self.clone();
                    if !self.begin_attempt(&execution_id, std::time::Instant::now()) {
                        continue;
                    }
                    self.spawn(async move {
                        let settled = this.settle_owed(&execution_id, &config, &pending.body);
                        if let Err(err) = settled.await {
                            tracing::error!(cause = %err, "recording a settlement failed");
                        }
                        this.end_attempt(&execution_id, std::time::Instant::now());
                    });
                    settling += 1;
                }
                (Some(ExecutionStatus::Success), None) => {
                    tracing::warn!(%execution_id, agent = %pending.agent, "a settlement is owed but the agent takes no payments now; kept for later");
                }
                (Some(status), _) if status.is_final() => {
                    let why = format!("turn_{}", status.as_str());
                    self.record(&execution_id, State::failed(why)).await?;
                }
                (Some(_), _) => {}
            }
        }
        Ok(settling)
    }
}
