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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
}

impl Agent {
    fn new(config: AgentConfig, source: &'static str, created_at: Timestamp) -> Agent {
        Agent {
            engine: engines::build(&config.engine),
            slots: Arc::new(Semaphore::new(config.max_concurrent)),
            config,
            source,
            created_at,
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
    pub fn try_slot(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::Busy {
                name: self.config.name.clone(),
                max_concurrent: self.config.max_concurrent,
            })
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
            "capabilities": ["chat"],
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
            });
            value["shared_with"] = serde_json::json!(self.config.shared_with);
        }
        value
    }
}

/// The agents of this daemon.
pub struct Agents {
    agents: RwLock<BTreeMap<String, Arc<Agent>>>,
}

impl Agents {
    /// Agents from the configuration.
    pub fn from_config(configs: &[AgentConfig]) -> Agents {
        let now = Timestamp::now();
        let agents = configs
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Arc::new(Agent::new(c.clone(), "config", now)),
                )
            })
            .collect();
        Agents {
            agents: RwLock::new(agents),
        }
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
