//! Payment records: nonce claims (replay protection for x402 payments, kept until the
//! authorization's `validBefore` plus a margin) and settlements still owed for paid turns
//! (the body to send to the facilitator, by execution id, until the payment is final).

use super::tables::{PAYMENT_NONCES, PAYMENT_NONCE_EXPIRY, PENDING_SETTLEMENTS};
use super::{decode, encode, get_json, Error, Reader, Tx};
use crate::ids::AgentName;
use crate::records::{ExecutionKind, Message};
use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most expired claims dropped by one claim: pruning keeps pace without a long transaction.
const PRUNE_PER_CLAIM: usize = 64;

/// Who claimed a payment nonce, and until when the claim is kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NonceClaim {
    pub agent: AgentName,
    /// Unix seconds after which the claim may be dropped.
    pub expires_at: u64,
    /// The paid turn the payment went to, once it was accepted: its receipt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<crate::ids::ExecutionId>,
}

/// A settlement owed for a paid turn.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingSettlement {
    pub agent: AgentName,
    /// The authorization's `validBefore` (unix seconds): no settlement after it.
    pub valid_before: u64,
    /// The exact body for `POST /settle`.
    pub body: Value,
    /// The session's engine handle when the turn was admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_before: Option<String>,
    /// The engine handle the turn ended with, held back until the payment settles: resuming
    /// from it would hand the withheld reply to the next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<String>,
}

fn expiry_key(expires_at: u64, nonce_key: &[u8]) -> Vec<u8> {
    let mut key = expires_at.to_be_bytes().to_vec();
    key.extend_from_slice(nonce_key);
    key
}

impl Tx<'_> {
    /// Claims a payment nonce (an opaque key) unless a live claim holds it. Returns whether
    /// this call claimed it. Drops some expired claims on the way.
    pub fn claim_nonce(&self, key: &[u8], claim: &NonceClaim, now: u64) -> Result<bool, Error> {
        let mut nonces = self.txn.open_table(PAYMENT_NONCES)?;
        let mut expiry = self.txn.open_table(PAYMENT_NONCE_EXPIRY)?;
        let existing: Option<NonceClaim> = match nonces.get(key)? {
            Some(value) => Some(decode("payment_nonces", value.value())?),
            None => None,
        };
        if existing.as_ref().is_some_and(|c| c.expires_at >= now) {
            return Ok(false);
        }
        let expired: Vec<Vec<u8>> = {
            let end = expiry_key(now, &[]);
            let mut keys = Vec::new();
            for entry in expiry.range(..end.as_slice())?.take(PRUNE_PER_CLAIM) {
                keys.push(entry?.0.value().to_vec());
            }
            keys
        };
        for old in expired {
            expiry.remove(old.as_slice())?;
            nonces.remove(&old[8..])?;
        }
        if let Some(old) = existing {
            expiry.remove(expiry_key(old.expires_at, key).as_slice())?;
        }
        nonces.insert(key, encode(claim).as_slice())?;
        expiry.insert(expiry_key(claim.expires_at, key).as_slice(), ())?;
        Ok(true)
    }

    /// Records which execution a claimed nonce paid for (in the turn's creation commit).
    pub fn attach_nonce_execution(&self, key: &[u8], execution_id: &str) -> Result<(), Error> {
        let mut nonces = self.txn.open_table(PAYMENT_NONCES)?;
        let claim: Option<NonceClaim> = match nonces.get(key)? {
            Some(value) => Some(decode("payment_nonces", value.value())?),
            None => None,
        };
        if let Some(mut claim) = claim {
            claim.execution_id = Some(execution_id.into());
            nonces.insert(key, encode(&claim).as_slice())?;
        }
        Ok(())
    }

    /// Gives a claimed nonce back (the payment was refused before any work).
    pub fn release_nonce(&self, key: &[u8]) -> Result<(), Error> {
        let mut nonces = self.txn.open_table(PAYMENT_NONCES)?;
        let removed: Option<NonceClaim> = match nonces.remove(key)? {
            Some(value) => Some(decode("payment_nonces", value.value())?),
            None => None,
        };
        if let Some(claim) = removed {
            self.txn
                .open_table(PAYMENT_NONCE_EXPIRY)?
                .remove(expiry_key(claim.expires_at, key).as_slice())?;
        }
        Ok(())
    }

    pub fn put_pending_settlement(
        &self,
        execution_id: &str,
        pending: &PendingSettlement,
    ) -> Result<(), Error> {
        self.txn
            .open_table(PENDING_SETTLEMENTS)?
            .insert(execution_id, encode(pending).as_slice())?;
        Ok(())
    }

    /// The settlement owed for `execution_id`, read inside this transaction.
    pub fn pending_settlement(
        &self,
        execution_id: &str,
    ) -> Result<Option<PendingSettlement>, Error> {
        get_json(
            &self.txn.open_table(PENDING_SETTLEMENTS)?,
            "pending_settlements",
            execution_id,
        )
    }

    /// Holds a paid turn's engine handle with its owed settlement; false when none is owed.
    pub fn hold_paid_resume(&self, execution_id: &str, handle: &str) -> Result<bool, Error> {
        let Some(mut owed) = self.pending_settlement(execution_id)? else {
            return Ok(false);
        };
        owed.resume = Some(handle.to_string());
        self.put_pending_settlement(execution_id, &owed)?;
        Ok(true)
    }

    pub fn remove_pending_settlement(&self, execution_id: &str) -> Result<(), Error> {
        self.txn
            .open_table(PENDING_SETTLEMENTS)?
            .remove(execution_id)?;
        Ok(())
    }

    /// Payment records of a deleted agent: settlements owed for its executions and its nonce
    /// claims. Returns how many went.
    pub(super) fn delete_payments_of(
        &self,
        agent: &str,
        execution_ids: &[String],
    ) -> Result<u64, Error> {
        let mut removed = 0;
        {
            let mut pending = self.txn.open_table(PENDING_SETTLEMENTS)?;
            for id in execution_ids {
                removed += u64::from(pending.remove(id.as_str())?.is_some());
            }
        }
        let mut nonces = self.txn.open_table(PAYMENT_NONCES)?;
        let mut doomed = Vec::new();
        for entry in nonces.iter()? {
            let (key, value) = entry?;
            let claim: NonceClaim = decode("payment_nonces", value.value())?;
            if claim.agent == agent {
                doomed.push((key.value().to_vec(), claim.expires_at));
            }
        }
        let mut expiry = self.txn.open_table(PAYMENT_NONCE_EXPIRY)?;
        for (key, expires_at) in doomed {
            nonces.remove(key.as_slice())?;
            expiry.remove(expiry_key(expires_at, &key).as_slice())?;
            removed += 1;
        }
        Ok(removed)
    }
}

