//! A login flood: waves of 200 concurrent logins (wrong passwords for one account from one
//! address, 1 MB usernames, unknown users from addresses of their own) while a prober reads
//! `/api/users/me` with a token and `/healthz`. One wave in the short form; waves for 30 s in
//! the long one. The daemon's peak RSS must stay within 120 MB, the probes' p99 within 50 ms
//! (release; a generous bound in a debug build), the 11th wrong password from one address in
//! a minute must be refused without a hash, and no refused login may cost a hash.

use crate::client::{Call, Conn};
use crate::daemon::{Daemon, Setup};
use crate::report::{mb, Latencies, Section};
use serde_json::json;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

const WAVE: usize = 200;
const WRONG: usize = 100;
const HUGE: usize = 50;
/// Just under the server's 1 MiB body limit: only the login's own limit refuses it.
const HUGE_NAME: usize = 1_000_000;
const LIMIT: usize = 10;
const RSS_LIMIT: u64 = 120_000_000;
const LONG_FOR: Duration = Duration::from_secs(30);

fn config() -> String {
    format!(
        r#"[server]
# The flood comes from a few loopback addresses; this measures the login path, not the
# per-address connection cap (tests/it/http.rs has that).
max_connections_per_client = 0

[auth]
login_attempts_per_minute = {LIMIT}
"#
    )
}

pub async fn run(long: bool) -> Section {
    let command = if long {
        "OUTPOST_RELIABILITY=long cargo test --release --test reliability -- login_flood"
    } else {
        "cargo test --test reliability -- login_flood"
    };
    let mut section = Section::new("Login flood", command);
    if let Err(err) = flood(&mut section, long).await {
        section.failures.push(format!("{err:#}"));
    }
    section
}

/// One series of `/metrics` (0 when absent).
async fn metric(daemon: &Daemon, series: &str) -> anyhow::Result<u64> {
    let reply = crate::client::once(daemon.addr, &Call::get("/metrics", None)).await?;
    let text = String::from_utf8_lossy(&reply.body).to_string();
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0))
}

/// One login from `from`: its status, or 0 when the connection ended without one (a 1 MiB
/// body refused before it was read may end so).
async fn login_from(daemon: &Daemon, from: IpAddr, username: &str, password: &str) -> u16 {
    let call = Call::post(
        "/api/token",
        None,
        &json!({"username": username, "password": password}),
    );
    match Conn::connect_from(daemon.addr, from).await {
        Ok(mut conn) => conn.send(&call).await.map_or(0, |reply| reply.status),
        Err(_) => 0,
    }
}

