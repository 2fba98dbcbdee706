//! The writer thread: every queued write job of a moment is applied in one transaction and
//! committed once (group commit). A batch of only deferred jobs commits without an fsync; the
//! next durable commit — another batch, or an empty one after `DEFER_WINDOW` — carries it to
//! disk, and `Durable` tickets resolve then.
//!
//! Before a batch the writer checks the free space of the data dir: below the reserve the
//! batch is refused with `Error::Full` and nothing touches the file. A commit that fails with
//! an I/O error leaves redb refusing everything until the file is reopened; the writer does
//! that by itself, and the commits that never reached the disk are reported lost to their
//! `Durable` tickets, so nothing unacknowledged is ever acknowledged.

use super::health::{Health, State};
use super::{Error, Slot, Tx};
use redb::{Database, Durability};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 512;
/// Longest a deferred commit waits for a durable one before the writer makes one itself.
pub const DEFER_WINDOW: Duration = Duration::from_micros(500);
/// How often a store that is not writable tries again (reopening, or measuring free space).
const RETRY_EVERY: Duration = Duration::from_millis(500);
/// Longest a reopen waits for the reads still running on the old file to finish.
const READERS_DRAIN: Duration = Duration::from_secs(5);

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

/// How far commits have reached the disk, and the last run of commits that never did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    /// The sequence number of the last commit on disk.
    pub durable: u64,
    /// Commits after `lost_after`, up to `lost_to`, were dropped by a failed commit.
    pub lost_after: u64,
    pub lost_to: u64,
}

impl Progress {
    fn lost(&self, seq: u64) -> bool {
        seq > self.lost_after && seq <= self.lost_to
    }

    /// True once commit `seq` is on disk or known lost.
    pub fn settled(&self, seq: u64) -> bool {
        self.durable >= seq || self.lost(seq)
    }
}

/// A commit that may not be on disk yet; `wait` resolves once it is.
pub struct Durable {
    seq: u64,
    progress: watch::Receiver<Progress>,
}

impl Durable {
    pub(super) fn new(seq: u64, progress: watch::Receiver<Progress>) -> Durable {
        Durable { seq, progress }
    }

    /// Waits until the commit is on disk; an error means it never will be (the writer
    /// stopped first, or a failed commit dropped it).
    pub async fn wait(mut self) -> Result<(), Error> {
        let seq = self.seq;
        let progress = self
            .progress
            .wait_for(|p| p.settled(seq))
            .await
            .map(|p| *p)
            .map_err(|_| Error::Closed)?;
        if progress.durable >= seq && !progress.lost(seq) {
            Ok(())
        } else {
            Err(Error::Unavailable)
        }
    }
}

/// What the writer thread shares with the store's handles.
pub(super) struct Shared {
    pub slot: Slot,
    pub progress: watch::Sender<Progress>,
    /// Bumped after every commit: a cache filled at generation g is current while it is g.
    pub generation: Arc<AtomicU64>,
    /// The sequence number of the last successful commit (on disk or not).
    pub committed: Arc<AtomicU64>,
    pub health: Arc<Health>,
    /// Opens the file again after an I/O error.
    pub reopen: Box<dyn Fn() -> Result<Database, Error> + Send>,
}

