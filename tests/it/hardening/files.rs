//! Files the daemon and `outpost backup` make are private whatever the umask they run under.

use crate::support::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The built binary with `args`, run under `umask 000`.
fn under_open_umask(args: &[&std::ffi::OsStr]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("umask 000; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_outpost"))
        .args(args)
        .env_remove("OUTPOST_CONFIG")
        .env_remove("OUTPOST_ADMIN_PASSWORD")
        .env("OUTPOST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every file and directory under `dir` that anyone but the owner may use.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut open = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if mode(&path) & 0o077 != 0 {
            open.push(format!("{} {:o}", path.display(), mode(&path)));
        }
        if path.is_dir() {
            open.extend(open_to_others(&path));
        }
    }
    open
}

fn backup(data: &Path, file: &Path) {
    let status = under_open_umask(&[
        "backup".as_ref(),
        file.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ])
    .stderr(Stdio::piped())
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&status.stderr);
    assert!(
        status.status.success(),
        "backup to {}: {text}",
        file.display()
    );
}

#[tokio::test]
async fn the_store_backups_secrets_and_data_dir_are_private_under_umask_000() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state").join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let daemon = under_open_umask(&[
        "serve".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--listen".as_ref(),
        addr.to_string().as_ref(),
    ])
    .spawn()
    .unwrap();
    let daemon = Killed(daemon);
    let health = || build(hyper::Method::GET, "/healthz", None, None, &[]);
    eventually(Duration::from_secs(20), || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
    assert_eq!(send(addr, None, false, health()).await.status, 200);
    let online = dir.path().join("online.redb");
    let (data_dir, file) = (data.clone(), online.clone());
    tokio::task::spawn_blocking(move || backup(&data_dir, &file))
        .await
        .unwrap();
    drop(daemon);
    let offline = dir.path().join("offline.redb");
    backup(&data, &offline);

    assert_eq!(mode(&data), 0o700, "the data dir");
    assert_eq!(mode(&data.join("outpost.redb")), 0o600, "the store");
    assert_eq!(mode(&data.join("admin-password")), 0o600);
    assert_eq!(mode(&online), 0o600, "a backup through the daemon");
    assert_eq!(mode(&offline), 0o600, "a backup from the file");
    let open = open_to_others(&data);
    assert!(open.is_empty(), "open to others: {open:?}");
}
