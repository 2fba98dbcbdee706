//! `cargo bench --bench outpost-bench`: starts the real daemon, loads it from this process over
//! loopback, and prints one markdown table of throughput, latency and memory against the targets.
//!
//! Progress goes to stderr; stdout gets only the table and how it was run, so the output can
//! be pasted as is. `BENCH_SECONDS` sets the length of each timed run (default 10).

#[path = "bench/ceiling.rs"]
mod ceiling;
#[path = "bench/client.rs"]
mod client;
#[path = "bench/daemon.rs"]
mod daemon;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/paid.rs"]
mod paid;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/setup.rs"]
mod setup;
#[path = "bench/tasks.rs"]
mod tasks;

use anyhow::Context;
use ceiling::Ceiling;
use client::{Call, Conn};
use daemon::Daemon;
use hyper::StatusCode;
use load::{Plan, Stats};
use report::{megabytes, ms, per_second, Row};
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
    rss_idle_kib: u64,
    rss_load_kib: u64,
    rss_before_chat_kib: u64,
    sessions_bytes: usize,
    history_bytes: usize,
    store_bytes: u64,
    tasks: tasks::TaskResults,
    /// x402 payment headers verified per second on one core.
    verifications: f64,
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
    let usernames: Vec<String> = (1..=CONNECTIONS).map(|i| format!("bench-{i:02}")).collect();
    progress("starting the daemon");
    let mut daemon = Daemon::start(&usernames).await?;
    let measured = measure(&mut daemon, &usernames, Duration::from_secs(seconds)).await;
    if measured.is_err() {
        progress(&format!("daemon log:\n{}", daemon.log_tail()));
    }
    let pid = daemon.pid();
    let stopped = daemon.stop().await;
    let results = measured?;
    stopped?;
    Ok(render(&results, seconds, pid))
}

