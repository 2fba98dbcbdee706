//! `cargo bench --bench outpost-bench`: starts the real daemon, loads it from this process over
//! loopback, and prints one markdown table of throughput, latency and memory against the targets.
//!
//! Progress goes to stderr; stdout gets only the table and how it was run, so the output can
//! be pasted as is. `BENCH_SECONDS` sets the length of each timed run (default 10);
//! `BENCH_ONLY=voice` runs only the echo voice rows, `BENCH_ONLY=storage` only the bytes a chat
//! turn stores and writes, `BENCH_ONLY=speech` only the voice turns
//! through the real speech engines.

#[path = "bench/ceiling.rs"]
mod ceiling;
#[path = "bench/client.rs"]
mod client;
// Shared with the integration tests, which use more of them than the bench does.
#[allow(dead_code, reason = "shared with tests/it")]
#[path = "../tests/it/voice/conversation.rs"]
mod conversation;
#[path = "bench/daemon.rs"]
mod daemon;
#[path = "bench/facilitator.rs"]
mod facilitator;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/paid.rs"]
mod paid;
#[path = "bench/render.rs"]
mod render;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/setup.rs"]
mod setup;
#[allow(dead_code, reason = "shared with tests/it")]
#[path = "../tests/it/voice/speech_services.rs"]
mod speech_services;
#[path = "bench/tasks.rs"]
mod tasks;
#[path = "bench/voice.rs"]
mod voice;
#[path = "bench/voice_real.rs"]
mod voice_real;

use anyhow::Context;
use ceiling::Ceiling;
use client::{Call, Conn};
use daemon::Daemon;
use facilitator::Facilitator;
use hyper::StatusCode;
use load::{Plan, Stats};
use report::megabytes;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use tokio::sync::oneshot;

/// Concurrent keep-alive connections in every throughput run.
const CONNECTIONS: usize = 64;
/// Seeded history for the read routes: sessions, and turns (two messages each) per session.
const SEEDED_SESSIONS: usize = 20;
const SEEDED_TURNS: usize = 10;
/// Turns in the sequential latency run, and the time it may take at most.
const SEQUENTIAL_TURNS: u64 = 2_000;
const SEQUENTIAL_LIMIT: Duration = Duration::from_secs(120);
/// Length of each timed run unless `BENCH_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 10;
/// How often the daemon's RSS is read during the chat throughput run.
const RSS_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

const SESSIONS_PATH: &str = "/api/agents/echo/chat/sessions";
const HISTORY_PATH: &str = "/api/agents/echo/chat/history/persistent";

fn main() -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::from(err)),
    };
    match runtime.block_on(run()) {
        Ok(output) => {
            let mut stdout = std::io::stdout().lock();
            match stdout
                .write_all(output.as_bytes())
                .and_then(|()| stdout.flush())
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => fail(&err.into()),
            }
        }
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "outpost-bench: {err:#}");
    ExitCode::FAILURE
}

fn progress(message: &str) {
    let _ = writeln!(std::io::stderr(), "outpost-bench: {message}");
}

/// Progress with the daemon's RSS, threads and store size, to see which step grows them.
pub(crate) fn progress_at(daemon: &Daemon, message: &str) {
    let rss = daemon.rss_kib().map_or_else(|| "?".into(), megabytes);
    let threads = daemon
        .threads()
        .map_or_else(|| "?".into(), |n| n.to_string());
    let store = megabytes(daemon.store_bytes() / 1024);
    progress(&format!(
        "{message} (daemon RSS {rss}, {threads} threads, store file {store})"
    ));
}

/// Everything one run measured.
struct Results {
    ceiling: Stats,
    sessions: Stats,
    history: Stats,
    chat: Stats,
    sequential: Stats,
    /// Store file growth and bytes written per ~45-word sequential turn.
    bytes_per_turn: BytesPerTurn,
    rss_idle_kib: u64,
    rss_load_kib: u64,
    rss_before_chat_kib: u64,
    sessions_bytes: usize,
    history_bytes: usize,
    store_bytes: u64,
    tasks: tasks::TaskResults,
    /// x402 payment headers verified per second on one core.
    verifications: f64,
    /// Sequential unpaid and paid turns on the paid agent.
    paid_turns: paid::TurnResults,
    /// Spoken turns through the real speech engines (a daemon of their own).
    voice_real: voice_real::Outcome,
    voice: voice::VoiceResults,
}

