//! The password hashing pool: a few threads of its own and a short queue, so that argon2id
//! (46 MiB and tens of milliseconds a hash) neither starves tokio's blocking pool, which store
//! reads share, nor grows memory with the number of logins at once. A full queue is an
//! answer (`Busy`), not a wait.

use crate::metrics::Metrics;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// The queue was full; nothing was hashed.
#[derive(Debug, PartialEq, Eq)]
pub struct Busy;

/// A handle to the pool; its threads end when the last handle is dropped.
#[derive(Clone)]
pub struct HashPool {
    sender: SyncSender<Job>,
    metrics: Arc<Metrics>,
}

impl HashPool {
    /// `threads` hashing threads with `queue` jobs waiting at most; each hash is counted in
    /// `metrics`.
    pub fn new(threads: usize, queue: usize, metrics: Arc<Metrics>) -> HashPool {
        let (sender, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("outpost-hash-{i}"))
                .spawn(move || work(&receiver))
                .expect("spawning a hashing thread");
        }
        HashPool { sender, metrics }
    }

    /// Runs `f` (one argon2id hash) on the pool and waits for its answer, or is `Busy` at
    /// once when the queue is full.
    pub async fn run<T, F>(&self, f: F) -> Result<T, Busy>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let metrics = self.metrics.clone();
        let job: Job = Box::new(move || {
            metrics.count_password_hash();
            let _ = answer.send(f());
        });
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => return Err(Busy),
        }
        // The pool's threads do not panic (argon2 with valid parameters does not fail); if
        // one ever did, its caller is told the pool is busy rather than hang.
        answered.await.map_err(|_| Busy)
    }
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let receiver = receiver.lock().unwrap_or_else(|p| p.into_inner());
            receiver.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_queue_is_busy_at_once() {
        let metrics = Arc::new(Metrics::default());
        let pool = HashPool::new(1, 2, metrics.clone());
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let gate = Arc::new(Mutex::new(gate));
        let mut running = Vec::new();
        // One on the thread, two in the queue.
        for _ in 0..3 {
            let pool = pool.clone();
            let gate = gate.clone();
            running.push(tokio::spawn(async move {
                pool.run(move || {
                    let _ = gate.lock().unwrap().recv();
                })
                .await
            }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool.run(|| ()).await, Err(Busy));
        for _ in 0..3 {
            release.send(()).unwrap();
        }
        for job in running {
            assert_eq!(job.await.unwrap(), Ok(()));
        }
        assert_eq!(pool.run(|| 7).await, Ok(7));
        assert_eq!(metrics.password_hashes(), 4);
    }
}
