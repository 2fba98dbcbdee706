//! Changing agents at run time: create, patch, stop and start, share, and taking one out of
//! service before its data is deleted. Every change is committed to the store before the
//! running set changes; a changed agent is a new `Agent`, so turns already running finish
//! on the definition they started with.

use super::{build, Agent, Agents, Error, Shared};
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::config::bounds::{self, Number, Range};
use crate::config::{valid_agent_name, AgentConfig, EngineSpec};
use crate::outbound::OutboundPolicy;
use serde::Deserialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A run-time limit written as seconds or as a duration (`"15m"`).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TimeoutValue {
    Text(String),
    Seconds(Number),
}

impl TimeoutValue {
    fn duration(&self) -> Result<Duration, Error> {
        let range = bounds::AGENT_TIMEOUT_SECONDS;
        match self {
            TimeoutValue::Seconds(seconds) => seconds
                .within("timeout", range)
                .map(Duration::from_secs)
                .map_err(|m| Error::Invalid(format!("{m} (seconds)"))),
            TimeoutValue::Text(text) => crate::config::duration_within("timeout", text, range)
                .map_err(|err| Error::Invalid(err.to_string())),
        }
    }
}

/// `POST /api/agents`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    pub name: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub engine: Option<EngineSpec>,
    pub max_concurrent: Option<Number>,
    pub queue_capacity: Option<Number>,
    pub timeout: Option<TimeoutValue>,
    pub voice: Option<bool>,
}

/// `PATCH /api/agents/{name}`: only the fields given change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPatch {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub engine: Option<EngineSpec>,
    pub max_concurrent: Option<Number>,
    pub queue_capacity: Option<Number>,
    pub timeout: Option<TimeoutValue>,
    pub voice: Option<bool>,
}

fn check_engine(caller: &Caller, engine: &EngineSpec) -> Result<(), Error> {
    match engine {
        EngineSpec::Command { program, .. } => {
            if !caller.is_admin() {
                return Err(Error::CommandEngineAdminOnly);
            }
            if program.trim().is_empty() {
                return Err(Error::Invalid("engine.program must not be empty".into()));
            }
        }
        EngineSpec::OpenAi { base_url, .. }
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) =>
        {
            return Err(Error::Invalid(format!(
                "engine.base_url {base_url:?} is not an http:// URL"
            )));
        }
        _ => {}
    }
    check_engine_numbers(engine)
}

fn check_engine_numbers(engine: &EngineSpec) -> Result<(), Error> {
    if let EngineSpec::Echo { delay_ms } = engine {
        bounds::ECHO_DELAY_MS
            .check("engine.delay_ms", *delay_ms)
            .map_err(Error::Invalid)?;
    }
    Ok(())
}

/// Where an engine set by `caller` may connect; a user's URL must not name a private address
/// (checked now, and again by the engine at every connection).
async fn check_outbound(
    caller: &Caller,
    engine: &EngineSpec,
    allow: &crate::outbound::AllowList,
) -> Result<OutboundPolicy, Error> {
    let policy = OutboundPolicy::for_caller(caller.is_admin(), allow);
    if let EngineSpec::OpenAi { base_url, .. } = engine {
        let refused = |reason: String| Error::OutboundNotAllowed {
            field: "engine.base_url",
            reason,
        };
        let uri: hyper::Uri = base_url
            .parse()
            .map_err(|_| Error::Invalid(format!("engine.base_url {base_url:?} is not a URL")))?;
        policy
            .check_url(&uri)
            .await
            .map_err(|err| refused(err.to_string()))?;
    }
    Ok(policy)
}

/// The value given, in `range`, or `default` when none was given.
fn count(field: &str, value: Option<Number>, range: Range, default: usize) -> Result<usize, Error> {
    match value {
        Some(number) => number
            .within(field, range)
            .map(|n| n as usize)
            .map_err(Error::Invalid),
        None => Ok(default),
    }
}

impl Agents {
    fn replace(&self, agent: Agent) -> Arc<Agent> {
        let agent = Arc::new(agent);
        let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        agents.insert(agent.config.name.clone(), agent.clone());
        agent
    }

