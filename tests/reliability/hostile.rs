//! Slow and hostile clients against a daemon started with the soft open-file limit of a login
//! shell (1024): 1,000 slowloris connections (request headers dripped one byte a second),
//! 1,000 half-sent voice WebSocket upgrades (the request line and headers without the blank
//! line that ends them, so authentication never runs), and as many upgraded-then-silent voice
//! sockets as `[voice] max_sessions` allows. Meanwhile a probe client must be answered as
//! before, and every offender must be dropped by its documented timeout. Then oversized
//! headers, bodies and WebSocket frames must get their documented 4xx or close code, trickled
//! bodies and clients that stop reading must be cut (`slow_peers.rs`), with the daemon alive
//! and its RSS bounded.

use crate::client::{once, text, Call, Conn};
use crate::daemon::{Daemon, Setup};
use crate::report::{mb, ms, Latencies, Section};
use anyhow::Context;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

const SLOWLORIS: usize = 1000;
const HALF_UPGRADES: usize = 1000;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const VOICE_SESSIONS: usize = 32;
const VOICE_IDLE: Duration = Duration::from_secs(3);
/// The soft `RLIMIT_NOFILE` the daemon is started with, as from a login shell.
const SHELL_NOFILE: u64 = 1024;
const PROBES: usize = 200;

fn config() -> String {
    format!(
        r#"[server]
header_timeout_s = {header}
body_timeout_s = {body}
write_timeout_s = {write}
# The offenders and the probe all come from 127.0.0.1: this measures the global cap and the
# timeouts. The per-address cap has its own test (tests/it/http.rs).
max_connections_per_client = 0

[voice]
mode = "echo"
max_sessions = {VOICE_SESSIONS}
max_per_user = {VOICE_SESSIONS}
idle_timeout = "{idle}s"

[agents.echo]
engine = {{ kind = "echo", delay_ms = 0 }}
"#,
        header = HEADER_TIMEOUT.as_secs(),
        body = crate::slow_peers::BODY_TIMEOUT.as_secs(),
        write = crate::slow_peers::WRITE_TIMEOUT.as_secs(),
        idle = VOICE_IDLE.as_secs()
    )
}

pub async fn run(long: bool) -> Section {
    let command = if long {
        "OUTPOST_RELIABILITY=long cargo test --release --test reliability -- hostile_clients"
    } else {
        "cargo test --test reliability -- hostile_clients"
    };
    let mut section = Section::new("Slow and hostile clients", command);
    if let Err(err) = hostile(&mut section).await {
        section.failures.push(format!("{err:#}"));
    }
    section
}

/// Raises this process's soft open-file limit to its hard one (thousands of sockets).
fn raise_nofile() -> anyhow::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    )?;
    Ok(limit.maximum.unwrap_or(u64::MAX))
}

