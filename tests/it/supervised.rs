//! The daemon binary as a child of a stand-in service manager: a `NOTIFY_SOCKET` datagram
//! socket the test owns, signals, a configuration file the test rewrites, and the log kept in
//! a file for assertions.

use crate::support::*;
use rustix::process::{kill_process, Pid, Signal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::UnixDatagram;

/// A datagram socket standing in for systemd's notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    pub path: PathBuf,
}

impl NotifySocket {
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        NotifySocket { socket, path }
    }

    /// The next message, or None after `limit`.
    pub async fn next(&self, limit: Duration) -> Option<String> {
        let mut buffer = vec![0u8; 4096];
        match tokio::time::timeout(limit, self.socket.recv(&mut buffer)).await {
            Ok(Ok(n)) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
            _ => None,
        }
    }

    /// Messages until one has the line `line` (that one included); fails after `limit`.
    pub async fn until(&self, line: &str, limit: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(message) = self.next(left).await else {
                panic!("no {line:?} within {limit:?}; got {seen:?}");
            };
            let done = message.lines().any(|l| l == line);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `outpost serve --config FILE` with a clean environment and the notify socket set.
pub fn serve_command(config: &Path, notify: &NotifySocket, log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_outpost"));
    command.args(["serve", "--config"]).arg(config);
    clean_env(&mut command);
    command
        .env("NOTIFY_SOCKET", &notify.path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    command
}

/// Takes out what the environment of the test could leak into the daemon, and sets the admin
/// password and the log level.
pub fn clean_env(command: &mut Command) {
    for key in [
        "OUTPOST_CONFIG",
        "OUTPOST_LISTEN",
        "OUTPOST_DATA_DIR",
        "JOURNAL_STREAM",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ] {
        command.env_remove(key);
    }
    command
        .env("OUTPOST_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("OUTPOST_LOG", "info");
}

/// A running daemon process; killed when dropped.
pub struct Supervised {
    pub child: Child,
    pub log: PathBuf,
}

impl Supervised {
    pub fn spawn(mut command: Command, log: &Path) -> Supervised {
        Supervised {
            child: command.spawn().expect("starting outpost"),
            log: log.to_path_buf(),
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.child), signal).expect("signalling the daemon");
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit and says whether it exited cleanly.
    pub async fn exited(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still running after {limit:?}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one plain HTTP request to `addr`.
pub async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    send(
        addr,
        None,
        false,
        build(hyper::Method::GET, path, token, None, &[]),
    )
    .await
}
