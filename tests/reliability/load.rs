//! Sustained load: 64 keep-alive connections, each a user of its own, send a mix of chat turns
//! (JSON and NDJSON), session lists, history pages, task submissions and polls, executions
//! lists, public-link turns and health checks for 30 s (short form) or 5 minutes (long form;
//! `OUTPOST_LOAD_MINUTES` sets another length), after a warm-up that lasts until the daemon's
//! RSS holds still. Any answer but a 2xx or a documented 429 is an error; the daemon's RSS at
//! the end must be within 10 % of its RSS after the warm-up.

use crate::client::{text, Call, Conn};
use crate::daemon::{Daemon, Rng, Setup};
use crate::report::{mb, Latencies, Section};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

const CONNECTIONS: usize = 64;
const LINKS: usize = 8;
/// Turns before a connection starts a new chat session.
const TURNS_PER_SESSION: u32 = 20;

/// The routes of the mix, as reported.
const ROUTES: [&str; 10] = [
    "POST chat (JSON)",
    "POST chat (NDJSON)",
    "GET chat/sessions",
    "GET chat/history/persistent",
    "POST task (async)",
    "GET executions/{id} (task poll)",
    "GET executions",
    "POST public/chat",
    "GET public/history",
    "GET /healthz",
];

/// `cache_mb`: the store's page cache, which fills as the store grows and so takes part in
/// the RSS the warm-up must reach.
fn config(cache_mb: u32) -> String {
    let users: Vec<String> = (0..CONNECTIONS).map(|i| format!("\"u{i}\"")).collect();
    format!(
        r#"[store]
cache_mb = {cache_mb}

[public]
requests_per_minute_per_ip = 1000000
default_link_rate_limit_per_minute = 10000

[pool]
workers = 8
queue_capacity = 100000

[agents.echo]
engine = {{ kind = "echo", delay_ms = 0 }}
max_concurrent = 64
shared_with = [{users}]

[agents.work]
engine = {{ kind = "echo", delay_ms = 0 }}
max_concurrent = 8
queue_capacity = 100000
shared_with = [{users}]
"#,
        users = users.join(", ")
    )
}

/// What one connection saw.
#[derive(Default)]
struct Seen {
    latencies: BTreeMap<&'static str, Latencies>,
    limited: BTreeMap<&'static str, u64>,
    errors: Vec<String>,
}

pub async fn run(long: bool) -> Section {
    // The short form's few thousand requests would not fill the default 32 MiB page cache
    // in its warm-up; with 4 MiB it is full by then, as the default is in the long form's.
    // OUTPOST_LOAD_MINUTES lengthens the long form, to watch RSS over a longer run.
    let minutes = std::env::var("OUTPOST_LOAD_MINUTES")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
        .unwrap_or(5);
    let (warmup, duration, cache_mb) = if long {
        (
            Duration::from_secs(60),
            Duration::from_secs(60 * minutes),
            32,
        )
    } else {
        (Duration::from_secs(10), Duration::from_secs(30), 4)
    };
    let command = if long {
        "OUTPOST_RELIABILITY=long cargo test --release --test reliability -- sustained_load"
    } else {
        "cargo test --test reliability -- sustained_load"
    };
    let mut section = Section::new("Sustained load", command);
    if let Err(err) = sustained(warmup, duration, cache_mb, &mut section).await {
        section.failures.push(format!("{err:#}"));
    }
    section
}

