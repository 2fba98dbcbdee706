//! Agents: their definitions, engines and concurrency limits, and who may see them.
//!
//! Visibility is the one rule every agent route starts with: admin, owner or shared user;
//! anyone else gets `NotFound`, the same answer as for an agent that does not exist.

use crate::auth::Caller;
use crate::clock::Timestamp;
use crate::config::AgentConfig;
use crate::engines::{self, Engine};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
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

/// What can go wrong looking up or using an agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("agent not found")]
    NotFound,
    #[error("only the agent's owner or an admin may do this")]
    NotOwner,
    #[error("agent {name} is running {max_concurrent} turns already; try again shortly")]
    Busy { name: String, max_concurrent: usize },
}

/// One agent as the daemon runs it.
pub struct Agent {
    pub config: AgentConfig,
    pub engine: Arc<dyn Engine>,
    /// `max_concurrent` permits: one per running turn or task of this agent.
    pub slots: Arc<Semaphore>,
    pub source: &'static str,
    pub created_at: Timestamp,
    /// Notified whenever a slot of any agent frees up (shared by all agents).
    freed: Arc<Notify>,
}

impl Agent {
    fn new(
        config: AgentConfig,
        source: &'static str,
        created_at: Timestamp,
        freed: Arc<Notify>,
    ) -> Agent {
        Agent {
            engine: engines::build(&config.engine),
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            source,
            created_at,
            freed,
        }
    }

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

    /// Takes a run slot now, or says the agent is busy.
    pub fn try_slot(&self) -> Result<Slot, Error> {
        match self.slots.clone().try_acquire_owned() {
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

    /// Turns running now.
    pub fn running(&self) -> usize {
        self.config.max_concurrent - self.slots.available_permits()
    }

    /// The model name shown in `init` lines, when the engine has a fixed one.
    pub fn model(&self) -> Option<String> {
        match &self.config.engine {
            crate::config::EngineConfig::OpenAi { model, .. } => Some(model.clone()),
            crate::config::EngineConfig::Echo { .. } => Some("echo".into()),
            crate::config::EngineConfig::Command { .. } => None,
        }
    }

    /// The API shape of the agent.
    pub fn to_json(&self, with_limits: bool) -> serde_json::Value {
        let mut value = serde_json::json!({
            "name": self.config.name,
            "display_name": self.config.display_name,
            "description": self.config.description,
            "engine": self.engine.kind(),
            "capabilities": ["chat", "tasks"],
            "status": "running",
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
}

/// The agents of this daemon.
pub struct Agents {
    agents: RwLock<BTreeMap<String, Arc<Agent>>>,
    freed: Arc<Notify>,
}

impl Agents {
    /// Agents from the configuration.
    pub fn from_config(configs: &[AgentConfig]) -> Agents {
        let now = Timestamp::now();
        let freed = Arc::new(Notify::new());
        let agents = configs
            .iter()
            .map(|c| {
                let agent = Agent::new(c.clone(), "config", now, freed.clone());
                (c.name.clone(), Arc::new(agent))
            })
            .collect();
        Agents {
            agents: RwLock::new(agents),
            freed,
        }
    }

    /// The agent `name`, whoever asks (for the scheduler, not for callers).
    pub fn get(&self, name: &str) -> Option<Arc<Agent>> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        agents.get(name).cloned()
    }

    /// Notified whenever a run slot frees up.
    pub fn slot_freed(&self) -> Arc<Notify> {
        self.freed.clone()
    }

    /// The agent `name` if the caller may see it.
    pub fn visible(&self, caller: &Caller, name: &str) -> Result<Arc<Agent>, Error> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        match agents.get(name) {
            Some(agent) if agent.visible_to(caller) => Ok(agent.clone()),
            _ => Err(Error::NotFound),
        }
    }

    /// Every agent the caller may see, by name.
    pub fn list_visible(&self, caller: &Caller) -> Vec<Arc<Agent>> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        agents
            .values()
            .filter(|a| a.visible_to(caller))
            .cloned()
            .collect()
    }

    /// Every agent.
    pub fn all(&self) -> Vec<Arc<Agent>> {
        let agents = self.agents.read().unwrap_or_else(|p| p.into_inner());
        agents.values().cloned().collect()
    }
}
