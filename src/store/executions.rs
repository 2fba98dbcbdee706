//! Executions, their event logs, and idempotency keys.

use super::keys;
use super::tables::{EVENTS, EXECUTIONS, EXECUTIONS_BY_AGENT, IDEMPOTENCY, UNFINISHED};
use super::{decode, encode, get_json, Error, Reader, Tx};
use crate::clock::Timestamp;
use crate::records::{Execution, ExecutionKind, ExecutionStatus};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

/// One stored stream-json event.
#[derive(Clone, Debug)]
pub struct EventRecord {
    pub seq: u32,
    pub json: String,
}

/// Which executions a listing returns.
#[derive(Clone, Debug, Default)]
pub struct ExecutionFilter {
    /// Only this user's (None: everyone's).
    pub username: Option<String>,
    pub kind: Option<ExecutionKind>,
    pub status: Option<ExecutionStatus>,
    pub since: Option<Timestamp>,
}

impl ExecutionFilter {
    fn admits(&self, execution: &Execution) -> bool {
        self.username
            .as_deref()
            .is_none_or(|u| execution.username.as_deref() == Some(u))
            && self.kind.is_none_or(|k| execution.kind == k)
            && self.status.is_none_or(|s| execution.status == s)
    }
}

/// What an idempotency key points at.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub execution_id: crate::ids::ExecutionId,
    pub created_at: Timestamp,
    /// SHA-256 of the request the key was first used with (absent in records from before it
    /// was kept: those match any request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_digest: Option<String>,
}

impl IdempotencyRecord {
    /// True unless the key was first used with another request.
    pub fn same_request(&self, digest: &str) -> bool {
        self.request_digest.as_deref().is_none_or(|d| d == digest)
    }
}

fn idempotency_in(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[&str],
) -> Result<Option<IdempotencyRecord>, Error> {
    let key = keys::joined(key);
    let record = match table.get(key.as_slice())? {
        Some(value) => Some(decode("idempotency_keys", value.value())?),
        None => None,
    };
    Ok(record)
}

impl Tx<'_> {
    /// Inserts or replaces an execution, keeping the agent index and the unfinished set.
    pub fn put_execution(&self, execution: &Execution) -> Result<(), Error> {
        let mut executions = self.txn.open_table(EXECUTIONS)?;
        let fresh = executions
            .insert(execution.id.as_str(), encode(execution).as_slice())?
            .is_none();
        if fresh {
            let key = keys::joined(&[&execution.agent, &execution.id]);
            self.txn
                .open_table(EXECUTIONS_BY_AGENT)?
                .insert(key.as_slice(), ())?;
        }
        let mut unfinished = self.txn.open_table(UNFINISHED)?;
        if execution.status.is_final() {
            unfinished.remove(execution.id.as_str())?;
        } else {
            unfinished.insert(execution.id.as_str(), ())?;
        }
        Ok(())
    }

    pub fn execution(&self, id: &str) -> Result<Option<Execution>, Error> {
        get_json(&self.txn.open_table(EXECUTIONS)?, "executions", id)
    }

    /// True when the execution is stored: a run whose admission a failed commit dropped finds
    /// none, and stores nothing more of itself.
    pub fn has_execution(&self, id: &str) -> Result<bool, Error> {
        Ok(self.txn.open_table(EXECUTIONS)?.get(id)?.is_some())
    }

    /// Every execution still queued or running that can be read, oldest first.
    pub fn unfinished_executions(&self) -> Result<Vec<Execution>, Error> {
        let unfinished = self.txn.open_table(UNFINISHED)?;
        let executions = self.txn.open_table(EXECUTIONS)?;
        let mut out = Vec::new();
        for entry in unfinished.iter()? {
            let (id, _) = entry?;
            if let Some(stored) = executions.get(id.value())? {
                out.extend(super::decode_or_set_aside(
                    "executions",
                    id.value(),
                    stored.value(),
                ));
            }
        }
        Ok(out)
    }

    /// Appends events numbered from `first_seq`.
    pub fn append_events(
        &self,
        execution_id: &str,
        first_seq: u32,
        events: &[String],
    ) -> Result<(), Error> {
        let mut table = self.txn.open_table(EVENTS)?;
        for (offset, json) in events.iter().enumerate() {
            let key = keys::sequenced(execution_id, first_seq + offset as u32);
            table.insert(key.as_slice(), json.as_bytes())?;
        }
        Ok(())
    }

    /// The sequence number the next event of an execution gets (one past the last stored).
    pub fn next_event_seq(&self, execution_id: &str) -> Result<u32, Error> {
        let table = self.txn.open_table(EVENTS)?;
        let start = keys::sequenced(execution_id, 0);
        let end = keys::prefix_end(execution_id.as_bytes());
        let last = table.range(start.as_slice()..end.as_slice())?.next_back();
        match last {
            Some(entry) => Ok(keys::seq_of(entry?.0.value()) + 1),
            None => Ok(0),
        }
    }

    pub fn idempotency(&self, key: &[&str]) -> Result<Option<IdempotencyRecord>, Error> {
        idempotency_in(&self.txn.open_table(IDEMPOTENCY)?, key)
    }

    pub fn put_idempotency(&self, key: &[&str], record: &IdempotencyRecord) -> Result<(), Error> {
        let key = keys::joined(key);
        self.txn
            .open_table(IDEMPOTENCY)?
            .insert(key.as_slice(), encode(record).as_slice())?;
        Ok(())
    }
}