async fn sustained(
    warmup: Duration,
    duration: Duration,
    cache_mb: u32,
    section: &mut Section,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut setup = Setup::new(dir.path(), &config(cache_mb))?;
    let daemon = setup.start().await?;
    let admin = daemon.admin().await?;
    let mut links = Vec::new();
    let mut conn = Conn::connect(daemon.addr).await?;
    for i in 0..LINKS {
        let body = json!({"name": format!("load {i}"), "expires_at": null});
        let call = Call::post("/api/agents/echo/public-links", Some(&admin), &body);
        links.push(text(&conn.expect(&call, 201).await?, "token")?);
    }
    let tokens = users(&daemon, &admin).await?;

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = JoinSet::new();
    let seed = Rng::seed();
    for (i, token) in tokens.into_iter().enumerate() {
        let client = Client {
            id: i,
            token,
            link: links[i % LINKS].clone(),
            rng: Rng::new(seed.wrapping_add(i as u64 * 7919)),
            chat_session: None,
            chat_turns: 0,
            public_session: None,
            public_turns: 0,
            task: None,
            seen: Seen::default(),
        };
        clients.spawn(client.run(daemon.addr, measuring.clone(), stop.clone()));
    }
    // Warm until RSS holds still (within 2 % over 10 s), at least `warmup`, at most 4 × as long:
    // the read caches, the rate limiters' windows and the allocator fill up first.
    let warming = Instant::now();
    let mut samples = vec![daemon.rss()?];
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        samples.push(daemon.rss()?);
        let now = *samples.last().unwrap_or(&0) as f64;
        let ten_ago = samples[samples.len().saturating_sub(11)] as f64;
        let steady = samples.len() > 10 && now <= ten_ago * 1.02;
        if (steady && warming.elapsed() >= warmup) || warming.elapsed() >= warmup * 4 {
            break;
        }
    }
    let warmup = warming.elapsed();
    let rss_warm = daemon.rss()?;
    measuring.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let mut rss_max = rss_warm;
    // RSS every tenth of the run, to show a trend.
    let mut trend = vec![mb(rss_warm)];
    let mut next_sample = duration / 10;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss = daemon.rss()?;
        rss_max = rss_max.max(rss);
        if started.elapsed() >= next_sample {
            trend.push(mb(rss));
            next_sample += duration / 10;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let elapsed = started.elapsed();
    let mut seen = Seen::default();
    while let Some(joined) = clients.join_next().await {
        let one = joined?;
        for (route, latencies) in one.latencies {
            seen.latencies.entry(route).or_default().extend(latencies);
        }
        for (route, n) in one.limited {
            *seen.limited.entry(route).or_default() += n;
        }
        seen.errors.extend(one.errors);
    }
    let rss_end = daemon.rss()?;
    let total: usize = seen.latencies.values().map(Latencies::len).sum();
    section.row(
        "connections × time",
        format!(
            "{CONNECTIONS} × {:.0} s (after {:.0} s of warm-up, until RSS held still)",
            elapsed.as_secs_f64(),
            warmup.as_secs_f64()
        ),
    );
    section.row(
        "requests",
        format!(
            "{total} ({:.0} req/s)",
            total as f64 / elapsed.as_secs_f64()
        ),
    );
    section.row("unexpected errors", seen.errors.len().to_string());
    let limited: u64 = seen.limited.values().sum();
    section.row(
        "429 (documented limits)",
        if limited == 0 {
            "0".to_string()
        } else {
            format!("{limited} {:?}", seen.limited)
        },
    );
    section.row("store page cache (cache_mb)", format!("{cache_mb} MiB"));
    section.row("RSS after warm-up", mb(rss_warm));
    section.row(
        "RSS at the end",
        format!(
            "{} ({:+.1} %; max {})",
            mb(rss_end),
            (rss_end as f64 / rss_warm as f64 - 1.0) * 100.0,
            mb(rss_max)
        ),
    );
    section.row("RSS through the run", trend.join(", "));
    for route in ROUTES {
        let mut latencies = seen.latencies.remove(route).unwrap_or_default();
        section.row(
            format!("{route}: n {}", latencies.len()),
            latencies.summary(),
        );
    }
    section.check(seen.errors.is_empty(), || {
        format!(
            "{} unexpected errors; the first: {}",
            seen.errors.len(),
            seen.errors[0]
        )
    });
    section.check(rss_end as f64 <= rss_warm as f64 * 1.10, || {
        format!("RSS grew from {} to {}", mb(rss_warm), mb(rss_end))
    });
    section.check(total > 0, || "no requests were answered".into());
    Ok(())
}

/// One user per connection (so each has its own active chat session), logged in.
async fn users(daemon: &Daemon, admin: &str) -> anyhow::Result<Vec<String>> {
    let mut made = JoinSet::new();
    for i in 0..CONNECTIONS {
        let (addr, admin) = (daemon.addr, admin.to_string());
        made.spawn(async move {
            let password = format!("u{i}-password");
            let body = json!({"username": format!("u{i}"), "password": password});
            let mut conn = Conn::connect(addr).await?;
            conn.expect_patiently(&Call::post("/api/users", Some(&admin), &body), 201)
                .await?;
            let login = json!({"username": format!("u{i}"), "password": password});
            let token = conn
                .expect_patiently(&Call::post("/api/token", None, &login), 200)
                .await?;
            anyhow::Ok((i, text(&token, "access_token")?))
        });
    }
    let mut tokens = vec![String::new(); CONNECTIONS];
    while let Some(joined) = made.join_next().await {
        let (i, token) = joined??;
        tokens[i] = token;
    }
    Ok(tokens)
}

struct Client {
    id: usize,
    token: String,
    link: String,
    rng: Rng,
    chat_session: Option<String>,
    chat_turns: u32,
    public_session: Option<String>,
    public_turns: u32,
    /// The task submitted last, until it is seen finished.
    task: Option<String>,
    seen: Seen,
}

