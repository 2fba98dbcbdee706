//! Visitors: what a token opens, turns in sessions minted for its link, and the history of
//! one such session. Every visitor request counts against the client's address before the
//! token is even looked up, so probing tokens costs as much as using one.

use super::{client_key, usable, visitor_username, Error, Links};
use crate::agents::{self, Agent};
use crate::clock::Timestamp;
use crate::ids::SessionId;
use crate::records::{ExecutionKind, LinkRecord, Message, Session, SessionStatus, VisitorSession};
use crate::store::{self, Tx};
use crate::turns::{self, SessionPolicy, Started, TurnRequest};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Longest token looked up; longer ones are unknown without a store read.
const MAX_TOKEN_CHARS: usize = 200;

/// What a valid token shows before any message.
pub struct LinkInfo {
    pub display_name: String,
    pub description: String,
}

/// A visitor's accepted turn, in the session it belongs to.
pub struct VisitorTurn {
    pub started: Started,
    pub session_id: SessionId,
}

/// Messages of one visitor session, oldest first.
pub struct VisitorHistory {
    pub session_id: SessionId,
    pub messages: Vec<Message>,
    pub next_cursor: Option<String>,
}

/// What the admission step decided and wrote, so a refused turn can be taken back.
struct Admitted {
    link_id: String,
    session: Session,
    /// The session was minted for this message.
    fresh: bool,
}

impl Links {
    /// Counts one visitor request from `ip`, or says when to come back.
    fn check_client(&self, ip: IpAddr) -> Result<(), Error> {
        let limit = self.inner.config.requests_per_minute_per_ip;
        self.inner
            .per_client
            .hit(&client_key(ip), limit, Instant::now())
            .map_err(|retry_after| Error::RateLimited { retry_after })
    }

    /// The usable link a token opens and its agent; `NotFound` for anything else.
    async fn resolve(&self, token: &str) -> Result<(LinkRecord, Arc<Agent>), Error> {
        if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
            return Err(Error::NotFound);
        }
        let hash = crate::ids::sha256_hex(token.as_bytes());
        let link = self
            .inner
            .store
            .read(move |r| r.link_by_token_hash(&hash))
            .await?;
        let now = self.inner.clock.now();
        let link = link.filter(|l| usable(l, now)).ok_or(Error::NotFound)?;
        let agent = self.inner.agents.get(&link.agent).ok_or(Error::NotFound)?;
        Ok((link, agent))
    }

    /// `GET /api/public/link/{token}`: the agent's name and description.
    pub async fn info(&self, ip: IpAddr, token: &str) -> Result<LinkInfo, Error> {
        self.check_client(ip)?;
        let (_, agent) = self.resolve(token).await?;
        Ok(LinkInfo {
            display_name: agent.config.display_name.clone(),
            description: agent.config.description.clone(),
        })
    }

    /// A visitor's message: in the session `session_id` minted for this link, or in a new
    /// one. The turn is an execution of kind `public`.
    pub async fn chat(
        &self,
        ip: IpAddr,
        token: &str,
        message: String,
        session_id: Option<SessionId>,
    ) -> Result<VisitorTurn, Error> {
        self.check_client(ip)?;
        let (link, agent) = self.resolve(token).await?;
        turns::check_message(ExecutionKind::Public, &message).map_err(Error::Turn)?;
        if session_id
            .as_deref()
            .is_some_and(|id| !crate::ids::looks_like_id(id))
        {
            return Err(Error::SessionNotFound);
        }
        if agent.is_stopped() {
            return Err(Error::Unavailable);
        }
        self.inner
            .per_link
            .hit(&link.id, link.rate_limit_per_minute, Instant::now())
            .map_err(|retry_after| Error::RateLimited { retry_after })?;
        let now = self.inner.clock.now();
        let admitted = self
            .inner
            .store
            .write(move |tx| admit(tx, &link.id, session_id, now))
            .await??;
        let request = TurnRequest::new(
            agent,
            admitted.session.username.clone(),
            message,
            ExecutionKind::Public,
            SessionPolicy::Existing(admitted.session.id.clone()),
        );
        match self.inner.turns.start(request).await {
            Ok(started) => Ok(VisitorTurn {
                started,
                session_id: admitted.session.id,
            }),
            Err(err) => {
                self.release(admitted).await;
                Err(match err {
                    turns::Error::Agent(agents::Error::Stopped(_)) => Error::Unavailable,
                    other => Error::Turn(other),
                })
            }
        }
    }

    /// Takes back what `admit` counted for a turn the chat service refused.
    async fn release(&self, admitted: Admitted) {
        let released = self
            .inner
            .store
            .write(move |tx| {
                if let Some(mut link) = tx.link(&admitted.link_id)? {
                    link.messages = link.messages.saturating_sub(1);
                    if admitted.fresh {
                        link.visitors = link.visitors.saturating_sub(1);
                    }
                    tx.put_link(&link)?;
                }
                if admitted.fresh {
                    tx.discard_visitor_session(&admitted.session)?;
                } else if let Some(mut visitor) = tx.visitor_session(&admitted.session.id)? {
                    visitor.messages = visitor.messages.saturating_sub(1);
                    tx.put_visitor_session(&visitor)?;
                }
                Ok(())
            })
            .await;
        if let Err(err) = released {
            tracing::warn!(cause = %err, "taking back a refused visitor message failed");
        }
    }

    /// `GET /api/public/history/{token}?session_id=`: the newest `limit` messages of a
    /// session minted for this link, before `cursor`, oldest first.
    pub async fn history(
        &self,
        ip: IpAddr,
        token: &str,
        session_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<VisitorHistory, Error> {
        self.check_client(ip)?;
        let (link, _) = self.resolve(token).await?;
        if !crate::ids::looks_like_id(session_id) {
            return Err(Error::SessionNotFound);
        }
        let before = cursor
            .map(|c| c.parse::<u32>().map_err(|_| Error::BadCursor))
            .transpose()?;
        let id = session_id.to_string();
        let messages = self
            .inner
            .store
            .read(move |r| {
                let bound = r
                    .visitor_session(&id)?
                    .is_some_and(|v| v.link_id == link.id);
                if !bound {
                    return Ok(None);
                }
                r.messages(&id, before, limit).map(Some)
            })
            .await?
            .ok_or(Error::SessionNotFound)?;
        let next_cursor = messages
            .first()
            .filter(|m| m.seq > 0 && messages.len() == limit)
            .map(|m| m.seq.to_string());
        Ok(VisitorHistory {
            session_id: session_id.into(),
            messages,
            next_cursor,
        })
    }
}

