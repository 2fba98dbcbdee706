//! Chat sessions, their messages and the indexes that list them.

use super::keys;
use super::tables::{
    ACTIVE_SESSIONS, ENGINE_STATE, MESSAGES, MESSAGES_BY_AGENT, MESSAGES_BY_USER, SESSIONS,
    SESSIONS_BY_OWNER,
};
use super::{decode, encode, get_json, Error, Reader, Tx};
use crate::ids::SessionId;
use crate::records::{Message, Session};
use redb::ReadableTable;

/// Whose messages a history read covers.
#[derive(Clone, Debug)]
pub enum HistoryScope {
    User(String),
    Everyone,
}

impl Tx<'_> {
    /// Inserts or replaces a session (and indexes a new one under its owner).
    pub fn put_session(&self, session: &Session) -> Result<(), Error> {
        let mut sessions = self.txn.open_table(SESSIONS)?;
        let fresh = sessions
            .insert(session.id.as_str(), encode(session).as_slice())?
            .is_none();
        if fresh {
            let mut by_owner = self.txn.open_table(SESSIONS_BY_OWNER)?;
            let key = keys::joined(&[&session.agent_name, &session.username, &session.id]);
            by_owner.insert(key.as_slice(), ())?;
        }
        Ok(())
    }

    pub fn session(&self, id: &str) -> Result<Option<Session>, Error> {
        get_json(&self.txn.open_table(SESSIONS)?, "sessions", id)
    }

    /// The id of the active session of (agent, user), if any.
    pub fn active_session(&self, agent: &str, username: &str) -> Result<Option<SessionId>, Error> {
        let active = self.txn.open_table(ACTIVE_SESSIONS)?;
        let key = keys::joined(&[agent, username]);
        let id = active.get(key.as_slice())?.map(|v| v.value().into());
        Ok(id)
    }

    /// Sets (or clears) the active session of (agent, user).
    pub fn set_active_session(
        &self,
        agent: &str,
        username: &str,
        id: Option<&str>,
    ) -> Result<(), Error> {
        let mut active = self.txn.open_table(ACTIVE_SESSIONS)?;
        let key = keys::joined(&[agent, username]);
        match id {
            Some(id) => active.insert(key.as_slice(), id)?,
            None => active.remove(key.as_slice())?,
        };
        Ok(())
    }

    /// Active sessions of `agent` (every user): (username, session id).
    pub fn active_sessions_of(&self, agent: &str) -> Result<Vec<(String, SessionId)>, Error> {
        let active = self.txn.open_table(ACTIVE_SESSIONS)?;
        let prefix = keys::prefix(&[agent]);
        let end = keys::prefix_end(&prefix);
        let mut out = Vec::new();
        for entry in active.range(prefix.as_slice()..end.as_slice())? {
            let (key, id) = entry?;
            let username = String::from_utf8_lossy(&key.value()[prefix.len()..]).into_owned();
            out.push((username, id.value().into()));
        }
        Ok(out)
    }

    /// Appends a message to `session`, updating the session's counters, and stores both.
    pub fn append_message(
        &self,
        session: &mut Session,
        mut message: Message,
    ) -> Result<Message, Error> {
        // Messages are never removed one by one, so the count is the next position.
        message.seq = session.message_count as u32;
        message.session_id = session.id.clone();
        session.message_count += 1;
        session.last_message_at = Some(message.created_at);
        session.total_cost_usd += message.cost_usd.unwrap_or(0.0);
        if let Some(tokens) = context_tokens(&message) {
            session.context_tokens = tokens;
        }
        if session.title.is_none() && message.role == "user" {
            session.title = Some(crate::records::preview(&message.content, 80));
        }
        let key = keys::sequenced(&session.id, message.seq);
        self.txn
            .open_table(MESSAGES)?
            .insert(key.as_slice(), encode(&message).as_slice())?;
        let at = message.created_at.0;
        let by_user = keys::timed(
            &keys::prefix(&[&session.agent_name, &session.username]),
            at,
            &message.id,
        );
        self.txn
            .open_table(MESSAGES_BY_USER)?
            .insert(by_user.as_slice(), key.as_slice())?;
        let by_agent = keys::timed(&keys::prefix(&[&session.agent_name]), at, &message.id);
        self.txn
            .open_table(MESSAGES_BY_AGENT)?
            .insert(by_agent.as_slice(), key.as_slice())?;
        self.put_session(session)?;
        Ok(message)
    }

    /// Replaces the text of the assistant message `execution_id` left in `session_id` (a
    /// spoken reply cut short keeps only what was said). False when there is none.
    pub fn set_reply_text(
        &self,
        session_id: &str,
        execution_id: &str,
        text: &str,
    ) -> Result<bool, Error> {
        let mut messages = self.txn.open_table(MESSAGES)?;
        let start = keys::sequenced(session_id, 0);
        let end = keys::sequenced(session_id, u32::MAX);
        let mut found = None;
        // The reply is among the session's last messages; a few steps back is enough.
        for entry in messages
            .range(start.as_slice()..end.as_slice())?
            .rev()
            .take(8)
        {
            let (key, value) = entry?;
            let message: Message = decode("messages", value.value())?;
            if message.role == "assistant" && message.execution_id.as_deref() == Some(execution_id)
            {
                found = Some((key.value().to_vec(), message));
                break;
            }
        }
        let Some((key, mut message)) = found else {
            return Ok(false);
        };
        message.content = text.to_string();
        messages.insert(key.as_slice(), encode(&message).as_slice())?;
        Ok(true)
    }

    /// The engine's resume handle for a session.
    pub fn engine_state(&self, session_id: &str) -> Result<Option<String>, Error> {
        let table = self.txn.open_table(ENGINE_STATE)?;
        let handle = table.get(session_id)?.map(|v| v.value().to_string());
        Ok(handle)
    }

    /// Sets or drops the engine's resume handle for a session.
    pub fn set_engine_state(&self, session_id: &str, handle: Option<&str>) -> Result<(), Error> {
        let mut table = self.txn.open_table(ENGINE_STATE)?;
        match handle {
            Some(handle) => table.insert(session_id, handle)?,
            None => table.remove(session_id)?,
        };
        Ok(())
    }
}

