//! The first stage: the file as the user wrote it, in serde types whose unknown keys are
//! errors that name the key, with the built-in defaults of every section.

use super::{paid, RawVoice};
use crate::engine_spec::EngineSpec;
use serde::Deserialize;
use std::collections::BTreeMap;

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub tls: RawTls,
    pub store: RawStore,
    pub auth: RawAuth,
    pub log: RawLog,
    pub pool: RawPool,
    pub defaults: RawDefaults,
    pub public: RawPublic,
    pub agents: Option<BTreeMap<String, RawAgent>>,
    pub voice: Option<RawVoice>,
    /// `[paid]`: the x402 network table.
    pub paid: paid::RawPaidSection,
    pub outbound: RawOutbound,
}

/// `[outbound]`: where agents made by users (not admins) may connect beyond public addresses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOutbound {
    pub allow: Vec<String>,
}

/// `[public]`: limits of the visitor routes of public links.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPublic {
    pub requests_per_minute_per_ip: u32,
    pub default_link_rate_limit_per_minute: u32,
    pub trusted_proxies: Vec<String>,
}

impl Default for RawPublic {
    fn default() -> Self {
        RawPublic {
            requests_per_minute_per_ip: 30,
            default_link_rate_limit_per_minute: 60,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDefaults {
    pub engine: Option<EngineSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPool {
    pub workers: usize,
    pub queue_capacity: usize,
}

impl Default for RawPool {
    fn default() -> Self {
        RawPool {
            workers: 8,
            queue_capacity: 1000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Vec<String>,
    pub public_url: String,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub max_body_bytes: usize,
    pub header_timeout_s: u64,
    pub body_timeout_s: u64,
    pub write_timeout_s: u64,
    pub shutdown_timeout_s: u64,
    pub allow_plain_on_network: bool,
    pub mdns: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: vec!["127.0.0.1:8000".into()],
            public_url: String::new(),
            max_connections: 4096,
            max_connections_per_client: 256,
            max_body_bytes: 1024 * 1024,
            header_timeout_s: 10,
            body_timeout_s: 30,
            write_timeout_s: 30,
            shutdown_timeout_s: 20,
            allow_plain_on_network: false,
            mdns: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTls {
    pub mode: String,
    pub cert: String,
    pub key: String,
}

impl Default for RawTls {
    fn default() -> Self {
        RawTls {
            mode: "off".into(),
            cert: String::new(),
            key: String::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    pub data_dir: String,
    pub cache_mb: usize,
    pub write_reserve_mb: usize,
    pub min_free_mb: usize,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            data_dir: "./outpost-data".into(),
            cache_mb: 32,
            write_reserve_mb: 2,
            min_free_mb: 64,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAuth {
    pub token_ttl: String,
    pub login_attempts_per_minute: u32,
    pub password_hash_threads: usize,
    pub password_hash_queue: usize,
    pub users_may_create_agents: bool,
}

impl Default for RawAuth {
    fn default() -> Self {
        RawAuth {
            token_ttl: "12h".into(),
            login_attempts_per_minute: 10,
            password_hash_threads: 1,
            password_hash_queue: 16,
            users_may_create_agents: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub level: String,
    pub format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: "info".into(),
            format: "text".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub display_name: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default = "default_owner")]
    pub owner: String,
    #[serde(default)]
    pub shared_with: Vec<String>,
    #[serde(default)]
    pub engine: EngineSpec,
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    #[serde(default = "default_agent_timeout")]
    pub timeout: String,
    #[serde(default = "default_agent_queue")]
    pub queue_capacity: usize,
    /// Unset: true when `[voice]` is configured.
    #[serde(default)]
    pub voice: Option<bool>,
    /// `[agents.NAME.paid]`: pay-per-turn over x402.
    #[serde(default)]
    pub paid: Option<paid::RawPaid>,
}

pub(super) fn default_owner() -> String {
    "admin".into()
}
pub(super) fn default_max_concurrent() -> usize {
    4
}
pub(super) fn default_agent_queue() -> usize {
    100
}
pub(super) fn default_agent_timeout() -> String {
    "10m".into()
}
