//! The store: one redb file in the data dir. The only module that names redb.
//!
//! Writes go to one writer thread that applies every job waiting in its queue in a single
//! transaction and commits once (group commit), so many small durable writes share an fsync.
//! Reads run on the blocking pool. No redb call runs on the async runtime's threads.

mod accounts;
mod agents;
mod backup;
mod executions;
pub mod health;
mod keys;
mod links;
mod payments;
mod queue;
mod sessions;
mod tables;
mod users;
mod writer;

pub use backup::Backup;
pub use executions::{EventRecord, ExecutionFilter, IdempotencyRecord};
pub use payments::{NonceClaim, PendingSettlement};
pub use sessions::HistoryScope;
pub use writer::Durable;

use writer::{Job, WriteJob};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, RwLock};
use std::thread::JoinHandle;
use tables::*;
use tokio::sync::oneshot;

/// The page cache unless configured: `[store] cache_mb`.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;
const VALUE_VERSION: u8 = 1;

/// What can go wrong in the store; services see only this.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the store at {0} is in use by another process (is `outpost serve` running? stop it first)"
    )]
    Locked(PathBuf),
    #[error("the store at {path} was written by a newer Outpost (schema {found}, this one knows {known})")]
    TooNew {
        path: PathBuf,
        found: u64,
        known: u64,
    },
    #[error("storage: {0}")]
    Storage(String),
    #[error("corrupt record in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("the store is closed")]
    Closed,
    #[error("the disk holding the store is full; writes resume by themselves once space is freed")]
    Full,
    #[error("the store cannot write after an I/O error; it is reopening its file")]
    Unavailable,
}

impl Error {
    /// True for the errors of the disk itself (full, or an I/O error), which the writer
    /// answers by refusing writes until it has reopened the file.
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Full | Error::Unavailable)
    }
}

/// Sorts redb's errors: the disk's own (no space, I/O, redb's "previous I/O error") apart
/// from the rest.
fn classify(err: redb::Error) -> Error {
    match err {
        redb::Error::Io(io) if health::is_no_space(&io) => Error::Full,
        redb::Error::Io(_) | redb::Error::PreviousIo => Error::Unavailable,
        other => Error::Storage(other.to_string()),
    }
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(err: $t) -> Error {
                classify(err.into())
            }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);

/// The open file, or none while it is being reopened after an I/O error.
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

/// Encodes a value: a version byte, then JSON.
fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    serde_json::to_writer(&mut out, value).expect("records serialize");
    out
}

/// Decodes a value written by [`encode`].
fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, Error> {
    match bytes.split_first() {
        Some((&VALUE_VERSION, json)) => {
            serde_json::from_slice(json).map_err(|err| Error::Corrupt {
                table,
                message: err.to_string(),
            })
        }
        _ => Err(Error::Corrupt {
            table,
            message: "unknown value version".into(),
        }),
    }
}

/// Decodes a value read at start-up: one that cannot be decoded is logged with its key and
/// set aside (left in the file, skipped), so one bad record cannot keep the daemon down.
fn decode_or_set_aside<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    bytes: &[u8],
) -> Option<T> {
    match decode(table, bytes) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::error!(table, key, cause = %err, "a stored record cannot be read; it is set aside");
            None
        }
    }
}

/// Reads one JSON value from a `&str`-keyed table.
fn get_json<T: DeserializeOwned>(
    table: &impl ReadableTable<&'static str, &'static [u8]>,
    name: &'static str,
    key: &str,
) -> Result<Option<T>, Error> {
    match table.get(key)? {
        Some(value) => Ok(Some(decode(name, value.value())?)),
        None => Ok(None),
    }
}

/// How the store is opened.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// The page cache (redb's own default is 1 GiB, which an edge box's memory cannot spare;
    /// the cache grows with use up to this size).
    pub cache_bytes: usize,
    /// Free space below which writes are refused before they start.
    pub write_reserve_bytes: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            cache_bytes: DEFAULT_CACHE_BYTES,
            write_reserve_bytes: health::WRITE_RESERVE_BYTES,
        }
    }
}

