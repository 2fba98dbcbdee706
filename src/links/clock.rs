//! The clock public links read: the wall clock plus an offset that tests move forward, so a
//! link's expiry can be checked without waiting for it.

use crate::clock::Timestamp;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Cheap-clone handle to the links' clock; every clone shares one offset.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    /// The current time as public links see it.
    pub fn now(&self) -> Timestamp {
        Timestamp::now().add_millis(self.offset_ms.load(Ordering::Relaxed))
    }

    /// Moves this clock forward by `by` (for tests of expiry).
    pub fn advance(&self, by: Duration) {
        let millis = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.offset_ms.fetch_add(millis, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_clone() {
        let clock = Clock::default();
        let other = clock.clone();
        let before = clock.now();
        other.advance(Duration::from_secs(86_400));
        assert!(clock.now().0 - before.0 >= 86_400_000);
    }
}
