//! Configuration in two stages: [`RawConfig`] is what the user wrote (serde, unknown keys are
//! errors that name the key); [`Config`] is validated and resolved (addresses, durations,
//! absolute paths, agents). Nothing here touches the system beyond reading the file.
//!
//! Layers, later wins: built-in defaults, the file (`--config`, `OUTPOST_CONFIG`, else
//! `/etc/outpost/outpost.toml` when it exists), `OUTPOST_LISTEN` / `OUTPOST_DATA_DIR`, CLI flags.

pub mod bounds;
mod paid;
mod raw;
mod voice;

pub use crate::engine_spec::EngineSpec;
pub use paid::{builtin_networks, Network, PaidConfig};
pub use raw::*;
use raw::{default_agent_queue, default_max_concurrent, default_owner};
pub use voice::{RawVoice, SpeechEngine, VoiceConfig, VoiceMode};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file read when no other is named and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/outpost/outpost.toml";

/// What went wrong reading or checking a configuration; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> Error {
    Error::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// How connections are secured.
#[derive(Clone, Debug, PartialEq)]
pub enum Tls {
    Off,
    /// A self-signed certificate made at first start and kept in the data dir.
    Auto,
    Files {
        cert: PathBuf,
        key: PathBuf,
    },
}

/// Log line format on stderr.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LogFormat {
    Text,
    Json,
}

/// One agent as configured.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub owner: String,
    pub shared_with: Vec<String>,
    pub engine: EngineSpec,
    pub max_concurrent: usize,
    pub timeout: Duration,
    /// Tasks that may wait for this agent; more get `429 queue_full`.
    pub queue_capacity: usize,
    /// Whether voice conversations may use this agent.
    pub voice: bool,
    /// Pay-per-turn over x402 (`/api/paid/NAME/…`); only agents of the file have one.
    pub paid: Option<PaidConfig>,
}

/// Limits of the visitor routes of public links (`[public]`).
#[derive(Clone, Debug, PartialEq)]
pub struct PublicConfig {
    /// Requests per minute from one client address to `/api/public/…`; more get 429.
    pub requests_per_minute_per_ip: u32,
    /// Messages per minute through a link created without its own `rate_limit_per_minute`.
    pub default_link_rate_limit_per_minute: u32,
    /// Peers whose `X-Forwarded-For` names the client; anyone else's is ignored.
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

/// A secret value whose `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// The validated configuration the daemon runs with.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub listen: Vec<SocketAddr>,
    pub public_url: Option<String>,
    pub max_connections: usize,
    /// Connections open at once from one client address (0: no such cap); addresses in
    /// `public.trusted_proxies` are not capped.
    pub max_connections_per_client: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    /// The whole time a request body may take to arrive; slower ones get 408.
    pub body_timeout: Duration,
    /// How long a write to a client may make no progress before the connection is dropped.
    pub write_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub allow_plain_on_network: bool,
    /// Advertise the API over mDNS on the interfaces of non-loopback listen addresses.
    pub mdns: bool,
    pub tls: Tls,
    pub data_dir: PathBuf,
    /// The store's page cache, in bytes.
    pub store_cache_bytes: usize,
    /// Free space below which the store refuses writes before they start.
    pub store_write_reserve_bytes: u64,
    /// Free space below which `/readyz` warns.
    pub store_min_free_bytes: u64,
    pub token_ttl: Duration,
    pub login_attempts_per_minute: u32,
    /// Threads of the password hashing pool (each holds 46 MiB while it hashes).
    pub password_hash_threads: usize,
    /// Hashes waiting at most; past it a login is answered 429 `login_busy`.
    pub password_hash_queue: usize,
    /// Whether users (not only admins) may create agents through the API.
    pub users_may_create_agents: bool,
    /// The engine of agents created through the API without one.
    pub default_engine: EngineSpec,
    /// Tasks running at once, over all agents.
    pub workers: usize,
    /// Tasks waiting at once, over all agents.
    pub queue_capacity: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    pub agents: Vec<AgentConfig>,
    /// `[voice]`; None turns voice off.
    pub voice: Option<VoiceConfig>,
    /// Public links: visitor rate limits and trusted proxies.
    pub public: PublicConfig,
    /// `[outbound] allow`: private addresses, networks and names users' agents may reach.
    pub outbound_allow: crate::outbound::AllowList,
    /// `OUTPOST_ADMIN_PASSWORD`: the admin password used at first start instead of a random one.
    pub admin_password: Option<Secret>,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_raw(RawConfig::default()).expect("built-in defaults are valid")
    }
}

