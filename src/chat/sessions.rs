//! Reading and closing sessions: lists, one session with its messages, the persistent
//! history across sessions, and reset. A user sees only their own; owner and admins see all.

use super::Chat;
use crate::ids::SessionId;
use crate::turns::Error;

use crate::agents::Agent;
use crate::caller::Caller;
use crate::records::{Message, Session, SessionStatus};
use crate::store::HistoryScope;

/// A page of sessions.
pub struct SessionPage {
    pub sessions: Vec<Session>,
    pub next_cursor: Option<String>,
}

/// A page of messages.
pub struct HistoryPage {
    pub messages: Vec<Message>,
    pub next_cursor: Option<String>,
}

/// Whose history a persistent-history read covers, as the caller asked.
pub enum HistoryOwner {
    Caller,
    User(String),
    Everyone,
}

impl Chat {
    /// Sessions of the agent the caller may see, newest activity first.
    pub async fn list_sessions(
        &self,
        agent: &Agent,
        caller: &Caller,
        status: Option<SessionStatus>,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<SessionPage, Error> {
        let after = cursor.map(parse_session_cursor).transpose()?;
        let only = (!agent.managed_by(caller)).then(|| caller.username.clone());
        let all = self.sorted_sessions(agent.name(), only).await?;
        let mut sessions: Vec<Session> = all
            .into_iter()
            .filter(|s| status.is_none_or(|st| s.status == st))
            .filter(|s| {
                after
                    .as_ref()
                    .is_none_or(|(at, id)| (s.activity_at().0, s.id.as_str()) < (*at, id.as_str()))
            })
            .take(limit + 1)
            .collect();
        let more = sessions.len() > limit;
        sessions.truncate(limit);
        let next_cursor = more
            .then(|| {
                sessions
                    .last()
                    .map(|s| format!("{}.{}", s.activity_at().0, s.id))
            })
            .flatten();
        Ok(SessionPage {
            sessions,
            next_cursor,
        })
    }

    /// Sessions of an agent (one user's, or everyone's), newest activity first.
    async fn sorted_sessions(
        &self,
        agent: &str,
        only: Option<String>,
    ) -> Result<Vec<Session>, Error> {
        let agent_name = agent.to_string();
        let mut sessions = self
            .store
            .read(move |r| r.sessions_of(&agent_name, only.as_deref()))
            .await?;
        sessions.sort_by(|a, b| (b.activity_at(), &b.id).cmp(&(a.activity_at(), &a.id)));
        Ok(sessions)
    }

    /// One session the caller may see.
    pub async fn session(
        &self,
        agent: &Agent,
        caller: &Caller,
        id: &str,
    ) -> Result<Session, Error> {
        if !crate::ids::looks_like_id(id) {
            return Err(Error::SessionNotFound);
        }
        let session_id = id.to_string();
        let session = self.store.read(move |r| r.session(&session_id)).await?;
        session
            .filter(|s| s.agent_name == agent.name())
            .filter(|s| s.username == caller.username || agent.managed_by(caller))
            .ok_or(Error::SessionNotFound)
    }

    /// Keeps only `text` as the reply of `execution_id` (a spoken reply the caller cut short).
    pub async fn keep_spoken_reply(
        &self,
        session_id: &str,
        execution_id: &str,
        text: &str,
    ) -> Result<bool, Error> {
        let (session_id, execution_id) = (session_id.to_string(), execution_id.to_string());
        let text = text.to_string();
        Ok(self
            .store
            .write(move |tx| tx.set_reply_text(&session_id, &execution_id, &text))
            .await?)
    }

    /// The caller's active session on `agent`, if there is one.
    pub async fn active_session_of(
        &self,
        agent: &Agent,
        caller: &Caller,
    ) -> Result<Option<SessionId>, Error> {
        let (agent, username) = (agent.name().to_string(), caller.username.clone());
        Ok(self
            .store
            .read(move |r| r.active_session(&agent, &username))
            .await?)
    }

    /// The newest `limit` messages of a session before `cursor`, oldest first.
    pub async fn messages(
        &self,
        session: &Session,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        let before = cursor
            .map(|c| c.parse::<u32>().map_err(|_| Error::BadCursor))
            .transpose()?;
        let id = session.id.clone();
        let messages = self
            .store
            .read(move |r| r.messages(&id, before, limit))
            .await?;
        let next_cursor = messages
            .first()
            .filter(|m| m.seq > 0 && messages.len() == limit)
            .map(|m| m.seq.to_string());
        Ok(HistoryPage {
            messages,
            next_cursor,
        })
    }

    /// Closes a session (closing a closed one is fine).
    pub async fn close_session(
        &self,
        agent: &Agent,
        caller: &Caller,
        id: &str,
    ) -> Result<Session, Error> {
        let session = self.session(agent, caller, id).await?;
        let id = session.id.clone();
        let closed = self
            .store
            .write(move |tx| {
                let Some(mut session) = tx.session(&id)? else {
                    return Ok(None);
                };
                if session.status == SessionStatus::Active {
                    session.status = SessionStatus::Closed;
                    tx.put_session(&session)?;
                    if tx
                        .active_session(&session.agent_name, &session.username)?
                        .as_deref()
                        == Some(session.id.as_str())
                    {
                        tx.set_active_session(&session.agent_name, &session.username, None)?;
                    }
                }
                Ok(Some(session))
            })
            .await?;
        closed.ok_or(Error::SessionNotFound)
    }

    /// The persistent history: messages across sessions, newest first.
    pub async fn history(
        &self,
        agent: &Agent,
        caller: &Caller,
        owner: HistoryOwner,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<HistoryPage, Error> {
        let scope = match owner {
            HistoryOwner::Caller => HistoryScope::User(caller.username.clone()),
            HistoryOwner::User(user) if agent.managed_by(caller) => HistoryScope::User(user),
            HistoryOwner::Everyone if agent.managed_by(caller) => HistoryScope::Everyone,
            _ => return Err(Error::Agent(crate::agents::Error::NotOwner)),
        };
        let before = cursor.map(parse_hex).transpose()?;
        let agent_name = agent.name().to_string();
        let (messages, next) = self
            .store
            .read(move |r| r.history(&agent_name, &scope, before.as_deref(), limit))
            .await?;
        Ok(HistoryPage {
            messages,
            next_cursor: next.map(|p| crate::ids::hex(&p)),
        })
    }

    /// Closes the caller's active session (or everyone's, with `all`) and drops the engine's
    /// conversation state for it. Returns the closed session ids.
    pub async fn reset(
        &self,
        agent: &Agent,
        caller: &Caller,
        all: bool,
    ) -> Result<Vec<SessionId>, Error> {
        if all && !agent.managed_by(caller) {
            return Err(Error::Agent(crate::agents::Error::NotOwner));
        }
        let agent_name = agent.name().to_string();
        let username = caller.username.clone();
        let closed = self
            .store
            .write(move |tx| {
                let targets = if all {
                    tx.active_sessions_of(&agent_name)?
                } else {
                    tx.active_session(&agent_name, &username)?
                        .map(|id| vec![(username.clone(), id)])
                        .unwrap_or_default()
                };
                let mut closed = Vec::new();
                for (user, id) in targets {
                    if let Some(mut session) = tx.session(&id)? {
                        session.status = SessionStatus::Closed;
                        tx.put_session(&session)?;
                    }
                    tx.set_active_session(&agent_name, &user, None)?;
                    tx.set_engine_state(&id, None)?;
                    closed.push(id);
                }
                Ok(closed)
            })
            .await?;
        // A turn still running in a closed session finishes and is stored there.
        Ok(closed)
    }
}

fn parse_session_cursor(cursor: &str) -> Result<(i64, String), Error> {
    let (at, id) = cursor.split_once('.').ok_or(Error::BadCursor)?;
    let at = at.parse::<i64>().map_err(|_| Error::BadCursor)?;
    if !crate::ids::looks_like_id(id) {
        return Err(Error::BadCursor);
    }
    Ok((at, id.to_string()))
}

/// A history cursor: hex digits only, so that slicing by byte pairs never cuts a character.
fn parse_hex(text: &str) -> Result<Vec<u8>, Error> {
    let bytes = text.as_bytes();
    if bytes.len() % 2 != 0 || bytes.len() > 1024 || !bytes.iter().all(u8::is_ascii_hexdigit) {
        return Err(Error::BadCursor);
    }
    Ok(bytes
        .chunks(2)
        .map(|pair| (hex_value(pair[0]) << 4) | hex_value(pair[1]))
        .collect())
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::parse_hex;

    fn check(cursor: &str, expected: Option<&[u8]>) {
        assert_eq!(parse_hex(cursor).ok().as_deref(), expected, "{cursor:?}");
    }

    #[test]
    fn history_cursors() {
        check("", Some(&[]));
        check("00ff", Some(&[0, 255]));
        check("0aFf", Some(&[10, 255]));
        check("0", None);
        check("zz", None);
        check("+1", None);
        // A multi-byte character across a pair boundary was a panic, found by schemathesis.
        check("\u{1}\u{6fc3c}$", None);
        check("a\u{e9}b", None);
    }
}
