//! Voice calls against the daemon in `mode = "echo"` at 16 kHz: memory per idle call, the
//! number of full-duplex calls it carries with under 1 % late packets (ramped), and the
//! bridge's turnaround, from the packet that ends an utterance to the first echoed packet.
//!
//! Every call sends one Opus packet every 20 ms for the whole run: a cycle of espeak-ng
//! speech, then silence long enough for the echo of that speech to play out before the
//! next (so the echo is never talked over). The daemon plays each utterance back paced in
//! real time, so both directions stream at once for most of each cycle.

use crate::client::{field, Call, Conn};
use crate::daemon::Daemon;
use crate::report::{grouped, megabytes, ms, Row};
use anyhow::{bail, Context};
use fastwebsockets::{Frame, OpCode, Payload};
use hyper::body::Bytes;
use hyper::StatusCode;
use outpost::config::VoiceConfig;
use outpost::voice::audio;
use outpost::voice::opus::{Decoder, Encoder};
use outpost::voice::vad::{Heard, Vad};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// What the calls say, once per cycle.
const UTTERANCE: &str = "The quick brown fox jumps over the lazy dog.";
/// Samples in one 20 ms packet at 16 kHz.
const FRAME_SAMPLES: usize = 320;
const FRAME: Duration = Duration::from_millis(20);
/// A packet to the client is late when it arrives this far behind its real-time slot.
pub const LATE_AFTER: Duration = Duration::from_millis(40);
/// Packets to the client more than this far apart start a new run of echo.
const RUN_GAP: Duration = Duration::from_millis(300);
/// Calls open at once in each step of the ramp; it stops at the first step over 1 % late.
const RAMP: [usize; 8] = [50, 100, 150, 200, 250, 300, 400, 500];
/// Late share a step may have and still count as carried.
const LATE_LIMIT: f64 = 0.01;
/// Idle calls opened for the memory reading.
pub const IDLE_CALLS: usize = 200;
/// Each ramp step lasts at least this long (two cycles or more).
const MIN_STEP: Duration = Duration::from_secs(12);

/// One step of the ramp.
pub struct Step {
    pub calls: usize,
    /// Packets the calls received, and how many of them were late.
    pub received: u64,
    pub late: u64,
    /// Packets the calls sent, and the worst lag of a send behind its slot.
    pub sent: u64,
    pub send_lag_max: Duration,
    /// Turnarounds measured (one per echoed utterance), sorted.
    pub turnarounds: Vec<Duration>,
    /// Calls that did not close with 1000 after `end`.
    pub unclean: usize,
    /// CPU time the daemon used per second of the step, in seconds (1.0 = one core busy).
    pub daemon_cpu: f64,
    /// The machine's one-minute load average at the end of the step.
    pub load: f64,
}

impl Step {
    pub fn late_share(&self) -> f64 {
        self.late as f64 / self.received.max(1) as f64
    }

    pub fn turnaround(&self, percentile: f64) -> Duration {
        if self.turnarounds.is_empty() {
            return Duration::ZERO;
        }
        let idx = ((self.turnarounds.len() - 1) as f64 * percentile / 100.0).round() as usize;
        self.turnarounds[idx]
    }
}

/// Everything the voice part measured.
pub struct VoiceResults {
    pub rss_before_idle_kib: u64,
    pub rss_idle_calls_kib: u64,
    pub steps: Vec<Step>,
    pub cycle: Duration,
    pub speech: Duration,
}

impl VoiceResults {
    /// The largest step with under 1 % late packets.
    pub fn carried(&self) -> Option<&Step> {
        self.steps
            .iter()
            .filter(|s| s.late_share() < LATE_LIMIT && s.unclean == 0)
            .max_by_key(|s| s.calls)
    }

    pub fn per_idle_call_bytes(&self) -> u64 {
        self.rss_idle_calls_kib
            .saturating_sub(self.rss_before_idle_kib)
            * 1024
            / IDLE_CALLS as u64
    }
}

/// The packets of one cycle, and the indexes after which the daemon's detector ends an
/// utterance (found by running the same decoder and detector here).
struct Script {
    packets: Vec<Bytes>,
    ends: Vec<usize>,
    speech: Duration,
}

