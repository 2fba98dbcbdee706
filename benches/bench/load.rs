//! The load generator: N keep-alive connections, each sending its request in a loop until a
//! deadline (or a request count), recording the latency of every answered request.

use crate::client::{Call, Conn};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// How long and how hard to push.
pub struct Plan {
    pub connections: usize,
    /// Every connection stops sending once this has passed since the common start.
    pub duration: Duration,
    /// Every connection also stops after this many requests, when set.
    pub max_requests_per_connection: Option<u64>,
}

/// What one measurement saw.
pub struct Stats {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Requests answered with another status, or lost with their connection.
    pub errors: u64,
    /// The first error seen, to show why.
    pub first_error: Option<String>,
    /// From the common start until the last connection finished.
    pub elapsed: Duration,
    /// Latency of every 2xx request, sorted.
    latencies: Vec<Duration>,
}

impl Stats {
    /// Answered requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The nearest-rank percentile (`p` in 0..=100) of the recorded latencies.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank = (p / 100.0 * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

struct ConnectionResult {
    errors: u64,
    first_error: Option<String>,
    finished: Instant,
    latencies: Vec<Duration>,
}

/// Runs `plan` against `addr`; connection `i` sends `calls[i % calls.len()]`.
pub async fn run(addr: SocketAddr, plan: &Plan, calls: &[Call]) -> anyhow::Result<Stats> {
    anyhow::ensure!(!calls.is_empty(), "no request to send");
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections {
        conns.push(Conn::connect(addr).await?);
    }
    // Every connection is open before the clock starts; the barrier releases them together.
    let barrier = Arc::new(Barrier::new(plan.connections + 1));
    let mut tasks = Vec::with_capacity(plan.connections);
    for (idx, conn) in conns.into_iter().enumerate() {
        let call = calls[idx % calls.len()].clone();
        let barrier = barrier.clone();
        let limit = plan.max_requests_per_connection.unwrap_or(u64::MAX);
        let duration = plan.duration;
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            drive(conn, call, Instant::now() + duration, limit).await
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut stats = Stats {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    let mut last_finish = start;
    for task in tasks {
        let result = task.await?;
        stats.ok += result.latencies.len() as u64;
        stats.errors += result.errors;
        stats.first_error = stats.first_error.or(result.first_error);
        stats.latencies.extend(result.latencies);
        last_finish = last_finish.max(result.finished);
    }
    stats.elapsed = last_finish - start;
    stats.latencies.sort_unstable();
    Ok(stats)
}

/// One connection's loop. A transport error ends the connection: it is counted, not retried.
async fn drive(mut conn: Conn, call: Call, deadline: Instant, limit: u64) -> ConnectionResult {
    let mut result = ConnectionResult {
        errors: 0,
        first_error: None,
        finished: Instant::now(),
        latencies: Vec::with_capacity(4096),
    };
    let mut sent = 0u64;
    while sent < limit && Instant::now() < deadline {
        sent += 1;
        let begun = Instant::now();
        match conn.send(&call).await {
            Ok((status, _)) if status.is_success() => result.latencies.push(begun.elapsed()),
            Ok((status, body)) => {
                result.errors += 1;
                result
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(err) => {
                result.errors += 1;
                result.first_error.get_or_insert_with(|| format!("{err:#}"));
                break;
            }
        }
    }
    result.finished = Instant::now();
    result
}

/// Sends `count` requests one after another over one new connection, each made by `next`
/// just before it goes out (outside its timing), and records them as [`run`] does. Stops
/// early at `limit` or on the first transport error.
pub async fn sequence(
    addr: SocketAddr,
    count: u64,
    limit: Duration,
    mut next: impl FnMut() -> anyhow::Result<Call>,
) -> anyhow::Result<Stats> {
    let mut conn = Conn::connect(addr).await?;
    let mut stats = Stats {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(count as usize),
    };
    let start = Instant::now();
    for _ in 0..count {
        if start.elapsed() > limit {
            break;
        }
        let call = next()?;
        let begun = Instant::now();
        match conn.send(&call).await {
            Ok((status, _)) if status.is_success() => stats.latencies.push(begun.elapsed()),
            Ok((status, body)) => {
                stats.errors += 1;
                stats
                    .first_error
                    .get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            Err(err) => {
                stats.errors += 1;
                stats.first_error.get_or_insert_with(|| format!("{err:#}"));
                break;
            }
        }
    }
    stats.elapsed = start.elapsed();
    stats.ok = stats.latencies.len() as u64;
    stats.latencies.sort_unstable();
    Ok(stats)
}