async fn run() -> anyhow::Result<String> {
    let seconds = match std::env::var("BENCH_SECONDS") {
        Ok(text) => text
            .parse::<u64>()
            .ok()
            .filter(|s| *s > 0)
            .with_context(|| format!("BENCH_SECONDS={text:?} is not a whole number above 0"))?,
        Err(_) => DEFAULT_SECONDS,
    };
    match std::env::var("BENCH_ONLY").as_deref() {
        Err(_) | Ok("") => {}
        Ok("voice") => return voice_only(seconds).await,
        Ok("speech") => return speech_only().await,
        Ok("storage") => return storage_only().await,
        Ok(other) => {
            anyhow::bail!(
                "BENCH_ONLY={other:?}: the filters are \"voice\", \"speech\" and \"storage\""
            )
        }
    }
    let usernames: Vec<String> = (1..=CONNECTIONS).map(|i| format!("bench-{i:02}")).collect();
    // Started first: the paid agent's config names its port.
    let facilitator = Facilitator::start().await?;
    progress("starting the daemon");
    let mut daemon = Daemon::start(&usernames, &facilitator.url).await?;
    let measured = measure(
        &mut daemon,
        &usernames,
        &facilitator,
        Duration::from_secs(seconds),
    )
    .await;
    if measured.is_err() {
        progress(&format!("daemon log:\n{}", daemon.log_tail()));
    }
    let pid = daemon.pid();
    let stopped = daemon.stop().await;
    facilitator.stop();
    let results = measured?;
    stopped?;
    Ok(render::render(&results, seconds, pid))
}

