//! The store: one redb file in the data dir. The only module that names redb.
//!
//! Writes go to one writer thread that applies every job waiting in its queue in a single
//! transaction and commits once (group commit), so many small durable writes share an fsync.
//! Reads run on the blocking pool. No redb call runs on the async runtime's threads.

mod accounts;
mod agents;
mod backup;
mod executions;
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
use std::sync::{mpsc, Arc};
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
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(err: $t) -> Error {
                Error::Storage(err.to_string())
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
    redb::DatabaseError
);

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
    db: Arc<Database>,
    path: PathBuf,
    writer: Option<mpsc::Sender<Box<dyn WriteJob>>>,
    writer_thread: Option<JoinHandle<()>>,
    /// The sequence number of the last commit that reached the disk.
    durable: tokio::sync::watch::Receiver<u64>,
    /// Bumped after every commit: a cache filled at generation g is current while it is g.
    generation: Arc<std::sync::atomic::AtomicU64>,
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
        Store::open_with_cache(data_dir, DEFAULT_CACHE_BYTES)
    }

    /// Opens the store with a page cache of `cache_bytes` (redb's own default is 1 GiB, which
    /// an edge box's memory cannot spare; the cache grows with use up to this size).
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> Result<Store, Error> {
        let path = crate::data_dir::store_file(data_dir);
        crate::data_dir::make_private(&path)
            .map_err(|err| Error::Storage(format!("creating {}: {err}", path.display())))?;
        let db = match redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Error::Locked(path)),
            Err(err) => return Err(err.into()),
        };
        migrate(&db, &path)?;
        let db = Arc::new(db);
        let (writer, jobs) = mpsc::channel();
        let (durable_tx, durable) = tokio::sync::watch::channel(0);
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer_generation = generation.clone();
        let writer_db = db.clone();
        let writer_thread = std::thread::Builder::new()
            .name("outpost-store-writer".into())
            .spawn(move || writer::write_loop(&writer_db, &jobs, &durable_tx, &writer_generation))
            .map_err(|err| Error::Storage(format!("starting the writer thread: {err}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                path,
                writer: Some(writer),
                writer_thread: Some(writer_thread),
                durable,
                generation,
            }),
        })
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
        Ok((output, Durable::new(seq, self.inner.durable.clone())))
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

    /// Runs `work` on a read snapshot, on the blocking pool.
    pub async fn read<T, F>(&self, work: F) -> Result<T, Error>
    where
        F: FnOnce(&Reader) -> Result<T, Error> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.inner.db.clone();
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
