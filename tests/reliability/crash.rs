//! The crash loop: workers send a mix of chat turns, tasks, public-link turns and paid turns
//! (settled by a facilitator stub in this process) to the daemon as a child process, which is
//! killed with SIGKILL at a random moment and started again on the same data dir, cycle after
//! cycle. After each restart the store must open, every write a client saw acknowledged (2xx
//! with an id) must be there with its messages, every queued or running execution must settle,
//! and no paid turn may have been served without being settled.

mod verify;

use crate::client::{text, Call, Conn};
use crate::daemon::{Daemon, Rng, Setup};
use crate::payer::{Payment, PAYER_KEY, PAY_TO};
use crate::report::{ms, Latencies, Section};
use crate::stub::{Mode, Stub};
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use verify::{paid_audit, settle, settled_nonces, verify};

/// Clients sending at once.
const WORKERS: usize = 6;
/// Turns before a worker starts a new session.
const TURNS_PER_SESSION: u32 = 8;
/// The longest the queue may take to drain after a restart.
const SETTLE_LIMIT: Duration = Duration::from_secs(90);
const AGENTS: [&str; 3] = ["echo", "work", "helper"];

/// What kind of write was acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Chat,
    Task,
    Public,
    Paid,
}

/// A write the client saw acknowledged.
#[derive(Clone, Debug)]
struct Ack {
    kind: Kind,
    agent: &'static str,
    execution_id: String,
    session_id: Option<String>,
    message: String,
    response: Option<String>,
    nonce: Option<String>,
}

#[derive(Default)]
struct Tally {
    acks: Mutex<Vec<Ack>>,
    /// Answers other than 2xx, by status.
    refused: Mutex<BTreeMap<u16, u64>>,
    /// Requests that got no answer (the daemon died under them).
    unanswered: AtomicU64,
    stop: AtomicBool,
}

/// What every worker needs.
#[derive(Clone)]
struct Plan {
    addr: SocketAddr,
    link: String,
    requirement: Value,
    tally: Arc<Tally>,
    cycle: u32,
}

fn config(stub: &Stub) -> String {
    let users: Vec<String> = (0..WORKERS).map(|i| format!("\"w{i}\"")).collect();
    let shared = users.join(", ");
    format!(
        r#"[server]
header_timeout_s = 5

[public]
requests_per_minute_per_ip = 1000000
default_link_rate_limit_per_minute = 10000

[pool]
workers = 4
queue_capacity = 100000

[agents.echo]
engine = {{ kind = "echo", delay_ms = 3 }}
max_concurrent = 16
shared_with = [{shared}]

[agents.work]
engine = {{ kind = "echo", delay_ms = 5 }}
max_concurrent = 4
queue_capacity = 100000
shared_with = [{shared}]

[agents.helper]
engine = {{ kind = "echo", delay_ms = 3 }}
max_concurrent = 16

[agents.helper.paid]
price = "10000"
network = "eip155:84532"
pay_to = "{PAY_TO}"
facilitator_url = "{url}"
settle_timeout_s = 10
"#,
        url = stub.url
    )
}

/// Runs the loop: 10 cycles in the short form, 100 in the long one.
pub async fn run(long: bool) -> Section {
    let cycles = if long { 100 } else { 10 };
    let command = if long {
        "OUTPOST_RELIABILITY=long cargo test --release --test reliability -- crash_loop"
    } else {
        "cargo test --test reliability -- crash_loop"
    };
    let mut section = Section::new("Crash loop", command);
    if let Err(err) = crash_loop(cycles, &mut section).await {
        section.failures.push(format!("{err:#}"));
    }
    section
}

