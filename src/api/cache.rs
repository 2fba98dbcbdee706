//! Answers of read routes, kept until the next store commit: a box whose clients poll their
//! session lists and history answers from memory until something changes. An entry is tagged
//! with the store generation read before its data, so it is never newer-than-tagged stale.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept at most; the cache starts over when full.
const MAX_ENTRIES: usize = 4096;

/// Response bodies by a key that names the route, the agent, whose view, and the query.
#[derive(Default)]
pub struct ReadCache {
    entries: Mutex<HashMap<String, (u64, Bytes)>>,
}

impl ReadCache {
    /// The body kept for `key`, if it is of `generation`.
    pub fn get(&self, key: &str, generation: u64) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match entries.get(key) {
            Some((at, bytes)) if *at == generation => Some(bytes.clone()),
            _ => None,
        }
    }

    /// Keeps `bytes` for `key`, computed from data of at least `generation`.
    pub fn put(&self, key: String, generation: u64, bytes: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (generation, bytes));
    }
}
