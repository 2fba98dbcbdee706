//! Public links: an agent's owner hands out a link, and anyone holding it chats with the agent
//! without an account, while the owner keeps control (expiry, revocation, limits, usage).
//!
//! The store never holds a token, only its SHA-256, so a copy of the store file opens no
//! link. An unknown, disabled, expired or deleted token is one answer (`NotFound`), so the
//! routes are no oracle. Visitor sessions are minted here and bound to their link
//! (`visitors`); what visitors see of a turn is cut down in `answer`.

mod answer;
mod clock;
mod limits;
mod visitors;

pub use answer::{visitor_answer, visitor_event, TIMED_OUT};
pub use clock::Clock;
pub use limits::{client_ip, client_key, RateLimiter};
pub use visitors::{LinkInfo, VisitorHistory, VisitorTurn};

use crate::agents::{self, Agent, Agents};
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::config::bounds::{self, Number};
use crate::config::PublicConfig;
use crate::records::LinkRecord;
use crate::store::{self, Store};
use crate::turns::{self, Turns};
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};
use std::sync::Arc;

/// How long a link lives when its creator does not say.
pub const DEFAULT_EXPIRY_MS: i64 = 30 * 24 * 3600 * 1000;
/// Random bytes in a token (256 bits).
const TOKEN_BYTES: usize = 32;
/// Longest link name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// What can go wrong with public links, for owners and for visitors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unknown, disabled, expired or deleted: visitors cannot tell which.
    #[error("link not found")]
    NotFound,
    #[error("session not found")]
    SessionNotFound,
    #[error("too many requests; try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("this conversation has reached its limit of {max} messages; start a new one")]
    SessionLimit { max: u32 },
    #[error("this agent is not available right now; try again later")]
    Unavailable,
    #[error("{0}")]
    Invalid(String),
    #[error("invalid cursor")]
    BadCursor,
    #[error(transparent)]
    Agent(#[from] agents::Error),
    #[error(transparent)]
    Turn(turns::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Reads a field that may be absent (None), `null` (Some(None)) or a value.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `POST /api/agents/{name}/public-links`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewLink {
    pub name: Option<String>,
    /// Absent: in 30 days; `null`: never.
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<Timestamp>>,
    pub max_messages_per_session: Option<Number>,
    pub rate_limit_per_minute: Option<Number>,
}

/// `PATCH /api/agents/{name}/public-links/{id}`: only the fields given change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkPatch {
    pub enabled: Option<bool>,
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub expires_at: Option<Option<Timestamp>>,
    #[serde(default, deserialize_with = "present")]
    pub max_messages_per_session: Option<Option<Number>>,
    pub rate_limit_per_minute: Option<Number>,
}

/// A new link with its token, which exists only in this answer.
pub struct Created {
    pub link: LinkRecord,
    pub token: String,
}

/// A page of an agent's links.
pub struct LinkPage {
    pub links: Vec<LinkRecord>,
    pub next_cursor: Option<String>,
}

/// Cheap-clone handle to the public links service.
#[derive(Clone)]
pub struct Links {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    turns: Turns,
    agents: Arc<Agents>,
    config: PublicConfig,
    clock: Clock,
    /// Visitor requests per client address.
    per_client: RateLimiter,
    /// Visitor messages per link.
    per_link: RateLimiter,
}

impl Links {
    pub fn new(store: Store, turns: Turns, agents: Arc<Agents>, config: PublicConfig) -> Links {
        Links {
            inner: Arc::new(Inner {
                store,
                turns,
                agents,
                config,
                clock: Clock::default(),
                per_client: RateLimiter::default(),
                per_link: RateLimiter::default(),
            }),
        }
    }

    /// The clock expiry is judged by (tests move it forward).
    pub fn clock(&self) -> Clock {
        self.inner.clock.clone()
    }

    /// `active`, `disabled` or `expired`.
    pub fn status(&self, link: &LinkRecord) -> &'static str {
        if !link.enabled {
            "disabled"
        } else if is_expired(link, self.inner.clock.now()) {
            "expired"
        } else {
            "active"
        }
    }

    /// The API shape of a link (without token or URL, which only its creation shows).
    pub fn to_json(&self, link: &LinkRecord) -> Value {
        json!({
            "id": link.id,
            "agent": link.agent,
            "name": link.name,
            "enabled": link.enabled,
            "status": self.status(link),
            "created_at": link.created_at,
            "created_by": link.created_by,
            "expires_at": link.expires_at,
            "max_messages_per_session": link.max_messages_per_session,
            "rate_limit_per_minute": link.rate_limit_per_minute,
            "usage": {
                "visitors": link.visitors,
                "messages": link.messages,
                "last_used_at": link.last_used_at,
            },
        })
    }

    /// The agent `name`, which the caller must own or administer.
    fn managed(&self, caller: &Caller, name: &str) -> Result<Arc<Agent>, Error> {
        let agent = self.inner.agents.visible(caller, name)?;
        agent.require_manager(caller)?;
        Ok(agent)
    }

    /// Makes a link to agent `name`; the token is in the answer and nowhere else.
    pub async fn create(
        &self,
        caller: &Caller,
        name: &str,
        new: NewLink,
    ) -> Result<Created, Error> {
        let agent = self.managed(caller, name)?;
        let now = self.inner.clock.now();
        let expires_at = match new.expires_at {
            None => Some(now.add_millis(DEFAULT_EXPIRY_MS)),
            Some(None) => None,
            Some(Some(at)) if at <= now => {
                return Err(Error::Invalid("expires_at must be in the future".into()))
            }
            Some(Some(at)) => Some(at),
        };
        let rate = match new.rate_limit_per_minute {
            Some(rate) => check_rate(rate)?,
            None => self.inner.config.default_link_rate_limit_per_minute,
        };
        // The agent's name leads the token, so a proxy in front of several boxes can route it.
        let token = format!("{}.{}", agent.name(), crate::ids::random_token(TOKEN_BYTES));
        let link = LinkRecord {
            id: crate::ids::new_id(),
            agent: agent.name().to_string(),
            name: check_name(new.name.unwrap_or_default())?,
            token_sha256: crate::ids::sha256_hex(token.as_bytes()),
            created_by: caller.username.clone(),
            created_at: now,
            expires_at,
            enabled: true,
            max_messages_per_session: check_max_messages(new.max_messages_per_session)?,
            rate_limit_per_minute: rate,
            visitors: 0,
            messages: 0,
            last_used_at: None,
        };
        let stored = link.clone();
        self.inner
            .store
            .write(move |tx| tx.put_link(&stored))
            .await?;
        Ok(Created { link, token })
    }

    /// The links of agent `name`, newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        name: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<LinkPage, Error> {
        let agent = self.managed(caller, name)?;
        if cursor.is_some_and(|c| !crate::ids::looks_like_id(c)) {
            return Err(Error::BadCursor);
        }
        let (agent_name, before) = (agent.name().to_string(), cursor.map(str::to_string));
        let (links, more) = self
            .inner
            .store
            .read(move |r| r.links_of(&agent_name, before.as_deref(), limit))
            .await?;
        let next_cursor = more.then(|| links.last().map(|l| l.id.clone())).flatten();
        Ok(LinkPage { links, next_cursor })
    }

    /// Changes a link of agent `name`.
    pub async fn patch(
        &self,
        caller: &Caller,
        name: &str,
        id: &str,
        patch: LinkPatch,
    ) -> Result<LinkRecord, Error> {
        let agent = self.managed(caller, name)?;
        let name = patch.name.map(check_name).transpose()?;
        let max = patch
            .max_messages_per_session
            .map(check_max_messages)
            .transpose()?;
        let rate = patch.rate_limit_per_minute.map(check_rate).transpose()?;
        let (agent_name, id) = (agent.name().to_string(), id.to_string());
        let changed = self
            .inner
            .store
            .write(move |tx| {
                let Some(mut link) = tx.link(&id)?.filter(|l| l.agent == agent_name) else {
                    return Ok(None);
                };
                if let Some(enabled) = patch.enabled {
                    link.enabled = enabled;
                }
                if let Some(name) = name {
                    link.name = name;
                }
                if let Some(expires_at) = patch.expires_at {
                    link.expires_at = expires_at;
                }
                if let Some(max) = max {
                    link.max_messages_per_session = max;
                }
                if let Some(rate) = rate {
                    link.rate_limit_per_minute = rate;
                }
                tx.put_link(&link)?;
                Ok(Some(link))
            })
            .await?;
        changed.ok_or(Error::NotFound)
    }

    /// Deletes a link of agent `name`: its token stops working at once. The visitors'
    /// sessions, messages and executions stay in the owner's history.
    pub async fn delete(&self, caller: &Caller, name: &str, id: &str) -> Result<(), Error> {
        let agent = self.managed(caller, name)?;
        let (agent_name, id) = (agent.name().to_string(), id.to_string());
        let deleted = self
            .inner
            .store
            .write(
                move |tx| match tx.link(&id)?.filter(|l| l.agent == agent_name) {
                    Some(link) => tx.delete_link(&link, &visitor_username(&link.id)),
                    None => Ok(false),
                },
            )
            .await?;
        if deleted {
            Ok(())
        } else {
            Err(Error::NotFound)
        }
    }
}

/// The username the chat sessions of a link's visitors belong to. Usernames of accounts
/// never contain ':', so no account can reach these sessions, nor a visitor an account's.
pub fn visitor_username(link_id: &str) -> String {
    format!("public:{link_id}")
}

fn is_expired(link: &LinkRecord, now: Timestamp) -> bool {
    link.expires_at.is_some_and(|at| at <= now)
}

/// True while visitors may use the link.
fn usable(link: &LinkRecord, now: Timestamp) -> bool {
    link.enabled && !is_expired(link, now)
}

fn check_name(name: String) -> Result<String, Error> {
    let name = name.trim().to_string();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(Error::Invalid(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name)
}

fn check_max_messages(max: Option<Number>) -> Result<Option<u32>, Error> {
    max.map(|max| {
        max.within(
            "max_messages_per_session",
            bounds::LINK_MESSAGES_PER_SESSION,
        )
        .map(|n| n as u32)
        .map_err(|m| Error::Invalid(format!("{m} (or null for no limit)")))
    })
    .transpose()
}

fn check_rate(rate: Number) -> Result<u32, Error> {
    rate.within("rate_limit_per_minute", bounds::LINK_RATE_PER_MINUTE)
        .map(|n| n as u32)
        .map_err(Error::Invalid)
}
