//! The durable task queue: positions in submission order, each naming a queued execution.

use super::tables::TASK_QUEUE;
use super::{Error, Reader, Tx};
use redb::ReadableTable;

impl Tx<'_> {
    /// Puts a queued execution at `position`.
    pub fn enqueue_task(&self, position: u64, execution_id: &str) -> Result<(), Error> {
        self.txn
            .open_table(TASK_QUEUE)?
            .insert(position, execution_id)?;
        Ok(())
    }

    /// Takes the entry at `position` out of the queue.
    pub fn dequeue_task(&self, position: u64) -> Result<(), Error> {
        self.txn.open_table(TASK_QUEUE)?.remove(position)?;
        Ok(())
    }
}

impl Reader {
    /// Every queue entry, first submitted first.
    pub fn task_queue(&self) -> Result<Vec<(u64, String)>, Error> {
        let table = self.txn.open_table(TASK_QUEUE)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (position, id) = entry?;
            out.push((position.value(), id.value().to_string()));
        }
        Ok(out)
    }
}
