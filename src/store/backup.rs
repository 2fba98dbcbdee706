//! A consistent copy of the store while it is in use: every table is read from one read
//! snapshot (writers go on meanwhile) and written into a new redb file, which is renamed into
//! place only once complete. A table the copy does not know makes the backup fail rather
//! than silently leave it out.

use super::tables::*;
use super::{Error, Store};
use redb::{
    Database, Key, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
    Value, WriteTransaction,
};
use std::path::{Path, PathBuf};

/// What a backup copied.
#[derive(Clone, Debug, PartialEq)]
pub struct Backup {
    pub path: PathBuf,
    pub tables: usize,
    pub rows: u64,
}

impl Store {
    /// Writes a consistent copy of the store to `target` (a new file; an existing one is
    /// replaced only when the copy is complete).
    pub async fn backup_to(&self, target: &Path) -> Result<Backup, Error> {
        let db = crate::sync::read_lock(&self.inner.slot)
            .clone()
            .ok_or(Error::Unavailable)?;
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let snapshot = db.begin_read()?;
            copy_to(&snapshot, &target)
        })
        .await
        .map_err(|err| Error::Storage(format!("backup task failed: {err}")))?
    }
}

fn copy_to(snapshot: &ReadTransaction, target: &Path) -> Result<Backup, Error> {
    let partial = target.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    crate::data_dir::make_private(&partial)
        .map_err(|err| Error::Storage(format!("creating {}: {err}", partial.display())))?;
    let copy = Database::create(&partial)?;
    let txn = copy.begin_write()?;
    let mut copied = Copied::default();
    copied.table(snapshot, &txn, META)?;
    copied.table(snapshot, &txn, USERS)?;
    copied.table(snapshot, &txn, REVOKED)?;
    copied.table(snapshot, &txn, DEVICE_TOKENS)?;
    copied.table(snapshot, &txn, SESSIONS)?;
    copied.table(snapshot, &txn, SESSIONS_BY_OWNER)?;
    copied.table(snapshot, &txn, ACTIVE_SESSIONS)?;
    copied.table(snapshot, &txn, MESSAGES)?;
    copied.table(snapshot, &txn, MESSAGES_BY_USER)?;
    copied.table(snapshot, &txn, MESSAGES_BY_AGENT)?;
    copied.table(snapshot, &txn, EXECUTIONS)?;
    copied.table(snapshot, &txn, EXECUTIONS_BY_AGENT)?;
    copied.table(snapshot, &txn, UNFINISHED)?;
    copied.table(snapshot, &txn, EVENTS)?;
    copied.table(snapshot, &txn, IDEMPOTENCY)?;
    copied.table(snapshot, &txn, ENGINE_STATE)?;
    copied.table(snapshot, &txn, TASK_QUEUE)?;
    copied.table(snapshot, &txn, AGENTS)?;
    copied.table(snapshot, &txn, PUBLIC_LINKS)?;
    copied.table(snapshot, &txn, PUBLIC_LINK_HASHES)?;
    copied.table(snapshot, &txn, PUBLIC_LINKS_BY_AGENT)?;
    copied.table(snapshot, &txn, VISITOR_SESSIONS)?;
    copied.table(snapshot, &txn, PAYMENT_NONCES)?;
    copied.table(snapshot, &txn, PAYMENT_NONCE_EXPIRY)?;
    copied.table(snapshot, &txn, PENDING_SETTLEMENTS)?;
    let missed: Vec<String> = snapshot
        .list_tables()?
        .map(|table| table.name().to_string())
        .filter(|name| !copied.names.contains(name))
        .collect();
    if !missed.is_empty() {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Storage(format!(
            "backup does not know the tables {missed:?}"
        )));
    }
    txn.commit()?;
    drop(copy);
    std::fs::rename(&partial, target)
        .map_err(|err| Error::Storage(format!("moving the backup into place: {err}")))?;
    Ok(Backup {
        path: target.to_path_buf(),
        tables: copied.names.len(),
        rows: copied.rows,
    })
}

#[derive(Default)]
struct Copied {
    names: Vec<String>,
    rows: u64,
}

impl Copied {
    fn table<K: Key + 'static, V: Value + 'static>(
        &mut self,
        snapshot: &ReadTransaction,
        txn: &WriteTransaction,
        definition: TableDefinition<K, V>,
    ) -> Result<(), Error> {
        let source = match snapshot.open_table(definition) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(err) => return Err(err.into()),
        };
        let mut target = txn.open_table(definition)?;
        for entry in source.iter()? {
            let (key, value) = entry?;
            target.insert(key.value(), value.value())?;
            self.rows += 1;
        }
        self.names.push(definition.name().to_string());
        Ok(())
    }
}