async fn crash_loop(cycles: u32, section: &mut Section) -> anyhow::Result<()> {
    let seed = Rng::seed();
    let mut rng = Rng::new(seed);
    let stub = Stub::start(Mode::Accept).await;
    let dir = tempfile::tempdir()?;
    let mut setup = Setup::new(dir.path(), &config(&stub))?;
    let tally = Arc::new(Tally::default());
    let mut starts = Latencies::default();
    let mut tokens = Vec::new();
    let (mut link, mut requirement) = (String::new(), Value::Null);
    let mut verified_before = 0;
    let mut interrupted = 0;
    let started = Instant::now();
    for cycle in 1..=cycles + 1 {
        let mut daemon = setup
            .start()
            .await
            .with_context(|| format!("start {cycle}: the store did not open"))?;
        starts.add(daemon.start_time);
        let admin = daemon.admin().await?;
        if cycle == 1 {
            for i in 0..WORKERS {
                tokens.push(daemon.user(&admin, &format!("w{i}")).await?);
            }
            let mut conn = Conn::connect(daemon.addr).await?;
            let created = conn
                .expect(
                    &Call::post(
                        "/api/agents/echo/public-links",
                        Some(&admin),
                        &json!({"name": "crash loop", "expires_at": null}),
                    ),
                    201,
                )
                .await?;
            link = text(&created, "token")?;
            let info = conn
                .expect(&Call::get("/api/paid/helper/info", None), 200)
                .await?;
            requirement = info["accepts"][0].clone();
        }
        // What the last cycle's clients were told is there, and nothing stays unfinished.
        settle(daemon.addr, &admin)
            .await
            .with_context(|| format!("after kill {}", cycle - 1))?;
        let acks = tally.acks.lock().unwrap().clone();
        let settled = settled_nonces(&stub);
        let (problems, cut) =
            verify(daemon.addr, &admin, &acks[verified_before..], &settled).await?;
        interrupted += cut;
        if let Some(problem) = problems.first() {
            bail!(
                "after kill {}: {} acknowledged writes are missing or wrong; the first: {problem}",
                cycle - 1,
                problems.len()
            );
        }
        verified_before = acks.len();
        if cycle > cycles {
            // The last start: everything ever acknowledged, and the paid audit.
            let (problems, _) = verify(daemon.addr, &admin, &acks, &settled).await?;
            section.check(problems.is_empty(), || {
                format!(
                    "{} writes lost over the run: {:?}",
                    problems.len(),
                    problems.first()
                )
            });
            let (served_unsettled, states) =
                paid_audit(daemon.addr, &admin, &acks, &settled).await?;
            section.check(served_unsettled.is_empty(), || {
                format!("paid turns served but not settled: {served_unsettled:?}")
            });
            report(
                section,
                cycles,
                seed,
                &acks,
                &tally,
                problems.len(),
                interrupted,
                &mut starts,
                started.elapsed(),
            );
            section.row("paid executions by payment state", format!("{states:?}"));
            section.row(
                "paid nonces served and unsettled",
                served_unsettled.len().to_string(),
            );
            return Ok(());
        }
        tally.stop.store(false, Ordering::SeqCst);
        let plan = Plan {
            addr: daemon.addr,
            link: link.clone(),
            requirement: requirement.clone(),
            tally: tally.clone(),
            cycle,
        };
        let mut workers = JoinSet::new();
        for (i, token) in tokens.iter().enumerate() {
            let worker = Worker::new(i, token.clone(), plan.clone(), rng.next());
            workers.spawn(worker.run());
        }
        let load = Duration::from_millis(200 + rng.below(1300));
        tokio::time::sleep(load).await;
        kill(&mut daemon)?;
        tally.stop.store(true, Ordering::SeqCst);
        while workers.join_next().await.is_some() {}
    }
    unreachable!("the loop returns after the last start")
}

fn kill(daemon: &mut Daemon) -> anyhow::Result<()> {
    daemon.kill().context("kill -9")
}

