//! Where log lines go: the journal with structured fields when systemd connected stderr to it
//! (`JOURNAL_STREAM` names stderr's device and inode), JSON lines when asked for, else text on
//! stderr.

use crate::config::{Config, LogFormat};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// A log destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LogTarget {
    Journal,
    Json,
    Text,
}

/// JSON when the configuration or `--log-format` asks for it; the journal when
/// `journal_stream` (`JOURNAL_STREAM`, "DEV:INO") names `stderr` (its device and inode);
/// text otherwise.
pub fn log_target(
    format: LogFormat,
    journal_stream: Option<&str>,
    stderr: Option<(u64, u64)>,
) -> LogTarget {
    if format == LogFormat::Json {
        return LogTarget::Json;
    }
    let named = journal_stream.and_then(|text| {
        let (dev, ino) = text.split_once(':')?;
        Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
    });
    match (named, stderr) {
        (Some(named), Some(stderr)) if named == stderr => LogTarget::Journal,
        _ => LogTarget::Text,
    }
}

/// Stderr's device and inode, to compare with `JOURNAL_STREAM`.
fn stderr_identity() -> Option<(u64, u64)> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let metadata = std::fs::File::from(fd).metadata().ok()?;
    Some((metadata.dev(), metadata.ino()))
}

/// Installs the global subscriber for `config` (`OUTPOST_LOG` overrides the level).
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log_level));
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    let target = log_target(
        config.log_format,
        journal_stream.as_deref(),
        stderr_identity(),
    );
    if target == LogTarget::Journal {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_syslog_identifier("outpost".into())
                .with_field_prefix(Some("OUTPOST".into()));
            tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .init();
            return;
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match target {
        LogTarget::Json => builder.json().init(),
        _ => builder.init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_only_when_stderr_is_the_stream_systemd_named() {
        let text = LogFormat::Text;
        assert_eq!(
            log_target(text, Some("8:42"), Some((8, 42))),
            LogTarget::Journal
        );
        assert_eq!(
            log_target(text, Some("8:42"), Some((8, 43))),
            LogTarget::Text
        );
        assert_eq!(log_target(text, None, Some((8, 42))), LogTarget::Text);
        assert_eq!(
            log_target(text, Some("nonsense"), Some((8, 42))),
            LogTarget::Text
        );
        assert_eq!(
            log_target(LogFormat::Json, Some("8:42"), Some((8, 42))),
            LogTarget::Json
        );
    }
}
