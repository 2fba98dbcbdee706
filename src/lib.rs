//! Outpost: one binary that serves the agent API from an edge box.
//!
//! Reading order: `config` → `store` → `records` → `engines` → `executions` → `turns` →
//! `chat`, `tasks`, `links`, `paid`, `voice` → `auth`, `users`, `agents` → `body` → `api` →
//! `server`. `ARCHITECTURE.md` has the map and invariants.

pub mod activity;
pub mod agents;
pub mod api;
pub mod app;
pub mod auth;
pub mod body;
pub mod caller;
pub mod chat;
pub mod clock;
pub mod config;
pub mod control;
pub mod data_dir;
pub mod engine_spec;
pub mod engines;
pub mod error;
pub mod evm;
pub mod executions;
#[doc(hidden)]
pub mod fuzzing;
pub mod hostname;
pub mod ids;
pub mod links;
pub mod mdns;
pub mod metrics;
pub mod outbound;
pub mod paid;
pub mod records;
pub mod reload;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod sync;
pub mod tasks;
pub mod tls;
pub mod turns;
pub mod users;
pub mod voice;

use anyhow::Context;
use app::App;
use config::Config;
use shutdown::{Shutdown, Trigger};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinHandle;

/// A running daemon: its bound addresses and the means to stop it.
pub struct Daemon {
    addrs: Vec<SocketAddr>,
    tls: bool,
    trigger: Trigger,
    task: JoinHandle<()>,
    link_clock: links::Clock,
    reloader: reload::Reloader,
    store_health: Arc<store::health::Health>,
}

impl Daemon {
    /// The addresses it listens on (the real ports when the config said `:0`).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// True when it serves HTTPS.
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The store's health, for the service's watchdog (it goes hungry when the store is lost).
    pub fn store_health(&self) -> Arc<store::health::Health> {
        self.store_health.clone()
    }

    /// The clock public links judge expiry by; tests move it forward.
    pub fn link_clock(&self) -> links::Clock {
        self.link_clock.clone()
    }

    /// A signal that fires when the daemon is asked to stop.
    pub fn shutdown_signal(&self) -> Shutdown {
        self.trigger.subscribe()
    }

    /// Applies a new configuration (certificate, agents) without a restart; on an error the
    /// old one stays. See `reload`.
    pub async fn reload(&self, config: Config) -> Result<reload::Reloaded, reload::Error> {
        self.reloader.reload(config).await
    }

    /// Asks it to stop and waits until it has (requests drained, store closed).
    pub async fn stop(self) {
        self.trigger.fire();
        let _ = self.task.await;
    }

    /// Waits until it stops by itself (after `shutdown_signal` fired elsewhere).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Stops it when `signal` resolves, then waits.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.stop().await;
    }
}

/// Opens the store, prepares identity and TLS, binds every listener and starts serving.
/// Returns once the daemon is ready to answer.
pub async fn start(config: Config) -> anyhow::Result<Daemon> {
    start_with(config, Vec::new()).await
}

