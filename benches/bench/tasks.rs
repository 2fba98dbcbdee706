//! The task measurements: durable submissions accepted per second, completions per second
//! with the echo engine, queue-to-start latency with free workers (from the daemon's own
//! histogram), and the memory each queued task holds while its agent is stopped.

use crate::client::{Call, Conn};
use crate::daemon::Daemon;
use crate::load::{self, Plan, Stats};
use hyper::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

/// Agents the bench config declares for tasks: one that runs them, one kept stopped.
pub const BULK: &str = "bulk";
pub const PARKED: &str = "parked";
/// Tasks held queued for the memory figure.
pub const QUEUED_TASKS: u64 = 10_000;
/// Sequential submissions for the queue-to-start latency.
const LATENCY_TASKS: u64 = 2_000;

/// What the task runs measured.
pub struct TaskResults {
    pub accepted: Stats,
    /// Tasks finished per second, from the first submission to the last completion.
    pub completed_per_second: f64,
    /// Queue-to-start latency with free workers: p50 and p99 as the upper bounds of the
    /// daemon's histogram buckets that hold them.
    pub queue_start_p50: f64,
    pub queue_start_p99: f64,
    pub rss_before_queue_kib: u64,
    pub rss_queued_kib: u64,
    pub queued: u64,
}

fn submit_call(agent: &str, token: &str) -> Call {
    Call::post(
        &format!("/api/agents/{agent}/task"),
        Some(token),
        &json!({"message": "bench task", "async_mode": true}),
    )
}

pub async fn measure(
    daemon: &Daemon,
    admin: &str,
    duration: Duration,
) -> anyhow::Result<TaskResults> {
    crate::progress_at(
        daemon,
        "tasks: queue-to-start latency, one submission at a time",
    );
    let before = wait_histogram(daemon).await?;
    let sequential = Plan {
        connections: 1,
        duration: Duration::from_secs(120),
        max_requests_per_connection: Some(LATENCY_TASKS),
    };
    load::run(daemon.addr, &sequential, &[submit_call(BULK, admin)]).await?;
    drain(daemon, BULK).await?;
    let after = wait_histogram(daemon).await?;
    let (queue_start_p50, queue_start_p99) = quantiles(&before, &after);

    crate::progress_at(daemon, "tasks: 10,000 queued for a stopped agent");
    let mut conn = Conn::connect(daemon.addr).await?;
    let stop = Call::post(
        &format!("/api/agents/{PARKED}/stop"),
        Some(admin),
        &json!({}),
    );
    conn.json(&stop, StatusCode::OK).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before_queue_kib = daemon.rss_kib().unwrap_or(0);
    let fill = Plan {
        connections: 50,
        duration: Duration::from_secs(300),
        max_requests_per_connection: Some(QUEUED_TASKS / 50),
    };
    let queued = load::run(daemon.addr, &fill, &[submit_call(PARKED, admin)]).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_queued_kib = daemon.rss_kib().unwrap_or(0);
    crate::progress_at(daemon, "tasks: submissions from 64 connections");
    let plan = Plan {
        connections: 64,
        duration,
        max_requests_per_connection: None,
    };
    let started = Instant::now();
    let accepted = load::run(daemon.addr, &plan, &[submit_call(BULK, admin)]).await?;
    drain(daemon, BULK).await?;
    let completed_per_second = accepted.ok as f64 / started.elapsed().as_secs_f64();

    Ok(TaskResults {
        accepted,
        completed_per_second,
        queue_start_p50,
        queue_start_p99,
        rss_before_queue_kib,
        rss_queued_kib,
        queued: queued.ok,
    })
}

/// Waits until the agent's queue is empty and no worker is busy, as `/metrics` says (cheap
/// for the daemon, unlike listing executions while it works).
async fn drain(daemon: &Daemon, agent: &str) -> anyhow::Result<()> {
    let mut conn = Conn::connect(daemon.addr).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let depth = format!("outpost_task_queue_depth{{agent=\"{agent}\"}} 0");
    loop {
        let (status, body) = conn.send(&Call::get("/metrics", None)).await?;
        anyhow::ensure!(status == StatusCode::OK, "/metrics answered {status}");
        let text = String::from_utf8_lossy(&body);
        let idle = text.lines().any(|l| l == depth)
            && text.lines().any(|l| l == "outpost_task_workers_busy 0");
        if idle {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "tasks of {agent} still waiting after 300 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The cumulative bucket counts of `outpost_task_queue_wait_seconds`, by upper bound.
async fn wait_histogram(daemon: &Daemon) -> anyhow::Result<Vec<(f64, u64)>> {
    let mut conn = Conn::connect(daemon.addr).await?;
    let (status, body) = conn.send(&Call::get("/metrics", None)).await?;
    anyhow::ensure!(status == StatusCode::OK, "/metrics answered {status}");
    let text = String::from_utf8_lossy(&body);
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("outpost_task_queue_wait_seconds_bucket{le=\"") else {
            continue;
        };
        let Some((bound, count)) = rest.split_once("\"} ") else {
            continue;
        };
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            bound.parse()?
        };
        buckets.push((bound, count.trim().parse()?));
    }
    Ok(buckets)
}

/// p50 and p99 (seconds, as bucket upper bounds) of the observations between two readings.
fn quantiles(before: &[(f64, u64)], after: &[(f64, u64)]) -> (f64, f64) {
    let count_before = |bound: f64| {
        before
            .iter()
            .find(|(b, _)| *b == bound)
            .map_or(0, |(_, n)| *n)
    };
    let deltas: Vec<(f64, u64)> = after
        .iter()
        .map(|(bound, n)| (*bound, n - count_before(*bound)))
        .collect();
    let total = deltas.last().map_or(0, |(_, n)| *n);
    let at = |q: f64| {
        let wanted = (q * total as f64).ceil() as u64;
        deltas
            .iter()
            .find(|(_, n)| *n >= wanted.max(1))
            .map_or(f64::INFINITY, |(bound, _)| *bound)
    };
    (at(0.50), at(0.99))
}
