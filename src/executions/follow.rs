//! Following an execution: replay what is recorded, then what comes, until it finishes.

use super::Live;
use crate::store::EventRecord;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::watch;

/// A cursor over an execution's events.
pub struct Follow {
    source: Source,
}

enum Source {
    Live {
        live: Arc<Live>,
        changed: watch::Receiver<u64>,
        next: usize,
    },
    Stored(VecDeque<EventRecord>),
}

impl Follow {
    pub(super) fn live(live: Arc<Live>, after: Option<u32>) -> Follow {
        let changed = live.changed.subscribe();
        let next = after.map_or(0, |seq| seq as usize + 1);
        Follow {
            source: Source::Live {
                live,
                changed,
                next,
            },
        }
    }

    pub(super) fn stored(events: Vec<EventRecord>) -> Follow {
        Follow {
            source: Source::Stored(events.into()),
        }
    }

    /// The events available now, waiting for at least one; `None` once the execution is
    /// finished and every event was returned.
    pub async fn next_batch(&mut self) -> Option<Vec<EventRecord>> {
        match &mut self.source {
            Source::Stored(events) => {
                if events.is_empty() {
                    None
                } else {
                    Some(events.drain(..).collect())
                }
            }
            Source::Live {
                live,
                changed,
                next,
            } => loop {
                // Mark the current version seen before looking, so no change slips between.
                changed.borrow_and_update();
                {
                    let state = live.lock();
                    if *next < state.events.len() {
                        let batch: Vec<EventRecord> = state.events[*next..]
                            .iter()
                            .enumerate()
                            .map(|(i, json)| EventRecord {
                                seq: (*next + i) as u32,
                                json: json.to_string(),
                            })
                            .collect();
                        *next = state.events.len();
                        return Some(batch);
                    }
                    if state.finished.is_some() {
                        return None;
                    }
                }
                if changed.changed().await.is_err() {
                    return None;
                }
            },
        }
    }
}
