//! `App`: the cheap-clone handle every handler gets — configuration, store and services.

use crate::agents::Agents;
use crate::auth::Auth;
use crate::chat::Chat;
use crate::clock::Timestamp;
use crate::config::Config;
use crate::executions::Executions;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::tasks::Pool;
use crate::users::Users;
use std::sync::Arc;

/// Shared state of the running daemon.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    metrics: Arc<Metrics>,
    auth: Auth,
    users: Users,
    agents: Arc<Agents>,
    executions: Executions,
    chat: Chat,
    pool: Pool,
    started_at: Timestamp,
}

impl App {
    /// Wires the services over an open store.
    pub fn new(config: Config, store: Store, auth: Auth, metrics: Arc<Metrics>) -> App {
        let executions = Executions::new(store.clone(), metrics.clone());
        let agents = Arc::new(Agents::from_config(&config.agents));
        let chat = Chat::new(store.clone(), executions.clone());
        let pool = Pool::new(
            store.clone(),
            executions.clone(),
            chat.clone(),
            agents.clone(),
            metrics.clone(),
            config.workers,
            config.queue_capacity,
        );
        App {
            inner: Arc::new(Inner {
                agents,
                users: Users::new(store.clone()),
                chat,
                pool,
                executions,
                auth,
                metrics,
                store,
                config,
                started_at: Timestamp::now(),
            }),
        }
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }
    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }
    pub fn users(&self) -> &Users {
        &self.inner.users
    }
    pub fn agents(&self) -> &Agents {
        &self.inner.agents
    }
    pub fn executions(&self) -> &Executions {
        &self.inner.executions
    }
    pub fn chat(&self) -> &Chat {
        &self.inner.chat
    }
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }
    pub fn started_at(&self) -> Timestamp {
        self.inner.started_at
    }
}
