//! Voice calls: a spoken conversation with an agent over one WebSocket, Opus both ways.
//! This file owns the calls (registry, tickets, limits, start/stop/status) and the tasks that
//! run them; `session` is the per-call loop. Nothing here names hyper or a socket type: the
//! socket layer hands frames over channels, so every call is testable without a socket.

pub mod audio;
pub mod opus;
mod playback;
mod session;
mod speech;
mod stream;
mod turn;
pub mod vad;
pub mod wire;

use crate::agents::Agent;
use crate::auth::SessionEnd;
use crate::caller::Caller;
use crate::chat::Chat;
use crate::clock::Timestamp;
use crate::config::{VoiceConfig, VoiceMode};
use crate::executions::Executions;
use crate::ids::SessionId;
use crate::metrics::Metrics;
use crate::outbound::Client;
use crate::shutdown::{Shutdown, Trigger};
use crate::sync::lock;
use crate::turns::Turns;
use serde::Serialize;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use wire::{Inbound, Outbound};

/// How long a ticket from `voice/start` may be used.
pub const TICKET_TTL: Duration = Duration::from_secs(30);
/// Ended calls are remembered this long, so `voice/stop` answers the same again.
const ENDED_KEPT: Duration = Duration::from_secs(3600);
/// Frames queued between a call and its socket.
const CHANNEL_FRAMES: usize = 8;

/// What can go wrong starting, joining or stopping a call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("voice is unavailable: {0}")]
    Unavailable(String),
    #[error("too many voice sessions ({0}); try again later")]
    TooMany(&'static str),
    #[error("voice session not found")]
    NotFound,
    #[error("this voice session belongs to someone else")]
    NotYours,
    #[error("invalid or expired ticket")]
    BadTicket,
    #[error("this voice session is already connected or has ended")]
    Taken,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Turn(#[from] crate::turns::Error),
}

/// What `voice/start` asks for.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    pub session_id: Option<SessionId>,
    pub sample_rate: Option<u32>,
    pub frame_ms: Option<u32>,
    pub voice: Option<String>,
    pub language: Option<String>,
}

/// A call that was started and waits for its socket.
#[derive(Debug, Serialize)]
pub struct Started {
    pub voice_session_id: String,
    pub chat_session_id: Option<SessionId>,
    pub ticket: String,
    pub sample_rate: u32,
    pub max_duration_s: u64,
}

/// One line of a call's transcript.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Line {
    pub role: &'static str,
    pub text: String,
}

/// What a call left behind.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub transcript: Vec<Line>,
    pub messages_saved: u64,
    pub duration_seconds: f64,
}

/// A call as `voice/status` lists it.
#[derive(Debug, Serialize)]
pub struct CallInfo {
    pub voice_session_id: String,
    pub state: &'static str,
    pub started_at: Timestamp,
    pub duration_s: u64,
}

/// What one call shares between its loop, the registry and `voice/stop`.
pub(crate) struct CallShared {
    /// `listening`, `thinking`, `speaking` or `ended`.
    pub state: Mutex<&'static str>,
    /// Set by `voice/stop`: the loop says `saved` and closes with 1000.
    pub hangup: watch::Sender<bool>,
    /// Set once, when the call has ended.
    pub summary: watch::Sender<Option<Summary>>,
    /// Set when the token of the call is no longer accepted: the loop closes with 4001.
    pub signed_out: watch::Sender<bool>,
}

struct Call {
    agent: Arc<Agent>,
    username: String,
    /// Who started the call: its ticket is good only while this token is accepted.
    caller: Caller,
    chat_session_id: Option<SessionId>,
    sample_rate: u32,
    preferences: speech::Preferences,
    started_at: Timestamp,
    started: Instant,
    attached: bool,
    shared: Arc<CallShared>,
}

struct Ticket {
    voice_session_id: String,
    expires: Instant,
}

/// A call that a socket may now carry.
pub struct Attach {
    voice_session_id: String,
    /// The token the call runs under: the ticket's (who started it) or the bearer's.
    caller: Caller,
}

