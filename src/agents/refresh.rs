//! Refreshing the agents of the configuration file after a reload (SIGHUP). Only agents of
//! the file change: API agents stay, and one that a file agent hid comes back when the file
//! drops that name. A changed agent is a new `Agent`, so running turns finish on the
//! definition they started with.

use super::{Agent, Agents};
use crate::config::AgentConfig;
use crate::records::AgentRecord;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a refresh changed, by agent name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Refreshed {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
}

impl Agents {
    /// Makes the file's agents `configs`; `records` are the stored agents (for API agents a
    /// file agent hid, and for the stopped state and shares of returning file agents).
    pub fn refresh(&self, configs: &[AgentConfig], records: Vec<AgentRecord>) -> Refreshed {
        let mut stored: BTreeMap<String, AgentRecord> =
            records.into_iter().map(|r| (r.name.clone(), r)).collect();
        let mut agents = self.agents.write().unwrap_or_else(|p| p.into_inner());
        let mut refreshed = Refreshed::default();
        for config in configs {
            let name = config.name.clone();
            match agents.get(&name).cloned() {
                Some(current) if current.source == "config" => {
                    if let Some(next) = self.refreshed(&current, config) {
                        agents.insert(name.clone(), Arc::new(next));
                        refreshed.changed.push(name);
                    }
                }
                current => {
                    if current.is_some() {
                        tracing::warn!(agent = %name, "an agent made through the API has the name of one in the configuration file; the file's agent is served");
                    }
                    let record = stored.remove(&name).filter(|r| r.source == "config");
                    agents.insert(
                        name.clone(),
                        Arc::new(super::file_agent(config, record, &self.freed)),
                    );
                    refreshed.added.push(name);
                }
            }
        }
        let gone: Vec<String> = agents
            .values()
            .filter(|a| a.source == "config" && !configs.iter().any(|c| c.name == a.name()))
            .map(|a| a.name().to_string())
            .collect();
        for name in gone {
            agents.remove(&name);
            if let Some(record) = stored.remove(&name).filter(|r| r.source == "api") {
                let agent = super::stored_agent(&record, &self.freed, &self.allow);
                agents.insert(name.clone(), Arc::new(agent));
            }
            refreshed.removed.push(name);
        }
        refreshed
    }

    /// The successor of a file agent under its new definition, or None when nothing changed.
    /// Shares added through the API are kept; shares the file dropped go.
    fn refreshed(&self, current: &Agent, config: &AgentConfig) -> Option<Agent> {
        let mut next = config.clone();
        for user in &current.config.shared_with {
            let from_api = !current.file_shares.contains(user);
            if from_api && !next.shared_with.contains(user) {
                next.shared_with.push(user.clone());
            }
        }
        if next == current.config && current.file_shares == config.shared_with {
            return None;
        }
        let mut agent = self.successor(current, next);
        agent.file_shares = config.shared_with.clone();
        super::manage::resize(
            &current.shared,
            current.config.max_concurrent,
            agent.config.max_concurrent,
        );
        Some(agent)
    }
}
