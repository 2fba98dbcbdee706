//! Agents: their definitions, engines and concurrency limits, and who may see them.
//!
//! Visibility is the one rule every agent route starts with: admin, owner or shared user;
//! anyone else gets `NotFound`, the same answer as for an agent that does not exist.
//! Agents come from the configuration (`source: "config"`) or are made through the API
//! (`source: "api"`, kept in the store); `manage` changes them at run time.

mod manage;
mod refresh;

pub use manage::{AgentPatch, NewAgent};
pub use refresh::Refreshed;

use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::config::AgentConfig;
use crate::engines::{self, Engine};
use crate::outbound::{AllowList, OutboundPolicy};
use crate::records::AgentRecord;
use crate::store::{self, Store};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A run slot of an agent; dropping it frees the slot and wakes the task scheduler.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

/// What can go wrong looking up, using or changing an agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agent not found")]
    NotFound,
    #[error("only the agent's owner or an admin may do this")]
    NotOwner,
    #[error("agent {name} is running {max_concurrent} turns already; try again shortly")]
    Busy { name: String, max_concurrent: usize },
    #[error("agent {0} is stopped; its owner can start it again")]
    Stopped(String),
    #[error("an agent named {0} already exists")]
    Exists(String),
    #[error("agent {0} comes from the configuration file; change it there")]
    ManagedByConfig(String),
    #[error("only admins may create agents here")]
    CreateForbidden,
    #[error("only admins may give an agent the command engine: it runs programs on this box")]
    CommandEngineAdminOnly,
    #[error("{0}")]
    Invalid(String),
    #[error("{field}: {reason}")]
    OutboundNotAllowed { field: &'static str, reason: String },
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// State that outlives a change of definition (PATCH swaps the `Agent`, not this).
struct Shared {
    /// `max_concurrent` permits: one per running turn or task of this agent.
    slots: Arc<Semaphore>,
    stopped: AtomicBool,
}

/// One agent as the daemon runs it: an immutable definition; PATCH makes a new one.
pub struct Agent {
    pub config: AgentConfig,
    pub engine: Arc<dyn Engine>,
    /// `config` or `api`.
    pub source: &'static str,
    pub created_at: Timestamp,
    /// Where the engine may connect: anywhere when an admin or the file set it.
    pub outbound: OutboundPolicy,
    shared: Arc<Shared>,
    /// Users the configuration file shares a config agent with (the API cannot unshare them).
    file_shares: Vec<String>,
    /// Notified whenever a slot of any agent frees up (shared by all agents).
    freed: Arc<Notify>,
}

impl Agent {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// True for admin, owner and shared users.
    pub fn visible_to(&self, caller: &Caller) -> bool {
        caller.is_admin()
            || caller.username == self.config.owner
            || self.config.shared_with.contains(&caller.username)
    }

    /// True for admin and owner: they see everyone's sessions and may act for everyone.
    pub fn managed_by(&self, caller: &Caller) -> bool {
        caller.is_admin() || caller.username == self.config.owner
    }

    /// Fails unless the caller is the owner or an admin.
    pub fn require_manager(&self, caller: &Caller) -> Result<(), Error> {
        if self.managed_by(caller) {
            Ok(())
        } else {
            Err(Error::NotOwner)
        }
    }

    /// True while the agent refuses new turns.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::SeqCst)
    }

    /// Fails with `Stopped` while the agent is stopped.
    pub fn require_running(&self) -> Result<(), Error> {
        if self.is_stopped() {
            Err(Error::Stopped(self.config.name.clone()))
        } else {
            Ok(())
        }
    }

    /// Takes a run slot now, or says the agent is busy.
    pub fn try_slot(&self) -> Result<Slot, Error> {
        match self.shared.slots.clone().try_acquire_owned() {
            Ok(permit) => Ok(Slot {
                _permit: permit,
                freed: self.freed.clone(),
            }),
            Err(_) => Err(Error::Busy {
                name: self.config.name.clone(),
                max_concurrent: self.config.max_concurrent,
            }),
        }
    }

    /// Turns and tasks running now.
    pub fn running(&self) -> usize {
        self.config
            .max_concurrent
            .saturating_sub(self.shared.slots.available_permits())
    }

    /// The model name shown in `init` lines, when the engine has a fixed one.
    pub fn model(&self) -> Option<String> {
        match &self.config.engine {
            crate::config::EngineSpec::OpenAi { model, .. } => Some(model.clone()),
            crate::config::EngineSpec::Echo { .. } => Some("echo".into()),
            crate::config::EngineSpec::Command { .. } => None,
        }
    }

    /// The API shape of the agent.
    pub fn to_json(&self, with_limits: bool) -> serde_json::Value {
        let mut capabilities = vec!["chat", "tasks"];
        if self.config.voice {
            capabilities.push("voice");
        }
        if self.config.paid.is_some() {
            capabilities.push("paid");
        }
        let mut value = serde_json::json!({
            "name": self.config.name,
            "display_name": self.config.display_name,
            "description": self.config.description,
            "engine": self.engine.kind(),
            "capabilities": capabilities,
            "status": if self.is_stopped() { "stopped" } else { "running" },
            "activity": if self.running() > 0 { "running" } else { "idle" },
            "source": self.source,
            "owner": self.config.owner,
            "created_at": self.created_at,
        });
        if with_limits {
            value["limits"] = serde_json::json!({
                "max_concurrent": self.config.max_concurrent,
                "running": self.running(),
                "timeout_seconds": self.config.timeout.as_secs(),
                "queue_capacity": self.config.queue_capacity,
            });
            value["shared_with"] = serde_json::json!(self.config.shared_with);
        }
        value
    }

    /// The record the store keeps for this agent.
    fn record(&self) -> AgentRecord {
        AgentRecord {
            name: self.config.name.clone(),
            display_name: self.config.display_name.clone(),
            description: self.config.description.clone(),
            owner: self.config.owner.clone(),
            shared_with: self.config.shared_with.clone(),
            engine: self.config.engine.clone(),
            max_concurrent: self.config.max_concurrent,
            queue_capacity: self.config.queue_capacity,
            timeout_seconds: self.config.timeout.as_secs(),
            voice: self.config.voice,
            source: self.source.to_string(),
            stopped: self.is_stopped(),
            created_at: self.created_at,
            engine_trusted: Some(matches!(self.outbound, OutboundPolicy::Any)),
        }
    }
}