impl Attach {
    /// The token the call runs under; the call ends when it stops being accepted.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

/// Cheap-clone handle to the voice service.
#[derive(Clone)]
pub struct Voice {
    inner: Arc<Inner>,
}

struct Inner {
    config: Option<VoiceConfig>,
    chat: Chat,
    turns: Turns,
    executions: Executions,
    metrics: Arc<Metrics>,
    /// The client for the speech servers of the configuration, kept so calls reuse its
    /// connections.
    speech_client: Client,
    calls: Mutex<HashMap<String, Call>>,
    tickets: Mutex<HashMap<String, Ticket>>,
    /// Every running call; joined by `close_all`.
    tasks: Mutex<JoinSet<()>>,
    closing: Trigger,
    closed: Shutdown,
}

impl Voice {
    pub fn new(
        config: Option<VoiceConfig>,
        chat: Chat,
        turns: Turns,
        executions: Executions,
        metrics: Arc<Metrics>,
    ) -> Voice {
        let (closing, closed) = Shutdown::new();
        Voice {
            inner: Arc::new(Inner {
                config,
                chat,
                turns,
                executions,
                metrics,
                speech_client: Client::for_config_urls(),
                calls: Mutex::new(HashMap::new()),
                tickets: Mutex::new(HashMap::new()),
                tasks: Mutex::new(JoinSet::new()),
                closing,
                closed,
            }),
        }
    }

    /// The `[voice]` configuration, when voice is on.
    pub fn config(&self) -> Option<&VoiceConfig> {
        self.inner.config.as_ref()
    }

    /// Why calls cannot start now, if they cannot.
    pub async fn unavailable(&self, agent: &Agent) -> Option<String> {
        let Some(config) = &self.inner.config else {
            return Some("no [voice] section in the configuration".into());
        };
        if !agent.config.voice {
            return Some(format!("voice is off for agent {}", agent.name()));
        }
        if config.mode == VoiceMode::Pipeline {
            for (name, engine) in [("stt", &config.stt), ("tts", &config.tts)] {
                match engine {
                    None => return Some(format!("voice.{name} is not configured")),
                    Some(engine) => {
                        if !speech::ready(&self.inner.speech_client, engine).await {
                            return Some(format!("the voice.{name} engine is not reachable"));
                        }
                    }
                }
            }
        }
        None
    }

    /// The voices a speech engine offers, or None when it is not ready.
    pub async fn describe(
        &self,
        engine: Option<&crate::config::SpeechEngine>,
    ) -> Option<Vec<String>> {
        speech::describe(&self.inner.speech_client, engine?).await
    }

    /// Registers a call and hands out its ticket.
    pub async fn start(
        &self,
        caller: &Caller,
        agent: Arc<Agent>,
        request: StartRequest,
    ) -> Result<Started, Error> {
        if let Some(reason) = self.unavailable(&agent).await {
            return Err(Error::Unavailable(reason));
        }
        let config = self.inner.config.clone().expect("checked above");
        let sample_rate = request.sample_rate.unwrap_or(16_000);
        if ![16_000, 24_000, 48_000].contains(&sample_rate) {
            return Err(Error::Invalid(
                "sample_rate is 16000, 24000 or 48000".into(),
            ));
        }
        if request.frame_ms.is_some_and(|ms| ms != 20) {
            return Err(Error::Invalid("frame_ms is 20".into()));
        }
        for (field, name) in [("voice", &request.voice), ("language", &request.language)] {
            if name
                .as_deref()
                .is_some_and(|name| !speech::valid_name(name))
            {
                let rule = "1-64 letters, digits, '-', '_' or '.'";
                return Err(Error::Invalid(format!("{field} is {rule}")));
            }
        }
        let chat_session_id = match request.session_id {
            Some(id) => {
                let session = self.inner.chat.session(&agent, caller, &id).await?;
                if session.username != caller.username {
                    return Err(crate::turns::Error::SessionNotFound.into());
                }
                Some(session.id)
            }
            None => self.inner.chat.active_session_of(&agent, caller).await?,
        };
        let voice_session_id = crate::ids::new_id();
        let mut calls = lock(&self.inner.calls);
        calls.retain(|_, call| {
            !stale(call) && (!ended(call) || call.started.elapsed() < ENDED_KEPT)
        });
        let open = calls.values().filter(|call| !ended(call));
        let (all, mine) = open.fold((0, 0), |(all, mine), call| {
            (
                all + 1,
                mine + usize::from(call.username == caller.username),
            )
        });
        if all >= config.max_sessions {
            return Err(Error::TooMany("max_sessions"));
        }
        if mine >= config.max_per_user {
            return Err(Error::TooMany("max_per_user"));
        }
        calls.insert(
            voice_session_id.clone(),
            Call {
                agent,
                username: caller.username.clone(),
                caller: caller.clone(),
                chat_session_id: chat_session_id.clone(),
                sample_rate,
                preferences: speech::Preferences {
                    voice: request.voice,
                    language: request.language,
                },
                started_at: Timestamp::now(),
                started: Instant::now(),
                attached: false,
                shared: Arc::new(CallShared {
                    state: Mutex::new("listening"),
                    hangup: watch::channel(false).0,
                    summary: watch::channel(None).0,
                    signed_out: watch::channel(false).0,
                }),
            },
        );
        let open = calls.values().filter(|call| !ended(call)).count();
        self.inner
            .metrics
            .set_gauge("outpost_voice_calls".into(), open as i64);
        drop(calls);
        let ticket = self.issue_ticket(&voice_session_id);
        Ok(Started {
            voice_session_id,
            chat_session_id,
            ticket,
            sample_rate,
            max_duration_s: config.max_duration.as_secs(),
        })
    }

