//! Counters for `/metrics`, rendered in the Prometheus text format. Plain atomics and short
//! mutex sections: nothing here awaits.

use crate::records::{ExecutionKind, ExecutionStatus};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn add(&mut self, seconds: f64) {
        self.count += 1;
        self.sum += seconds;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.buckets[i] += 1;
            }
        }
    }

    /// Writes the series of this histogram; `labels` is `key="value",` or empty.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}le=\"{bound}\"}} {}",
                self.buckets[i]
            );
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", self.count);
        let trimmed = labels.trim_end_matches(',');
        let braces = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{{{trimmed}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Process-wide counters, owned by `App`.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    executions: Mutex<BTreeMap<(ExecutionKind, ExecutionStatus), u64>>,
    running: AtomicI64,
    /// Named histograms of seconds (queue wait, run time), by metric name.
    histograms: Mutex<BTreeMap<&'static str, Histogram>>,
    /// Gauges set as a whole, by their full series text (`name{label="…"}`).
    gauges: Mutex<BTreeMap<String, i64>>,
    connections: AtomicI64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    body_timeouts: AtomicU64,
    write_timeouts: AtomicU64,
    password_hashes: AtomicU64,
    /// Logins answered without a token, by why.
    logins_refused: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one answered request of `route` (a route template, never a raw path).
    pub fn record_request(&self, route: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            *requests.entry((route, status)).or_default() += 1;
        }
        if let Ok(mut latency) = self.latency.lock() {
            latency.entry(route).or_default().add(elapsed.as_secs_f64());
        }
    }

    /// Adds one observation (seconds) to the histogram `name`.
    pub fn observe(&self, name: &'static str, elapsed: Duration) {
        if let Ok(mut histograms) = self.histograms.lock() {
            histograms
                .entry(name)
                .or_default()
                .add(elapsed.as_secs_f64());
        }
    }

    /// Sets a gauge series, e.g. `outpost_task_queue_depth{agent="x"}`.
    pub fn set_gauge(&self, series: String, value: i64) {
        if let Ok(mut gauges) = self.gauges.lock() {
            gauges.insert(series, value);
        }
    }

    /// Counts one execution reaching a final status.
    pub fn record_execution(&self, kind: ExecutionKind, status: ExecutionStatus) {
        if let Ok(mut executions) = self.executions.lock() {
            *executions.entry((kind, status)).or_default() += 1;
        }
    }

    /// Moves the running-turns gauge.
    pub fn add_running(&self, delta: i64) {
        self.running.fetch_add(delta, Ordering::Relaxed);
    }

    /// Moves the open-connections gauge.
    pub fn add_connection(&self, delta: i64) {
        self.connections.fetch_add(delta, Ordering::Relaxed);
        if delta > 0 {
            self.connections_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a connection closed for being over its address's cap.
    pub fn refuse_connection(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one request whose body did not arrive within `server.body_timeout_s`.
    pub fn body_timeout(&self) {
        self.body_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection dropped because its client stopped reading.
    pub fn write_timeout(&self) {
        self.write_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one argon2id hash (login, new user or new password).
    pub fn count_password_hash(&self) {
        self.password_hashes.fetch_add(1, Ordering::Relaxed);
    }

    /// Hashes counted so far.
    pub fn password_hashes(&self) -> u64 {
        self.password_hashes.load(Ordering::Relaxed)
    }

    /// Counts a login refused: `too_long`, `throttled`, `busy` or `bad_credentials`.
    pub fn refuse_login(&self, reason: &'static str) {
        if let Ok(mut refused) = self.logins_refused.lock() {
            *refused.entry(reason).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP outpost_http_requests_total Requests answered, by route and status.\n",
        );
        out.push_str("# TYPE outpost_http_requests_total counter\n");
        if let Ok(requests) = self.requests.lock() {
            for ((route, status), n) in requests.iter() {
                let _ = writeln!(
                    out,
                    "outpost_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                );
            }
        }
        out.push_str(
            "# HELP outpost_http_request_duration_seconds Time to the response head, by route.\n",
        );
        out.push_str("# TYPE outpost_http_request_duration_seconds histogram\n");
        if let Ok(latency) = self.latency.lock() {
            for (route, histogram) in latency.iter() {
                let labels = format!("route=\"{route}\",");
                histogram.render(&mut out, "outpost_http_request_duration_seconds", &labels);
            }
        }
        if let Ok(histograms) = self.histograms.lock() {
            for (name, histogram) in histograms.iter() {
                let _ = writeln!(out, "# TYPE {name} histogram");
                histogram.render(&mut out, name, "");
            }
        }
        if let Ok(gauges) = self.gauges.lock() {
            let mut last_name = "";
            for (series, value) in gauges.iter() {
                let name = series.split('{').next().unwrap_or(series);
                if name != last_name {
                    let _ = writeln!(out, "# TYPE {name} gauge");
                }
                let _ = writeln!(out, "{series} {value}");
                last_name = name;
            }
        }
        out.push_str("# HELP outpost_executions_total Executions finished, by kind and status.\n");
        out.push_str("# TYPE outpost_executions_total counter\n");
        if let Ok(executions) = self.executions.lock() {
            for ((kind, status), n) in executions.iter() {
                let _ = writeln!(
                    out,
                    "outpost_executions_total{{kind=\"{}\",status=\"{}\"}} {n}",
                    kind.as_str(),
                    status.as_str()
                );
            }
        }
        out.push_str("# HELP outpost_running_turns Executions running now.\n");
        out.push_str("# TYPE outpost_running_turns gauge\n");
        let _ = writeln!(
            out,
            "outpost_running_turns {}",
            self.running.load(Ordering::Relaxed)
        );
        out.push_str("# HELP outpost_open_connections Client connections open now.\n");
        out.push_str("# TYPE outpost_open_connections gauge\n");
        let _ = writeln!(
            out,
            "outpost_open_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        out.push_str("# HELP outpost_connections_total Client connections accepted.\n");
        out.push_str("# TYPE outpost_connections_total counter\n");
        let _ = writeln!(
            out,
            "outpost_connections_total {}",
            self.connections_total.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP outpost_connections_refused_total Client connections closed at once: their \
             address held server.max_connections_per_client.\n",
        );
        out.push_str("# TYPE outpost_connections_refused_total counter\n");
        let _ = writeln!(
            out,
            "outpost_connections_refused_total {}",
            self.connections_refused.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP outpost_body_timeouts_total Requests answered 408: their body did not \
             arrive within server.body_timeout_s.\n",
        );
        out.push_str("# TYPE outpost_body_timeouts_total counter\n");
        let _ = writeln!(
            out,
            "outpost_body_timeouts_total {}",
            self.body_timeouts.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP outpost_write_timeouts_total Connections dropped: a write made no progress \
             for server.write_timeout_s (the client stopped reading).\n",
        );
        out.push_str("# TYPE outpost_write_timeouts_total counter\n");
        let _ = writeln!(
            out,
            "outpost_write_timeouts_total {}",
            self.write_timeouts.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP outpost_password_hashes_total Password hashes computed (logins, new users, \
             new passwords).\n",
        );
        out.push_str("# TYPE outpost_password_hashes_total counter\n");
        let _ = writeln!(
            out,
            "outpost_password_hashes_total {}",
            self.password_hashes.load(Ordering::Relaxed)
        );
        out.push_str("# HELP outpost_logins_refused_total Logins refused, by reason.\n");
        out.push_str("# TYPE outpost_logins_refused_total counter\n");
        if let Ok(refused) = self.logins_refused.lock() {
            for (reason, n) in refused.iter() {
                let _ = writeln!(
                    out,
                    "outpost_logins_refused_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        out
    }
}