fn config_of(record: &AgentRecord) -> AgentConfig {
    AgentConfig {
        name: record.name.clone(),
        display_name: record.display_name.clone(),
        description: record.description.clone(),
        owner: record.owner.clone(),
        shared_with: record.shared_with.clone(),
        engine: record.engine.clone(),
        max_concurrent: record.max_concurrent,
        timeout: Duration::from_secs(record.timeout_seconds),
        queue_capacity: record.queue_capacity,
        voice: record.voice,
        paid: None,
    }
}

/// Checks a stored API agent as `POST /api/agents` checks a new one: a record written before
/// the ranges existed (or by hand) must not reach `Semaphore::new`.
fn usable(record: &AgentRecord) -> Result<(), String> {
    use crate::config::bounds;
    bounds::AGENT_MAX_CONCURRENT.check_usize("max_concurrent", record.max_concurrent)?;
    bounds::AGENT_QUEUE_CAPACITY.check_usize("queue_capacity", record.queue_capacity)?;
    bounds::AGENT_TIMEOUT_SECONDS.check("timeout_seconds", record.timeout_seconds)?;
    if let crate::records::EngineSpec::Echo { delay_ms } = record.engine {
        bounds::ECHO_DELAY_MS.check("engine.delay_ms", delay_ms)?;
    }
    if !crate::config::valid_agent_name(&record.name) {
        return Err("name is not an agent name".into());
    }
    Ok(())
}

/// The agents of this daemon.
pub struct Agents {
    agents: RwLock<BTreeMap<String, Arc<Agent>>>,
    freed: Arc<Notify>,
    store: Store,
    /// `[outbound] allow`, for the engines users set.
    allow: AllowList,
}

