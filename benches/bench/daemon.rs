//! The daemon under test: the real `outpost` binary as a child process with a temporary data
//! dir and config, stopped with SIGTERM (or killed) and cleaned up when done.

use crate::client::{Call, Conn};
use anyhow::{bail, Context};
use hyper::StatusCode;
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The password the first start gives `admin` (through `OUTPOST_ADMIN_PASSWORD`).
pub const ADMIN_PASSWORD: &str = "bench-password-1";
/// The password of every bench member; they use device tokens, so it is never checked.
const MEMBER_PASSWORD: &str = "bench-member-password";
/// The echo agent that takes x402 payments, settled through the bench's facilitator stub.
pub const PAID_AGENT: &str = "priced";
/// How long the daemon may take to answer `/healthz`.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the daemon may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running daemon; dropping it kills the process and removes the temp dir.
pub struct Daemon {
    pub addr: SocketAddr,
    config_path: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Daemon {
    /// Writes the config, starts `outpost serve` on an empty data dir (the first start creates
    /// `admin` with [`ADMIN_PASSWORD`]) and waits until `/healthz` answers. The `echo` agent is
    /// shared with `members`, who are added later by [`Daemon::restart_with_members`]; the
    /// paid agent settles through `facilitator_url`.
    pub async fn start(members: &[String], facilitator_url: &str) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("outpost-bench").tempdir()?;
        let addr = free_port()?;
        let config_path = dir.path().join("outpost.toml");
        std::fs::write(
            &config_path,
            config_text(addr, &dir.path().join("data"), members, facilitator_url),
        )?;
        let mut daemon = Daemon {
            addr,
            config_path,
            child: None,
            dir,
        };
        daemon.spawn()?;
        daemon.wait_healthy().await?;
        Ok(daemon)
    }

    /// A daemon of its own for one run: the bench's config with no members, a paid agent whose
    /// facilitator is never asked, and `extra` (a `[voice]` section) instead of the echo one.
    pub async fn start_with(extra: &str) -> anyhow::Result<Daemon> {
        let dir = tempfile::Builder::new().prefix("outpost-bench").tempdir()?;
        let addr = free_port()?;
        let config_path = dir.path().join("outpost.toml");
        let config = config_text(addr, &dir.path().join("data"), &[], "http://127.0.0.1:9");
        let mut config = config.replacen(ECHO_VOICE, "", 1);
        config.push_str(extra);
        std::fs::write(&config_path, config)?;
        let mut daemon = Daemon {
            addr,
            config_path,
            child: None,
            dir,
        };
        daemon.spawn()?;
        daemon.wait_healthy().await?;
        Ok(daemon)
    }