    fn issue_ticket(&self, voice_session_id: &str) -> String {
        let mut raw = [0u8; 24];
        crate::ids::random_bytes(&mut raw);
        let ticket = crate::ids::hex(&raw);
        let mut tickets = lock(&self.inner.tickets);
        tickets.retain(|_, t| t.expires > Instant::now());
        tickets.insert(
            ticket.clone(),
            Ticket {
                voice_session_id: voice_session_id.to_string(),
                expires: Instant::now() + TICKET_TTL,
            },
        );
        ticket
    }

    /// Redeems a ticket (once) for the call on `agent` it was issued for, if the token that
    /// started the call is still `accepted` (a ticket does not outlive a logout).
    pub fn attach_ticket(
        &self,
        agent: &str,
        ticket: &str,
        accepted: impl Fn(&Caller) -> bool,
    ) -> Result<Attach, Error> {
        let found = lock(&self.inner.tickets).remove(ticket);
        let found = found
            .filter(|t| t.expires > Instant::now())
            .ok_or(Error::BadTicket)?;
        let starter = lock(&self.inner.calls)
            .get(&found.voice_session_id)
            .map(|call| call.caller.clone());
        if !starter.is_some_and(|caller| accepted(&caller)) {
            return Err(Error::BadTicket);
        }
        self.claim(agent, &found.voice_session_id, None)
    }

    /// The call `voice_session_id` for a caller with a bearer token.
    pub fn attach_bearer(
        &self,
        caller: &Caller,
        agent: &str,
        voice_session_id: &str,
    ) -> Result<Attach, Error> {
        self.claim(agent, voice_session_id, Some(caller))
    }

    fn claim(&self, agent: &str, id: &str, caller: Option<&Caller>) -> Result<Attach, Error> {
        let mut calls = lock(&self.inner.calls);
        let call = calls
            .get_mut(id)
            .filter(|call| call.agent.name() == agent)
            .ok_or(Error::NotFound)?;
        if caller.is_some_and(|c| c.username != call.username) {
            return Err(Error::NotYours);
        }
        if call.attached || ended(call) || stale(call) {
            return Err(Error::Taken);
        }
        call.attached = true;
        Ok(Attach {
            voice_session_id: id.to_string(),
            caller: caller.unwrap_or(&call.caller).clone(),
        })
    }