impl Reader {
    pub fn idempotency(&self, key: &[&str]) -> Result<Option<IdempotencyRecord>, Error> {
        idempotency_in(&self.txn.open_table(IDEMPOTENCY)?, key)
    }

    pub fn execution(&self, id: &str) -> Result<Option<Execution>, Error> {
        get_json(&self.txn.open_table(EXECUTIONS)?, "executions", id)
    }

    /// Executions of `agent`, newest first, strictly older than the `before` id, that pass
    /// `filter`; at most `limit`. Returns them and whether more may follow.
    pub fn executions_of(
        &self,
        agent: &str,
        filter: &ExecutionFilter,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Execution>, bool), Error> {
        if matches!(
            filter.status,
            Some(ExecutionStatus::Queued | ExecutionStatus::Running)
        ) {
            return self.unfinished_of(agent, filter, before, limit);
        }
        let index = self.txn.open_table(EXECUTIONS_BY_AGENT)?;
        let executions = self.txn.open_table(EXECUTIONS)?;
        let prefix = keys::prefix(&[agent]);
        let end = match before {
            Some(id) => keys::joined(&[agent, id]),
            None => keys::prefix_end(&prefix),
        };
        let mut out = Vec::new();
        for entry in index.range(prefix.as_slice()..end.as_slice())?.rev() {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key.value()[prefix.len()..]).into_owned();
            let Some(execution) = get_json::<Execution>(&executions, "executions", &id)? else {
                continue;
            };
            if filter
                .since
                .is_some_and(|since| execution.created_at < since)
            {
                return Ok((out, false));
            }
            if filter.admits(&execution) {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(execution);
            }
        }
        Ok((out, false))
    }

    /// `executions_of` for queued or running ones: the unfinished set is small, so this does
    /// not walk the agent's whole history.
    fn unfinished_of(
        &self,
        agent: &str,
        filter: &ExecutionFilter,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Execution>, bool), Error> {
        let unfinished = self.txn.open_table(UNFINISHED)?;
        let executions = self.txn.open_table(EXECUTIONS)?;
        let mut out: Vec<Execution> = Vec::new();
        for entry in unfinished.iter()?.rev() {
            let (id, _) = entry?;
            if before.is_some_and(|b| id.value() >= b) {
                continue;
            }
            let Some(execution) = get_json::<Execution>(&executions, "executions", id.value())?
            else {
                continue;
            };
            if execution.agent != agent
                || filter
                    .since
                    .is_some_and(|since| execution.created_at < since)
                || !filter.admits(&execution)
            {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(execution);
        }
        Ok((out, false))
    }

    /// Events of an execution with a sequence number above `after` (all with None).
    pub fn events_after(
        &self,
        execution_id: &str,
        after: Option<u32>,
    ) -> Result<Vec<EventRecord>, Error> {
        let table = self.txn.open_table(EVENTS)?;
        let start = match after {
            Some(seq) if seq == u32::MAX => return Ok(Vec::new()),
            Some(seq) => keys::sequenced(execution_id, seq + 1),
            None => keys::sequenced(execution_id, 0),
        };
        let end = keys::prefix_end(execution_id.as_bytes());
        let mut out = Vec::new();
        for entry in table.range(start.as_slice()..end.as_slice())? {
            let (key, value) = entry?;
            let key = key.value();
            // Ids have a fixed length, so a longer id sharing this prefix cannot slip in, but
            // check the length anyway: the key is exactly id ‖ seq.
            if key.len() != execution_id.len() + 4 {
                continue;
            }
            out.push(EventRecord {
                seq: keys::seq_of(key),
                json: String::from_utf8_lossy(value.value()).into_owned(),
            });
        }
        Ok(out)
    }
}