/// What the command line says, which wins over everything else.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Loads the configuration through the layers; `env` looks up variables (tests pass a map).
pub fn load(overrides: &Overrides, env: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
    let path = overrides
        .config
        .clone()
        .or_else(|| env("OUTPOST_CONFIG").map(PathBuf::from))
        .or_else(|| Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()));
    let mut raw = match &path {
        Some(path) => read_file(path)?,
        None => RawConfig::default(),
    };
    if let Some(listen) = env("OUTPOST_LISTEN") {
        raw.server.listen = split_list(&listen);
    }
    if let Some(dir) = env("OUTPOST_DATA_DIR") {
        raw.store.data_dir = dir;
    }
    if let Some(listen) = &overrides.listen {
        raw.server.listen = split_list(listen);
    }
    if let Some(dir) = &overrides.data_dir {
        raw.store.data_dir = dir.to_string_lossy().into_owned();
    }
    let mut config = Config::from_raw(raw)?;
    config.admin_password = env("OUTPOST_ADMIN_PASSWORD")
        .filter(|p| !p.is_empty())
        .map(Secret);
    Ok(config)
}

/// Reads and parses one file (first stage only).
pub fn read_file(path: &Path) -> Result<RawConfig, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text).map_err(|message| Error::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Parses TOML text into the first stage.
pub fn parse(text: &str) -> Result<RawConfig, String> {
    toml::from_str(text).map_err(|err| err.to_string().trim_end().to_string())
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

impl Config {
    /// The second stage: checks every value and resolves it.
    pub fn from_raw(raw: RawConfig) -> Result<Config, Error> {
        let listen = raw
            .server
            .listen
            .iter()
            .map(|text| {
                text.parse::<SocketAddr>().map_err(|_| {
                    invalid("server.listen", format!("{text:?} is not an address:port"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if listen.is_empty() {
            return Err(invalid("server.listen", "needs at least one address"));
        }
        let tls = match raw.tls.mode.as_str() {
            "off" => Tls::Off,
            "auto" => Tls::Auto,
            "files" => {
                if raw.tls.cert.is_empty() || raw.tls.key.is_empty() {
                    return Err(invalid(
                        "tls.cert",
                        "mode \"files\" needs tls.cert and tls.key",
                    ));
                }
                Tls::Files {
                    cert: absolute(&raw.tls.cert),
                    key: absolute(&raw.tls.key),
                }
            }
            other => {
                return Err(invalid(
                    "tls.mode",
                    format!("{other:?} is not one of \"auto\", \"files\", \"off\""),
                ))
            }
        };
        if tls == Tls::Off && !raw.server.allow_plain_on_network {
            if let Some(addr) = listen.iter().find(|a| !a.ip().is_loopback()) {
                return Err(invalid(
                    "tls.mode",
                    format!("plain HTTP on {addr} would expose tokens to the network: use tls.mode = \"auto\" or set server.allow_plain_on_network = true"),
                ));
            }
        }
        let within = |key: &str, value: usize, range: bounds::Range| {
            range.check_usize(key, value).map_err(|m| invalid(key, m))
        };
        let data_dir = raw.store.data_dir.trim();
        if data_dir.is_empty() {
            return Err(invalid("store.data_dir", "must not be empty"));
        }
        let log_format = match raw.log.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(invalid(
                    "log.format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ))
            }
        };
        let networks = paid::networks(raw.paid)?;
        let voice = raw.voice.map(VoiceConfig::from_raw).transpose()?;
        let agents = match raw.agents {
            None => vec![AgentConfig {
                voice: voice.is_some(),
                ..default_agent()
            }],
            Some(agents) => agents
                .into_iter()
                .map(|(name, agent)| agent_from_raw(name, agent, &networks, voice.is_some()))
                .collect::<Result<_, _>>()?,
        };
        Ok(Config {
            listen,
            public_url: Some(raw.server.public_url).filter(|u| !u.is_empty()),
            max_connections: within(
                "server.max_connections",
                raw.server.max_connections,
                bounds::MAX_CONNECTIONS,
            )?,
            max_connections_per_client: within(
                "server.max_connections_per_client",
                raw.server.max_connections_per_client,
                bounds::MAX_CONNECTIONS_PER_CLIENT,
            )?,
            max_body_bytes: within(
                "server.max_body_bytes",
                raw.server.max_body_bytes,
                bounds::MAX_BODY_BYTES,
            )?,
            header_timeout: seconds(
                "server.header_timeout_s",
                raw.server.header_timeout_s,
                bounds::HEADER_TIMEOUT_SECONDS,
            )?,
            body_timeout: seconds(
                "server.body_timeout_s",
                raw.server.body_timeout_s,
                bounds::IO_TIMEOUT_SECONDS,
            )?,
            write_timeout: seconds(
                "server.write_timeout_s",
                raw.server.write_timeout_s,
                bounds::IO_TIMEOUT_SECONDS,
            )?,
            shutdown_timeout: seconds(
                "server.shutdown_timeout_s",
                raw.server.shutdown_timeout_s,
                bounds::SHUTDOWN_TIMEOUT_SECONDS,
            )?,
            allow_plain_on_network: raw.server.allow_plain_on_network,
            mdns: raw.server.mdns,
            tls,
            data_dir: absolute(data_dir),
            store_cache_bytes: within("store.cache_mb", raw.store.cache_mb, bounds::CACHE_MB)?
                << 20,
            store_write_reserve_bytes: (within(
                "store.write_reserve_mb",
                raw.store.write_reserve_mb,
                bounds::WRITE_RESERVE_MB,
            )? as u64)
                << 20,
            store_min_free_bytes: (within(
                "store.min_free_mb",
                raw.store.min_free_mb,
                bounds::MIN_FREE_MB,
            )? as u64)
                << 20,
            token_ttl: duration_within(
                "auth.token_ttl",
                &raw.auth.token_ttl,
                bounds::TOKEN_TTL_SECONDS,
            )?,
            login_attempts_per_minute: within(
                "auth.login_attempts_per_minute",
                raw.auth.login_attempts_per_minute as usize,
                bounds::LOGIN_ATTEMPTS_PER_MINUTE,
            )? as u32,
            password_hash_threads: within(
                "auth.password_hash_threads",
                raw.auth.password_hash_threads,
                bounds::PASSWORD_HASH_THREADS,
            )?,
            password_hash_queue: within(
                "auth.password_hash_queue",
                raw.auth.password_hash_queue,
                bounds::PASSWORD_HASH_QUEUE,
            )?,
            users_may_create_agents: raw.auth.users_may_create_agents,
            default_engine: check_engine_numbers("defaults.engine", raw.defaults.engine)?,
            workers: within("pool.workers", raw.pool.workers, bounds::POOL_WORKERS)?,
            queue_capacity: within(
                "pool.queue_capacity",
                raw.pool.queue_capacity,
                bounds::POOL_QUEUE_CAPACITY,
            )?,
            log_level: raw.log.level,
            log_format,
            agents,
            public: public_from_raw(raw.public)?,
            outbound_allow: crate::outbound::AllowList::parse(&raw.outbound.allow)
                .map_err(|m| invalid("outbound.allow", m))?,
            voice,
            admin_password: None,
        })
    }
}

fn public_from_raw(raw: RawPublic) -> Result<PublicConfig, Error> {
    let positive = |key: &str, value: u32, range: bounds::Range| {
        range
            .check(key, u64::from(value))
            .map(|v| v as u32)
            .map_err(|m| invalid(key, m))
    };
    let trusted_proxies = raw
        .trusted_proxies
        .iter()
        .map(|text| {
            text.trim().parse::<std::net::IpAddr>().map_err(|_| {
                invalid(
                    "public.trusted_proxies",
                    format!("{text:?} is not an IP address"),
                )
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(PublicConfig {
        requests_per_minute_per_ip: positive(
            "public.requests_per_minute_per_ip",
            raw.requests_per_minute_per_ip,
            bounds::REQUESTS_PER_MINUTE_PER_IP,
        )?,
        default_link_rate_limit_per_minute: positive(
            "public.default_link_rate_limit_per_minute",
            raw.default_link_rate_limit_per_minute,
            bounds::LINK_RATE_PER_MINUTE,
        )?,
        trusted_proxies,
    })
}

/// Seconds in `range`, as a duration.
fn seconds(key: &str, value: u64, range: bounds::Range) -> Result<Duration, Error> {
    range
        .check(key, value)
        .map(Duration::from_secs)
        .map_err(|m| invalid(key, m))
}

/// A duration written as text (`"12h"`) whose whole seconds are in `range`.
pub(crate) fn duration_within(
    key: &str,
    text: &str,
    range: bounds::Range,
) -> Result<Duration, Error> {
    let duration = parse_duration(text).map_err(|m| invalid(key, m))?;
    let whole = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    if !range.contains(whole) {
        return Err(invalid(
            key,
            format!("must be from {} s to {} s", range.min, range.max),
        ));
    }
    Ok(duration)
}

/// The engine's own numbers, checked as the API checks them.
fn check_engine_numbers(key: &str, engine: Option<EngineSpec>) -> Result<EngineSpec, Error> {
    let engine = engine.unwrap_or_default();
    if let EngineSpec::Echo { delay_ms } = engine {
        bounds::ECHO_DELAY_MS
            .check("delay_ms", delay_ms)
            .map_err(|m| invalid(format!("{key}.delay_ms"), m))?;
    }
    Ok(engine)
}

fn default_agent() -> AgentConfig {
    AgentConfig {
        name: "echo".into(),
        display_name: "Echo".into(),
        description: "Repeats what you say, word by word.".into(),
        owner: default_owner(),
        shared_with: Vec::new(),
        engine: EngineSpec::default(),
        max_concurrent: default_max_concurrent(),
        timeout: Duration::from_secs(600),
        queue_capacity: default_agent_queue(),
        voice: false,
        paid: None,
    }
}

fn agent_from_raw(
    name: String,
    raw: RawAgent,
    networks: &BTreeMap<String, Network>,
    voice_on: bool,
) -> Result<AgentConfig, Error> {
    let key = |field: &str| format!("agents.{name}.{field}");
    if !valid_agent_name(&name) {
        return Err(invalid(
            format!("agents.{name}"),
            "agent names are 1-63 lowercase letters, digits and '-', starting with a letter",
        ));
    }
    bounds::AGENT_MAX_CONCURRENT
        .check_usize("max_concurrent", raw.max_concurrent)
        .map_err(|m| invalid(key("max_concurrent"), m))?;
    bounds::AGENT_QUEUE_CAPACITY
        .check_usize("queue_capacity", raw.queue_capacity)
        .map_err(|m| invalid(key("queue_capacity"), m))?;
    let timeout = duration_within(&key("timeout"), &raw.timeout, bounds::AGENT_TIMEOUT_SECONDS)?;
    let engine = check_engine_numbers(&key("engine"), Some(raw.engine))?;
    match &engine {
        EngineSpec::Command { program, .. } if program.trim().is_empty() => {
            return Err(invalid(key("engine.program"), "must not be empty"));
        }
        EngineSpec::OpenAi { base_url, .. }
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) =>
        {
            return Err(invalid(
                key("engine.base_url"),
                format!("{base_url:?} is not an http:// or https:// URL"),
            ));
        }
        _ => {}
    }
    let paid = raw
        .paid
        .map(|p| paid::resolve(&name, p, networks))
        .transpose()?;
    Ok(AgentConfig {
        display_name: raw.display_name.unwrap_or_else(|| name.clone()),
        description: raw.description,
        owner: raw.owner,
        shared_with: raw.shared_with,
        engine,
        max_concurrent: raw.max_concurrent,
        timeout,
        queue_capacity: raw.queue_capacity,
        voice: raw.voice.unwrap_or(voice_on),
        paid,
        name,
    })
}

/// Agent names: `^[a-z][a-z0-9-]{0,62}$`.
pub fn valid_agent_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Parses `150ms`, `10s`, `15m`, `12h`, `30d` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration such as \"90s\", \"15m\", \"12h\", \"30d\"")
    })?;
    let millis = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit (use ms, s, m, h or d)"
            ))
        }
    };
    Ok(Duration::from_millis(number.saturating_mul(millis)))
}

fn absolute(path: &str) -> PathBuf {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        return path;
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let joined = cwd.join(&path);
    // `./outpost-data` reads better in logs as `/cwd/outpost-data`.
    joined
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests;
