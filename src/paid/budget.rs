//! The unpaid-work cap of agents that trust signatures alone (`verify_with_facilitator =
//! false`): without the facilitator's word on funds, any fresh key gets a turn whose
//! settlement then fails. Each such turn takes a place for a minute from its start; a
//! settled one gives it back. Per agent, because fresh keys cost nothing: a cap per payer
//! would bound nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a turn that did not settle keeps its place.
pub(super) const WINDOW: Duration = Duration::from_secs(60);

/// Places taken, per agent.
#[derive(Default)]
pub(super) struct Budget {
    taken: Mutex<HashMap<String, Vec<(u64, Instant)>>>,
    next: Mutex<u64>,
}

/// A place taken by one unverified turn.
#[derive(Debug)]
pub(super) struct Place {
    agent: String,
    id: u64,
}

impl Budget {
    /// Takes a place for a turn of `agent` at `now`, or says how long until one frees up.
    pub(super) fn take(&self, agent: &str, limit: u32, now: Instant) -> Result<Place, Duration> {
        let mut taken = crate::sync::lock(&self.taken);
        let places = taken.entry(agent.to_string()).or_default();
        places.retain(|(_, at)| now.duration_since(*at) < WINDOW);
        if places.len() >= limit as usize {
            let oldest = places.iter().map(|(_, at)| *at).min().unwrap_or(now);
            return Err(WINDOW.saturating_sub(now.duration_since(oldest)));
        }
        let id = {
            let mut next = crate::sync::lock(&self.next);
            *next += 1;
            *next
        };
        places.push((id, now));
        Ok(Place {
            agent: agent.to_string(),
            id,
        })
    }

    /// Gives a place back: its turn was paid for, or never ran.
    pub(super) fn give_back(&self, place: Place) {
        if let Some(places) = crate::sync::lock(&self.taken).get_mut(&place.agent) {
            places.retain(|(id, _)| *id != place.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_free_up_when_paid_for_or_a_minute_after_they_were_taken() {
        let budget = Budget::default();
        let start = Instant::now();
        let first = budget.take("helper", 2, start).unwrap();
        let _second = budget
            .take("helper", 2, start + Duration::from_secs(10))
            .unwrap();
        let wait = budget
            .take("helper", 2, start + Duration::from_secs(20))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(40));
        assert!(budget.take("other", 2, start).is_ok(), "per agent");
        budget.give_back(first);
        let third = budget.take("helper", 2, start + Duration::from_secs(20));
        assert!(third.is_ok(), "a settled turn gives its place back");
        assert!(budget
            .take("helper", 2, start + Duration::from_secs(30))
            .is_err());
        assert!(budget
            .take("helper", 2, start + Duration::from_secs(71))
            .is_ok());
    }
}