async fn flood(section: &mut Section, long: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut setup = Setup::new(dir.path(), &config())?;
    let daemon = Arc::new(setup.start().await?);
    let admin = daemon.admin().await?;
    daemon.user(&admin, "owner").await?;
    let rss_idle = daemon.rss()?;

    // The RSS sampler and the prober run until the flood is over.
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(rss_idle));
    let sampler = {
        let (daemon, done, peak) = (daemon.clone(), done.clone(), peak.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                if let Ok(rss) = daemon.rss() {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let prober = {
        let (daemon, done, admin) = (daemon.clone(), done.clone(), admin.clone());
        tokio::spawn(async move {
            let mut conn = Conn::connect(daemon.addr).await?;
            let (mut reads, mut public) = (Latencies::default(), Latencies::default());
            let read = Call::get("/api/users/me", Some(&admin));
            let health = Call::get("/healthz", None);
            while !done.load(Ordering::Relaxed) {
                for (call, into) in [(&read, &mut reads), (&health, &mut public)] {
                    let started = Instant::now();
                    let reply = conn.send(call).await?;
                    anyhow::ensure!(
                        reply.status == 200,
                        "{} answered {}",
                        call.path,
                        reply.status
                    );
                    into.add(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok((reads, public))
        })
    };

    let hashes_before = metric(&daemon, "outpost_password_hashes_total").await?;
    let started = Instant::now();
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut waves = 0u8;
    loop {
        waves += 1;
        let mut logins = JoinSet::new();
        for i in 0..WAVE {
            let daemon = daemon.clone();
            logins.spawn(async move {
                if i < WRONG {
                    // One address guessing the owner's password.
                    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
                    login_from(&daemon, from, "owner", &format!("guess-{i}")).await
                } else if i < WRONG + HUGE {
                    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 2, i as u8));
                    login_from(&daemon, from, &"u".repeat(HUGE_NAME), "whatever").await
                } else {
                    // Unknown users, each from an address of its own, new in every wave.
                    let from = IpAddr::V4(Ipv4Addr::new(127, 1, waves, i as u8));
                    login_from(&daemon, from, &format!("nobody{i}"), "whatever").await
                }
            });
        }
        while let Some(status) = logins.join_next().await {
            *statuses.entry(status?).or_default() += 1;
        }
        if !long || started.elapsed() >= LONG_FOR || waves == u8::MAX {
            break;
        }
    }
    let flood_time = started.elapsed();

    // The 11th wrong password in a minute from one (fresh) address.
    let from = IpAddr::V4(Ipv4Addr::new(127, 0, 3, 1));
    let mut failed = 0;
    while failed < LIMIT {
        match login_from(&daemon, from, "owner", "wrong-again").await {
            401 => failed += 1,
            429 => tokio::time::sleep(Duration::from_millis(50)).await,
            other => anyhow::bail!("a wrong password answered {other}"),
        }
    }
    let hashes_at_10 = metric(&daemon, "outpost_password_hashes_total").await?;
    let eleventh = login_from(&daemon, from, "owner", "wrong-again").await;
    let hashes_at_11 = metric(&daemon, "outpost_password_hashes_total").await?;
    let owner_elsewhere = login_from(
        &daemon,
        IpAddr::V4(Ipv4Addr::new(127, 0, 4, 1)),
        "owner",
        "owner-password",
    )
    .await;

    done.store(true, Ordering::Relaxed);
    let _ = sampler.await;
    let (mut reads, mut public) = prober.await??;
    let hashes = metric(&daemon, "outpost_password_hashes_total").await? - hashes_before;
    let rss_peak = peak.load(Ordering::Relaxed);
    let rss_end = daemon.rss()?;
    let evaluated = statuses.get(&401).copied().unwrap_or(0) + failed + 1;

    section.row("waves of 200 logins", waves.to_string());
    section.row("flood time", format!("{:.1} s", flood_time.as_secs_f64()));
    section.row(
        "answers",
        statuses
            .iter()
            .map(|(status, n)| match status {
                0 => format!("closed unanswered: {n}"),
                _ => format!("{status}: {n}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
    );
    section.row(
        "RSS idle / peak / end",
        format!("{} / {} / {}", mb(rss_idle), mb(rss_peak), mb(rss_end)),
    );
    section.row("authenticated read (GET /api/users/me)", reads.summary());
    section.row("public route (GET /healthz)", public.summary());
    section.row("probes", (reads.len() + public.len()).to_string());
    section.row("password hashes", hashes.to_string());
    section.row(
        "11th wrong password from one address",
        format!(
            "{eleventh}, {} hashes",
            hashes_at_11.saturating_sub(hashes_at_10)
        ),
    );

    section.check(rss_peak <= RSS_LIMIT, || {
        format!("peak RSS {} over {}", mb(rss_peak), mb(RSS_LIMIT))
    });
    section.check(eleventh == 429 && hashes_at_11 == hashes_at_10, || {
        format!(
            "the 11th wrong password answered {eleventh} after {} hashes",
            hashes_at_11 - hashes_at_10
        )
    });
    section.check(owner_elsewhere == 200, || {
        format!("the owner from another address was answered {owner_elsewhere}")
    });
    // One hash per password checked (401 and the owner's 200), one more for the decoy.
    section.check(hashes <= evaluated as u64 + 2, || {
        format!("{hashes} hashes for {evaluated} passwords checked")
    });
    section.check(!statuses.contains_key(&200), || {
        format!("a flood login succeeded: {statuses:?}")
    });
    let limit = if cfg!(debug_assertions) {
        Duration::from_millis(500)
    } else {
        Duration::from_millis(50)
    };
    for (name, latencies) in [
        ("authenticated read", &mut reads),
        ("/healthz", &mut public),
    ] {
        let p99 = latencies.percentile(99.0);
        section.check(p99 <= limit, || {
            format!(
                "{name} p99 {} over {}",
                crate::report::ms(p99),
                crate::report::ms(limit)
            )
        });
    }
    section.check(Arc::strong_count(&daemon) == 1, || {
        "a task still holds the daemon".into()
    });
    Ok(())
}
