//! Whether the store can write, and what it refused: the writer sets it; readiness, the
//! metrics and the watchdog read it. A full disk is an answer (`Error::Full`), not a wedge:
//! the writer refuses before redb touches the disk when free space is below the reserve, and
//! reopens the file by itself after an I/O error once it can.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// Free space the writer keeps in hand unless configured (`[store] write_reserve_mb`): below
/// it, writes are refused before they start, so redb does not meet the end of the disk in
/// the middle of a commit.
pub const WRITE_RESERVE_BYTES: u64 = 2 << 20;

/// What the store can do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Writable,
    /// The disk is (nearly) full: writes are refused, reads work.
    Full,
    /// An I/O error: the file is being reopened; reads and writes are refused meanwhile.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Writable => "writable",
            State::Full => "full",
            State::Failed => "failed",
        }
    }
}

/// The store's health, shared by the writer and every handle.
pub struct Health {
    dir: PathBuf,
    reserve: u64,
    state: AtomicU8,
    /// Since when the state is not `Writable`.
    since: Mutex<Option<Instant>>,
    refused: AtomicU64,
    io_errors: AtomicU64,
    reopened: AtomicU64,
}

/// Counters for `/metrics`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Write jobs answered with `Full` or `Unavailable`.
    pub refused: u64,
    /// Commits that failed with an I/O error.
    pub io_errors: u64,
    /// Times the file was reopened after one.
    pub reopened: u64,
}

impl Health {
    pub(super) fn new(dir: &Path, reserve: u64) -> Health {
        Health {
            dir: dir.to_path_buf(),
            reserve,
            state: AtomicU8::new(0),
            since: Mutex::new(None),
            refused: AtomicU64::new(0),
            io_errors: AtomicU64::new(0),
            reopened: AtomicU64::new(0),
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::SeqCst) {
            0 => State::Writable,
            1 => State::Full,
            _ => State::Failed,
        }
    }

    /// How long the store has not been writable, if it is not.
    pub fn unwritable_for(&self) -> Option<std::time::Duration> {
        crate::sync::lock(&self.since).map(|since| since.elapsed())
    }

    pub fn counts(&self) -> Counts {
        Counts {
            refused: self.refused.load(Ordering::Relaxed),
            io_errors: self.io_errors.load(Ordering::Relaxed),
            reopened: self.reopened.load(Ordering::Relaxed),
        }
    }

    /// Free bytes on the file system of the data dir, for an unprivileged writer.
    pub fn free_bytes(&self) -> Option<u64> {
        free_bytes(&self.dir)
    }

    /// True when a commit may start: enough free space (or none could be measured).
    pub(super) fn room_to_write(&self) -> bool {
        self.reserve == 0 || self.free_bytes().is_none_or(|free| free >= self.reserve)
    }

    pub(super) fn refused(&self, jobs: usize) {
        self.refused.fetch_add(jobs as u64, Ordering::Relaxed);
    }

    pub(super) fn io_error(&self) {
        self.io_errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn reopened(&self) {
        self.reopened.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves to `state`, saying so in the log once per change.
    pub(super) fn set(&self, state: State) {
        let before = self.state.swap(state as u8, Ordering::SeqCst);
        if before == state as u8 {
            return;
        }
        let mut since = crate::sync::lock(&self.since);
        match state {
            State::Writable => {
                *since = None;
                tracing::info!("the store writes again");
            }
            State::Full => {
                since.get_or_insert_with(Instant::now);
                tracing::error!(dir = %self.dir.display(), free_bytes = ?self.free_bytes(), "the disk holding the store is full: writes are refused (507) and reads still work; free space on it and writes resume by themselves");
            }
            State::Failed => {
                since.get_or_insert_with(Instant::now);
                tracing::error!(dir = %self.dir.display(), "the store met an I/O error: writes are refused (507 or 503) while it reopens the file; if this lasts, check the disk and the system log");
            }
        }
    }
}

/// Free bytes on the file system of `dir`, for an unprivileged writer.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(dir).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// True for an I/O error that means "no space" (a full disk or a quota).
pub(super) fn is_no_space(err: &std::io::Error) -> bool {
    err.kind() == std::io::ErrorKind::StorageFull
        || matches!(err.raw_os_error(), Some(28) | Some(122))
}