async fn hostile(section: &mut Section) -> anyhow::Result<()> {
    let hard = raise_nofile()?;
    let wanted = (SLOWLORIS + HALF_UPGRADES + VOICE_SESSIONS + 256) as u64;
    anyhow::ensure!(
        hard >= wanted,
        "RLIMIT_NOFILE's hard limit {hard} is below {wanted}"
    );
    let dir = tempfile::tempdir()?;
    let mut setup = Setup::new(dir.path(), &config())?;
    setup.soft_nofile = Some(SHELL_NOFILE);
    let mut daemon = setup.start().await?;
    let admin = daemon.admin().await?;
    let probe_call = Call::get("/api/agents/echo/chat/sessions", Some(&admin));
    let (mut before, failed_before) = probe(daemon.addr, &probe_call, PROBES, || true).await;
    let rss_before = daemon.rss()?;

    // The silent calls first: they need tickets, and they fill the voice limit.
    let mut calls = JoinSet::new();
    for _ in 0..VOICE_SESSIONS {
        let url = voice_start(daemon.addr, &admin, 201).await?;
        let addr = daemon.addr;
        calls.spawn(async move { silent_call(addr, &url).await });
    }
    voice_start(daemon.addr, &admin, 429).await?;

    let live = Arc::new(AtomicUsize::new(0));
    let mut offenders = JoinSet::new();
    for i in 0..SLOWLORIS + HALF_UPGRADES {
        let (addr, live) = (daemon.addr, live.clone());
        let slow = i % 2 == 0;
        offenders.spawn(async move { (slow, offend(addr, slow, live).await) });
    }
    let opened = Instant::now();
    while live.load(Ordering::SeqCst) < SLOWLORIS + HALF_UPGRADES
        && opened.elapsed() < HEADER_TIMEOUT / 2
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connected = live.load(Ordering::SeqCst);
    let attack_live = live.clone();
    let (mut during, failed_during) = probe(daemon.addr, &probe_call, PROBES, move || {
        attack_live.load(Ordering::SeqCst) * 10 >= connected * 9
    })
    .await;
    let rss_attack = daemon.rss()?;

    let (mut slow_drops, mut half_drops, mut not_dropped) =
        (Latencies::default(), Latencies::default(), 0);
    while let Some(joined) = offenders.join_next().await {
        match joined? {
            (true, Some(d)) => slow_drops.add(d),
            (false, Some(d)) => half_drops.add(d),
            (_, None) => not_dropped += 1,
        }
    }
    let (mut call_drops, mut close_codes) = (Latencies::default(), Vec::new());
    while let Some(joined) = calls.join_next().await {
        let (took, code) = joined??;
        call_drops.add(took);
        close_codes.push(code);
    }

    section.row(
        "offenders",
        format!(
            "{SLOWLORIS} slowloris + {HALF_UPGRADES} half-sent voice upgrades ({connected} connected at once) + {VOICE_SESSIONS} silent voice calls (max_sessions)"
        ),
    );
    section.row(
        "daemon limits",
        format!(
            "soft RLIMIT_NOFILE {SHELL_NOFILE} at start, header_timeout_s {}, voice idle_timeout {} s",
            HEADER_TIMEOUT.as_secs(),
            VOICE_IDLE.as_secs()
        ),
    );
    section.row(
        format!("probe before (n {}, new connection each)", before.len()),
        before.summary(),
    );
    section.row(
        format!("probe during the attack (n {})", during.len()),
        during.summary(),
    );
    section.row(
        "slowloris dropped after (since the first byte)",
        spread(&mut slow_drops),
    );
    section.row("half-sent upgrades dropped after", spread(&mut half_drops));
    section.row(
        "silent voice calls closed after (since the 101)",
        format!(
            "{} (close codes {:?})",
            spread(&mut call_drops),
            dedup(&close_codes)
        ),
    );
    section.check(failed_before == 0 && failed_during == 0, || {
        format!("probes failed: {failed_before} before, {failed_during} during the attack")
    });
    section.check(during.len() >= 20, || {
        format!("only {} probes ran while the attack lasted", during.len())
    });
    let limit = Duration::from_secs(1).max(before.percentile(99.0) * 10);
    section.check(during.percentile(99.0) < limit, || {
        format!(
            "the probe waited during the attack: p99 {} (before: {})",
            ms(during.percentile(99.0)),
            ms(before.percentile(99.0))
        )
    });
    section.check(not_dropped == 0, || {
        format!("{not_dropped} offenders were still connected long after header_timeout")
    });
    let late = HEADER_TIMEOUT + Duration::from_secs(2);
    section.check(
        slow_drops.percentile(100.0) <= late && half_drops.percentile(100.0) <= late,
        || {
            format!(
                "offenders outlived header_timeout: {} / {}",
                spread(&mut slow_drops),
                spread(&mut half_drops)
            )
        },
    );
    section.check(
        call_drops.percentile(100.0) <= VOICE_IDLE + Duration::from_secs(2)
            && close_codes.iter().all(|c| *c == Some(1000)),
        || {
            format!(
                "silent calls: {} codes {close_codes:?}",
                spread(&mut call_drops)
            )
        },
    );

    oversized(&mut daemon, &admin, section).await?;
    crate::slow_peers::run(daemon.addr, section).await?;
    let rss_end = daemon.rss()?;
    section.row(
        "RSS before / during the attack / at the end",
        format!("{} / {} / {}", mb(rss_before), mb(rss_attack), mb(rss_end)),
    );
    // The attack's connections cost what they cost; what came after may add at most the
    // bodies of the 20 uploads (max_body_bytes each) and some slack.
    section.check(rss_end <= rss_attack + 32 * 1024 * 1024, || {
        format!(
            "RSS grew from {} during the attack to {} after the oversized requests",
            mb(rss_attack),
            mb(rss_end)
        )
    });
    let offenders = (connected + VOICE_SESSIONS) as u64;
    section.row(
        "RSS per held connection during the attack",
        format!(
            "{:.1} KB",
            rss_attack.saturating_sub(rss_before) as f64 / offenders as f64 / 1000.0
        ),
    );
    section.check(daemon.alive(), || "the daemon died".into());
    let health = once(daemon.addr, &Call::get("/healthz", None)).await?;
    section.check(health.status == 200, || {
        format!("/healthz answered {}", health.status)
    });
    Ok(())
}