    /// Runs an attached call: `socket` moves frames between the client and the two channels
    /// it is given; it ends when the outbound channel closes. The call task is owned here and
    /// joined by `close_all`. When `end` resolves (the token is no longer accepted) the call
    /// closes with 4001.
    pub fn run<F, Fut>(&self, attach: Attach, mut end: SessionEnd, socket: F)
    where
        F: FnOnce(mpsc::Sender<Inbound>, mpsc::Receiver<Outbound>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (inbound_tx, inbound_rx) = mpsc::channel(CHANNEL_FRAMES * 4);
        let (outbound_tx, outbound_rx) = mpsc::channel(CHANNEL_FRAMES);
        let socket = socket(inbound_tx, outbound_rx);
        let context = {
            let calls = lock(&self.inner.calls);
            let Some(call) = calls.get(&attach.voice_session_id) else {
                return;
            };
            session::Context {
                voice_session_id: attach.voice_session_id.clone(),
                config: self.inner.config.clone().unwrap_or_default(),
                agent: call.agent.clone(),
                username: call.username.clone(),
                chat_session_id: call.chat_session_id.clone(),
                sample_rate: call.sample_rate,
                preferences: call.preferences.clone(),
                speech_client: self.inner.speech_client.clone(),
                started: call.started,
                shared: call.shared.clone(),
                chat: self.inner.chat.clone(),
                turns: self.inner.turns.clone(),
                executions: self.inner.executions.clone(),
                metrics: self.inner.metrics.clone(),
                shutdown: self.inner.closed.clone(),
            }
        };
        let shared = context.shared.clone();
        // Weak: the task lives in this service's own set and must not keep it alive.
        let voice = Arc::downgrade(&self.inner);
        let call = session::run(context, inbound_rx, outbound_tx);
        let mut tasks = lock(&self.inner.tasks);
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let call = async { tokio::join!(call, socket) };
            tokio::pin!(call);
            let (summary, ()) = tokio::select! {
                ended = &mut call => ended,
                () = end.wait() => {
                    shared.signed_out.send_replace(true);
                    call.await
                }
            };
            *lock(&shared.state) = "ended";
            shared.summary.send_replace(Some(summary));
            if let Some(inner) = voice.upgrade() {
                Voice { inner }.count_open();
            }
        });
    }

    fn count_open(&self) {
        let calls = lock(&self.inner.calls);
        let open = calls.values().filter(|call| !ended(call)).count();
        self.inner
            .metrics
            .set_gauge("outpost_voice_calls".into(), open as i64);
    }

    /// Ends a call (owner or the agent's manager) and returns what it left behind.
    pub async fn stop(&self, caller: &Caller, agent: &Agent, id: &str) -> Result<Summary, Error> {
        let (shared, attached) = {
            let calls = lock(&self.inner.calls);
            let call = calls
                .get(id)
                .filter(|call| call.agent.name() == agent.name())
                .ok_or(Error::NotFound)?;
            if call.username != caller.username && !agent.managed_by(caller) {
                return Err(Error::NotYours);
            }
            (call.shared.clone(), call.attached)
        };
        if !attached {
            // Never connected: nothing was said, nothing to store.
            let mut calls = lock(&self.inner.calls);
            if let Some(call) = calls.get_mut(id) {
                call.attached = true;
            }
            *lock(&shared.state) = "ended";
            shared.summary.send_if_modified(|summary| {
                summary.get_or_insert_with(Summary::default);
                true
            });
        }
        shared.hangup.send_replace(true);
        let mut summary = shared.summary.subscribe();
        let done = async move { summary.wait_for(Option::is_some).await.ok()?.clone() };
        match tokio::time::timeout(Duration::from_secs(10), done).await {
            Ok(Some(summary)) => Ok(summary),
            _ => Err(Error::Unavailable("the call did not end in time".into())),
        }
    }

    /// The calls on `agent` the caller may see (all of them for its manager).
    pub fn calls(&self, caller: &Caller, agent: &Agent) -> Vec<CallInfo> {
        let calls = lock(&self.inner.calls);
        let mut listed: Vec<CallInfo> = calls
            .iter()
            .filter(|(_, call)| call.agent.name() == agent.name())
            .filter(|(_, call)| call.username == caller.username || agent.managed_by(caller))
            .map(|(id, call)| CallInfo {
                voice_session_id: id.clone(),
                state: *lock(&call.shared.state),
                started_at: call.started_at,
                duration_s: call.started.elapsed().as_secs(),
            })
            .collect();
        listed.sort_by(|a, b| a.voice_session_id.cmp(&b.voice_session_id));
        listed
    }

    /// Forgets the calls of a removed account (its open ones are ending with 4001 already),
    /// so that a new account of the same name finds none of them in `voice/status` or
    /// `voice/stop`.
    pub fn account_removed(&self, username: &str) {
        lock(&self.inner.calls).retain(|_, call| call.username != username);
        self.count_open();
    }

    /// Ends every call with 1001 and waits for them, at most until `deadline`.
    pub async fn close_all(&self, deadline: tokio::time::Instant) {
        self.inner.closing.fire();
        let mut tasks = std::mem::take(&mut *lock(&self.inner.tasks));
        while tokio::time::timeout_at(deadline, tasks.join_next())
            .await
            .is_ok_and(|next| next.is_some())
        {}
    }
}

/// A call whose socket never came within a ticket's lifetime.
fn stale(call: &Call) -> bool {
    !call.attached && call.started.elapsed() > TICKET_TTL
}

fn ended(call: &Call) -> bool {
    call.shared.summary.borrow().is_some()
}
