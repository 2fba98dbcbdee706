//! The writer thread: every queued write job of a moment is applied in one transaction and
//! committed once (group commit). A batch of only deferred jobs commits without an fsync; the
//! next durable commit — another batch, or an empty one after `DEFER_WINDOW` — carries it to
//! disk, and `Durable` tickets resolve then.

use super::{Error, Tx};
use redb::{Database, Durability};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 512;
/// Longest a deferred commit waits for a durable one before the writer makes one itself.
pub const DEFER_WINDOW: Duration = Duration::from_micros(500);

pub(super) trait WriteJob: Send {
    /// Applies the job; an error aborts the whole batch.
    fn apply(&mut self, tx: &Tx<'_>) -> Result<(), Error>;
    /// Whether the job's commit must reach the disk before it is answered.
    fn durable(&self) -> bool;
    /// Called after the batch commits (or fails) with its sequence number.
    fn finish(self: Box<Self>, committed: Result<u64, Error>);
}

pub(super) struct Job<F, T> {
    pub work: Option<F>,
    pub output: Option<T>,
    pub durable: bool,
    pub reply: oneshot::Sender<Result<(T, u64), Error>>,
}

impl<F, T> WriteJob for Job<F, T>
where
    F: FnOnce(&Tx<'_>) -> Result<T, Error> + Send,
    T: Send,
{
    fn apply(&mut self, tx: &Tx<'_>) -> Result<(), Error> {
        let work = self.work.take().expect("a job is applied once");
        self.output = Some(work(tx)?);
        Ok(())
    }

    fn durable(&self) -> bool {
        self.durable
    }

    fn finish(self: Box<Self>, committed: Result<u64, Error>) {
        let Job { output, reply, .. } = *self;
        let result = committed.and_then(|seq| output.map(|o| (o, seq)).ok_or(Error::Closed));
        let _ = reply.send(result);
    }
}

/// A commit that may not be on disk yet; `wait` resolves once it is.
pub struct Durable {
    seq: u64,
    durable: watch::Receiver<u64>,
}

impl Durable {
    pub(super) fn new(seq: u64, durable: watch::Receiver<u64>) -> Durable {
        Durable { seq, durable }
    }

    /// Waits until the commit is on disk; an error means the writer stopped first.
    pub async fn wait(mut self) -> Result<(), Error> {
        let seq = self.seq;
        self.durable
            .wait_for(|done| *done >= seq)
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }
}

pub(super) fn write_loop(
    db: &Database,
    jobs: &mpsc::Receiver<Box<dyn WriteJob>>,
    durable: &watch::Sender<u64>,
    generation: &AtomicU64,
) {
    let mut seq: u64 = 0;
    // When the oldest commit not yet on disk was made.
    let mut pending_since: Option<Instant> = None;
    loop {
        let first = match pending_since {
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
            Some(since) => match jobs.recv_timeout(DEFER_WINDOW.saturating_sub(since.elapsed())) {
                Ok(job) => job,
                Err(timeout_or_closed) => {
                    // Nothing came to carry the deferred commits: make an empty durable one.
                    seq += 1;
                    match commit(db, &mut [], true) {
                        Ok(()) => {
                            durable.send_replace(seq);
                            pending_since = None;
                        }
                        Err(err) => tracing::error!(cause = %err, "store sync failed"),
                    }
                    if matches!(timeout_or_closed, mpsc::RecvTimeoutError::Disconnected) {
                        return;
                    }
                    continue;
                }
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let make_durable = batch.iter().any(|job| job.durable())
            || pending_since.is_some_and(|since| since.elapsed() >= DEFER_WINDOW);
        seq += 1;
        let committed = commit(db, &mut batch, make_durable).map(|()| seq);
        if committed.is_ok() {
            // Before anyone is answered: a reader that sees the old generation read old data.
            generation.fetch_add(1, Ordering::SeqCst);
        }
        match &committed {
            Ok(_) if make_durable => {
                durable.send_replace(seq);
                pending_since = None;
            }
            Ok(_) => {
                pending_since.get_or_insert_with(Instant::now);
            }
            Err(err) => tracing::error!(cause = %err, jobs = batch.len(), "store write failed"),
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

fn commit(db: &Database, batch: &mut [Box<dyn WriteJob>], make_durable: bool) -> Result<(), Error> {
    let mut txn = db.begin_write()?;
    if !make_durable {
        txn.set_durability(Durability::None)
            .map_err(|err| Error::Storage(err.to_string()))?;
    }
    {
        let tx = Tx { txn: &txn };
        for job in batch.iter_mut() {
            job.apply(&tx)?;
        }
    }
    txn.commit()?;
    Ok(())
}
