//! Removing an account with everything stored under its name, and the device tokens minted
//! for accounts. Records are keyed by username, so a later account of the same name would
//! find whatever a removal left behind: removal leaves nothing.

use super::keys;
use super::tables::{
    ACTIVE_SESSIONS, AGENTS, DEVICE_TOKENS, ENGINE_STATE, EVENTS, EXECUTIONS, EXECUTIONS_BY_AGENT,
    IDEMPOTENCY, MESSAGES, MESSAGES_BY_AGENT, MESSAGES_BY_USER, SESSIONS, SESSIONS_BY_OWNER,
    TASK_QUEUE, UNFINISHED, USERS,
};
use super::{decode, encode, get_json, Error, Reader, Tx};
use crate::records::{AgentRecord, DeviceToken, Execution, Removed};
use redb::{ReadableTable, ReadableTableMetadata};
use std::collections::HashSet;

/// The username part of an `agent 0 user …` key.
fn user_part(key: &[u8]) -> &[u8] {
    let mut parts = key.splitn(3, |b| *b == 0);
    parts.next();
    parts.next().unwrap_or_default()
}

impl Tx<'_> {
    /// Deletes the account `username` and, in this transaction, everything stored under its
    /// name: sessions, messages, executions with their events and queue entries, idempotency
    /// keys, device tokens, and the shares of stored agents. API agents it owns pass to `heir`.
    pub fn delete_account(&self, username: &str, heir: &str) -> Result<Removed, Error> {
        let mut removed = Removed::default();
        let name = username.as_bytes();
        let session_ids = self.delete_sessions_of(username, &mut removed)?;
        self.txn
            .open_table(ACTIVE_SESSIONS)?
            .retain(|key, _| user_part(key) != name)?;
        self.txn
            .open_table(MESSAGES_BY_USER)?
            .retain(|key, _| user_part(key) != name)?;
        // The agent index points at message keys (session id ‖ seq).
        self.txn
            .open_table(MESSAGES_BY_AGENT)?
            .retain(|_, message| {
                let session = &message[..message.len().saturating_sub(4)];
                !session_ids.contains(session)
            })?;
        {
            let mut idempotency = self.txn.open_table(IDEMPOTENCY)?;
            let before = idempotency.len()?;
            idempotency.retain(|key, _| user_part(key) != name)?;
            removed.idempotency_keys = before - idempotency.len()?;
        }
        self.delete_executions_of(username, &mut removed)?;
        self.hand_over_agents(username, heir)?;
        self.txn.open_table(DEVICE_TOKENS)?.retain(|_, value| {
            match decode::<DeviceToken>("device_tokens", value) {
                Ok(token) => token.username != username,
                Err(_) => true,
            }
        })?;
        self.txn.open_table(USERS)?.remove(username)?;
        Ok(removed)
    }

    /// Deletes the user's sessions, their messages and engine state; returns their ids.
    fn delete_sessions_of(
        &self,
        username: &str,
        removed: &mut Removed,
    ) -> Result<HashSet<Vec<u8>>, Error> {
        let mut by_owner = self.txn.open_table(SESSIONS_BY_OWNER)?;
        let mut ids = HashSet::new();
        for entry in by_owner.iter()? {
            let (key, _) = entry?;
            let key = key.value();
            if user_part(key) == username.as_bytes() {
                let start = key.iter().rposition(|b| *b == 0).map_or(0, |i| i + 1);
                ids.insert(key[start..].to_vec());
            }
        }
        by_owner.retain(|key, _| user_part(key) != username.as_bytes())?;
        let mut sessions = self.txn.open_table(SESSIONS)?;
        let mut messages = self.txn.open_table(MESSAGES)?;
        let mut engine_state = self.txn.open_table(ENGINE_STATE)?;
        for id in &ids {
            let id = String::from_utf8_lossy(id);
            removed.sessions += u64::from(sessions.remove(&*id)?.is_some());
            engine_state.remove(&*id)?;
            let start = keys::sequenced(&id, 0);
            let end = keys::prefix_end(id.as_bytes());
            let before = messages.len()?;
            messages.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
            removed.messages += before - messages.len()?;
        }
        Ok(ids)
    }

    /// Deletes the executions the user asked for (chat turns, tasks, spoken turns), their
    /// events, index rows and queue entries.
    fn delete_executions_of(&self, username: &str, removed: &mut Removed) -> Result<(), Error> {
        let mut executions = self.txn.open_table(EXECUTIONS)?;
        let mut doomed = Vec::new();
        for entry in executions.iter()? {
            let (_, value) = entry?;
            let execution: Execution = decode("executions", value.value())?;
            if execution.username.as_deref() == Some(username) {
                doomed.push((execution.agent, execution.id));
            }
        }
        let mut by_agent = self.txn.open_table(EXECUTIONS_BY_AGENT)?;
        let mut unfinished = self.txn.open_table(UNFINISHED)?;
        let mut events = self.txn.open_table(EVENTS)?;
        for (agent, id) in &doomed {
            removed.executions += u64::from(executions.remove(id.as_str())?.is_some());
            by_agent.remove(keys::joined(&[agent, id]).as_slice())?;
            unfinished.remove(id.as_str())?;
            let start = keys::sequenced(id, 0);
            let end = keys::prefix_end(id.as_bytes());
            let before = events.len()?;
            events.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
            removed.events += before - events.len()?;
        }
        let ids: HashSet<&str> = doomed.iter().map(|(_, id)| id.as_str()).collect();
        let mut queue = self.txn.open_table(TASK_QUEUE)?;
        let before = queue.len()?;
        queue.retain(|_, id| !ids.contains(id))?;
        removed.queued_tasks = before - queue.len()?;
        Ok(())
    }

    /// Takes the user out of every stored agent's shares and gives API agents it owns to
    /// `heir`. Shares and owners named by the configuration file are the file's to change.
    fn hand_over_agents(&self, username: &str, heir: &str) -> Result<(), Error> {
        let mut agents = self.txn.open_table(AGENTS)?;
        let mut changed: Vec<AgentRecord> = Vec::new();
        for entry in agents.iter()? {
            let (_, value) = entry?;
            let mut record: AgentRecord = decode("agents", value.value())?;
            let shares = record.shared_with.len();
            record.shared_with.retain(|u| u != username);
            let inherit = record.source == "api" && record.owner == username;
            if inherit {
                record.owner = heir.to_string();
            }
            if inherit || record.shared_with.len() != shares {
                changed.push(record);
            }
        }
        for record in changed {
            agents.insert(record.name.as_str(), encode(&record).as_slice())?;
        }
        Ok(())
    }

    /// Records a device token when it is minted.
    pub fn put_device_token(&self, token: &DeviceToken) -> Result<(), Error> {
        self.txn
            .open_table(DEVICE_TOKENS)?
            .insert(token.id.as_str(), encode(token).as_slice())?;
        Ok(())
    }

    pub fn device_token(&self, id: &str) -> Result<Option<DeviceToken>, Error> {
        get_json(&self.txn.open_table(DEVICE_TOKENS)?, "device_tokens", id)
    }

    /// Forgets a device token (revoking it is `revoke_token`); false when there was none.
    pub fn delete_device_token(&self, id: &str) -> Result<bool, Error> {
        Ok(self.txn.open_table(DEVICE_TOKENS)?.remove(id)?.is_some())
    }

    /// Drops the records of device tokens that expired before `now` (unix milliseconds).
    pub fn drop_expired_device_tokens(&self, now: i64) -> Result<(), Error> {
        self.txn.open_table(DEVICE_TOKENS)?.retain(|_, value| {
            match decode::<DeviceToken>("device_tokens", value) {
                Ok(token) => token.expires_at.0 > now,
                Err(_) => true,
            }
        })?;
        Ok(())
    }
}

