//! The table the bench prints from what it measured, and the notes on how it was run.

use crate::daemon::PAID_AGENT;
use crate::load::Stats;
use crate::paid;
use crate::report::{self, megabytes, ms, per_second, Row};
use crate::voice_real::{self, Outcome};
use crate::{
    Results, CONNECTIONS, RSS_SAMPLE_INTERVAL, SEEDED_SESSIONS, SEEDED_TURNS, SEQUENTIAL_TURNS,
};
use std::time::Duration;

pub fn render(results: &Results, seconds: u64, pid: u32) -> String {
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

    let [store_row, written_row] = storage_rows(&results.bytes_per_turn);

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
    let paid_turn = paid_row(&results.paid_turns);
    let (voice_server, voice_client) = voice_real_rows(&results.voice_real);

    let mut rows = vec![
        ceiling,
        sessions,
        history,
        chat,
        sequential,
        store_row,
        written_row,
        rss_idle,
        rss_load,
        accepted,
        completed,
        queue_start,
        queued,
        verifications,
        paid_turn,
        voice_server,
        voice_client,
    ];
    rows.extend(crate::voice::rows(&results.voice));
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
        format!(
            "Paid: agent {PAID_AGENT} (echo, delay_ms = 0) with an x402 offer of 10000 units of \
             Base Sepolia USDC, settled through a facilitator stub in the bench process on \
             127.0.0.1 that answers /settle with success at once (no /verify: the daemon \
             verifies locally); {} unpaid JSON turns by admin on one session of that agent \
             (unpaid p50 {}, p99 {}), then {} paid turns on one paid visitor session over one \
             connection, each with a new payment signed before its request (signing not \
             timed); the added latency is paid p50 − unpaid p50. Each run opens its session \
             with one untimed turn.",
            report::grouped(results.paid_turns.unpaid.ok),
            ms(results.paid_turns.unpaid.percentile(50.0)),
            ms(results.paid_turns.unpaid.percentile(99.0)),
            report::grouped(results.paid_turns.paid.ok),
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
    lines.push(voice_real_note(&results.voice_real));
    let runs = [
        ("ceiling", &results.ceiling),
        ("chat/sessions", &results.sessions),
        ("history/persistent", &results.history),
        ("chat turns", &results.chat),
        ("sequential", &results.sequential),
        ("unpaid turns", &results.paid_turns.unpaid),
        ("paid turns", &results.paid_turns.paid),
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
    lines.push(crate::voice::notes(&results.voice).trim_end().to_string());
    let mut out = String::new();
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Paid p50 and p99, and how much later than an unpaid turn the paid one answers at p50.
fn paid_row(turns: &paid::TurnResults) -> Row {
    let paid_p50 = turns.paid.percentile(50.0).as_secs_f64();
    let unpaid_p50 = turns.unpaid.percentile(50.0).as_secs_f64();
    let mut row = Row::named("paid turn, added latency over unpaid (instant facilitator)");
    row.rate = format!(
        "{:+.3} ms at p50 (unpaid p50 {})",
        (paid_p50 - unpaid_p50) * 1000.0,
        ms(turns.unpaid.percentile(50.0))
    );
    row.p50 = ms(turns.paid.percentile(50.0));
    row.p99 = ms(turns.paid.percentile(99.0));
    row
}

/// End of speech → first audio packet with the real speech engines: the daemon's figure (from
/// its end-of-utterance decision) against the target, and the one the caller lives with.
pub fn voice_real_rows(outcome: &Outcome) -> (Row, Row) {
    let mut server = Row::named("voice turn, real speech engines: speech end → first audio");
    let mut client = Row::named("voice turn, real speech engines: last word → first audio heard");
    server.target = "p50 ≤ 1.0 s".into();
    match outcome {
        Outcome::Skipped(_) => {
            server.rate = "skipped: no speech venv (see below)".into();
            client.rate = "skipped".into();
        }
        Outcome::Measured(results) => {
            for (row, latencies) in [
                (&mut server, &results.server),
                (&mut client, &results.client),
            ] {
                row.rate = format!(
                    "{} turns, p95 {}",
                    latencies.len(),
                    seconds(latencies.percentile(95.0))
                );
                row.p50 = seconds(latencies.percentile(50.0));
                row.p99 = seconds(latencies.percentile(99.0));
            }
            server.met = Some(results.server.percentile(50.0) <= Duration::from_secs(1));
        }
    }
    (server, client)
}

pub fn voice_real_note(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Skipped(why) => format!("Voice (real speech engines): skipped: {why}."),
        Outcome::Measured(results) => format!(
            "Voice (real speech engines): wyoming-faster-whisper (Whisper tiny.en, int8, beam \
             size 1) and wyoming-piper (en_US-joe-medium) on 127.0.0.1, a daemon of their own \
             with `[voice] mode = \"pipeline\"` and the echo agent; one call of {} turns, each \
             utterance (espeak-ng, 1-2 s) sent as 20 ms Opus packets in real time, then \
             silence until the reply has played. \"Speech end\" is the daemon's \
             `speech_end_to_first_audio_ms`, counted from its end-of-utterance decision \
             (`end_silence_ms` = 600 ms of silence after the last word); \"last word\" is what \
             the caller waits, counted from its last packet of speech. The p99 column is the \
             slowest turn. At p50, speech end → transcript took {} and the reply's first token \
             → its first packet (piper on the first sentence, resampling, Opus) {}.",
            voice_real::TURNS,
            seconds(results.transcript.percentile(50.0)),
            seconds(results.synthesis.percentile(50.0)),
        ),
    }
}

/// A voice latency in seconds (the daemon reports whole milliseconds).
fn seconds(latency: Duration) -> String {
    format!("{:.3} s", latency.as_secs_f64())
}

/// The two storage rows: store file growth and bytes written per 45-word turn.
pub fn storage_rows(bytes: &crate::BytesPerTurn) -> [Row; 2] {
    let mut store = Row::named(format!(
        "store file per 45-word turn ({} turns, fresh store; running / stopped)",
        report::grouped(bytes.turns)
    ));
    store.rate = format!(
        "{:.1} KB / {:.1} KB",
        bytes.store / 1000.0,
        bytes.stopped / 1000.0
    );
    store.target = "≤ 1.5 KB".into();
    store.met = Some(bytes.store.max(bytes.stopped) <= 1_500.0);
    let mut written = Row::named("written to disk per durable 45-word turn");
    written.rate = bytes
        .written
        .map_or("unmeasured".into(), |w| format!("{:.1} KB", w / 1000.0));
    written.target = "≤ 24 KB".into();
    written.met = bytes.written.map(|w| w <= 24_000.0);
    [store, written]
}
