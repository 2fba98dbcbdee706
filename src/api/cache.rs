//! Answers of read routes, kept until the next store commit: a box whose clients poll their
//! session lists and history answers from memory until something changes. An entry is tagged
//! with the store generation read before its data, so it is never newer-than-tagged stale.
//!
//! Only entries of the newest generation can ever be served (a request asks with the
//! generation it read, and generations only grow), so the cache holds that generation alone:
//! a put of a newer one drops the rest, a put of an older one is not kept. Under a steady
//! stream of turns this keeps the cache small instead of filling it with dead pages; under
//! reads alone it is bounded by entries and by bytes, and starts over when full.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Mutex;

/// Entries kept at most.
const MAX_ENTRIES: usize = 4096;
/// Body bytes kept at most (a history page is about 20 KB).
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// Response bodies by a key that names the route, the agent, the caller and whether they
/// manage the agent, and the query: everything an answer depends on.
#[derive(Default)]
pub struct ReadCache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// The store generation every kept body was read at.
    generation: u64,
    bodies: HashMap<String, Bytes>,
    bytes: usize,
}

impl ReadCache {
    /// The body kept for `key`, if it is of `generation`.
    pub fn get(&self, key: &str, generation: u64) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.generation != generation {
            return None;
        }
        entries.bodies.get(key).cloned()
    }

    /// Keeps `bytes` for `key`, computed from data of at least `generation`.
    pub fn put(&self, key: String, generation: u64, bytes: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if generation < entries.generation || bytes.len() > MAX_BYTES {
            return;
        }
        if generation > entries.generation
            || entries.bodies.len() >= MAX_ENTRIES
            || entries.bytes + bytes.len() > MAX_BYTES
        {
            entries.bodies.clear();
            entries.bytes = 0;
            entries.generation = generation;
        }
        entries.bytes += bytes.len();
        if let Some(old) = entries.bodies.insert(key, bytes) {
            entries.bytes -= old.len();
        }
    }

    /// Entries and body bytes kept now.
    #[cfg(test)]
    fn size(&self) -> (usize, usize) {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        (entries.bodies.len(), entries.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(len: usize) -> Bytes {
        Bytes::from(vec![b'x'; len])
    }

    #[test]
    fn only_the_newest_generation_is_kept() {
        let cache = ReadCache::default();
        cache.put("a".into(), 1, body(10));
        cache.put("b".into(), 1, body(20));
        assert_eq!(cache.get("a", 1).unwrap().len(), 10);
        assert_eq!(cache.size(), (2, 30));
        // A commit later, the old pages can never be served: they go.
        cache.put("c".into(), 2, body(5));
        assert_eq!(cache.size(), (1, 5));
        assert!(cache.get("a", 1).is_none() && cache.get("a", 2).is_none());
        // A page read before that commit arrives late: it is not kept.
        cache.put("a".into(), 1, body(10));
        assert_eq!(cache.size(), (1, 5));
        // Replacing an entry counts its bytes once.
        cache.put("c".into(), 2, body(7));
        assert_eq!(cache.size(), (1, 7));
        assert_eq!(cache.get("c", 2).unwrap().len(), 7);
    }

    #[test]
    fn reads_alone_stay_within_the_bounds() {
        let cache = ReadCache::default();
        for i in 0..10_000 {
            cache.put(format!("page {i}"), 7, body(20_000));
            let (entries, bytes) = cache.size();
            assert!(
                entries <= MAX_ENTRIES && bytes <= MAX_BYTES,
                "{entries} {bytes}"
            );
        }
        cache.put("huge".into(), 7, body(MAX_BYTES + 1));
        assert!(cache.get("huge", 7).is_none());
    }
}