/// Input plus output tokens of an assistant message: the size of the context after it.
fn context_tokens(message: &Message) -> Option<u64> {
    let usage = message.usage.as_ref()?;
    let count = |field: &str| usage.get(field).and_then(|v| v.as_u64()).unwrap_or(0);
    let total = count("input_tokens")
        + count("output_tokens")
        + count("cache_read_input_tokens")
        + count("cache_creation_input_tokens");
    (total > 0).then_some(total)
}

impl Reader {
    pub fn session(&self, id: &str) -> Result<Option<Session>, Error> {
        get_json(&self.txn.open_table(SESSIONS)?, "sessions", id)
    }

    /// The id of the active session of (agent, user), if any.
    pub fn active_session(&self, agent: &str, username: &str) -> Result<Option<SessionId>, Error> {
        let active = self.txn.open_table(ACTIVE_SESSIONS)?;
        let key = keys::joined(&[agent, username]);
        let id = active.get(key.as_slice())?.map(|v| v.value().into());
        Ok(id)
    }

    /// Sessions of `agent`, of one user or of everyone, in no particular order.
    pub fn sessions_of(&self, agent: &str, username: Option<&str>) -> Result<Vec<Session>, Error> {
        let by_owner = self.txn.open_table(SESSIONS_BY_OWNER)?;
        let sessions = self.txn.open_table(SESSIONS)?;
        let prefix = match username {
            Some(user) => keys::prefix(&[agent, user]),
            None => keys::prefix(&[agent]),
        };
        let end = keys::prefix_end(&prefix);
        let mut out = Vec::new();
        for entry in by_owner.range(prefix.as_slice()..end.as_slice())? {
            let (key, _) = entry?;
            let key = key.value();
            let id_start = key.iter().rposition(|b| *b == 0).map_or(0, |i| i + 1);
            let id = String::from_utf8_lossy(&key[id_start..]);
            if let Some(session) = get_json(&sessions, "sessions", &id)? {
                out.push(session);
            }
        }
        Ok(out)
    }

    /// Up to `limit` messages of a session before sequence `before` (newest N), oldest first.
    pub fn messages(
        &self,
        session_id: &str,
        before: Option<u32>,
        limit: usize,
    ) -> Result<Vec<Message>, Error> {
        let messages = self.txn.open_table(MESSAGES)?;
        let start = keys::sequenced(session_id, 0);
        let end = keys::sequenced(session_id, before.unwrap_or(u32::MAX));
        let mut out = Vec::with_capacity(limit.min(512));
        for entry in messages.range(start.as_slice()..end.as_slice())?.rev() {
            if out.len() == limit {
                break;
            }
            let (key, value) = entry?;
            let mut message: Message = decode("messages", value.value())?;
            message.seq = keys::seq_of(key.value());
            out.push(message);
        }
        out.reverse();
        Ok(out)
    }

    /// Messages of `agent` across sessions, newest first, older than the `before` position.
    /// Returns the messages and, when more remain, the position to continue from.
    pub fn history(
        &self,
        agent: &str,
        scope: &HistoryScope,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Message>, Option<Vec<u8>>), Error> {
        let (index, prefix) = match scope {
            HistoryScope::User(user) => (
                self.txn.open_table(MESSAGES_BY_USER)?,
                keys::prefix(&[agent, user]),
            ),
            HistoryScope::Everyone => (
                self.txn.open_table(MESSAGES_BY_AGENT)?,
                keys::prefix(&[agent]),
            ),
        };
        let end = match before {
            Some(position) if position.starts_with(&prefix) => position.to_vec(),
            _ => keys::prefix_end(&prefix),
        };
        let messages = self.txn.open_table(MESSAGES)?;
        let mut out = Vec::new();
        let mut next = None;
        for entry in index.range(prefix.as_slice()..end.as_slice())?.rev() {
            let (position, message_key) = entry?;
            if out.len() == limit {
                next = Some(position.value().to_vec());
                break;
            }
            if let Some(value) = messages.get(message_key.value())? {
                let mut message: Message = decode("messages", value.value())?;
                message.seq = keys::seq_of(message_key.value());
                out.push(message);
            }
        }
        if next.is_some() {
            // The cursor names the first entry not returned; the next page ends after it.
            next = next.map(|mut p: Vec<u8>| {
                p.push(0);
                p
            });
        }
        Ok((out, next))
    }
}
