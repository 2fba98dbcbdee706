//! Slow peers past the headers, part of the hostile run: bodies trickled at one byte every
//! 5 s must be answered 408 and closed at `server.body_timeout_s`, and clients that request
//! far more than the kernel buffers hold and then read nothing must be dropped after
//! `server.write_timeout_s`, their connections freed; both counted in `/metrics`.

use crate::client::{once, Call};
use crate::report::{ms, Latencies, Section};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// `server.body_timeout_s` and `server.write_timeout_s` of the hostile run's daemon.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(5);
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
const TRICKLERS: usize = 100;
const STALLED: usize = 20;

pub async fn run(addr: SocketAddr, section: &mut Section) -> anyhow::Result<()> {
    let body_before = metric(addr, "outpost_body_timeouts_total").await?;
    let write_before = metric(addr, "outpost_write_timeouts_total").await?;
    let mut tricklers = JoinSet::new();
    for _ in 0..TRICKLERS {
        tricklers.spawn(trickle(addr));
    }
    let (mut answered, mut statuses) = (Latencies::default(), Vec::new());
    while let Some(joined) = tricklers.join_next().await {
        let (took, status) = joined??;
        answered.add(took);
        statuses.push(status);
    }
    statuses.dedup();

    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stall(addr).await?);
    }
    let mut dropped_after = None;
    while started.elapsed() < WRITE_TIMEOUT * 4 {
        let dropped = metric(addr, "outpost_write_timeouts_total").await? - write_before;
        if dropped >= STALLED as u64 {
            dropped_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(stalled);
    let body_counted = metric(addr, "outpost_body_timeouts_total").await? - body_before;

    section.row(
        format!(
            "{TRICKLERS} bodies trickled at 1 byte / 5 s (body_timeout_s {})",
            BODY_TIMEOUT.as_secs()
        ),
        format!(
            "answered {statuses:?} and closed after {} – {}; counted {body_counted}",
            ms(answered.percentile(0.0)),
            ms(answered.percentile(100.0))
        ),
    );
    section.row(
        format!(
            "{STALLED} clients reading nothing of 64 × /openapi.json (write_timeout_s {})",
            WRITE_TIMEOUT.as_secs()
        ),
        match dropped_after {
            Some(after) => format!("all dropped within {}", ms(after)),
            None => "not all dropped".into(),
        },
    );
    section.check(
        statuses == [408] && body_counted == TRICKLERS as u64,
        || format!("trickled bodies: {statuses:?}, {body_counted} counted"),
    );
    section.check(
        answered.percentile(100.0) <= BODY_TIMEOUT + Duration::from_secs(2),
        || {
            format!(
                "a trickled body was held {}",
                ms(answered.percentile(100.0))
            )
        },
    );
    section.check(
        dropped_after.is_some_and(|d| d <= WRITE_TIMEOUT * 3),
        || format!("stalled readers dropped after {dropped_after:?}"),
    );
    Ok(())
}

/// A body of 100 declared bytes, one byte every 5 s: how long until the answer and the close.
async fn trickle(addr: SocketAddr) -> anyhow::Result<(Duration, u16)> {
    let mut stream = TcpStream::connect(addr).await?;
    let head = "POST /api/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{";
    stream.write_all(head.as_bytes()).await?;
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < Duration::from_secs(60) {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                let _ = stream.write_all(b" ").await;
            }
        }
    }
    let status = String::from_utf8_lossy(&answer)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((started.elapsed(), status))
}

/// A connection with a 4 KiB receive buffer that asks for ~14 MB and reads none of it.
async fn stall(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let mut stream = socket.connect(addr).await?;
    let requests = "GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(64);
    stream.write_all(requests.as_bytes()).await?;
    Ok(stream)
}

async fn metric(addr: SocketAddr, name: &str) -> anyhow::Result<u64> {
    let reply = once(addr, &Call::get("/metrics", None)).await?;
    let text = String::from_utf8_lossy(&reply.body).to_string();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {name} in /metrics"))
}
