//! Public links (found by the SHA-256 of their token, never by the token) and the visitor
//! sessions they minted.

use super::keys;
use super::tables::{
    PUBLIC_LINKS, PUBLIC_LINKS_BY_AGENT, PUBLIC_LINK_HASHES, SESSIONS, SESSIONS_BY_OWNER,
    VISITOR_SESSIONS,
};
use super::{get_json, Error, Reader, Tx};
use crate::records::{LinkRecord, Session, VisitorSession};
use redb::ReadableTable;

impl Tx<'_> {
    /// Inserts or replaces a link (and indexes a new one by token hash and agent).
    pub fn put_link(&self, link: &LinkRecord) -> Result<(), Error> {
        let fresh = self
            .txn
            .open_table(PUBLIC_LINKS)?
            .insert(link.id.as_str(), super::encode(link).as_slice())?
            .is_none();
        if fresh {
            self.txn
                .open_table(PUBLIC_LINK_HASHES)?
                .insert(link.token_sha256.as_str(), link.id.as_str())?;
            let key = keys::joined(&[&link.agent, &link.id]);
            self.txn
                .open_table(PUBLIC_LINKS_BY_AGENT)?
                .insert(key.as_slice(), ())?;
        }
        Ok(())
    }

    pub fn link(&self, id: &str) -> Result<Option<LinkRecord>, Error> {
        get_json(&self.txn.open_table(PUBLIC_LINKS)?, "public_links", id)
    }

    /// The link whose token hashes to `token_sha256`.
    pub fn link_by_token_hash(&self, token_sha256: &str) -> Result<Option<LinkRecord>, Error> {
        let id = {
            let hashes = self.txn.open_table(PUBLIC_LINK_HASHES)?;
            let id = hashes.get(token_sha256)?.map(|v| v.value().to_string());
            id
        };
        match id {
            Some(id) => self.link(&id),
            None => Ok(None),
        }
    }

    /// Removes a link, its indexes and the bindings of its visitor sessions, which are the
    /// sessions of (`link.agent`, `visitor_username`). The sessions, their messages and
    /// executions stay: they are the owner's history. False when there was no such link.
    pub fn delete_link(&self, link: &LinkRecord, visitor_username: &str) -> Result<bool, Error> {
        let removed = self
            .txn
            .open_table(PUBLIC_LINKS)?
            .remove(link.id.as_str())?
            .is_some();
        self.txn
            .open_table(PUBLIC_LINK_HASHES)?
            .remove(link.token_sha256.as_str())?;
        let key = keys::joined(&[&link.agent, &link.id]);
        self.txn
            .open_table(PUBLIC_LINKS_BY_AGENT)?
            .remove(key.as_slice())?;
        let prefix = keys::prefix(&[&link.agent, visitor_username]);
        let end = keys::prefix_end(&prefix);
        let by_owner = self.txn.open_table(SESSIONS_BY_OWNER)?;
        let mut visitors = self.txn.open_table(VISITOR_SESSIONS)?;
        for entry in by_owner.range(prefix.as_slice()..end.as_slice())? {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key.value()[prefix.len()..]).into_owned();
            visitors.remove(id.as_str())?;
        }
        Ok(removed)
    }

    /// Removes every link of `agent` and the visitor bindings among `session_ids` (the
    /// agent's sessions); part of deleting the agent. Returns how many links went.
    pub fn delete_links_of(&self, agent: &str, session_ids: &[String]) -> Result<u64, Error> {
        let prefix = keys::prefix(&[agent]);
        let end = keys::prefix_end(&prefix);
        let range = prefix.as_slice()..end.as_slice();
        let link_ids: Vec<String> = {
            let by_agent = self.txn.open_table(PUBLIC_LINKS_BY_AGENT)?;
            let mut ids = Vec::new();
            for entry in by_agent.range(range.clone())? {
                let (key, _) = entry?;
                ids.push(String::from_utf8_lossy(&key.value()[prefix.len()..]).into_owned());
            }
            ids
        };
        let mut removed = 0;
        {
            let mut links = self.txn.open_table(PUBLIC_LINKS)?;
            let mut hashes = self.txn.open_table(PUBLIC_LINK_HASHES)?;
            for id in &link_ids {
                let Some(value) = links.remove(id.as_str())? else {
                    continue;
                };
                let link: LinkRecord = super::decode("public_links", value.value())?;
                drop(value);
                hashes.remove(link.token_sha256.as_str())?;
                removed += 1;
            }
        }
        self.txn
            .open_table(PUBLIC_LINKS_BY_AGENT)?
            .retain_in(range, |_, _| false)?;
        let mut visitors = self.txn.open_table(VISITOR_SESSIONS)?;
        for id in session_ids {
            visitors.remove(id.as_str())?;
        }
        Ok(removed)
    }

    pub fn visitor_session(&self, session_id: &str) -> Result<Option<VisitorSession>, Error> {
        get_json(
            &self.txn.open_table(VISITOR_SESSIONS)?,
            "visitor_sessions",
            session_id,
        )
    }

    pub fn put_visitor_session(&self, visitor: &VisitorSession) -> Result<(), Error> {
        self.txn.open_table(VISITOR_SESSIONS)?.insert(
            visitor.session_id.as_str(),
            super::encode(visitor).as_slice(),
        )?;
        Ok(())
    }

    /// Removes a visitor session that never got a message (its first turn was refused):
    /// the binding, the session record and its owner index entry.
    pub fn discard_visitor_session(&self, session: &Session) -> Result<(), Error> {
        self.txn
            .open_table(VISITOR_SESSIONS)?
            .remove(session.id.as_str())?;
        self.txn.open_table(SESSIONS)?.remove(session.id.as_str())?;
        let key = keys::joined(&[&session.agent_name, &session.username, &session.id]);
        self.txn
            .open_table(SESSIONS_BY_OWNER)?
            .remove(key.as_slice())?;
        Ok(())
    }
}

impl Reader {
    pub fn link(&self, id: &str) -> Result<Option<LinkRecord>, Error> {
        get_json(&self.txn.open_table(PUBLIC_LINKS)?, "public_links", id)
    }

    /// The link whose token hashes to `token_sha256`.
    pub fn link_by_token_hash(&self, token_sha256: &str) -> Result<Option<LinkRecord>, Error> {
        let hashes = self.txn.open_table(PUBLIC_LINK_HASHES)?;
        match hashes.get(token_sha256)? {
            Some(id) => self.link(id.value()),
            None => Ok(None),
        }
    }

    /// Links of `agent`, newest first, strictly older than the `before` id; at most `limit`.
    /// Returns them and whether more follow.
    pub fn links_of(
        &self,
        agent: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<LinkRecord>, bool), Error> {
        let index = self.txn.open_table(PUBLIC_LINKS_BY_AGENT)?;
        let links = self.txn.open_table(PUBLIC_LINKS)?;
        let prefix = keys::prefix(&[agent]);
        let end = match before {
            Some(id) => keys::joined(&[agent, id]),
            None => keys::prefix_end(&prefix),
        };
        let mut out = Vec::new();
        for entry in index.range(prefix.as_slice()..end.as_slice())?.rev() {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key.value()[prefix.len()..]).into_owned();
            if let Some(link) = get_json(&links, "public_links", &id)? {
                if out.len() == limit {
                    return Ok((out, true));
                }
                out.push(link);
            }
        }
        Ok((out, false))
    }

    pub fn visitor_session(&self, session_id: &str) -> Result<Option<VisitorSession>, Error> {
        get_json(
            &self.txn.open_table(VISITOR_SESSIONS)?,
            "visitor_sessions",
            session_id,
        )
    }
}