    /// Stops the daemon, adds `members` with `outpost user add`, and starts it again on the
    /// same data dir and address (tokens issued before stay valid).
    ///
    /// Members are added offline so that their argon2 hashes (19 MiB each) run in short-lived
    /// processes: glibc keeps such freed buffers in the daemon, one per malloc arena, and the
    /// RSS measured under chat load would mostly be left-over hashing memory.
    pub async fn restart_with_members(&mut self, members: &[String]) -> anyhow::Result<()> {
        self.terminate().await?;
        for member in members {
            add_user(&self.config_path, member, MEMBER_PASSWORD).await?;
        }
        self.spawn()?;
        self.wait_healthy().await
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))?;
        let child = outpost(&self.config_path)
            .arg("serve")
            .env("OUTPOST_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the outpost binary")?;
        self.child = Some(child);
        Ok(())
    }

    async fn wait_healthy(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child_mut()?.try_wait()? {
                bail!("the daemon exited with {status}:\n{}", self.log_tail());
            }
            if let Ok(mut conn) = Conn::connect(self.addr).await {
                if let Ok((StatusCode::OK, _)) = conn.send(&Call::get("/healthz", None)).await {
                    return Ok(());
                }
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "no /healthz answer within {START_TIMEOUT:?}:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn child_mut(&mut self) -> anyhow::Result<&mut Child> {
        self.child.as_mut().context("the daemon was stopped")
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The daemon's resident set size in KiB (`VmRSS`), if it is still running.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// The daemon's thread count, if it is still running.
    pub fn threads(&self) -> Option<u64> {
        status_field(self.pid(), "Threads:")
    }

    /// Bytes the daemon has caused to be written to storage (`write_bytes` of
    /// `/proc/PID/io`), if it is still running.
    pub fn written_bytes(&self) -> Option<u64> {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.pid())).ok()?;
        let line = io.lines().find(|l| l.starts_with("write_bytes:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The size of the daemon's store file in bytes.
    pub fn store_bytes(&self) -> u64 {
        let path = self
            .dir
            .path()
            .join("data")
            .join(outpost::data_dir::STORE_FILE);
        std::fs::metadata(path).map_or(0, |m| m.len())
    }

    /// Stops the daemon with SIGTERM, waits for it, and removes the temp dir.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.terminate().await
    }

    /// Stops the daemon cleanly and keeps its files until it is dropped.
    pub async fn stop_in_place(&mut self) -> anyhow::Result<()> {
        self.terminate().await
    }

    /// Sends SIGTERM and waits for the exit; kills the daemon if it takes too long.
    async fn terminate(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let asked = Instant::now();
        while child.try_wait()?.is_none() {
            if asked.elapsed() > STOP_TIMEOUT {
                child.kill()?;
                child.wait()?;
                bail!("the daemon ignored SIGTERM for {STOP_TIMEOUT:?} and was killed");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// The end of the daemon's log, to explain a failure.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Reached on an early error: never leave a daemon running behind the bench.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The outpost binary with the bench's config and no `OUTPOST_*` overrides from outside.
fn outpost(config_path: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outpost"));
    command
        .arg("--config")
        .arg(config_path)
        .env_remove("OUTPOST_CONFIG")
        .env_remove("OUTPOST_LISTEN")
        .env_remove("OUTPOST_DATA_DIR")
        .env_remove("OUTPOST_LOG")
        .env_remove("OUTPOST_ADMIN_PASSWORD");
    command
}

/// `outpost user add NAME --password-stdin` (the daemon must be stopped), off the runtime.
async fn add_user(config_path: &Path, username: &str, password: &str) -> anyhow::Result<()> {
    let mut command = outpost(config_path);
    command
        .args(["user", "add", username, "--password-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let input = format!("{password}\n");
    let output = tokio::task::spawn_blocking(move || {
        let mut child = command.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes())?;
        }
        child.wait_with_output()
    })
    .await?
    .context("running outpost user add")?;
    if !output.status.success() {
        bail!(
            "outpost user add {username} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A loopback address with a port that was free a moment ago.
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// The bench's voice section: echo calls, as many as the ramp opens.
const ECHO_VOICE: &str = "[voice]
mode = \"echo\"
max_sessions = 4000
max_per_user = 4000
";

fn config_text(
    addr: SocketAddr,
    data_dir: &Path,
    users: &[String],
    facilitator_url: &str,
) -> String {
    let shared: Vec<String> = users.iter().map(|u| format!("{u:?}")).collect();
    format!(
        r#"[server]
listen = ["{addr}"]
# Every load client is on 127.0.0.1.
max_connections_per_client = 0

[store]
data_dir = {data_dir:?}

[log]
level = "warn"

[pool]
workers = 8
queue_capacity = 1000000

{ECHO_VOICE}
[agents.echo]
engine = {{ kind = "echo", delay_ms = 0 }}
max_concurrent = 128
shared_with = [{shared}]

[agents.bulk]
engine = {{ kind = "echo", delay_ms = 0 }}
max_concurrent = 8
queue_capacity = 100000

[agents.parked]
engine = {{ kind = "echo", delay_ms = 0 }}
queue_capacity = 100000

[agents.{PAID_AGENT}]
engine = {{ kind = "echo", delay_ms = 0 }}
max_concurrent = 128

[agents.{PAID_AGENT}.paid]
price = "10000"
network = "eip155:84532"
pay_to = "{pay_to}"
description = "One chat turn with the bench's echo"
max_timeout_seconds = 300
facilitator_url = "{facilitator_url}"
"#,
        data_dir = data_dir.to_string_lossy(),
        shared = shared.join(", "),
        pay_to = crate::paid::PAYEE,
    )
}

/// `VmRSS` of a process in KiB, read from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// The first number on the line of `/proc/PID/status` that starts with `key`.
fn status_field(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