/// `BENCH_ONLY=voice`: the daemon, admin, and the voice rows alone.
async fn voice_only(seconds: u64) -> anyhow::Result<String> {
    progress("starting the daemon");
    // No paid turns run: the facilitator address is never called.
    let daemon = Daemon::start(&[], "http://127.0.0.1:9").await?;
    let measured = async {
        let admin = setup::login(&mut Conn::connect(daemon.addr).await?).await?;
        voice::measure(&daemon, &admin, seconds).await
    }
    .await;
    if measured.is_err() {
        progress(&format!("daemon log:\n{}", daemon.log_tail()));
    }
    let pid = daemon.pid();
    daemon.stop().await?;
    let results = measured?;
    let mut out = report::table(&voice::rows(&results));
    out.push('\n');
    out.push_str(&format!(
        "Run: `BENCH_ONLY=voice BENCH_SECONDS={seconds} cargo bench --bench outpost-bench` \
         (release profile), outpost {} (pid {pid}); the bench and the daemon share the same {} \
         CPUs.\n",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    out.push_str(&voice::notes(&results));
    Ok(out)
}

/// `BENCH_ONLY=storage`: what a chat turn stores and writes, alone.
async fn storage_only() -> anyhow::Result<String> {
    let bytes = bytes_per_turn().await?;
    let mut out = report::table(&render::storage_rows(&bytes));
    out.push_str(&format!(
        "\nRun: `BENCH_ONLY=storage cargo bench --bench outpost-bench` (release profile), \
         outpost {}: {} sequential durable turns of a 45-word message to the echo agent on a \
         fresh daemon with an empty store.\n",
        env!("CARGO_PKG_VERSION"),
        bytes.turns
    ));
    Ok(out)
}

/// `BENCH_ONLY=speech`: the voice turns through the real speech engines alone.
async fn speech_only() -> anyhow::Result<String> {
    let outcome = voice_real::measure().await?;
    let (server, client) = render::voice_real_rows(&outcome);
    let mut out = report::table(&[server, client]);
    out.push_str(&format!(
        "\nRun: `BENCH_ONLY=speech cargo bench --bench outpost-bench` (release profile), \
         outpost {}; the speech servers, the bench and the daemon share the same {} CPUs.\n",
        env!("CARGO_PKG_VERSION"),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    out.push_str(&render::voice_real_note(&outcome));
    out.push('\n');
    Ok(out)
}

async fn measure(
    daemon: &mut Daemon,
    usernames: &[String],
    facilitator: &Facilitator,
    duration: Duration,
) -> anyhow::Result<Results> {
    let plan = Plan {
        connections: CONNECTIONS,
        duration,
        max_requests_per_connection: None,
    };
    let admin = setup::login(&mut Conn::connect(daemon.addr).await?).await?;
    let rss_idle_kib = daemon.rss_kib().context("reading the daemon's RSS")?;

    progress_at(daemon, "restarting with 64 member users added offline");
    daemon.restart_with_members(usernames).await?;
    let daemon = &*daemon;

    progress_at(daemon, "(a) ceiling: in-process hyper server");
    let ceiling = Ceiling::start().await?;
    let ceiling_stats = load::run(ceiling.addr, &plan, &[Call::get("/", None)]).await?;
    ceiling.stop();

    progress_at(daemon, "seeding 20 sessions x 20 messages for admin");
    // The daemon closes keep-alive connections idle for its header timeout (10 s), so each
    // set-up step after a timed run starts on a fresh connection.
    let mut conn = Conn::connect(daemon.addr).await?;
    setup::seed_history(&mut conn, &admin, SEEDED_SESSIONS, SEEDED_TURNS).await?;
    let sessions_call = Call::get(SESSIONS_PATH, Some(&admin));
    let history_call = Call::get(HISTORY_PATH, Some(&admin));
    let sessions_bytes = check_list(&mut conn, &sessions_call, "sessions", SEEDED_SESSIONS).await?;
    let history_bytes = check_list(&mut conn, &history_call, "messages", 50).await?;

    progress_at(daemon, "(b) GET chat/sessions");
    let sessions = load::run(daemon.addr, &plan, &[sessions_call]).await?;
    progress_at(daemon, "(c) GET chat/history/persistent");
    let history = load::run(daemon.addr, &plan, &[history_call]).await?;

    let (chat, rss_before_chat_kib, rss_load_kib) =
        chat_throughput(daemon, &plan, &admin, usernames).await?;
    let sequential = sequential_turns(daemon, &admin).await?;
    let bytes_per_turn = bytes_per_turn().await?;
    let paid_turns = paid::turns(daemon, &admin, facilitator).await?;
    let tasks = tasks::measure(daemon, &admin, duration).await?;

    progress_at(daemon, "(f) x402 verification, one core");
    let verifications =
        tokio::task::spawn_blocking(move || paid::verifications_per_second(duration)).await??;

    let voice_real = voice_real::measure().await?;
    let voice = voice::measure(daemon, &admin, duration.as_secs()).await?;

    progress_at(daemon, "done");
    Ok(Results {
        ceiling: ceiling_stats,
        sessions,
        history,
        chat,
        sequential,
        bytes_per_turn,
        rss_idle_kib,
        rss_load_kib,
        rss_before_chat_kib,
        sessions_bytes,
        history_bytes,
        store_bytes: daemon.store_bytes(),
        tasks,
        verifications,
        paid_turns,
        voice_real,
        voice,
    })
}

/// Chat turns from one connection per member, each on their own session, while the daemon's
/// RSS is sampled. Returns the stats, the RSS just before, and the largest RSS seen (KiB).
async fn chat_throughput(
    daemon: &Daemon,
    plan: &Plan,
    admin: &str,
    usernames: &[String],
) -> anyhow::Result<(Stats, u64, u64)> {
    // Opened only now: the admin's session list measured before shows every user's sessions.
    progress_at(daemon, "opening one session per member");
    let mut conn = Conn::connect(daemon.addr).await?;
    let mut members = setup::mint_member_tokens(&mut conn, admin, usernames).await?;
    setup::open_sessions(&mut conn, &mut members).await?;
    let calls: Vec<Call> = members
        .iter()
        .map(|m| setup::chat_call(&m.token, &m.session_id))
        .collect();
    progress_at(daemon, "chat turns on 64 sessions");
    let rss_before_kib = daemon.rss_kib().unwrap_or(0);
    let (stop_sampling, stopped) = oneshot::channel();
    let sampler = tokio::spawn(max_rss(daemon.pid(), stopped));
    let chat = load::run(daemon.addr, plan, &calls).await;
    let _ = stop_sampling.send(());
    let rss_max_kib = sampler.await?;
    Ok((chat?, rss_before_kib, rss_max_kib))
}

/// [`SEQUENTIAL_TURNS`] turns one after another on a fresh session of the admin.
async fn sequential_turns(daemon: &Daemon, admin: &str) -> anyhow::Result<Stats> {
    progress_at(daemon, "sequential chat turns on one session");
    let mut conn = Conn::connect(daemon.addr).await?;
    let session_id = setup::turn(&mut conn, admin, "sequential bench", None).await?;
    let plan = Plan {
        connections: 1,
        duration: SEQUENTIAL_LIMIT,
        max_requests_per_connection: Some(SEQUENTIAL_TURNS),
    };
    load::run(daemon.addr, &plan, &[setup::chat_call(admin, &session_id)]).await
}

/// Turns in the storage run, and their message (45 words, as a person types them).
const STORAGE_TURNS: u64 = 2_000;
const STORAGE_MESSAGE: &str =
    "Could you look over the notes from this morning and tell me which of the three \
     suppliers answered about the delivery dates, what each of them promised, and whether any \
     of them asked for a change to the order before Friday, so that I can plan the week";

/// What the store keeps and writes for one chat turn.
pub struct BytesPerTurn {
    pub turns: u64,
    /// Growth of the store file while the daemon runs, per turn.
    pub store: f64,
    /// The same after a clean stop.
    pub stopped: f64,
    /// Bytes written to disk (`/proc/PID/io` write_bytes), per turn; None without procfs.
    pub written: Option<f64>,
}

/// [`STORAGE_TURNS`] sequential durable turns of [`STORAGE_MESSAGE`] on a daemon of their
/// own with an empty store (a store with free pages would grow by nothing).
async fn bytes_per_turn() -> anyhow::Result<BytesPerTurn> {
    progress("storage per turn: a fresh daemon, sequential turns of 45 words");
    let mut daemon = Daemon::start_with("").await?;
    let store_before = daemon.store_bytes();
    let measured = storage_turns(&daemon).await;
    if measured.is_err() {
        progress(&format!("daemon log:\n{}", daemon.log_tail()));
    }
    daemon.stop_in_place().await?;
    let mut measured = measured?;
    measured.stopped =
        daemon.store_bytes().saturating_sub(store_before) as f64 / measured.turns as f64;
    Ok(measured)
}

async fn storage_turns(daemon: &Daemon) -> anyhow::Result<BytesPerTurn> {
    let mut conn = Conn::connect(daemon.addr).await?;
    let admin = &setup::login(&mut conn).await?;
    let session_id = setup::turn(&mut conn, admin, "storage bench", None).await?;
    let body = serde_json::json!({"message": STORAGE_MESSAGE, "session_id": session_id});
    let call = Call::post(setup::CHAT, Some(admin), &body);
    let (store_before, written_before) = (daemon.store_bytes(), daemon.written_bytes());
    let plan = Plan {
        connections: 1,
        duration: SEQUENTIAL_LIMIT,
        max_requests_per_connection: Some(STORAGE_TURNS),
    };
    let stats = load::run(daemon.addr, &plan, &[call]).await?;
    anyhow::ensure!(
        stats.ok == STORAGE_TURNS,
        "{} storage turns failed",
        stats.errors
    );
    let turns = stats.ok as f64;
    let store = daemon.store_bytes().saturating_sub(store_before) as f64 / turns;
    let written = written_before
        .zip(daemon.written_bytes())
        .map(|(before, after)| after.saturating_sub(before) as f64 / turns);
    Ok(BytesPerTurn {
        turns: stats.ok,
        store,
        stopped: 0.0,
        written,
    })
}

/// Fetches a list once, checks it holds `expected` items under `key`, returns the body size.
async fn check_list(
    conn: &mut Conn,
    call: &Call,
    key: &str,
    expected: usize,
) -> anyhow::Result<usize> {
    let answer = conn.json(call, StatusCode::OK).await?;
    let found = answer[key].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        found == expected,
        "{} lists {found} {key}, expected {expected}",
        call.path
    );
    Ok(answer.to_string().len())
}

/// The largest RSS seen until `stop` fires.
async fn max_rss(pid: u32, mut stop: oneshot::Receiver<()>) -> u64 {
    let mut max_kib = 0;
    loop {
        max_kib = max_kib.max(daemon::rss_kib(pid).unwrap_or(0));
        tokio::select! {
            _ = &mut stop => return max_kib,
            () = tokio::time::sleep(RSS_SAMPLE_INTERVAL) => {}
        }
    }
}