/// Like [`start`], but serves `inherited` listeners (socket activation) instead of binding
/// `server.listen` when there are any.
pub async fn start_with(
    config: Config,
    inherited: Vec<std::net::TcpListener>,
) -> anyhow::Result<Daemon> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let data_dir = config.data_dir.clone();
    data_dir::create_dir(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let store = {
        let (dir, options) = (data_dir.clone(), store_options(&config));
        tokio::task::spawn_blocking(move || store::Store::open_with(&dir, options))
            .await
            .context("opening the store")??
    };
    tracing::info!(path = %store.path().display(), "store open");
    let metrics = Arc::new(metrics::Metrics::default());
    let auth = auth::Auth::open(
        store.clone(),
        &data_dir,
        config.token_ttl,
        config.login_attempts_per_minute,
    )
    .await
    .context("loading the token secret")?;
    let (tls_config, certificate) = tls::server_config(&config.tls, &data_dir)?.unzip();
    let mut listeners = service::adopt(inherited)?;
    let to_bind = if listeners.is_empty() {
        &config.listen[..]
    } else {
        &[]
    };
    for addr in to_bind {
        let listener = bind(*addr).with_context(|| format!("binding {addr}"))?;
        listeners.push(listener);
    }
    let addrs: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;

    let advertisement = mdns::advertise(&config, &addrs, certificate.as_deref());
    let agent_records = store.read(|r| r.agents()).await?;
    let agent_records = agents::settle_engine_trust(&store, agent_records).await?;
    let app = App::new(config, store, auth, metrics, agent_records);
    let store_health = app.store().health_handle();
    let interrupted = app.executions().recover_interrupted().await?;
    if interrupted > 0 {
        tracing::warn!(
            count = interrupted,
            "executions left running by the last stop are now failed/interrupted"
        );
    }
    let settling = app.paywall().reconcile().await?;
    if settling > 0 {
        tracing::warn!(
            count = settling,
            "paid turns of the last run ended without settlement; settling them now"
        );
    }
    let queued = app.pool().recover().await?;
    if queued > 0 {
        tracing::info!(
            count = queued,
            "queued tasks from the last run are waiting again"
        );
    }
    let admin_password = app.config().admin_password.clone().map(|s| s.0);
    if let Some(file) = app.users().first_start(&data_dir, admin_password).await? {
        tracing::info!(file = %file.display(), "first start: created user admin; its password is in this file");
    }
    // The first start may just have made the admin's account.
    if let Ok(admin) = app.users().get("admin").await {
        app.auth().account_added(&admin);
    }
    let tls = tls_config.is_some();
    let scheme = if tls { "https" } else { "http" };
    for addr in &addrs {
        tracing::info!("listening on {scheme}://{addr}");
    }
    let link_clock = app.links().clock();
    let (trigger, shutdown) = Shutdown::new();
    let scheduler = app.pool().spawn_scheduler(shutdown.clone());
    let reloadable = reload::Reloadable {
        app: app.clone(),
        certificate,
        advertisement,
    };
    let (reloader, reloads) = reload::spawn(reloadable, shutdown.clone());
    let control = control::spawn(&data_dir, app.store().clone(), shutdown.clone())
        .context("binding the control socket")?;
    let task = tokio::spawn(serve_then_close(
        app,
        listeners,
        tls_config,
        shutdown,
        [scheduler, reloads, control],
    ));
    Ok(Daemon {
        addrs,
        tls,
        trigger,
        task,
        link_clock,
        reloader,
        store_health,
    })
}

async fn serve_then_close(
    app: App,
    listeners: Vec<tokio::net::TcpListener>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: Shutdown,
    background: [JoinHandle<()>; 3],
) {
    let deadline = app.config().shutdown_timeout;
    // Voice sockets are upgraded connections the HTTP drain does not wait for: their calls
    // end with 1001 as soon as the stop begins, and are joined here.
    let voice = app.voice().clone();
    let voice_stop = shutdown.clone();
    tokio::join!(
        server::serve(api::Api::new(app.clone()), listeners, tls, shutdown),
        async move {
            voice_stop.wait().await;
            voice
                .close_all(tokio::time::Instant::now() + deadline)
                .await;
        }
    );
    // No new task starts from here on; queued ones wait in the store for the next start.
    for task in background {
        let _ = task.await;
    }
    app.executions()
        .drain(tokio::time::Instant::now() + deadline)
        .await;
    app.paywall()
        .drain(tokio::time::Instant::now() + deadline)
        .await;
    let store = app.store().clone();
    drop(app);
    // Leak check: with every service gone, this should be the last handle, so the file
    // closes cleanly when it drops.
    let handles = store.handles();
    if handles > 1 {
        tracing::warn!(handles, "store still referenced at shutdown");
    }
    drop(store);
    tracing::info!("stopped");
}
#[cfg(test)]
mod tidy;

/// Connections the kernel completes before the daemon accepts them (capped by
/// `net.core.somaxconn`). Beyond the backlog the kernel drops handshakes and clients wait out
/// SYN-ACK retries of 1 s, 3 s and more: a flood of slow clients must not do that to others.
const LISTEN_BACKLOG: u32 = 4096;

/// A listening socket on `addr` with the daemon's backlog.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// How the configuration opens the store.
pub fn store_options(config: &Config) -> store::Options {
    store::Options {
        cache_bytes: config.store_cache_bytes,
        write_reserve_bytes: config.store_write_reserve_bytes,
    }
}