/// A write transaction as services see it: typed methods per aggregate.
pub struct Tx<'a> {
    txn: &'a WriteTransaction,
}

/// A read snapshot as services see it.
pub struct Reader {
    txn: ReadTransaction,
}

/// Cheap-clone handle to the open store. The file closes when the last handle drops: the
/// writer finishes the jobs already queued, its thread is joined, and redb releases the lock.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    slot: Slot,
    path: PathBuf,
    writer: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    writer_thread: Option<JoinHandle<()>>,
    /// How far commits have reached the disk.
    progress: tokio::sync::watch::Receiver<writer::Progress>,
    /// Bumped after every commit: a cache filled at generation g is current while it is g.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The last successful commit, on disk or not.
    committed: Arc<std::sync::atomic::AtomicU64>,
    health: Arc<health::Health>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.writer.take();
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl Store {
    /// Opens (or creates) the store file in `data_dir` and migrates it. Blocking: call it at
    /// start-up or from `spawn_blocking`.
    pub fn open(data_dir: &Path) -> Result<Store, Error> {
        Store::open_with(data_dir, Options::default())
    }

    /// Opens the store with these options.
    pub fn open_with(data_dir: &Path, options: Options) -> Result<Store, Error> {
        let Options {
            cache_bytes,
            write_reserve_bytes,
        } = options;
        let path = crate::data_dir::store_file(data_dir);
        crate::data_dir::make_private(&path)
            .map_err(|err| Error::Storage(format!("creating {}: {err}", path.display())))?;
        let db = open_file(&path, cache_bytes)?;
        migrate(&db, &path)?;
        let slot: Slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let (writer, jobs) = mpsc::channel();
        let (progress_tx, progress) = tokio::sync::watch::channel(writer::Progress::default());
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let health = Arc::new(health::Health::new(data_dir, write_reserve_bytes));
        let reopen_path = path.clone();
        let shared = writer::Shared {
            slot: slot.clone(),
            progress: progress_tx,
            generation: generation.clone(),
            committed: committed.clone(),
            health: health.clone(),
            reopen: Box::new(move || open_file(&reopen_path, cache_bytes)),
        };
        let writer_thread = std::thread::Builder::new()
            .name("outpost-store-writer".into())
            .spawn(move || writer::write_loop(&shared, &jobs))
            .map_err(|err| Error::Storage(format!("starting the writer thread: {err}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                slot,
                path,
                writer: Some(writer),
                writer_thread: Some(writer_thread),
                progress,
                generation,
                committed,
                health,
            }),
        })
    }

    /// Whether the store can write, and what it refused.
    pub fn health(&self) -> &health::Health {
        &self.inner.health
    }

    /// The same, to keep apart from the store (it holds no handle to the file).
    pub fn health_handle(&self) -> Arc<health::Health> {
        self.inner.health.clone()
    }

    /// The store file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The commit generation; read it before a snapshot to tag what the snapshot shows.
    pub fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// How many handles to the store are alive (the shutdown leak check wants 1).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.inner)
    }

    /// Runs `work` inside a write transaction and returns once it is durably committed.
    /// `work` must check before it writes: an error it returns aborts its whole batch.
    pub async fn write<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        self.submit(work, true).await.map(|(output, _)| output)
    }

    /// Runs `work` inside a write transaction and returns once it is committed — visible to
    /// every reader — but possibly not yet on disk; the [`Durable`] resolves when it is. A
    /// commit waits at most `writer::DEFER_WINDOW` for a durable one to carry it to disk, so a
    /// turn whose engine answers at once pays one fsync for both of its commits. Nothing may
    /// be acknowledged to a client before its `Durable` resolves.
    pub async fn write_deferred<T, F>(&self, work: F) -> Result<(T, Durable), Error>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let (output, seq) = self.submit(work, false).await?;
        Ok((output, Durable::new(seq, self.inner.progress.clone())))
    }

    async fn submit<T, F>(&self, work: F, durable: bool) -> Result<(T, u64), Error>
    where
        F: FnOnce(&Tx<'_>) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, done) = oneshot::channel();
        let job = Box::new(Job {
            work: Some(work),
            output: None,
            durable,
            reply,
        });
        let writer = self.inner.writer.as_ref().ok_or(Error::Closed)?;
        writer.send(job).map_err(|_| Error::Closed)?;
        done.await.map_err(|_| Error::Closed)?
    }

    /// Runs `work` on a read snapshot, on the blocking pool. The snapshot shows only what is
    /// on disk: a commit not yet carried there is waited for (at most a group commit's
    /// window and its fsync), so no reader sees what a failed commit could still drop.
    pub async fn read<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&Reader) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let want = self
            .inner
            .committed
            .load(std::sync::atomic::Ordering::SeqCst);
        let mut progress = self.inner.progress.clone();
        if !progress.borrow().settled(want) {
            let settled = progress.wait_for(|p| p.settled(want));
            match tokio::time::timeout(READ_WAIT, settled).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err(Error::Closed),
                Err(_) => return Err(Error::Unavailable),
            }
        }
        self.read_current(work).await
    }

    /// Runs `work` on a snapshot of every commit made, on disk or not: for the work that
    /// continues a commit of its own (a turn reading its session's history while its
    /// admission reaches the disk). What it reads must not reach a client before the
    /// commit's `Durable` resolves.
    pub async fn read_current<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&Reader) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let db = crate::sync::read_lock(&self.inner.slot)
            .clone()
            .ok_or(Error::Unavailable)?;
        tokio::task::spawn_blocking(move || {
            let reader = Reader {
                txn: db.begin_read()?,
            };
            work(&reader)
        })
        .await
        .map_err(|err| Error::Storage(format!("read task failed: {err}")))?
    }
}

