//! The daemon as a child process of the harness: started on a free loopback port with a
//! config file and data dir, ready once `/readyz` answers, killed with SIGKILL, its RSS read
//! from `/proc`. Its log (warnings and worse) goes to `<dir>/daemon-N.log`.

use crate::client::{once, Call};
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The first admin's password in every data dir the harness makes.
pub const ADMIN_PASSWORD: &str = "admin-password-for-reliability";

/// How long a start may take before it counts as a failure.
const START_LIMIT: Duration = Duration::from_secs(60);

pub struct Daemon {
    child: Child,
    pub addr: SocketAddr,
    /// From spawn to the first `200` of `/readyz`.
    pub start_time: Duration,
}

/// Where and how to run it.
pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    /// Runs the daemon with this soft `RLIMIT_NOFILE` (as a login shell would give it).
    pub soft_nofile: Option<u64>,
    starts: u32,
}

impl Setup {
    /// A config file with `toml` and a data dir, both under `dir`.
    pub fn new(dir: &Path, toml: &str) -> anyhow::Result<Setup> {
        let config = dir.join("outpost.toml");
        std::fs::write(&config, toml)?;
        Ok(Setup {
            dir: dir.to_path_buf(),
            config,
            soft_nofile: None,
            starts: 0,
        })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the daemon and waits until it is ready.
    pub async fn start(&mut self) -> anyhow::Result<Daemon> {
        let addr = free_port()?;
        self.starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("daemon-{}.log", self.starts)))?;
        let binary = env!("CARGO_BIN_EXE_outpost");
        let mut command = match self.soft_nofile {
            Some(limit) => {
                let mut shell = Command::new("/bin/sh");
                shell
                    .arg("-c")
                    .arg(format!("ulimit -Sn {limit} && exec \"$0\" \"$@\""))
                    .arg(binary);
                shell
            }
            None => Command::new(binary),
        };
        command
            .args(["serve", "--config"])
            .arg(&self.config)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(["--listen", &addr.to_string()])
            .env("OUTPOST_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("OUTPOST_LOG", "warn")
            // As the systemd unit runs it.
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let started = Instant::now();
        let mut child = command.spawn().context("spawning the daemon")?;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "the daemon exited during start ({status}); see {}",
                    self.dir.display()
                );
            }
            if let Ok(reply) = once(addr, &Call::get("/readyz", None)).await {
                if reply.status == 200 {
                    break;
                }
            }
            if started.elapsed() > START_LIMIT {
                let _ = child.kill();
                bail!("the daemon was not ready within {START_LIMIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Daemon {
            child,
            addr,
            start_time: started.elapsed(),
        })
    }
}

impl Daemon {
    /// `kill -9`, and waits until the process is gone.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident set size in bytes, from `/proc/PID/status`.
    pub fn rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .context("no VmRSS")?;
        Ok(kib * 1024)
    }

    /// Logs in and returns the access token.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<String> {
        let body = serde_json::json!({"username": username, "password": password});
        let reply = once(self.addr, &Call::post("/api/token", None, &body)).await?;
        anyhow::ensure!(reply.status == 200, "login of {username}: {}", reply.status);
        crate::client::text(&reply.json()?, "access_token")
    }

    pub async fn admin(&self) -> anyhow::Result<String> {
        self.login("admin", ADMIN_PASSWORD).await
    }

    /// Creates `username` (as admin) and logs in as them.
    pub async fn user(&self, admin: &str, username: &str) -> anyhow::Result<String> {
        let password = format!("{username}-password");
        let body = serde_json::json!({"username": username, "password": password});
        let reply = once(self.addr, &Call::post("/api/users", Some(admin), &body)).await?;
        anyhow::ensure!(reply.status == 201, "creating {username}: {}", reply.status);
        self.login(username, &password).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on (for the moment).
fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A small xorshift generator: the harness's randomness, reproducible from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// A seed from the clock, unless `OUTPOST_RELIABILITY_SEED` gives one.
    pub fn seed() -> u64 {
        std::env::var("OUTPOST_RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            })
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