impl Agents {
    /// Agents from the configuration and the store. A stored API agent whose name the file
    /// also uses is left out (the file wins) and reported.
    pub fn load(
        configs: &[AgentConfig],
        records: Vec<AgentRecord>,
        store: Store,
        allow: AllowList,
    ) -> Agents {
        let freed = Arc::new(Notify::new());
        let mut agents = BTreeMap::new();
        let mut stored: BTreeMap<String, AgentRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        for config in configs {
            let record = stored.remove(&config.name).filter(|record| {
                let api = record.source == "api";
                if api {
                    tracing::warn!(agent = %config.name, "an agent made through the API has the name of one in the configuration file; the file's agent is served");
                }
                !api
            });
            let agent = file_agent(config, record, &freed);
            agents.insert(agent.config.name.clone(), Arc::new(agent));
        }
        for record in stored.into_values().filter(|r| r.source == "api") {
            if let Err(message) = usable(&record) {
                tracing::error!(agent = %record.name, %message, "a stored agent has values outside their ranges; it is not served (its record is kept)");
                continue;
            }
            let agent = stored_agent(&record, &freed, &allow);
            agents.insert(record.name.clone(), Arc::new(agent));
        }
        Agents {
            agents: RwLock::new(agents),
            freed,
            store,
            allow,
        }
    }

    /// The agent `name` if the caller may see it.
    pub fn visible(&self, caller: &Caller, name: &str) -> Result<Arc<Agent>, Error> {
        match self.get(name) {
            Some(agent) if agent.visible_to(caller) => Ok(agent),
            _ => Err(Error::NotFound),
        }
    }

    /// The agent `name`, whoever asks (for the scheduler, not for callers).
    pub fn get(&self, name: &str) -> Option<Arc<Agent>> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        agents.get(name).cloned()
    }

    /// Every agent the caller may see, by name.
    pub fn list_visible(&self, caller: &Caller) -> Vec<Arc<Agent>> {
        self.all()
            .into_iter()
            .filter(|a| a.visible_to(caller))
            .collect()
    }

    /// Every agent.
    pub fn all(&self) -> Vec<Arc<Agent>> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        agents.values().cloned().collect()
    }

    /// Notified whenever a run slot frees up.
    pub fn slot_freed(&self) -> Arc<Notify> {
        self.freed.clone()
    }
}

/// An API agent from its record.
/// An agent of the file, with what its stored record kept of it, if any: stopped, when it was
/// first served, and the users it was shared with through the API (beside the file's own).
fn file_agent(config: &AgentConfig, record: Option<AgentRecord>, freed: &Arc<Notify>) -> Agent {
    let mut full = config.clone();
    let (mut stopped, mut created_at) = (false, Timestamp::now());
    if let Some(record) = record {
        stopped = record.stopped;
        created_at = record.created_at;
        for user in record.shared_with {
            if !full.shared_with.contains(&user) {
                full.shared_with.push(user);
            }
        }
    }
    let mut agent = build(
        full,
        "config",
        created_at,
        stopped,
        freed,
        OutboundPolicy::Any,
    );
    agent.file_shares = config.shared_with.clone();
    agent
}

fn stored_agent(record: &AgentRecord, freed: &Arc<Notify>, allow: &AllowList) -> Agent {
    build(
        config_of(record),
        "api",
        record.created_at,
        record.stopped,
        freed,
        OutboundPolicy::for_caller(record.engine_trusted == Some(true), allow),
    )
}

fn build(
    config: AgentConfig,
    source: &'static str,
    created_at: Timestamp,
    stopped: bool,
    freed: &Arc<Notify>,
    outbound: OutboundPolicy,
) -> Agent {
    Agent {
        engine: engines::build(&config.engine, outbound.clone()),
        outbound,
        shared: Arc::new(Shared {
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            stopped: AtomicBool::new(stopped),
        }),
        config,
        source,
        created_at,
        file_shares: Vec::new(),
        freed: freed.clone(),
    }
}

/// Decides, once, whether the engines of API agents stored before the outbound rule were
/// set by an admin: they were when their owner is an admin now (only admins could point an
/// agent anywhere before, and an admin's own agents keep reaching the box's network after
/// an upgrade). The decision is stored, so it is not made again.
pub async fn settle_engine_trust(
    store: &Store,
    records: Vec<AgentRecord>,
) -> Result<Vec<AgentRecord>, store::Error> {
    if records.iter().all(|r| r.engine_trusted.is_some()) {
        return Ok(records);
    }
    store
        .write(move |tx| {
            let mut records = records;
            for record in records.iter_mut().filter(|r| r.engine_trusted.is_none()) {
                let owner_is_admin = tx
                    .user(&record.owner)?
                    .is_some_and(|u| u.role == crate::records::Role::Admin);
                record.engine_trusted = Some(owner_is_admin);
                tx.put_agent(record)?;
            }
            Ok(records)
        })
        .await
}
