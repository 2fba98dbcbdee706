//! The checks after a restart: the queue settles, every acknowledged write is there as it
//! was acknowledged, and no paid turn was served unsettled.

use super::{Ack, Kind, AGENTS, SETTLE_LIMIT};
use crate::client::{text, Call, Conn};
use crate::stub::Stub;
use anyhow::{bail, Context};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// The nonces the facilitator settled.
pub fn settled_nonces(stub: &Stub) -> HashSet<String> {
    stub.settles()
        .iter()
        .filter_map(|body| body["paymentPayload"]["payload"]["authorization"]["nonce"].as_str())
        .map(str::to_lowercase)
        .collect()
}

/// Waits until no agent has a queued or running execution.
pub async fn settle(addr: SocketAddr, admin: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + SETTLE_LIMIT;
    let mut conn = Conn::connect(addr).await?;
    for agent in AGENTS {
        for status in ["queued", "running"] {
            let path = format!("/api/agents/{agent}/executions?status={status}&limit=1");
            loop {
                let list = conn.expect(&Call::get(&path, Some(admin)), 200).await?;
                let left = list["executions"].as_array().map_or(0, Vec::len);
                if left == 0 {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{agent} still has {status} executions after {SETTLE_LIMIT:?}: {list}");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Ok(())
}

/// Checks `acks` on 8 connections: the problems found, and how many tasks were interrupted.
pub async fn verify(
    addr: SocketAddr,
    admin: &str,
    acks: &[Ack],
    settled: &HashSet<String>,
) -> anyhow::Result<(Vec<String>, usize)> {
    let mut set = JoinSet::new();
    let settled = Arc::new(settled.clone());
    for chunk in acks.chunks(acks.len().div_ceil(8).max(1)) {
        let chunk = chunk.to_vec();
        let (admin, settled) = (admin.to_string(), settled.clone());
        set.spawn(async move {
            let mut conn = Conn::connect(addr).await?;
            let mut problems = Vec::new();
            let mut interrupted = 0;
            for ack in &chunk {
                match check(&mut conn, &admin, ack, &settled).await {
                    Ok(cut) => interrupted += usize::from(cut),
                    Err(err) => problems.push(format!("{ack:?}: {err:#}")),
                }
            }
            anyhow::Ok((problems, interrupted))
        });
    }
    let (mut problems, mut interrupted) = (Vec::new(), 0);
    while let Some(joined) = set.join_next().await {
        let (found, cut) = joined??;
        problems.extend(found);
        interrupted += cut;
    }
    Ok((problems, interrupted))
}

/// One acknowledged write, as the agent's owner sees it now; true for an interrupted task.
async fn check(
    conn: &mut Conn,
    admin: &str,
    ack: &Ack,
    settled: &HashSet<String>,
) -> anyhow::Result<bool> {
    let path = format!("/api/agents/{}/executions/{}", ack.agent, ack.execution_id);
    let execution = conn.expect(&Call::get(&path, Some(admin)), 200).await?;
    anyhow::ensure!(
        execution["message"] == ack.message.as_str(),
        "message differs: {execution}"
    );
    if ack.kind == Kind::Task {
        return match execution["status"].as_str() {
            Some("success") => Ok(false),
            Some("failed") if execution["error"] == "interrupted" => Ok(true),
            _ => bail!("a task did not finish well: {execution}"),
        };
    }
    anyhow::ensure!(execution["status"] == "success", "status: {execution}");
    let response = ack
        .response
        .as_deref()
        .context("no response was acknowledged")?;
    anyhow::ensure!(
        execution["response"] == response,
        "response differs: {execution}"
    );
    let session_id = ack.session_id.as_deref().context("no session id")?;
    anyhow::ensure!(
        execution["session_id"] == session_id,
        "session differs: {execution}"
    );
    if ack.kind == Kind::Paid {
        let nonce = ack.nonce.as_deref().context("no nonce")?;
        anyhow::ensure!(
            execution["payment"]["state"] == "settled",
            "payment: {execution}"
        );
        anyhow::ensure!(
            settled.contains(nonce),
            "served, but the facilitator never settled it"
        );
    }
    let path = format!(
        "/api/agents/{}/chat/sessions/{session_id}?limit=100",
        ack.agent
    );
    let session = conn.expect(&Call::get(&path, Some(admin)), 200).await?;
    let messages = session["messages"].as_array().context("no messages")?;
    let has = |role: &str, content: &str| {
        messages.iter().any(|m| {
            m["role"] == role
                && m["execution_id"] == ack.execution_id.as_str()
                && m["content"] == content
        })
    };
    anyhow::ensure!(has("user", &ack.message), "the user message is missing");
    anyhow::ensure!(
        has("assistant", response),
        "the assistant message is missing"
    );
    Ok(false)
}

/// Every paid execution in the store: one that was served must be settled (in the store and at
/// the facilitator). Returns the served ones that are not, and the count of each payment state.
pub async fn paid_audit(
    addr: SocketAddr,
    admin: &str,
    acks: &[Ack],
    settled: &HashSet<String>,
) -> anyhow::Result<(Vec<String>, BTreeMap<String, u64>)> {
    let served: HashSet<&str> = acks
        .iter()
        .filter(|a| a.kind == Kind::Paid)
        .map(|a| a.execution_id.as_str())
        .collect();
    let mut conn = Conn::connect(addr).await?;
    let mut cursor: Option<String> = None;
    let mut wrong = Vec::new();
    let mut states = BTreeMap::new();
    loop {
        let mut path = "/api/agents/helper/executions?kind=paid&limit=100".to_string();
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = conn.expect(&Call::get(&path, Some(admin)), 200).await?;
        for row in page["executions"].as_array().context("no executions")? {
            let id = text(row, "id")?;
            let path = format!("/api/agents/helper/executions/{id}");
            let execution = conn.expect(&Call::get(&path, Some(admin)), 200).await?;
            let state = execution["payment"]["state"].as_str().unwrap_or("none");
            *states.entry(state.to_string()).or_default() += 1;
            let nonce = execution["payment"]["nonce"]
                .as_str()
                .unwrap_or("")
                .to_lowercase();
            let unsettled = state != "settled" || !settled.contains(&nonce);
            if served.contains(id.as_str()) && unsettled {
                wrong.push(format!("{id}: {}", execution["payment"]));
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok((wrong, states)),
        }
    }
}