#[allow(clippy::too_many_arguments)]
fn report(
    section: &mut Section,
    cycles: u32,
    seed: u64,
    acks: &[Ack],
    tally: &Tally,
    lost: usize,
    interrupted: usize,
    starts: &mut Latencies,
    elapsed: Duration,
) {
    let count = |kind: Kind| acks.iter().filter(|a| a.kind == kind).count();
    section.row("cycles (kill -9, restart)", cycles.to_string());
    section.row("seed (OUTPOST_RELIABILITY_SEED)", seed.to_string());
    section.row(
        "acknowledged writes",
        format!(
            "{} ({} chat, {} task, {} public, {} paid)",
            acks.len(),
            count(Kind::Chat),
            count(Kind::Task),
            count(Kind::Public),
            count(Kind::Paid)
        ),
    );
    section.row("lost", lost.to_string());
    section.row(
        "acknowledged tasks interrupted by a kill (failed, interrupted)",
        interrupted.to_string(),
    );
    section.row(
        "requests cut off by a kill (no answer)",
        tally.unanswered.load(Ordering::Relaxed).to_string(),
    );
    let refused = tally.refused.lock().unwrap();
    let refused = if refused.is_empty() {
        "none".to_string()
    } else {
        refused
            .iter()
            .map(|(status, n)| format!("{status}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    section.row("other answers (not 2xx)", refused);
    section.row(
        "restart to ready",
        format!(
            "{} (max {})",
            starts.summary(),
            ms(starts.percentile(100.0))
        ),
    );
    section.row("wall time", format!("{:.1} s", elapsed.as_secs_f64()));
}

/// One client of the mix.
struct Worker {
    id: usize,
    token: String,
    plan: Plan,
    rng: Rng,
    n: u64,
    chat: Session,
    public: Session,
    paid: Session,
}

/// A conversation a worker continues for a few turns.
#[derive(Default)]
struct Session {
    id: Option<String>,
    turns: u32,
}

impl Session {
    /// The id to send (none every few turns, to start another).
    fn next(&mut self) -> Option<String> {
        self.turns += 1;
        if self.turns % TURNS_PER_SESSION == 0 {
            self.id = None;
        }
        self.id.clone()
    }
}

impl Worker {
    fn new(id: usize, token: String, plan: Plan, seed: u64) -> Worker {
        Worker {
            id,
            token,
            plan,
            rng: Rng::new(seed),
            n: 0,
            chat: Session::default(),
            public: Session::default(),
            paid: Session::default(),
        }
    }

    async fn run(mut self) {
        let mut conn: Option<Conn> = None;
        while !self.plan.tally.stop.load(Ordering::SeqCst) {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match Conn::connect(self.plan.addr).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            self.n += 1;
            let message = format!(
                "c{} w{} n{} keep this safe",
                self.plan.cycle, self.id, self.n
            );
            let roll = self.rng.below(100);
            let kind = match roll {
                0..=39 => Kind::Chat,
                40..=59 => Kind::Task,
                60..=79 => Kind::Public,
                _ => Kind::Paid,
            };
            let (agent, call, nonce) = self.call(kind, &message);
            match c.send(&call).await {
                Ok(reply) if reply.ok() => {
                    let answer = reply.json().unwrap_or_default();
                    if let Ok(ack) = acknowledged(kind, agent, &message, &answer, nonce) {
                        if let Some(session) = self.session(kind) {
                            session.id = ack.session_id.clone();
                        }
                        self.plan.tally.acks.lock().unwrap().push(ack);
                    }
                }
                Ok(reply) => {
                    if let Some(session) = self.session(kind) {
                        session.id = None;
                    }
                    let mut refused = self.plan.tally.refused.lock().unwrap();
                    *refused.entry(reply.status).or_default() += 1;
                }
                Err(_) => {
                    self.plan.tally.unanswered.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                }
            }
        }
    }

    /// The conversation a write of `kind` continues.
    fn session(&mut self, kind: Kind) -> Option<&mut Session> {
        match kind {
            Kind::Chat => Some(&mut self.chat),
            Kind::Public => Some(&mut self.public),
            Kind::Paid => Some(&mut self.paid),
            Kind::Task => None,
        }
    }

    /// The request for one write of `kind`, with the payment's nonce for a paid one.
    fn call(&mut self, kind: Kind, message: &str) -> (&'static str, Call, Option<String>) {
        let with_session = |session: Option<String>| match session {
            Some(id) => json!({"message": message, "session_id": id}),
            None => json!({"message": message}),
        };
        match kind {
            Kind::Chat => {
                let body = match self.chat.next() {
                    Some(id) => json!({"message": message, "session_id": id}),
                    None => json!({"message": message, "new_session": true}),
                };
                let call = Call::post("/api/agents/echo/chat", Some(&self.token), &body);
                ("echo", call, None)
            }
            Kind::Task => {
                let body = json!({"message": message, "async_mode": true});
                let call = Call::post("/api/agents/work/task", Some(&self.token), &body);
                ("work", call, None)
            }
            Kind::Public => {
                let body = with_session(self.public.next());
                let path = format!("/api/public/chat/{}", self.plan.link);
                ("echo", Call::post(path, None, &body), None)
            }
            Kind::Paid => {
                let body = with_session(self.paid.next());
                let payment = Payment::new(PAYER_KEY, &self.plan.requirement);
                let call = Call::post("/api/paid/helper/chat", None, &body)
                    .header("payment-signature", payment.v2());
                let nonce = payment.authorization["nonce"]
                    .as_str()
                    .map(str::to_lowercase);
                ("helper", call, nonce)
            }
        }
    }
}

/// The acknowledgement in a 2xx answer: it must carry an execution id.
fn acknowledged(
    kind: Kind,
    agent: &'static str,
    message: &str,
    answer: &Value,
    nonce: Option<String>,
) -> anyhow::Result<Ack> {
    Ok(Ack {
        kind,
        agent,
        execution_id: text(answer, "execution_id")?,
        session_id: answer["session_id"].as_str().map(str::to_string),
        message: message.to_string(),
        response: answer["response"].as_str().map(str::to_string),
        nonce,
    })
}