async fn measure(
    daemon: &mut Daemon,
    usernames: &[String],
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
    let tasks = tasks::measure(daemon, &admin, duration).await?;

    progress_at(daemon, "(f) x402 verification, one core");
    let verifications =
        tokio::task::spawn_blocking(move || paid::verifications_per_second(duration)).await??;

    progress_at(daemon, "done");
    Ok(Results {
        ceiling: ceiling_stats,
        sessions,
        history,
        chat,
        sequential,
        rss_idle_kib,
        rss_load_kib,
        rss_before_chat_kib,
        sessions_bytes,
        history_bytes,
        store_bytes: daemon.store_bytes(),
        tasks,
        verifications,
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

fn render(results: &Results, seconds: u64, pid: u32) -> String {
    let ceiling_rate = results.ceiling.rate();
    let timed = |name: &str, stats: &Stats, unit: &str| {
        let mut row = Row::named(name);
        row.rate = per_second(stats.rate(), unit);
        row.p50 = ms(stats.percentile(50.0));
        row.p99 = ms(stats.percentile(99.0));
        row
    };
    let mut ceiling = timed(
        "GET / (ceiling: hyper in the bench process)",
        &results.ceiling,
        "req/s",
    );
    ceiling.of_ceiling = "100 %".into();
    let share = |stats: &Stats| stats.rate() / ceiling_rate * 100.0;

    let mut sessions = timed("GET chat/sessions (20×20)", &results.sessions, "req/s");
    let sessions_share = share(&results.sessions);
    sessions.of_ceiling = format!("{sessions_share:.1} %");
    sessions.target = "≥ 50 % of ceiling".into();
    sessions.met = Some(sessions_share >= 50.0);

    let mut history = timed(
        "GET chat/history/persistent (first 50 of 400)",
        &results.history,
        "req/s",
    );
    history.of_ceiling = format!("{:.1} %", share(&results.history));

    let mut chat = timed("chat turns, 64 sessions", &results.chat, "turns/s");
    chat.target = "≥ 2,000 turns/s".into();
    chat.met = Some(results.chat.rate() >= 2_000.0);

    let seq = &results.sequential;
    let mut sequential = timed(
        &format!("chat turn, sequential ({} turns)", report::grouped(seq.ok)),
        seq,
        "turns/s",
    );
    sequential.target = "p50 ≤ 1 ms, p99 ≤ 5 ms".into();
    sequential.met = Some(
        seq.percentile(50.0) <= Duration::from_millis(1)
            && seq.percentile(99.0) <= Duration::from_millis(5),
    );

    let mut rss_idle = Row::named("RSS idle (after start and login)");
    rss_idle.rate = megabytes(results.rss_idle_kib);
    rss_idle.target = "≤ 15 MB".into();
    rss_idle.met = Some(results.rss_idle_kib <= 15 * 1024);
    let mut rss_load = Row::named("RSS under load (max during chat turns)");
    rss_load.rate = megabytes(results.rss_load_kib);

    let t = &results.tasks;
    let mut accepted = timed(
        "task submissions accepted (durable)",
        &t.accepted,
        "tasks/s",
    );
    accepted.target = "≥ 10,000 tasks/s".into();
    accepted.met = Some(t.accepted.rate() >= 10_000.0);
    let mut completed = Row::named("tasks completed, echo delay 0");
    completed.rate = per_second(t.completed_per_second, "tasks/s");
    let mut queue_start = Row::named("task queue → start, free workers (histogram bound)");
    queue_start.p50 = format!("≤ {:.3} ms", t.queue_start_p50 * 1000.0);
    queue_start.p99 = format!("≤ {:.3} ms", t.queue_start_p99 * 1000.0);
    queue_start.target = "p50 ≤ 1 ms".into();
    queue_start.met = Some(t.queue_start_p50 <= 0.001);
    let per_task =
        (t.rss_queued_kib.saturating_sub(t.rss_before_queue_kib) * 1024) / t.queued.max(1);
    let mut queued = Row::named(format!(
        "RSS with {} queued tasks",
        report::grouped(t.queued)
    ));
    queued.rate = format!("{} (+{per_task} B/task)", megabytes(t.rss_queued_kib));
    queued.target = "≤ 2 KB per queued task".into();
    queued.met = Some(per_task <= 2048);
    let mut verifications = Row::named("x402 payment verified locally (one core)");
    verifications.rate = per_second(results.verifications, "verifications/s");

    let rows = [
        ceiling,
        sessions,
        history,
        chat,
        sequential,
        rss_idle,
        rss_load,
        accepted,
        completed,
        queue_start,
        queued,
        verifications,
    ];
    let mut out = report::table(&rows);
    out.push('\n');
    out.push_str(&how_it_was_run(results, seconds, pid));
    out
}

fn how_it_was_run(results: &Results, seconds: u64, pid: u32) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut lines = vec![
        format!(
            "Run: `BENCH_SECONDS={seconds} cargo bench --bench outpost-bench` (release profile), \
             outpost {} (pid {pid}), {seconds} s per timed run.",
            env!("CARGO_PKG_VERSION")
        ),
        format!(
            "Load: {CONNECTIONS} keep-alive HTTP/1.1 connections (hyper client), one request in \
             flight per connection, over 127.0.0.1; load generator, ceiling server and daemon \
             share the same {cpus} CPUs."
        ),
        format!(
            "Daemon: plain HTTP, log level warn, agent echo (delay_ms = 0, max_concurrent = 128), \
             redb store in a temp dir under {}.",
            std::env::temp_dir().display()
        ),
        format!(
            "Data: admin has {SEEDED_SESSIONS} sessions × {} messages; chat/sessions answers \
             {} bytes, history/persistent {} bytes (default page of 50); store file {} at \
             the end.",
            SEEDED_TURNS * 2,
            results.sessions_bytes,
            results.history_bytes,
            megabytes(results.store_bytes / 1024)
        ),
        format!(
            "Chat: {CONNECTIONS} users (bench-01..bench-64), each with a device token and their \
             own session, posting with `Accept: application/json`; sequential: {} turns on one \
             session over one connection.",
            report::grouped(SEQUENTIAL_TURNS)
        ),
        "Restart: after the idle reading the daemon is stopped, the 64 users are added with \
         `outpost user add` (their password hashes stay out of the daemon), and it is started \
         again on the same data dir; every later figure is from that second process."
            .to_string(),
        format!(
            "Memory: RSS read from /proc/PID/status every {} ms during the chat run; {} just \
             before it.",
            RSS_SAMPLE_INTERVAL.as_millis(),
            megabytes(results.rss_before_chat_kib)
        ),
    ];
    let runs = [
        ("ceiling", &results.ceiling),
        ("chat/sessions", &results.sessions),
        ("history/persistent", &results.history),
        ("chat turns", &results.chat),
        ("sequential", &results.sequential),
    ];
    for (name, stats) in runs {
        if stats.errors > 0 {
            lines.push(format!(
                "Errors in {name}: {} of {} requests failed; first: {}",
                stats.errors,
                stats.ok + stats.errors,
                stats.first_error.as_deref().unwrap_or("?")
            ));
        }
    }
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}