impl Script {
    async fn new() -> anyhow::Result<Script> {
        let output = tokio::process::Command::new("espeak-ng")
            .args(["--stdout", UTTERANCE])
            .output()
            .await
            .context("the voice bench needs espeak-ng (apt-get install espeak-ng)")?;
        anyhow::ensure!(output.status.success(), "espeak-ng failed");
        let pcm = audio::from_wav(&output.stdout)?;
        let mut samples = audio::resample(&pcm, 16_000)?;
        let speech = Duration::from_millis(samples.len() as u64 / 16);
        // The echo starts after end_silence_ms and lasts the utterance (with pre-roll and
        // the trailing silence): wait that out, and a little more, before speaking again.
        let silence = speech + Duration::from_millis(2_000);
        samples.resize(samples.len() + silence.as_millis() as usize * 16, 0);
        samples.resize(samples.len().div_ceil(FRAME_SAMPLES) * FRAME_SAMPLES, 0);
        let mut encoder = Encoder::new(16_000, 5)?;
        let packets: Vec<Bytes> = samples
            .chunks(FRAME_SAMPLES)
            .map(|frame| encoder.encode(frame).map(Bytes::from))
            .collect::<Result<_, _>>()?;
        // The daemon hears the same packets from the start of each call: replay two cycles
        // through its decoder and detector, and keep the second cycle's ends.
        let config = VoiceConfig::default();
        let mut decoder = Decoder::new(16_000)?;
        let mut vad = Vad::new(config.min_speech_ms, config.end_silence_ms);
        let mut ends = Vec::new();
        for round in 0..2 {
            for (idx, packet) in packets.iter().enumerate() {
                let pcm = decoder.decode(packet)?.to_vec();
                let ended = vad
                    .push(&pcm)
                    .iter()
                    .any(|h| matches!(h, Heard::Utterance(_)));
                if ended && round == 1 {
                    ends.push(idx);
                }
            }
        }
        anyhow::ensure!(
            ends.len() == 1,
            "the detector should end one utterance per cycle, not {}",
            ends.len()
        );
        Ok(Script {
            packets,
            ends,
            speech,
        })
    }

    fn cycle(&self) -> Duration {
        FRAME * self.packets.len() as u32
    }
}

