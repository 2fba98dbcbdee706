//! Reload without a restart (SIGHUP): a new, already validated configuration swaps the TLS
//! certificate and refreshes the agents of the file, and the mDNS advertisement follows the
//! new fingerprint. Every step that can fail runs before anything changes, so a rejected
//! reload leaves the daemon exactly as it was. Keys that need new sockets or a new store
//! (listen addresses, data dir, TLS on or off, pool sizes, …) are reported and wait for the
//! next restart.

use crate::agents::Refreshed;
use crate::app::App;
use crate::config::{Config, Tls};
use crate::mdns::Advertisement;
use crate::shutdown::Shutdown;
use crate::tls::{self, Certificate};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Why a reload was refused; the daemon keeps its old configuration.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("loading the new TLS certificate: {0}")]
    Tls(#[from] tls::Error),
    #[error("reading the stored agents: {0}")]
    Store(#[from] crate::store::Error),
    #[error("the daemon is stopping")]
    Stopping,
}

/// What a reload changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reloaded {
    /// The fingerprint now served, when TLS is on.
    pub fingerprint: Option<String>,
    pub agents: Refreshed,
    /// Changed keys that take effect at the next restart.
    pub needs_restart: Vec<&'static str>,
}

/// Asks the running daemon to reload; cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    requests: mpsc::Sender<Request>,
}

struct Request {
    config: Config,
    reply: oneshot::Sender<Result<Reloaded, Error>>,
}

impl Reloader {
    /// Applies `config` (validated by `Config::from_raw`) and says what changed.
    pub async fn reload(&self, config: Config) -> Result<Reloaded, Error> {
        let (reply, answer) = oneshot::channel();
        let request = Request { config, reply };
        self.requests
            .send(request)
            .await
            .map_err(|_| Error::Stopping)?;
        answer.await.map_err(|_| Error::Stopping)?
    }
}

/// The parts a reload changes, owned by one task that ends with the daemon.
pub(crate) struct Reloadable {
    pub app: App,
    pub certificate: Option<Arc<Certificate>>,
    pub advertisement: Option<Advertisement>,
}

/// Starts the task that applies reloads until `shutdown`; it withdraws the mDNS
/// advertisement as it ends.
pub(crate) fn spawn(parts: Reloadable, shutdown: Shutdown) -> (Reloader, JoinHandle<()>) {
    let (requests, mut incoming) = mpsc::channel::<Request>(4);
    let task = tokio::spawn(async move {
        let mut parts = parts;
        loop {
            tokio::select! {
                request = incoming.recv() => match request {
                    Some(Request { config, reply }) => {
                        let _ = reply.send(apply(&mut parts, config).await);
                    }
                    None => break,
                },
                _ = shutdown.wait() => break,
            }
        }
        if let Some(advertisement) = parts.advertisement.take() {
            advertisement.stop().await;
        }
    });
    (Reloader { requests }, task)
}

async fn apply(parts: &mut Reloadable, config: Config) -> Result<Reloaded, Error> {
    let running = parts.app.config();
    let needs_restart = needs_restart(running, &config);
    let records = parts.app.store().read(|r| r.agents()).await?;
    let fingerprint = match (&parts.certificate, &config.tls) {
        (Some(certificate), Tls::Auto | Tls::Files { .. }) => {
            Some(certificate.replace(&config.tls, &running.data_dir)?)
        }
        (Some(certificate), Tls::Off) => Some(certificate.fingerprint()),
        (None, _) => None,
    };
    let agents = parts.app.agents().refresh(&config.agents, records);
    if let Some(advertisement) = parts.advertisement.as_mut() {
        if let Err(err) = advertisement.update(fingerprint.as_deref()) {
            tracing::warn!(cause = %err, "could not update the mDNS advertisement");
        }
    }
    Ok(Reloaded {
        fingerprint,
        agents,
        needs_restart,
    })
}

/// The keys of `next` that differ from `running` and cannot change while it runs.
pub fn needs_restart(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut differs = |key: &'static str, changed: bool| {
        if changed {
            keys.push(key);
        }
    };
    differs("server.listen", running.listen != next.listen);
    differs("server.public_url", running.public_url != next.public_url);
    differs(
        "server.max_connections",
        running.max_connections != next.max_connections,
    );
    differs(
        "server.max_body_bytes",
        running.max_body_bytes != next.max_body_bytes,
    );
    differs(
        "server.header_timeout_s",
        running.header_timeout != next.header_timeout,
    );
    differs(
        "server.shutdown_timeout_s",
        running.shutdown_timeout != next.shutdown_timeout,
    );
    differs("server.mdns", running.mdns != next.mdns);
    differs(
        "tls.mode",
        (running.tls == Tls::Off) != (next.tls == Tls::Off),
    );
    differs("store.data_dir", running.data_dir != next.data_dir);
    differs(
        "store.cache_mb",
        running.store_cache_bytes != next.store_cache_bytes,
    );
    differs("auth.token_ttl", running.token_ttl != next.token_ttl);
    differs(
        "auth.login_attempts_per_minute",
        running.login_attempts_per_minute != next.login_attempts_per_minute,
    );
    differs(
        "auth.password_hash_threads",
        running.password_hash_threads != next.password_hash_threads,
    );
    differs(
        "auth.password_hash_queue",
        running.password_hash_queue != next.password_hash_queue,
    );
    differs(
        "auth.users_may_create_agents",
        running.users_may_create_agents != next.users_may_create_agents,
    );
    differs(
        "defaults.engine",
        running.default_engine != next.default_engine,
    );
    differs("pool.workers", running.workers != next.workers);
    differs(
        "pool.queue_capacity",
        running.queue_capacity != next.queue_capacity,
    );
    differs("log.level", running.log_level != next.log_level);
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_that_need_new_sockets_or_state_wait_for_a_restart() {
        let running = Config::default();
        assert!(needs_restart(&running, &running.clone()).is_empty());
        let mut next = running.clone();
        next.agents.clear();
        next.tls = Tls::Files {
            cert: "/c".into(),
            key: "/k".into(),
        };
        next.listen = vec!["127.0.0.1:9".parse().unwrap()];
        next.workers = 2;
        assert_eq!(
            needs_restart(&running, &next),
            vec!["server.listen", "tls.mode", "pool.workers"]
        );
    }
}
