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

/// The keys of `next` that differ from `running` and cannot change while it runs, in the
/// order the file has them.
pub fn needs_restart(running: &Config, next: &Config) -> Vec<&'static str> {
    // Each key and the field of `Config` it becomes.
    macro_rules! differing {
        ($($key:literal => $field:ident),* $(,)?) => {
            [$(($key, running.$field != next.$field)),*]
        };
    }
    let tls_mode = (
        "tls.mode",
        (running.tls == Tls::Off) != (next.tls == Tls::Off),
    );
    let server = differing![
        "server.listen" => listen,
        "server.public_url" => public_url,
        "server.max_connections" => max_connections,
        "server.max_body_bytes" => max_body_bytes,
        "server.header_timeout_s" => header_timeout,
        "server.shutdown_timeout_s" => shutdown_timeout,
        "server.mdns" => mdns,
    ];
    let rest = differing![
        "store.data_dir" => data_dir,
        "store.cache_mb" => store_cache_bytes,
        "store.write_reserve_mb" => store_write_reserve_bytes,
        "store.min_free_mb" => store_min_free_bytes,
        "auth.token_ttl" => token_ttl,
        "auth.login_attempts_per_minute" => login_attempts_per_minute,
        "auth.password_hash_threads" => password_hash_threads,
        "auth.password_hash_queue" => password_hash_queue,
        "auth.users_may_create_agents" => users_may_create_agents,
        "defaults.engine" => default_engine,
        "pool.workers" => workers,
        "pool.queue_capacity" => queue_capacity,
        "log.level" => log_level,
    ];
    server
        .into_iter()
        .chain([tls_mode])
        .chain(rest)
        .filter_map(|(key, changed)| changed.then_some(key))
        .collect()
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