pub(super) fn write_loop(shared: &Shared, jobs: &mpsc::Receiver<Box<dyn WriteJob>>) {
    let mut seq: u64 = 0;
    // When the oldest commit not yet on disk was made.
    let mut pending_since: Option<Instant> = None;
    loop {
        let wait = match (shared.health.state(), pending_since) {
            (State::Writable, None) => None,
            (State::Writable, Some(since)) => Some(DEFER_WINDOW.saturating_sub(since.elapsed())),
            _ => Some(RETRY_EVERY),
        };
        let first = match wait {
            None => match jobs.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            },
            Some(wait) => match jobs.recv_timeout(wait) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    if pending_since.is_some() {
                        seq += 1;
                        let _ = sync(shared, seq, &mut pending_since);
                    }
                    return;
                }
            },
        };
        if first.is_none() && pending_since.is_some() && shared.health.state() != State::Failed {
            // Nothing came to carry the deferred commits: make an empty durable one (it
            // writes no new pages, so a full disk takes it too).
            seq += 1;
            let _ = sync(shared, seq, &mut pending_since);
        }
        if !ready(shared) {
            refuse(shared, first, jobs);
            continue;
        }
        let Some(first) = first else {
            continue;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        if !shared.health.room_to_write() {
            shared.health.set(State::Full);
            refuse(shared, None, jobs);
            finish_refused(shared, batch, Error::Full);
            continue;
        }
        let make_durable = batch.iter().any(|job| job.durable())
            || pending_since.is_some_and(|since| since.elapsed() >= DEFER_WINDOW);
        seq += 1;
        let committed = commit(shared, &mut batch, make_durable).map(|()| seq);
        match &committed {
            Ok(_) => {
                shared.committed.store(seq, Ordering::SeqCst);
                // Before anyone is answered: a reader that sees the old generation read old data.
                shared.generation.fetch_add(1, Ordering::SeqCst);
                if make_durable {
                    shared.progress.send_modify(|p| p.durable = seq);
                    pending_since = None;
                } else {
                    pending_since.get_or_insert_with(Instant::now);
                }
            }
            Err(err) => {
                tracing::error!(cause = %err, jobs = batch.len(), "store write failed");
                if err.is_io() {
                    failed(shared, seq, &mut pending_since);
                }
            }
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

/// True when a batch may be tried: the store is writable, or it has just been made so
/// (reopened after an I/O error, or free space came back).
fn ready(shared: &Shared) -> bool {
    match shared.health.state() {
        State::Writable => true,
        State::Full => {
            let room = shared.health.room_to_write();
            if room {
                shared.health.set(State::Writable);
            }
            room
        }
        State::Failed => {
            if !shared.health.room_to_write() || !reopen(shared) {
                return false;
            }
            shared.health.reopened();
            shared.health.set(State::Writable);
            true
        }
    }
}

/// Answers `first` and every job already waiting with the error the state stands for.
fn refuse(
    shared: &Shared,
    first: Option<Box<dyn WriteJob>>,
    jobs: &mpsc::Receiver<Box<dyn WriteJob>>,
) {
    let error = match shared.health.state() {
        State::Failed if shared.health.room_to_write() => Error::Unavailable,
        _ => Error::Full,
    };
    let waiting: Vec<_> = first.into_iter().chain(jobs.try_iter()).collect();
    finish_refused(shared, waiting, error);
}

fn finish_refused(shared: &Shared, batch: Vec<Box<dyn WriteJob>>, error: Error) {
    if batch.is_empty() {
        return;
    }
    shared.health.refused(batch.len());
    for job in batch {
        job.finish(Err(error.clone()));
    }
}

/// Makes the deferred commits durable with an empty commit.
fn sync(shared: &Shared, seq: u64, pending_since: &mut Option<Instant>) -> Result<(), Error> {
    match commit(shared, &mut [], true) {
        Ok(()) => {
            shared.progress.send_modify(|p| p.durable = seq);
            *pending_since = None;
            Ok(())
        }
        Err(err) => {
            tracing::error!(cause = %err, "store sync failed");
            if err.is_io() {
                failed(shared, seq, pending_since);
            }
            Err(err)
        }
    }
}

/// After an I/O error: every commit not on disk is lost (the file reopens at its last durable
/// commit), and the store refuses writes until it has reopened.
fn failed(shared: &Shared, seq: u64, pending_since: &mut Option<Instant>) {
    shared.health.io_error();
    shared.health.set(State::Failed);
    shared.progress.send_modify(|p| {
        p.lost_after = p.durable;
        p.lost_to = seq;
    });
    let durable = shared.progress.borrow().durable;
    shared.committed.store(durable, Ordering::SeqCst);
    shared.generation.fetch_add(1, Ordering::SeqCst);
    *pending_since = None;
}

/// Closes the file and opens it again (redb refuses every call after an I/O error until
/// then). Reads still running on the old file are waited for; meanwhile new reads are refused.
fn reopen(shared: &Shared) -> bool {
    let old = crate::sync::write_lock(&shared.slot).take();
    if let Some(old) = old {
        let deadline = Instant::now() + READERS_DRAIN;
        while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if Arc::strong_count(&old) > 1 {
            *crate::sync::write_lock(&shared.slot) = Some(old);
            return false;
        }
    }
    match (shared.reopen)() {
        Ok(db) => {
            *crate::sync::write_lock(&shared.slot) = Some(Arc::new(db));
            tracing::info!("the store file was reopened");
            true
        }
        Err(err) => {
            tracing::warn!(cause = %err, "reopening the store failed; trying again shortly");
            false
        }
    }
}

fn commit(
    shared: &Shared,
    batch: &mut [Box<dyn WriteJob>],
    make_durable: bool,
) -> Result<(), Error> {
    let db = crate::sync::read_lock(&shared.slot)
        .clone()
        .ok_or(Error::Unavailable)?;
    let mut txn = db.begin_write()?;
    if !make_durable {
        txn.set_durability(Durability::None)?;
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
