//! `App`: the cheap-clone handle every handler gets — configuration, store and services.

use crate::agents::{self, Agents};
use crate::auth::Auth;
use crate::caller::Caller;
use crate::chat::Chat;
use crate::clock::Timestamp;
use crate::config::Config;
use crate::executions::Executions;
use crate::executions::StopReason;
use crate::links::Links;
use crate::metrics::Metrics;
use crate::paid::Paywall;
use crate::records::AgentRecord;
use crate::records::Removed;
use crate::store::Store;
use crate::tasks::Pool;
use crate::turns::Turns;
use crate::users::{self, Users};
use crate::voice::Voice;
use std::sync::Arc;
use std::time::Duration;

/// How long removing an agent or an account waits for each of its runs to stop.
const STOP_WAIT: Duration = Duration::from_secs(10);

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
    turns: Turns,
    pool: Pool,
    links: Links,
    paywall: Paywall,
    voice: Voice,
    started_at: Timestamp,
}

impl App {
    /// Wires the services over an open store.
    pub fn new(
        config: Config,
        store: Store,
        auth: Auth,
        metrics: Arc<Metrics>,
        agent_records: Vec<AgentRecord>,
    ) -> App {
        let executions = Executions::new(store.clone(), metrics.clone());
        let agents = Arc::new(Agents::load(
            &config.agents,
            agent_records,
            store.clone(),
            config.outbound_allow.clone(),
        ));
        let chat = Chat::new(store.clone());
        let turns = Turns::new(store.clone(), executions.clone());
        let pool = Pool::new(
            store.clone(),
            executions.clone(),
            turns.clone(),
            agents.clone(),
            metrics.clone(),
            config.workers,
            config.queue_capacity,
        );
        let links = Links::new(
            store.clone(),
            turns.clone(),
            agents.clone(),
            config.public.clone(),
        );
        let paywall = Paywall::new(
            store.clone(),
            turns.clone(),
            agents.clone(),
            crate::paid::system_clock(),
        );
        let voice = Voice::new(
            config.voice.clone(),
            chat.clone(),
            turns.clone(),
            executions.clone(),
            metrics.clone(),
        );
        App {
            inner: Arc::new(Inner {
                paywall,
                voice,
                agents,
                links,
                users: Users::new(
                    store.clone(),
                    crate::users::HashPool::new(
                        config.password_hash_threads,
                        config.password_hash_queue,
                        metrics.clone(),
                    ),
                ),
                chat,
                turns,
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

    pub fn turns(&self) -> &Turns {
        &self.inner.turns
    }
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }
    pub fn links(&self) -> &Links {
        &self.inner.links
    }
    pub fn paywall(&self) -> &Paywall {
        &self.inner.paywall
    }
    pub fn voice(&self) -> &Voice {
        &self.inner.voice
    }
    /// Deletes an API agent: no new work reaches it, its queued tasks are dropped, its
    /// running work is stopped and waited for, then it and everything stored for it goes in
    /// one transaction.
    pub async fn delete_agent(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<Removed, agents::Error> {
        let agent = self.agents().withdraw(caller, name)?;
        self.pool().drop_agent(agent.name());
        for live in self.executions().live_of(agent.name()) {
            live.stop(StopReason::Terminated);
            let _ = tokio::time::timeout(STOP_WAIT, live.finished()).await;
        }
        let name = agent.name().to_string();
        Ok(self.store().write(move |tx| tx.delete_agent(&name)).await?)
    }

    /// Removes an account: first its tokens are refused and its streams and calls end, then
    /// its queued tasks are dropped and its running work is stopped and waited for (so that
    /// nothing writes under the name afterwards), then one transaction deletes it with
    /// everything stored under its name. Its API agents pass to the admin who removes it (to
    /// the oldest other admin when they remove themselves), whose name is returned.
    pub async fn remove_account(
        &self,
        caller: &Caller,
        username: &str,
    ) -> Result<(Removed, String), users::Error> {
        let user = self.users().check_removable(username).await?;
        let heir = if caller.username == username {
            self.users().default_heir(username).await?
        } else {
            caller.username.clone()
        };
        self.auth().account_removed(username);
        self.voice().account_removed(username);
        let removed = match self.stop_work_of(username).await {
            Ok(()) => self.users().remove(username, &heir).await,
            Err(err) => Err(err),
        };
        let removed = match removed {
            Ok(removed) => removed,
            Err(err) => {
                self.auth().account_added(&user);
                return Err(err);
            }
        };
        self.agents().account_removed(username, &heir);
        Ok((removed, heir))
    }

    /// Cancels the user's queued tasks and stops their running executions, waiting a while
    /// for each to finish.
    async fn stop_work_of(&self, username: &str) -> Result<(), users::Error> {
        let name = username.to_string();
        let unfinished = self
            .store()
            .read(move |r| r.unfinished_executions_of(&name))
            .await?;
        for execution in unfinished {
            let cancelled = self
                .pool()
                .cancel_queued(&execution.agent, &execution.id)
                .await
                .unwrap_or(false);
            if cancelled {
                continue;
            }
            if let Some(live) = self.executions().live(&execution.id) {
                live.stop(StopReason::Terminated);
                if tokio::time::timeout(STOP_WAIT, live.finished())
                    .await
                    .is_err()
                {
                    tracing::warn!(execution = %execution.id, "a removed account's run did not stop in time");
                }
            }
        }
        Ok(())
    }

    pub fn started_at(&self) -> Timestamp {
        self.inner.started_at
    }
}
