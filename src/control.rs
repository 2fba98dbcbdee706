//! The control socket, `<data_dir>/control.sock` (mode 0600: the daemon's user and root),
//! through which `outpost backup` gets a consistent copy of the store from the running
//! daemon, which holds the file, and `outpost status` the store's health. One request per
//! connection: the line `backup`, answered by `ok <bytes>` and the bytes of the copy, or by
//! `error <message>`; the line `status`, answered by `ok` and `key value` lines.

use crate::shutdown::Shutdown;
use crate::store::Store;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

/// Binds the socket (replacing one a crashed daemon left: the store lock says this daemon is
/// the only one on the data dir) and answers requests until `shutdown`.
pub(crate) fn spawn(
    data_dir: &Path,
    store: Store,
    shutdown: Shutdown,
) -> io::Result<JoinHandle<()>> {
    let path = crate::data_dir::control_socket(data_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    crate::data_dir::narrow(&path)?;
    let data_dir = data_dir.to_path_buf();
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        if let Err(err) = answer(stream, &store, &data_dir).await {
                            tracing::warn!(cause = %err, "control request failed");
                        }
                    }
                    Err(err) => tracing::warn!(cause = %err, "control accept failed"),
                },
                _ = shutdown.wait() => break,
            }
        }
        let _ = std::fs::remove_file(&path);
    }))
}

async fn answer(stream: UnixStream, store: &Store, data_dir: &Path) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    if line.trim() == "status" {
        return write.write_all(status(store).as_bytes()).await;
    }
    if line.trim() != "backup" {
        let message = format!("error unknown request {:?}\n", line.trim());
        return write.write_all(message.as_bytes()).await;
    }
    let copy = crate::data_dir::backup_copy(data_dir);
    let result = store.backup_to(&copy).await;
    let outcome = match result {
        Ok(backup) => {
            tracing::info!(tables = backup.tables, rows = backup.rows, "backup taken");
            send_file(&copy, &mut write).await
        }
        Err(err) => {
            let message = format!("error {err}\n");
            write.write_all(message.as_bytes()).await
        }
    };
    let _ = tokio::fs::remove_file(&copy).await;
    outcome
}

/// The store's health as `key value` lines.
fn status(store: &Store) -> String {
    let health = store.health();
    let counts = health.counts();
    let file_bytes = std::fs::metadata(store.path()).map_or(0, |m| m.len());
    let mut out = String::from("ok\n");
    out.push_str(&format!("state {}\n", health.state().as_str()));
    out.push_str(&format!("file_bytes {file_bytes}\n"));
    if let Some(free) = health.free_bytes() {
        out.push_str(&format!("free_bytes {free}\n"));
    }
    if let Some(since) = health.unwritable_for() {
        out.push_str(&format!("unwritable_seconds {}\n", since.as_secs()));
    }
    out.push_str(&format!("refused_writes {}\n", counts.refused));
    out.push_str(&format!("io_errors {}\n", counts.io_errors));
    out.push_str(&format!("reopened {}\n", counts.reopened));
    out
}

/// Asks the daemon serving `data_dir` for its store's health: `key value` pairs, or None
/// when no daemon answers on the socket.
pub async fn request_status(data_dir: &Path) -> io::Result<Option<Vec<(String, String)>>> {
    let Ok(stream) = UnixStream::connect(crate::data_dir::control_socket(data_dir)).await else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    write.write_all(b"status\n").await?;
    let mut text = String::new();
    BufReader::new(read).read_to_string(&mut text).await?;
    let mut lines = text.lines();
    if lines.next() != Some("ok") {
        return Err(invalid(text.trim()));
    }
    let pairs = lines
        .filter_map(|line| line.split_once(' '))
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    Ok(Some(pairs))
}

async fn send_file(path: &Path, write: &mut (impl AsyncWriteExt + Unpin)) -> io::Result<()> {
    let mut file = tokio::fs::File::open(path).await?;
    let length = file.metadata().await?.len();
    write.write_all(format!("ok {length}\n").as_bytes()).await?;
    tokio::io::copy(&mut file, write).await?;
    write.shutdown().await
}

/// Asks the daemon serving `data_dir` for a backup and writes it to `target`; returns its
/// size, or None when no daemon answers on the socket.
pub async fn request_backup(data_dir: &Path, target: &Path) -> io::Result<Option<u64>> {
    let Ok(stream) = UnixStream::connect(crate::data_dir::control_socket(data_dir)).await else {
        return Ok(None);
    };
    let (read, mut write) = stream.into_split();
    write.write_all(b"backup\n").await?;
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let line = line.trim_end();
    let length: u64 = match line.strip_prefix("ok ") {
        Some(length) => length.parse().map_err(|_| invalid(line))?,
        None => {
            let message = line.strip_prefix("error ").unwrap_or(line);
            return Err(io::Error::other(format!("the daemon refused: {message}")));
        }
    };
    let partial = PathBuf::from(format!("{}.partial", target.display()));
    // A backup holds every account's hash and every conversation: owner only, whatever the umask.
    crate::data_dir::make_private(&partial)?;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&partial)
        .await?;
    let copied = tokio::io::copy(&mut (&mut reader).take(length), &mut file).await?;
    if copied != length {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(invalid("the backup ended early"));
    }
    file.sync_all().await?;
    tokio::fs::rename(&partial, target).await?;
    Ok(Some(length))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("control socket: {what}"),
    )
}