impl Reader {
    /// Whether `message` may reach a model as history: the reply of a paid turn only once its
    /// payment is settled, so a withheld reply cannot be had by asking the next turn to repeat
    /// it. Every other message is released.
    pub fn released(&self, message: &Message) -> Result<bool, Error> {
        if message.role != "assistant" || message.source != ExecutionKind::Paid.source() {
            return Ok(true);
        }
        let Some(execution_id) = &message.execution_id else {
            return Ok(true);
        };
        let payment = self.execution(execution_id)?.and_then(|e| e.payment);
        Ok(payment.is_some_and(|p| p["state"] == "settled"))
    }

    /// Every settlement still owed that can be read: (execution id, what to send).
    pub fn pending_settlements(&self) -> Result<Vec<(String, PendingSettlement)>, Error> {
        let table = self.txn.open_table(PENDING_SETTLEMENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (id, value) = entry?;
            let pending =
                super::decode_or_set_aside("pending_settlements", id.value(), value.value());
            out.extend(pending.map(|pending| (id.value().to_string(), pending)));
        }
        Ok(out)
    }

    /// The claim on a payment nonce, if one is kept.
    pub fn nonce_claim(&self, key: &[u8]) -> Result<Option<NonceClaim>, Error> {
        match self.txn.open_table(PAYMENT_NONCES)?.get(key)? {
            Some(value) => Ok(Some(decode("payment_nonces", value.value())?)),
            None => Ok(None),
        }
    }

    pub fn pending_settlement(
        &self,
        execution_id: &str,
    ) -> Result<Option<PendingSettlement>, Error> {
        get_json(
            &self.txn.open_table(PENDING_SETTLEMENTS)?,
            "pending_settlements",
            execution_id,
        )
    }

    /// How many nonce claims are kept.
    pub fn nonce_claims(&self) -> Result<u64, Error> {
        Ok(self.txn.open_table(PAYMENT_NONCES)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{NonceClaim, PendingSettlement, Store};

    #[tokio::test]
    async fn a_nonce_is_claimed_once_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let claim = |key: &'static [u8], expires_at: u64, now: u64| {
            let store = store.clone();
            async move {
                let claim = NonceClaim {
                    agent: "helper".into(),
                    expires_at,
                    execution_id: None,
                };
                store
                    .write(move |tx| tx.claim_nonce(key, &claim, now))
                    .await
                    .unwrap()
            }
        };
        assert!(claim(b"one", 100, 10).await);
        assert!(!claim(b"one", 100, 20).await, "a live claim holds");
        assert!(claim(b"two", 50, 20).await);
        assert!(
            claim(b"one", 300, 101).await,
            "an expired claim is free again"
        );
        // Claiming at 200 prunes "two" (expired at 50) but keeps "one" (until 300).
        assert!(claim(b"three", 400, 200).await);
        assert_eq!(store.read(|r| r.nonce_claims()).await.unwrap(), 2);
        store.write(|tx| tx.release_nonce(b"three")).await.unwrap();
        assert!(claim(b"three", 400, 200).await, "a released claim is free");
        // Claims survive a reopen.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let again = NonceClaim {
            agent: "helper".into(),
            expires_at: 500,
            execution_id: None,
        };
        let claimed = store
            .write(move |tx| tx.claim_nonce(b"one", &again, 250))
            .await
            .unwrap();
        assert!(!claimed);
    }

    #[tokio::test]
    async fn deleting_an_agent_deletes_its_payment_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let removed = store
            .write(|tx| {
                for (key, agent) in [(b"a", "helper"), (b"b", "helper"), (b"c", "other")] {
                    let claim = NonceClaim {
                        agent: agent.into(),
                        expires_at: 100,
                        execution_id: None,
                    };
                    tx.claim_nonce(key, &claim, 10)?;
                }
                let owed = PendingSettlement {
                    resume_before: None,
                    resume: None,
                    agent: "helper".into(),
                    valid_before: 100,
                    body: serde_json::json!({}),
                };
                tx.put_pending_settlement("x", &owed)?;
                tx.delete_agent("helper")
            })
            .await
            .unwrap();
        // The pending settlement belongs to no stored execution of helper: only the claims go.
        assert_eq!(removed.payments, 2);
        assert_eq!(store.read(|r| r.nonce_claims()).await.unwrap(), 1);
    }
}
