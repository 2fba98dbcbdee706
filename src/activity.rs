//! The activity summary of an agent over a window, over what the caller may see.

use crate::agents::Agent;
use crate::app::App;
use crate::caller::Caller;
use crate::clock::Timestamp;
use crate::records::{Execution, ExecutionKind, ExecutionStatus};
use crate::store::{self, ExecutionFilter};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

const HOUR_MS: i64 = 3_600_000;

/// Computes the `/activity` document.
pub async fn summarize(
    app: &App,
    agent: &Agent,
    caller: &Caller,
    hours: u64,
) -> Result<Value, store::Error> {
    let now = Timestamp::now();
    let from = now.add_millis(-(hours as i64) * HOUR_MS);
    let filter = ExecutionFilter {
        username: (!agent.managed_by(caller)).then(|| caller.username.clone()),
        since: Some(from),
        ..ExecutionFilter::default()
    };
    let agent_name = agent.name().to_string();
    let (executions, _) = app
        .store()
        .read(move |r| r.executions_of(&agent_name, &filter, None, usize::MAX))
        .await?;
    let running: Vec<crate::records::ExecutionRow> = executions
        .iter()
        .filter(|e| e.status == ExecutionStatus::Running)
        .map(Execution::row)
        .collect();
    let last_activity_at = executions
        .first()
        .map(|e| e.finished_at.unwrap_or(e.created_at));
    Ok(json!({
        "agent": agent.name(),
        "status": if running.is_empty() { "idle" } else { "running" },
        "running": running,
        "window": {"from": from, "to": now},
        "totals": totals(&executions),
        "tool_counts": tool_counts(&executions),
        "timeline": timeline(&executions),
        "last_activity_at": last_activity_at,
    }))
}

fn totals(executions: &[Execution]) -> Value {
    let mut by_kind: Map<String, Value> = ExecutionKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), json!(0)))
        .collect();
    let mut by_status: Map<String, Value> = ExecutionStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_string(), json!(0)))
        .collect();
    let (mut cost, mut tools, mut input, mut output) = (0.0, 0, 0, 0);
    let mut durations = Vec::new();
    for execution in executions {
        bump(&mut by_kind, execution.kind.as_str());
        bump(&mut by_status, execution.status.as_str());
        cost += execution.cost_usd;
        tools += execution.tool_calls.len();
        input += execution
            .usage
            .get("input_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        output += execution
            .usage
            .get("output_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        durations.extend(execution.duration_ms);
    }
    durations.sort_unstable();
    json!({
        "executions": executions.len(),
        "by_kind": by_kind,
        "by_status": by_status,
        "cost_usd": cost,
        "tool_calls": tools,
        "input_tokens": input,
        "output_tokens": output,
        "duration_ms_p50": percentile(&durations, 50),
        "duration_ms_p95": percentile(&durations, 95),
    })
}

fn bump(map: &mut Map<String, Value>, key: &str) {
    let n = map.get(key).and_then(Value::as_u64).unwrap_or(0);
    map.insert(key.to_string(), json!(n + 1));
}

/// Nearest-rank percentile of sorted values (None when empty).
pub fn percentile(sorted: &[u64], pct: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (pct * sorted.len()).div_ceil(100).max(1);
    Some(sorted[rank - 1])
}

fn tool_counts(executions: &[Execution]) -> Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for call in executions.iter().flat_map(|e| &e.tool_calls) {
        let name = call
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        *counts.entry(name.to_string()).or_default() += 1;
    }
    json!(counts)
}

fn timeline(executions: &[Execution]) -> Value {
    let mut hours: BTreeMap<i64, (u64, u64, f64)> = BTreeMap::new();
    for execution in executions {
        let hour = execution.created_at.0.div_euclid(HOUR_MS) * HOUR_MS;
        let entry = hours.entry(hour).or_default();
        entry.0 += 1;
        entry.1 += u64::from(execution.status == ExecutionStatus::Failed);
        entry.2 += execution.cost_usd;
    }
    let points: Vec<Value> = hours
        .into_iter()
        .map(|(hour, (n, failed, cost))| {
            json!({"hour": Timestamp(hour), "executions": n, "failed": failed, "cost_usd": cost})
        })
        .collect();
    json!(points)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[7], 95), Some(7));
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50), Some(50));
        assert_eq!(percentile(&values, 95), Some(95));
    }
}