    /// Makes an agent owned by the caller; it starts `running`.
    pub async fn create(
        &self,
        caller: &Caller,
        new: NewAgent,
        default_engine: &EngineSpec,
        users_may_create: bool,
    ) -> Result<Arc<Agent>, Error> {
        if !caller.is_admin() && !users_may_create {
            return Err(Error::CreateForbidden);
        }
        if !valid_agent_name(&new.name) {
            return Err(Error::Invalid(
                "name: 1-63 lowercase letters, digits and '-', starting with a letter".into(),
            ));
        }
        let (engine, outbound) = match new.engine {
            Some(engine) => {
                check_engine(caller, &engine)?;
                let outbound = check_outbound(caller, &engine, &self.allow).await?;
                (engine, outbound)
            }
            // The configuration's default engine: an admin chose where it connects.
            None => {
                check_engine(caller, default_engine)?;
                (default_engine.clone(), OutboundPolicy::Any)
            }
        };
        let config = AgentConfig {
            display_name: new.display_name.unwrap_or_else(|| new.name.clone()),
            description: new.description.unwrap_or_default(),
            owner: caller.username.clone(),
            shared_with: Vec::new(),
            engine,
            max_concurrent: count(
                "max_concurrent",
                new.max_concurrent,
                bounds::AGENT_MAX_CONCURRENT,
                4,
            )?,
            timeout: new
                .timeout
                .map(|t| t.duration())
                .transpose()?
                .unwrap_or(Duration::from_secs(600)),
            queue_capacity: count(
                "queue_capacity",
                new.queue_capacity,
                bounds::AGENT_QUEUE_CAPACITY,
                100,
            )?,
            voice: new.voice.unwrap_or(false),
            paid: None,
            name: new.name,
        };
        if self.get(&config.name).is_some() {
            return Err(Error::Exists(config.name));
        }
        let agent = build(
            config,
            "api",
            Timestamp::now(),
            false,
            &self.freed,
            outbound,
        );
        let record = agent.record();
        let created = self
            .store
            .write(move |tx| {
                if tx.agent(&record.name)?.is_some() {
                    return Ok(false);
                }
                tx.put_agent(&record)?;
                Ok(true)
            })
            .await?;
        if !created || self.get(agent.name()).is_some() {
            return Err(Error::Exists(agent.config.name.clone()));
        }
        Ok(self.replace(agent))
    }

    /// Changes an API agent's definition for the turns that start from now on.
    pub async fn patch(
        &self,
        caller: &Caller,
        name: &str,
        patch: AgentPatch,
    ) -> Result<Arc<Agent>, Error> {
        let current = self.visible(caller, name)?;
        current.require_manager(caller)?;
        if current.source == "config" {
            return Err(Error::ManagedByConfig(name.to_string()));
        }
        let mut config = current.config.clone();
        let mut outbound = current.outbound.clone();
        if let Some(engine) = patch.engine {
            check_engine(caller, &engine)?;
            outbound = check_outbound(caller, &engine, &self.allow).await?;
            config.engine = engine;
        }
        if let Some(display_name) = patch.display_name {
            config.display_name = display_name;
        }
        if let Some(description) = patch.description {
            config.description = description;
        }
        config.max_concurrent = count(
            "max_concurrent",
            patch.max_concurrent,
            bounds::AGENT_MAX_CONCURRENT,
            config.max_concurrent,
        )?;
        config.queue_capacity = count(
            "queue_capacity",
            patch.queue_capacity,
            bounds::AGENT_QUEUE_CAPACITY,
            config.queue_capacity,
        )?;
        if let Some(timeout) = patch.timeout {
            config.timeout = timeout.duration()?;
        }
        if let Some(voice) = patch.voice {
            config.voice = voice;
        }
        let next = self.successor_with(&current, config, outbound);
        self.persist(&next).await?;
        resize(
            &current.shared,
            current.config.max_concurrent,
            next.config.max_concurrent,
        );
        Ok(self.replace(next))
    }

    /// Stops or starts an agent (idempotent). Stopped agents refuse new turns; their tasks wait.
    pub async fn set_stopped(
        &self,
        caller: &Caller,
        name: &str,
        stopped: bool,
    ) -> Result<Arc<Agent>, Error> {
        let agent = self.visible(caller, name)?;
        agent.require_manager(caller)?;
        agent.shared.stopped.store(stopped, Ordering::SeqCst);
        self.persist(&agent).await?;
        if !stopped {
            self.freed.notify_one();
        }
        Ok(agent)
    }

