//! Chat: the sessions of (agent, user) that turns live in — reading, closing and resetting
//! them. Turns themselves, of every kind, are admitted and run by [`crate::turns`].

mod sessions;

pub use sessions::{HistoryOwner, HistoryPage, SessionPage};

use crate::store::Store;

/// Cheap-clone handle to the sessions.
#[derive(Clone)]
pub struct Chat {
    store: Store,
}

impl Chat {
    pub fn new(store: Store) -> Chat {
        Chat { store }
    }
}
