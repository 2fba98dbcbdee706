//! Life under a service manager (systemd): the notify protocol (READY once serving, RELOADING
//! and READY around a reload, STOPPING, WATCHDOG keep-alives), socket activation, and the
//! signal loop: SIGHUP reloads, SIGTERM and SIGINT stop. Without a service manager
//! (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `LISTEN_FDS` unset) each of these is a no-op.

mod logging;

pub use logging::{init_logging, log_target, LogTarget};

use crate::config::{self, Config};
use crate::Daemon;
use sd_notify::NotifyState;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// The listening sockets the service manager passed (`LISTEN_FDS`, from fd 3), in order.
/// Empty when the process was not socket-activated.
pub fn inherited_listeners() -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    let mut listeners = Vec::new();
    for index in 0..fds.len() {
        if let Some(listener) = fds.take_tcp_listener(index)? {
            listeners.push(listener);
        }
    }
    Ok(listeners)
}

/// Hands inherited sockets to the runtime.
pub(crate) fn adopt(
    inherited: Vec<std::net::TcpListener>,
) -> std::io::Result<Vec<tokio::net::TcpListener>> {
    if !inherited.is_empty() {
        tracing::info!(
            sockets = inherited.len(),
            "serving the sockets passed by the service manager; server.listen is not bound"
        );
    }
    inherited
        .into_iter()
        .map(|listener| {
            listener.set_nonblocking(true)?;
            tokio::net::TcpListener::from_std(listener)
        })
        .collect()
}

/// Tells the service manager about a state change; a no-op without `NOTIFY_SOCKET`.
pub fn notify(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states) {
        tracing::warn!(cause = %err, "could not notify the service manager");
    }
}

/// Runs a started daemon until SIGTERM or SIGINT (or until it stops by itself): says READY,
/// keeps the watchdog fed, reloads on SIGHUP with the configuration `load` reads, and says
/// STOPPING before it drains.
pub async fn run<F>(daemon: Daemon, load: F)
where
    F: Fn() -> Result<Config, config::Error>,
{
    // Handlers first: a SIGHUP right after READY must reload, not kill.
    let mut hangup = signal(SignalKind::hangup()).expect("installing the SIGHUP handler");
    let mut terminate = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let stopped = daemon.shutdown_signal();
    // The watchdog is fed through the drain too, until the daemon has stopped.
    // READY goes out before the first keep-alive: the feeder runs on another worker thread
    // and its first tick is immediate.
    notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
    let (drained, drain_done) = tokio::sync::oneshot::channel::<()>();
    let watchdog = sd_notify::watchdog_enabled().map(|timeout| {
        let health = daemon.store_health();
        let healthy = move || {
            health.state() != crate::store::health::State::Failed
                || health.unwritable_for() < Some(STORE_FAILED_GRACE)
        };
        tokio::spawn(feed_watchdog(timeout / 2, drain_done, healthy))
    });
    loop {
        tokio::select! {
            _ = hangup.recv() => reload(&daemon, &load).await,
            _ = terminate.recv() => { tracing::info!("SIGTERM: stopping"); break }
            _ = interrupt.recv() => { tracing::info!("SIGINT: stopping"); break }
            _ = stopped.wait() => break,
        }
    }
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    daemon.stop().await;
    drop(drained);
    if let Some(watchdog) = watchdog {
        let _ = watchdog.await;
    }
}

/// Reads the configuration again and applies it; a bad one is logged and the old one stays.
async fn reload<F>(daemon: &Daemon, load: &F)
where
    F: Fn() -> Result<Config, config::Error>,
{
    let mut reloading = vec![NotifyState::Reloading];
    reloading.extend(NotifyState::monotonic_usec_now().ok());
    notify(&reloading);
    tracing::info!("SIGHUP: reloading the configuration");
    let outcome = match load() {
        Ok(config) => daemon.reload(config).await.map_err(|e| e.to_string()),
        Err(err) => Err(err.to_string()),
    };
    match outcome {
        Ok(done) => {
            tracing::info!(
                fingerprint = done.fingerprint.as_deref().unwrap_or("-"),
                added = ?done.agents.added,
                changed = ?done.agents.changed,
                removed = ?done.agents.removed,
                "reloaded"
            );
            if !done.needs_restart.is_empty() {
                tracing::warn!(keys = ?done.needs_restart, "these changes take effect at the next restart");
            }
            notify(&[NotifyState::Ready, NotifyState::Status("serving; reloaded")]);
        }
        Err(err) => {
            tracing::error!(cause = %err, "reload refused; the previous configuration stays");
            notify(&[
                NotifyState::Ready,
                NotifyState::Status("serving; the last reload was refused (see the log)"),
            ]);
        }
    }
}

/// How long the store may fail to reopen after an I/O error before the watchdog goes hungry
/// and systemd restarts the service (a full disk is not such a failure: it is answered).
const STORE_FAILED_GRACE: Duration = Duration::from_secs(30);

/// Sends WATCHDOG=1 every `every` while the runtime is alive and `healthy` says so, until
/// `stopped` resolves.
async fn feed_watchdog(
    every: Duration,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
    healthy: impl Fn() -> bool,
) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    let mut starving = false;
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if healthy() {
                    starving = false;
                    notify(&[NotifyState::Watchdog]);
                } else if !starving {
                    starving = true;
                    tracing::error!("the store has not recovered from an I/O error: the watchdog is no longer fed, so systemd restarts the service");
                }
            }
            _ = &mut stopped => return,
        }
    }
}