pub async fn measure(daemon: &Daemon, admin: &str, seconds: u64) -> anyhow::Result<VoiceResults> {
    let script = Arc::new(Script::new().await?);
    crate::progress_at(daemon, &format!("(g) voice: {IDLE_CALLS} idle calls"));
    let rss_before_idle_kib = daemon.rss_kib().context("reading the daemon's RSS")?;
    let mut idle = Vec::with_capacity(IDLE_CALLS);
    let mut conn = Conn::connect(daemon.addr).await?;
    for _ in 0..IDLE_CALLS {
        idle.push(open_call(&mut conn, daemon.addr, admin).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_calls_kib = daemon.rss_kib().context("reading the daemon's RSS")?;
    for socket in &mut idle {
        let end = Payload::Owned(br#"{"type":"end"}"#.to_vec());
        socket.write_frame(Frame::text(end)).await?;
    }
    drop(idle);
    wait_for_no_calls(daemon, admin).await?;

    let step_length = MIN_STEP.max(Duration::from_secs(seconds * 2));
    let mut steps = Vec::new();
    for calls in RAMP {
        crate::progress_at(
            daemon,
            &format!("(g) voice: {calls} full-duplex echo calls"),
        );
        let step = full_duplex(daemon, admin, &script, calls, step_length).await?;
        crate::progress(&format!(
            "{calls} calls: {} of {} packets late ({:.2} %), worst send lag {}, turnaround \
             p50 {} p99 {}, daemon CPU {:.2} cores, load average {:.1}",
            step.late,
            step.received,
            step.late_share() * 100.0,
            ms(step.send_lag_max),
            ms(step.turnaround(50.0)),
            ms(step.turnaround(99.0)),
            step.daemon_cpu,
            step.load,
        ));
        let over = step.late_share() >= LATE_LIMIT || step.unclean > 0;
        steps.push(step);
        wait_for_no_calls(daemon, admin).await?;
        if over {
            break;
        }
    }
    Ok(VoiceResults {
        rss_before_idle_kib,
        rss_idle_calls_kib,
        steps,
        cycle: script.cycle(),
        speech: script.speech,
    })
}

/// Runs `calls` calls for `length`, their starts spread over one cycle.
async fn full_duplex(
    daemon: &Daemon,
    admin: &str,
    script: &Arc<Script>,
    calls: usize,
    length: Duration,
) -> anyhow::Result<Step> {
    let mut conn = Conn::connect(daemon.addr).await?;
    let mut sockets = Vec::with_capacity(calls);
    for _ in 0..calls {
        sockets.push(open_call(&mut conn, daemon.addr, admin).await?);
    }
    let begin = Instant::now() + Duration::from_millis(200);
    let cpu_before = cpu_seconds(daemon.pid());
    let spread = script.cycle() / calls as u32;
    let mut tasks = tokio::task::JoinSet::new();
    for (idx, socket) in sockets.into_iter().enumerate() {
        let start = begin + spread * idx as u32;
        tasks.spawn(one_call(socket, script.clone(), start, length));
    }
    let mut step = Step {
        calls,
        received: 0,
        late: 0,
        sent: 0,
        send_lag_max: Duration::ZERO,
        turnarounds: Vec::new(),
        unclean: 0,
        daemon_cpu: 0.0,
        load: 0.0,
    };
    while let Some(done) = tasks.join_next().await {
        let call = done??;
        step.received += call.received;
        step.late += call.late;
        step.sent += call.sent;
        step.send_lag_max = step.send_lag_max.max(call.send_lag_max);
        step.turnarounds.extend(call.turnarounds);
        step.unclean += usize::from(!call.clean);
    }
    step.turnarounds.sort();
    let busy = begin.elapsed().as_secs_f64();
    step.daemon_cpu = (cpu_seconds(daemon.pid()) - cpu_before) / busy.max(0.001);
    step.load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Ok(step)
}

/// User and system CPU time of a process so far, in seconds (`/proc/PID/stat`, 100 ticks/s).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// What one call saw.
struct CallStats {
    received: u64,
    late: u64,
    sent: u64,
    send_lag_max: Duration,
    turnarounds: Vec<Duration>,
    clean: bool,
}

type Socket = fastwebsockets::WebSocket<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Sends the script in real time from `start` for `length`, hangs up, and reads everything
/// the daemon sent until its close.
async fn one_call(
    socket: Socket,
    script: Arc<Script>,
    start: Instant,
    length: Duration,
) -> anyhow::Result<CallStats> {
    let (mut reader, mut writer) = socket.split(tokio::io::split);
    let send_script = script.clone();
    let send = tokio::spawn(async move {
        let total = (length.as_millis() / FRAME.as_millis()) as usize;
        let mut ends_sent = Vec::new();
        let mut lag_max = Duration::ZERO;
        for idx in 0..total {
            let due = start + FRAME * idx as u32;
            tokio::time::sleep_until(due.into()).await;
            let position = idx % send_script.packets.len();
            let packet = send_script.packets[position].to_vec();
            writer
                .write_frame(Frame::binary(Payload::Owned(packet)))
                .await?;
            let now = Instant::now();
            lag_max = lag_max.max(now.saturating_duration_since(due));
            if send_script.ends.contains(&position) {
                ends_sent.push(now);
            }
        }
        let end = Payload::Owned(br#"{"type":"end"}"#.to_vec());
        writer.write_frame(Frame::text(end)).await?;
        anyhow::Ok((total as u64, lag_max, ends_sent, writer))
    });
    let mut arrivals = Vec::new();
    let mut clean = false;
    let mut ignore = |_: Frame<'_>| async { Ok::<_, fastwebsockets::WebSocketError>(()) };
    let read = async {
        while let Ok(frame) = reader.read_frame(&mut ignore).await {
            match frame.opcode {
                OpCode::Binary => arrivals.push(Instant::now()),
                OpCode::Close => {
                    clean = frame.payload.len() >= 2 && frame.payload[..2] == [0x03, 0xe8];
                    break;
                }
                _ => {}
            }
        }
    };
    let limit = length + Duration::from_secs(15) + start.saturating_duration_since(Instant::now());
    tokio::time::timeout(limit, read)
        .await
        .context("a call did not end after its hang-up")?;
    let (sent, send_lag_max, ends_sent, _writer) = send.await??;
    let (received, late) = lateness(&arrivals);
    let turnarounds = ends_sent
        .iter()
        .filter_map(|sent| {
            let first = arrivals.iter().find(|a| *a >= sent)?;
            let took = first.duration_since(*sent);
            (took < Duration::from_secs(1)).then_some(took)
        })
        .collect();
    Ok(CallStats {
        received,
        late,
        sent,
        send_lag_max,
        turnarounds,
        clean,
    })
}

/// Packets received and how many were late: in each run of echo, packet k is due 20 ms × k
/// after the run's first packet, and late when it arrives more than [`LATE_AFTER`] after that.
fn lateness(arrivals: &[Instant]) -> (u64, u64) {
    let mut late = 0;
    let mut run_start = None;
    let mut previous: Option<Instant> = None;
    let mut k = 0u32;
    for &at in arrivals {
        let new_run = previous.is_none_or(|p| at.duration_since(p) > RUN_GAP);
        if new_run {
            run_start = Some(at);
            k = 0;
        }
        let due = run_start.expect("set above") + FRAME * k;
        if at > due + LATE_AFTER {
            late += 1;
        }
        k += 1;
        previous = Some(at);
    }
    (arrivals.len() as u64, late)
}

/// `voice/start` as admin, then the socket with its ticket.
async fn open_call(conn: &mut Conn, addr: SocketAddr, admin: &str) -> anyhow::Result<Socket> {
    let body = json!({"sample_rate": 16_000});
    let started = conn
        .json(
            &Call::post("/api/agents/echo/voice/start", Some(admin), &body),
            StatusCode::CREATED,
        )
        .await?;
    let url = field(&started, "websocket_url")?;
    connect(addr, &url).await
}

async fn connect(addr: SocketAddr, path: &str) -> anyhow::Result<Socket> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    crate::conversation::handshake(stream, path, None)
        .await
        .context("the voice socket handshake")
}

/// Waits until `voice/status` lists no open call.
async fn wait_for_no_calls(daemon: &Daemon, admin: &str) -> anyhow::Result<()> {
    let mut conn = Conn::connect(daemon.addr).await?;
    let status = Call::get("/api/agents/echo/voice/status", Some(admin));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = conn.json(&status, StatusCode::OK).await?;
        let open = answer["sessions"]
            .as_array()
            .map_or(0, |s| s.iter().filter(|c| c["state"] != "ended").count());
        if open == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{open} voice calls still open 30 s after they hung up");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The voice rows of the table.
pub fn rows(results: &VoiceResults) -> Vec<Row> {
    let mut carried = Row::named("voice: full-duplex echo calls at < 1 % late packets");
    match results.carried() {
        Some(step) => {
            carried.rate = format!(
                "{} calls ({:.2} % late, {} packets)",
                step.calls,
                step.late_share() * 100.0,
                grouped(step.received)
            );
            carried.met = Some(step.calls >= 150);
        }
        None => {
            carried.rate = format!("< {} calls", RAMP[0]);
            carried.met = Some(false);
        }
    }
    carried.target = "≥ 150 calls".into();
    let mut turnaround = Row::named("voice: turnaround, utterance end → first echo packet");
    // At the lightest step: what the bridge adds, before the machine runs out of CPU (the
    // notes give every step).
    if let Some(step) = results.steps.first() {
        turnaround.rate = format!("at {} calls", step.calls);
        turnaround.p50 = ms(step.turnaround(50.0));
        turnaround.p99 = ms(step.turnaround(99.0));
        turnaround.target = "p99 ≤ 2 ms".into();
        turnaround.met = Some(step.turnaround(99.0) <= Duration::from_millis(2));
    }
    let mut idle = Row::named(format!("RSS per idle voice call ({IDLE_CALLS} calls)"));
    let per_call = results.per_idle_call_bytes();
    idle.rate = format!(
        "{} KB ({} → {})",
        per_call / 1024,
        megabytes(results.rss_before_idle_kib),
        megabytes(results.rss_idle_calls_kib)
    );
    idle.target = "≤ 256 KB".into();
    idle.met = Some(per_call <= 256 * 1024);
    vec![carried, turnaround, idle]
}

/// How the voice rows were measured, for the notes under the table.
pub fn notes(results: &VoiceResults) -> String {
    let steps: Vec<String> = results
        .steps
        .iter()
        .map(|s| {
            format!(
                "{} calls {:.2} % late (turnaround p50 {}, p99 {}; worst send lag {}; daemon \
                 CPU {:.2} cores = {:.1} ms per call-second; load average {:.1})",
                s.calls,
                s.late_share() * 100.0,
                ms(s.turnaround(50.0)),
                ms(s.turnaround(99.0)),
                ms(s.send_lag_max),
                s.daemon_cpu,
                s.daemon_cpu * 1000.0 / s.calls as f64,
                s.load
            )
        })
        .collect();
    format!(
        "Voice: daemon [voice] mode = \"echo\", 16 kHz, calls started by admin; every call \
         sends a 20 ms Opus packet every 20 ms for the whole step (a {:.1} s espeak-ng \
         utterance, then silence, in a {:.1} s cycle, starts spread over one cycle) and gets \
         each utterance back paced in real time. A received packet is late when it arrives more \
         than {} ms after its slot (20 ms × its place in its run of echo, from the run's first \
         packet). Turnaround: from sending the packet after which the daemon's detector ends \
         the utterance (found by running the same decoder and detector in the bench) to the \
         first echo packet arriving, over loopback. Ramp: {}. Idle calls: {IDLE_CALLS} calls \
         connected and silent, RSS read 0.5 s after the last one opened (in a full run the \
         daemon reuses memory freed by the steps before, so `BENCH_ONLY=voice`, on a fresh \
         daemon, gives the figure to go by).\n",
        results.speech.as_secs_f64(),
        results.cycle.as_secs_f64(),
        LATE_AFTER.as_millis(),
        steps.join("; ")
    )
}