/// `n` probes, each on a new connection, while `go` says so: latencies and failures.
async fn probe(
    addr: SocketAddr,
    call: &Call,
    n: usize,
    go: impl Fn() -> bool,
) -> (Latencies, usize) {
    let (mut latencies, mut failed) = (Latencies::default(), 0);
    for _ in 0..n {
        if !go() {
            break;
        }
        let sent = Instant::now();
        match tokio::time::timeout(Duration::from_secs(20), once(addr, call)).await {
            Ok(Ok(reply)) if reply.status == 200 => latencies.add(sent.elapsed()),
            _ => failed += 1,
        }
    }
    (latencies, failed)
}

/// "min x / p50 y / max z".
fn spread(latencies: &mut Latencies) -> String {
    format!(
        "min {} / p50 {} / max {}",
        ms(latencies.percentile(0.0)),
        ms(latencies.percentile(50.0)),
        ms(latencies.percentile(100.0))
    )
}

fn dedup(codes: &[Option<u16>]) -> Vec<Option<u16>> {
    let mut codes = codes.to_vec();
    codes.sort_unstable();
    codes.dedup();
    codes
}

/// One offender: slowloris drips a header byte a second; a half-sent upgrade stops before
/// the blank line. Returns how long the daemon kept it (None: still open after twice the
/// header timeout).
async fn offend(addr: SocketAddr, slow: bool, live: Arc<AtomicUsize>) -> Option<Duration> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let head: &[u8] = if slow {
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: "
    } else {
        b"GET /api/agents/echo/voice/ws?ticket=never-checked HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    };
    stream.write_all(head).await.ok()?;
    let since = Instant::now();
    live.fetch_add(1, Ordering::SeqCst);
    let (mut reader, mut writer) = stream.split();
    let mut buf = [0u8; 1024];
    let mut drip = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    let deadline = tokio::time::sleep(HEADER_TIMEOUT * 2);
    tokio::pin!(deadline);
    let dropped = loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => break Some(since.elapsed()),
                Ok(_) => {}
            },
            _ = drip.tick(), if slow => {
                if writer.write_all(b"a").await.is_err() {
                    break Some(since.elapsed());
                }
            }
            () = &mut deadline => break None,
        }
    };
    live.fetch_sub(1, Ordering::SeqCst);
    dropped
}

/// `voice/start` as the admin, expecting `status`; the socket's URL when it is 201.
async fn voice_start(addr: SocketAddr, token: &str, status: u16) -> anyhow::Result<String> {
    let call = Call::post(
        "/api/agents/echo/voice/start",
        Some(token),
        &json!({"sample_rate": 16000}),
    );
    let answer = Conn::connect(addr).await?.expect(&call, status).await?;
    if status == 201 {
        text(&answer, "websocket_url")
    } else {
        anyhow::ensure!(answer["error"] == "voice_limit", "{answer}");
        Ok(String::new())
    }
}

/// Opens the voice socket at `url` (a raw HTTP/1.1 upgrade) and returns the stream after the 101.
async fn upgrade(addr: SocketAddr, url: &str) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.context("reading the 101")?;
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    anyhow::ensure!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    Ok(stream)
}

/// Reads server frames until a close frame (its code) or the end of the stream (None).
async fn close_code(stream: &mut TcpStream) -> anyhow::Result<Option<u16>> {
    loop {
        let mut header = [0u8; 2];
        if stream.read_exact(&mut header).await.is_err() {
            return Ok(None);
        }
        let opcode = header[0] & 0x0f;
        let length = match header[1] & 0x7f {
            126 => u64::from(stream.read_u16().await?),
            127 => stream.read_u64().await?,
            n => u64::from(n),
        };
        anyhow::ensure!(length < 1 << 20, "a server frame of {length} bytes");
        let mut payload = vec![0u8; length as usize];
        stream.read_exact(&mut payload).await?;
        if opcode == 0x8 {
            return Ok(payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]])));
        }
    }
}

/// A call that says nothing after the handshake: how long until the daemon closed it, and
/// the close code it gave.
async fn silent_call(addr: SocketAddr, url: &str) -> anyhow::Result<(Duration, Option<u16>)> {
    let mut stream = upgrade(addr, url).await?;
    let since = Instant::now();
    let code = tokio::time::timeout(VOICE_IDLE * 4, close_code(&mut stream))
        .await
        .context("a silent call was never closed")??;
    Ok((since.elapsed(), code))
}