impl Reader {
    /// The queued or running executions `username` asked for.
    pub fn unfinished_executions_of(&self, username: &str) -> Result<Vec<Execution>, Error> {
        let unfinished = self.txn.open_table(UNFINISHED)?;
        let executions = self.txn.open_table(EXECUTIONS)?;
        let mut out = Vec::new();
        for entry in unfinished.iter()? {
            let (id, _) = entry?;
            let found: Option<Execution> = get_json(&executions, "executions", id.value())?;
            out.extend(found.filter(|e| e.username.as_deref() == Some(username)));
        }
        Ok(out)
    }

    /// Device tokens that have not expired by `now` (unix milliseconds), of one user or of
    /// everyone, oldest first.
    pub fn device_tokens(
        &self,
        username: Option<&str>,
        now: i64,
    ) -> Result<Vec<DeviceToken>, Error> {
        let table = self.txn.open_table(DEVICE_TOKENS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, value) = entry?;
            let token: DeviceToken = decode("device_tokens", value.value())?;
            if token.expires_at.0 > now && username.is_none_or(|u| u == token.username) {
                out.push(token);
            }
        }
        Ok(out)
    }

    pub fn device_token(&self, id: &str) -> Result<Option<DeviceToken>, Error> {
        get_json(&self.txn.open_table(DEVICE_TOKENS)?, "device_tokens", id)
    }
}