/// The admission step, one writer job: the link is still usable, the session was minted for
/// it and is under its message limit (or a new one is minted), and the counters move.
/// Checks come before writes.
fn admit(
    tx: &Tx<'_>,
    link_id: &str,
    session_id: Option<SessionId>,
    now: Timestamp,
) -> Result<Result<Admitted, Error>, store::Error> {
    let Some(mut link) = tx.link(link_id)?.filter(|l| usable(l, now)) else {
        return Ok(Err(Error::NotFound));
    };
    let (session, mut visitor, fresh) = match session_id {
        Some(id) => {
            let visitor = tx.visitor_session(&id)?.filter(|v| v.link_id == link.id);
            let (Some(visitor), Some(session)) = (visitor, tx.session(&id)?) else {
                return Ok(Err(Error::SessionNotFound));
            };
            if let Some(max) = link.max_messages_per_session {
                if visitor.messages >= max {
                    return Ok(Err(Error::SessionLimit { max }));
                }
            }
            (session, visitor, false)
        }
        None => {
            let started_at = Timestamp::now();
            let session = Session {
                id: SessionId::new_at(started_at),
                agent_name: link.agent.as_str().into(),
                username: visitor_username(&link.id),
                status: SessionStatus::Active,
                started_at,
                last_message_at: None,
                message_count: 0,
                total_cost_usd: 0.0,
                context_tokens: 0,
                title: None,
            };
            tx.put_session(&session)?;
            let visitor = VisitorSession {
                session_id: session.id.clone(),
                link_id: link.id.clone(),
                agent: link.agent.clone(),
                messages: 0,
                created_at: now,
            };
            link.visitors += 1;
            (session, visitor, true)
        }
    };
    visitor.messages += 1;
    tx.put_visitor_session(&visitor)?;
    link.messages += 1;
    link.last_used_at = Some(now);
    tx.put_link(&link)?;
    Ok(Ok(Admitted {
        link_id: link.id,
        session,
        fresh,
    }))
}
