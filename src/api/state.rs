//! What the API keeps per daemon beside the services: the read cache of its read routes.

use super::cache::ReadCache;
use crate::app::App;
use std::ops::Deref;
use std::sync::Arc;

/// The services and the API's own per-daemon state; a cheap clone, one per connection.
/// Derefs to [`App`], so a handler that needs only the services takes `&App` as before.
#[derive(Clone)]
pub struct Api {
    app: App,
    read_cache: Arc<ReadCache>,
}

impl Api {
    /// The API over `app`, with an empty read cache.
    pub fn new(app: App) -> Api {
        Api {
            app,
            read_cache: Arc::default(),
        }
    }

    /// Answers of read routes kept until the next store commit.
    pub fn read_cache(&self) -> &ReadCache {
        &self.read_cache
    }
}

impl Deref for Api {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}