    /// Shares the agent with `username` (idempotent).
    pub async fn add_share(
        &self,
        caller: &Caller,
        name: &str,
        username: &str,
    ) -> Result<Arc<Agent>, Error> {
        let agent = self.visible(caller, name)?;
        agent.require_manager(caller)?;
        if agent.config.shared_with.iter().any(|u| u == username) {
            return Ok(agent);
        }
        let mut config = agent.config.clone();
        config.shared_with.push(username.to_string());
        let next = self.successor(&agent, config);
        self.persist(&next).await?;
        Ok(self.replace(next))
    }

    /// Stops sharing the agent with `username`; false when it was not shared with them.
    pub async fn remove_share(
        &self,
        caller: &Caller,
        name: &str,
        username: &str,
    ) -> Result<bool, Error> {
        let agent = self.visible(caller, name)?;
        agent.require_manager(caller)?;
        if !agent.config.shared_with.iter().any(|u| u == username) {
            return Ok(false);
        }
        if agent.file_shares.iter().any(|u| u == username) {
            return Err(Error::ManagedByConfig(name.to_string()));
        }
        let mut config = agent.config.clone();
        config.shared_with.retain(|u| u != username);
        let next = self.successor(&agent, config);
        self.persist(&next).await?;
        self.replace(next);
        Ok(true)
    }

    /// Takes an API agent out of service (new requests get 404); the caller then ends its
    /// work and deletes its data.
    pub fn withdraw(&self, caller: &Caller, name: &str) -> Result<Arc<Agent>, Error> {
        let agent = self.visible(caller, name)?;
        agent.require_manager(caller)?;
        if agent.source == "config" {
            return Err(Error::ManagedByConfig(name.to_string()));
        }
        agent.shared.stopped.store(true, Ordering::SeqCst);
        let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        agents.remove(name);
        Ok(agent)
    }

    /// Follows the removal of an account, which the store has already applied: it leaves
    /// every share the API gave it, and API agents it owned pass to `heir`. The file's shares
    /// and owners stay: the file names accounts on purpose.
    pub fn account_removed(&self, username: &str, heir: &str) {
        for agent in self.all() {
            let mut config = agent.config.clone();
            config
                .shared_with
                .retain(|u| u != username || agent.file_shares.iter().any(|f| f == u));
            let inherit = agent.source == "api" && config.owner == username;
            if inherit {
                config.owner = heir.to_string();
            }
            if inherit || config.shared_with.len() != agent.config.shared_with.len() {
                let next = self.successor(&agent, config);
                self.replace(next);
            }
        }
    }

    /// A new definition that keeps the agent's slots, stopped state and identity.
    pub(super) fn successor(&self, current: &Agent, config: AgentConfig) -> Agent {
        self.successor_with(current, config, current.outbound.clone())
    }

    /// A successor whose engine connects where `outbound` permits.
    fn successor_with(
        &self,
        current: &Agent,
        config: AgentConfig,
        outbound: OutboundPolicy,
    ) -> Agent {
        let same_policy = matches!(
            (&outbound, &current.outbound),
            (OutboundPolicy::Any, OutboundPolicy::Any)
                | (OutboundPolicy::Public(_), OutboundPolicy::Public(_))
        );
        let engine = if config.engine == current.config.engine && same_policy {
            current.engine.clone()
        } else {
            crate::engines::build(&config.engine, outbound.clone())
        };
        Agent {
            engine,
            outbound,
            config,
            source: current.source,
            created_at: current.created_at,
            shared: current.shared.clone(),
            file_shares: current.file_shares.clone(),
            freed: self.freed.clone(),
        }
    }

    async fn persist(&self, agent: &Agent) -> Result<(), Error> {
        let record = agent.record();
        self.store.write(move |tx| tx.put_agent(&record)).await?;
        Ok(())
    }
}

/// Moves the slot count from `old` to `new`: more permits at once; fewer as running work
/// hands its permits back.
pub(super) fn resize(shared: &Arc<Shared>, old: usize, new: usize) {
    if new > old {
        shared.slots.add_permits(new - old);
    } else if new < old {
        let slots = shared.slots.clone();
        let surplus = (old - new) as u32;
        tokio::spawn(async move {
            if let Ok(permits) = slots.acquire_many(surplus).await {
                permits.forget();
            }
        });
    }
}