/// Longest a read waits for the commits it would see to reach the disk.
const READ_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

fn open_file(path: &Path, cache_bytes: usize) -> Result<Database, Error> {
    match redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(path)
    {
        Ok(db) => Ok(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(Error::Locked(path.to_path_buf())),
        Err(err) => Err(err.into()),
    }
}

fn migrate(db: &Database, path: &Path) -> Result<(), Error> {
    let txn = db.begin_write()?;
    {
        let mut meta = txn.open_table(META)?;
        let found = meta.get("schema_version")?.map(|v| v.value());
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(Error::TooNew {
                    path: path.to_path_buf(),
                    found: v,
                    known: SCHEMA_VERSION,
                })
            }
            Some(v) if v == SCHEMA_VERSION => {}
            // Version 1 is the first layout: creating the tables is the whole migration.
            _ => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
            }
        }
        txn.open_table(USERS)?;
        txn.open_table(REVOKED)?;
        txn.open_table(DEVICE_TOKENS)?;
        txn.open_table(SESSIONS)?;
        txn.open_table(SESSIONS_BY_OWNER)?;
        txn.open_table(ACTIVE_SESSIONS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(MESSAGES_BY_USER)?;
        txn.open_table(MESSAGES_BY_AGENT)?;
        txn.open_table(EXECUTIONS)?;
        txn.open_table(EXECUTIONS_BY_AGENT)?;
        txn.open_table(UNFINISHED)?;
        txn.open_table(EVENTS)?;
        txn.open_table(IDEMPOTENCY)?;
        txn.open_table(ENGINE_STATE)?;
        txn.open_table(TASK_QUEUE)?;
        txn.open_table(AGENTS)?;
        txn.open_table(PUBLIC_LINKS)?;
        txn.open_table(PUBLIC_LINK_HASHES)?;
        txn.open_table(PUBLIC_LINKS_BY_AGENT)?;
        txn.open_table(VISITOR_SESSIONS)?;
        txn.open_table(PAYMENT_NONCES)?;
        txn.open_table(PAYMENT_NONCE_EXPIRY)?;
        txn.open_table(PENDING_SETTLEMENTS)?;
    }
    txn.commit()?;
    Ok(())
}

impl Tx<'_> {
    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, Error> {
        let meta = self.txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        Ok(version.unwrap_or(0))
    }
}

impl Reader {
    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64, Error> {
        let meta = self.txn.open_table(META)?;
        let version = meta.get("schema_version")?.map(|v| v.value());
        Ok(version.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests;