/// Oversized headers, bodies and WebSocket frames.
async fn oversized(daemon: &mut Daemon, admin: &str, section: &mut Section) -> anyhow::Result<()> {
    let addr = daemon.addr;
    // Headers past hyper's 64 KiB read buffer.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let (headers, _) = raw_request(addr, big, Vec::new(), 0, b"").await?;
    section.check(headers == 431, || {
        format!("a 100 KiB header answered {headers}")
    });

    // A body declared larger than max_body_bytes, and bodies sent chunked without a length.
    let declared = raw_request(
        addr,
        upload_head(admin, "Content-Length: 2097152"),
        vec![b' '; 64 * 1024],
        32,
        b"",
    )
    .await?;
    check_error(section, "a 2 MiB body", &declared, 413, "body_too_large");
    let before = daemon.rss()?;
    let mut uploads = JoinSet::new();
    for _ in 0..20 {
        let head = upload_head(admin, "Transfer-Encoding: chunked");
        let chunk = [b"10000\r\n".as_slice(), &[b' '; 64 * 1024], b"\r\n"].concat();
        uploads.spawn(raw_request(addr, head, chunk, 128, b"0\r\n\r\n"));
    }
    let mut statuses = Vec::new();
    while let Some(joined) = uploads.join_next().await {
        let reply = joined??;
        check_error(
            section,
            "an 8 MiB chunked body",
            &reply,
            413,
            "body_too_large",
        );
        statuses.push(reply.0);
    }
    let after = daemon.rss()?;

    // WebSocket frames announcing more than the socket takes (16 KiB).
    let mut codes = Vec::new();
    for length in [1u64 << 20, 1 << 62] {
        let url = voice_start(addr, admin, 201).await?;
        let mut stream = upgrade(addr, &url).await?;
        let mut frame = vec![0x82, 0x80 | 127];
        frame.extend_from_slice(&length.to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(&[0u8; 4096]);
        stream.write_all(&frame).await?;
        let code = tokio::time::timeout(Duration::from_secs(10), close_code(&mut stream))
            .await
            .context("an oversized frame was never answered")??;
        codes.push(code);
    }
    section.check(codes.iter().all(|c| *c == Some(4008)), || {
        format!("oversized WebSocket frames closed with {codes:?}")
    });
    section.row(
        "oversized",
        format!(
            "100 KiB header → {headers}; 2 MiB body → {}; 20 × 8 MiB chunked → {:?}; 1 MiB and 2^62 B WebSocket frames → close {:?}",
            declared.0,
            dedup_u16(&statuses),
            codes
        ),
    );
    section.row(
        "RSS around the 20 chunked uploads",
        format!("{} → {}", mb(before), mb(after)),
    );
    Ok(())
}

fn dedup_u16(statuses: &[u16]) -> Vec<u16> {
    let mut statuses = statuses.to_vec();
    statuses.sort_unstable();
    statuses.dedup();
    statuses
}

fn check_error(section: &mut Section, what: &str, reply: &(u16, Vec<u8>), status: u16, code: &str) {
    let body: serde_json::Value = serde_json::from_slice(&reply.1).unwrap_or_default();
    section.check(
        reply.0 == status && body["error"] == code && body["message"].is_string(),
        || format!("{what} answered {} {body}", reply.0),
    );
}

/// The head of a chat turn whose body is framed by `framing`.
fn upload_head(token: &str, framing: &str) -> String {
    format!(
        "POST /api/agents/echo/chat HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    )
}

/// Writes `head`, then `piece` `pieces` times and `end`, stopping quietly when the daemon
/// stops reading, while reading the answer: its status and body.
async fn raw_request(
    addr: SocketAddr,
    head: String,
    piece: Vec<u8>,
    pieces: usize,
    end: &'static [u8],
) -> anyhow::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    let (mut reader, mut writer) = stream.split();
    let send = async {
        if writer.write_all(head.as_bytes()).await.is_ok() {
            for _ in 0..pieces {
                if writer.write_all(&piece).await.is_err() {
                    break;
                }
            }
            let _ = writer.write_all(end).await;
        }
        std::future::pending::<()>().await;
    };
    let read = async {
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..at]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if answer.len() >= at + 4 + length {
                    return answer;
                }
            }
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return answer,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            () = send => unreachable!("sending never ends by itself"),
            answer = read => answer,
        }
    })
    .await
    .context("no answer within 30 s")?;
    let at = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("no answer head in {:?}", String::from_utf8_lossy(&answer)))?;
    let status = String::from_utf8_lossy(&answer[..at])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, answer[at + 4..].to_vec()))
}