impl Client {
    async fn run(
        mut self,
        addr: std::net::SocketAddr,
        measuring: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
    ) -> Seen {
        let mut conn = match Conn::connect(addr).await {
            Ok(conn) => conn,
            Err(err) => {
                self.seen.errors.push(format!("connect: {err:#}"));
                return self.seen;
            }
        };
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let (route, call) = self.next_call(n);
            let sent = Instant::now();
            let result = conn.send(&call).await;
            let took = sent.elapsed();
            let measured = measuring.load(Ordering::SeqCst);
            match result {
                Ok(reply) if reply.ok() => {
                    if let Err(err) = self.absorb(route, &reply) {
                        self.seen.errors.push(format!("{route}: {err:#}"));
                    }
                    if measured {
                        self.seen.latencies.entry(route).or_default().add(took);
                    }
                }
                Ok(reply) if reply.status == 429 => {
                    if route == ROUTES[4] {
                        self.task = None;
                    }
                    *self.seen.limited.entry(route).or_default() += 1;
                }
                Ok(reply) => self.seen.errors.push(format!(
                    "{route}: {} {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                )),
                Err(err) => {
                    self.seen.errors.push(format!("{route}: {err:#}"));
                    match Conn::connect(addr).await {
                        Ok(fresh) => conn = fresh,
                        Err(_) => return self.seen,
                    }
                }
            }
        }
        self.seen
    }

    /// The next request of the mix.
    fn next_call(&mut self, n: u64) -> (&'static str, Call) {
        let token = Some(self.token.as_str());
        let message = format!("u{} n{n} a few words to echo back", self.id);
        let roll = self.rng.below(100);
        match roll {
            0..=34 => {
                self.chat_turns += 1;
                let body = match &self.chat_session {
                    Some(id) if self.chat_turns % TURNS_PER_SESSION != 0 => {
                        json!({"message": message, "session_id": id})
                    }
                    _ => json!({"message": message, "new_session": true}),
                };
                let call = Call::post("/api/agents/echo/chat", token, &body);
                if roll < 20 {
                    (ROUTES[0], call)
                } else {
                    (ROUTES[1], call.header("accept", "application/x-ndjson"))
                }
            }
            35..=42 => (
                ROUTES[2],
                Call::get("/api/agents/echo/chat/sessions", token),
            ),
            43..=50 => (
                ROUTES[3],
                Call::get("/api/agents/echo/chat/history/persistent?limit=20", token),
            ),
            51..=64 => match &self.task {
                Some(id) => (
                    ROUTES[5],
                    Call::get(format!("/api/agents/work/executions/{id}"), token),
                ),
                None => {
                    let body = json!({"message": message, "async_mode": true});
                    (ROUTES[4], Call::post("/api/agents/work/task", token, &body))
                }
            },
            65..=72 => (
                ROUTES[6],
                Call::get("/api/agents/echo/executions?limit=20", token),
            ),
            73..=84 => {
                self.public_turns += 1;
                let body = match &self.public_session {
                    Some(id) if self.public_turns % TURNS_PER_SESSION != 0 => {
                        json!({"message": message, "session_id": id})
                    }
                    _ => json!({"message": message}),
                };
                let path = format!("/api/public/chat/{}", self.link);
                (ROUTES[7], Call::post(path, None, &body))
            }
            85..=92 => match &self.public_session {
                Some(id) => (
                    ROUTES[8],
                    Call::get(
                        format!("/api/public/history/{}?session_id={id}", self.link),
                        None,
                    ),
                ),
                None => (ROUTES[9], Call::get("/healthz", None)),
            },
            _ => (ROUTES[9], Call::get("/healthz", None)),
        }
    }

    /// Checks a 2xx answer and keeps what the next requests need.
    fn absorb(&mut self, route: &'static str, reply: &crate::client::Reply) -> anyhow::Result<()> {
        if route == ROUTES[1] {
            let text = String::from_utf8_lossy(&reply.body);
            let last: Value = serde_json::from_str(text.lines().last().unwrap_or(""))?;
            anyhow::ensure!(
                last["type"] == "result" && last["subtype"] == "success",
                "last line: {last}"
            );
            self.chat_session = last["session_id"].as_str().map(str::to_string);
            return Ok(());
        }
        if route == ROUTES[9] {
            return Ok(());
        }
        let answer = reply.json()?;
        match route {
            r if r == ROUTES[0] => {
                anyhow::ensure!(answer["status"] == "success", "turn: {answer}");
                self.chat_session = Some(text(&answer, "session_id")?);
            }
            r if r == ROUTES[4] => self.task = Some(text(&answer, "execution_id")?),
            r if r == ROUTES[5] => match answer["status"].as_str() {
                Some("success") => self.task = None,
                Some("queued" | "running") => {}
                _ => anyhow::bail!("task: {answer}"),
            },
            r if r == ROUTES[7] => {
                anyhow::ensure!(answer["status"] == "success", "public turn: {answer}");
                self.public_session = Some(text(&answer, "session_id")?);
            }
            _ => {}
        }
        Ok(())
    }
}
