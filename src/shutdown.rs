//! The stop signal every long-lived part watches.

use tokio::sync::watch;

/// Fires once; cheap to clone and to wait on.
#[derive(Clone)]
pub struct Shutdown {
    rx: watch::Receiver<bool>,
}

/// The side that fires the signal.
pub struct Trigger {
    tx: watch::Sender<bool>,
}

impl Shutdown {
    /// A new signal and its trigger.
    pub fn new() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (Trigger { tx }, Shutdown { rx })
    }

    /// Resolves once the signal has fired (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means the trigger is gone, which also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    pub fn is_fired(&self) -> bool {
        *self.rx.borrow()
    }
}

impl Trigger {
    pub fn fire(&self) {
        self.tx.send_replace(true);
    }

    /// A signal that fires with this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown {
            rx: self.tx.subscribe(),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
