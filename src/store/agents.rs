//! Agents kept in the store, and deleting an agent with everything stored for it (its
//! public links too).

use super::keys;
use super::tables::{
    ACTIVE_SESSIONS, AGENTS, ENGINE_STATE, EVENTS, EXECUTIONS, EXECUTIONS_BY_AGENT, IDEMPOTENCY,
    MESSAGES, MESSAGES_BY_AGENT, MESSAGES_BY_USER, SESSIONS, SESSIONS_BY_OWNER, TASK_QUEUE,
    UNFINISHED,
};
use super::{decode_or_set_aside, encode, get_json, Error, Reader, Tx};
use crate::records::{AgentRecord, Removed};
use redb::{ReadableTable, ReadableTableMetadata};

impl Tx<'_> {
    pub fn put_agent(&self, agent: &AgentRecord) -> Result<(), Error> {
        self.txn
            .open_table(AGENTS)?
            .insert(agent.name.as_str(), encode(agent).as_slice())?;
        Ok(())
    }

    pub fn agent(&self, name: &str) -> Result<Option<AgentRecord>, Error> {
        get_json(&self.txn.open_table(AGENTS)?, "agents", name)
    }

    /// Removes the agent's record and everything stored for it, in this transaction.
    pub fn delete_agent(&self, name: &str) -> Result<Removed, Error> {
        let mut removed = Removed::default();
        let agent_prefix = keys::prefix(&[name]);
        let agent_end = keys::prefix_end(&agent_prefix);
        let range = agent_prefix.as_slice()..agent_end.as_slice();

        let session_ids: Vec<String> = {
            let by_owner = self.txn.open_table(SESSIONS_BY_OWNER)?;
            let mut ids = Vec::new();
            for entry in by_owner.range(range.clone())? {
                let (key, _) = entry?;
                let key = key.value();
                let start = key.iter().rposition(|b| *b == 0).map_or(0, |i| i + 1);
                ids.push(String::from_utf8_lossy(&key[start..]).into_owned());
            }
            ids
        };
        removed.public_links = self.delete_links_of(name, &session_ids)?;
        {
            let mut sessions = self.txn.open_table(SESSIONS)?;
            let mut messages = self.txn.open_table(MESSAGES)?;
            let mut engine_state = self.txn.open_table(ENGINE_STATE)?;
            for id in &session_ids {
                removed.sessions += u64::from(sessions.remove(id.as_str())?.is_some());
                engine_state.remove(id.as_str())?;
                let start = keys::sequenced(id, 0);
                let end = keys::prefix_end(id.as_bytes());
                let before = messages.len()?;
                messages.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
                removed.messages += before - messages.len()?;
            }
        }
        self.txn
            .open_table(SESSIONS_BY_OWNER)?
            .retain_in(range.clone(), |_, _| false)?;
        self.txn
            .open_table(ACTIVE_SESSIONS)?
            .retain_in(range.clone(), |_, _| false)?;
        for table in [MESSAGES_BY_USER, MESSAGES_BY_AGENT] {
            self.txn
                .open_table(table)?
                .retain_in(range.clone(), |_, _| false)?;
        }
        {
            let mut keys_table = self.txn.open_table(IDEMPOTENCY)?;
            let before = keys_table.len()?;
            keys_table.retain_in(range.clone(), |_, _| false)?;
            removed.idempotency_keys = before - keys_table.len()?;
        }

        let execution_ids: Vec<String> = {
            let by_agent = self.txn.open_table(EXECUTIONS_BY_AGENT)?;
            let mut ids = Vec::new();
            for entry in by_agent.range(range.clone())? {
                let (key, _) = entry?;
                ids.push(String::from_utf8_lossy(&key.value()[agent_prefix.len()..]).into_owned());
            }
            ids
        };
        {
            let mut executions = self.txn.open_table(EXECUTIONS)?;
            let mut events = self.txn.open_table(EVENTS)?;
            let mut unfinished = self.txn.open_table(UNFINISHED)?;
            for id in &execution_ids {
                removed.executions += u64::from(executions.remove(id.as_str())?.is_some());
                unfinished.remove(id.as_str())?;
                let start = keys::sequenced(id, 0);
                let end = keys::prefix_end(id.as_bytes());
                let before = events.len()?;
                events.retain_in(start.as_slice()..end.as_slice(), |_, _| false)?;
                removed.events += before - events.len()?;
            }
            removed.payments = self.delete_payments_of(name, &execution_ids)?;
            let mut queue = self.txn.open_table(TASK_QUEUE)?;
            let before = queue.len()?;
            queue.retain(|_, id| !execution_ids.iter().any(|e| e == id))?;
            removed.queued_tasks = before - queue.len()?;
        }
        self.txn
            .open_table(EXECUTIONS_BY_AGENT)?
            .retain_in(range, |_, _| false)?;
        self.txn.open_table(AGENTS)?.remove(name)?;
        Ok(removed)
    }
}

impl Reader {
    /// Every stored agent record that can be read (others are logged and skipped).
    pub fn agents(&self) -> Result<Vec<AgentRecord>, Error> {
        let table = self.txn.open_table(AGENTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (key, value) = entry?;
            out.extend(decode_or_set_aside("agents", key.value(), value.value()));
        }
        Ok(out)
    }
}
