//! The documented range of every number a client or the configuration file sets. Each one is
//! checked before anything is stored or built, so no value can make a constructor panic, now
//! or at the next start (`Semaphore::new` panics above 2^61 permits; a shift or a sum of
//! milliseconds overflows).

use serde::de::IgnoredAny;
use serde::Deserialize;

/// An inclusive range of whole numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub min: u64,
    pub max: u64,
}

impl Range {
    pub const fn new(min: u64, max: u64) -> Range {
        Range { min, max }
    }

    pub fn contains(self, value: u64) -> bool {
        (self.min..=self.max).contains(&value)
    }

    /// `value` when it is in the range, else the message that names `field` and the range.
    pub fn check(self, field: &str, value: u64) -> Result<u64, String> {
        if self.contains(value) {
            Ok(value)
        } else {
            Err(self.message(field))
        }
    }

    /// `value` (any unsigned integer) when it is in the range.
    pub fn check_usize(self, field: &str, value: usize) -> Result<usize, String> {
        let checked = u64::try_from(value).map_err(|_| self.message(field))?;
        self.check(field, checked).map(|v| v as usize)
    }

    /// "FIELD must be a whole number from MIN to MAX".
    pub fn message(self, field: &str) -> String {
        format!(
            "{field} must be a whole number from {} to {}",
            self.min, self.max
        )
    }
}

/// Run slots of one agent (`max_concurrent`).
pub const AGENT_MAX_CONCURRENT: Range = Range::new(1, 1024);
/// Tasks that may wait for one agent (`queue_capacity`).
pub const AGENT_QUEUE_CAPACITY: Range = Range::new(1, 100_000);
/// An agent's run-time limit (`timeout`), and a task's `timeout_seconds`, in seconds.
pub const AGENT_TIMEOUT_SECONDS: Range = Range::new(1, 7 * 86_400);
/// The echo engine's pause between words (`delay_ms`).
pub const ECHO_DELAY_MS: Range = Range::new(0, 60_000);
/// How long `POST /task` waits for its result (`wait_seconds`).
pub const TASK_WAIT_SECONDS: Range = Range::new(0, 600);
/// Messages per minute through one public link (`rate_limit_per_minute`).
pub const LINK_RATE_PER_MINUTE: Range = Range::new(1, 10_000);
/// Messages one visitor session of a link may send (`max_messages_per_session`).
pub const LINK_MESSAGES_PER_SESSION: Range = Range::new(1, 1_000_000);

/// `pool.workers`.
pub const POOL_WORKERS: Range = Range::new(1, 1024);
/// `pool.queue_capacity`.
pub const POOL_QUEUE_CAPACITY: Range = Range::new(1, 1_000_000);
/// `server.max_connections`.
pub const MAX_CONNECTIONS: Range = Range::new(1, 1_000_000);
/// `server.max_connections_per_client` (0: no such cap).
pub const MAX_CONNECTIONS_PER_CLIENT: Range = Range::new(0, 1_000_000);
/// `server.max_body_bytes` (1 GiB at most).
pub const MAX_BODY_BYTES: Range = Range::new(1, 1 << 30);
/// `server.header_timeout_s`.
pub const HEADER_TIMEOUT_SECONDS: Range = Range::new(1, 3_600);
/// `server.shutdown_timeout_s`.
pub const SHUTDOWN_TIMEOUT_SECONDS: Range = Range::new(0, 3_600);
/// `store.cache_mb` (64 GiB at most).
pub const CACHE_MB: Range = Range::new(1, 65_536);
/// `store.write_reserve_mb` (0: write until the disk itself refuses).
pub const WRITE_RESERVE_MB: Range = Range::new(0, 65_536);
/// `store.min_free_mb` (0: never warn).
pub const MIN_FREE_MB: Range = Range::new(0, 1_048_576);
/// `auth.token_ttl`, in seconds (a year and a day at most).
pub const TOKEN_TTL_SECONDS: Range = Range::new(1, 366 * 86_400);
/// `auth.login_attempts_per_minute`.
pub const LOGIN_ATTEMPTS_PER_MINUTE: Range = Range::new(1, 10_000);
/// `public.requests_per_minute_per_ip`.
pub const REQUESTS_PER_MINUTE_PER_IP: Range = Range::new(1, 1_000_000);
/// `voice.max_sessions`, `voice.max_per_user`.
pub const VOICE_CALLS: Range = Range::new(1, 10_000);
/// `voice.min_speech_ms`, `voice.end_silence_ms`, `voice.barge_in_ms`.
pub const VOICE_SPEECH_MS: Range = Range::new(0, 60_000);
/// `voice.max_duration`, `voice.idle_timeout`, in seconds (a day at most).
pub const VOICE_DURATION_SECONDS: Range = Range::new(1, 86_400);
/// `agents.NAME.paid.settle_timeout_s`, `verify_timeout_s`.
pub const PAID_CALL_TIMEOUT_SECONDS: Range = Range::new(1, 600);
/// `agents.NAME.paid.unverified_turns_per_minute`.
pub const UNVERIFIED_TURNS_PER_MINUTE: Range = Range::new(1, 10_000);
/// `server.body_timeout_s`, `server.write_timeout_s`.
pub const IO_TIMEOUT_SECONDS: Range = Range::new(1, 3_600);
/// `auth.password_hash_threads` (each hash takes 46 MiB while it runs).
pub const PASSWORD_HASH_THREADS: Range = Range::new(1, 64);
/// `auth.password_hash_queue`.
pub const PASSWORD_HASH_QUEUE: Range = Range::new(1, 10_000);

/// A number as a client wrote it, whatever its sign, size or type, so that the range check
/// (not the JSON decoder) answers and can name the field.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(untagged)]
pub enum Number {
    Whole(u64),
    Signed(i64),
    Real(f64),
    Other(IgnoredAny),
}

impl Number {
    /// The value when it is a whole number in `range`.
    pub fn within(self, field: &str, range: Range) -> Result<u64, String> {
        match self {
            Number::Whole(value) => range.check(field, value),
            Number::Real(value) if value.fract() == 0.0 && (0.0..=1e15).contains(&value) => {
                range.check(field, value as u64)
            }
            _ => Err(range.message(field)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: Result<u64, ()>) {
        let number: Number = serde_json::from_str(json).unwrap();
        let got = number.within("n", Range::new(1, 1024)).map_err(|m| {
            assert_eq!(m, "n must be a whole number from 1 to 1024");
        });
        assert_eq!(got, expected, "{json}");
    }

    #[test]
    fn numbers_of_every_shape() {
        check("1", Ok(1));
        check("1024", Ok(1024));
        check("2.0", Ok(2));
        for bad in [
            "0",
            "1025",
            "-1",
            "2305843009213693952",
            "18446744073709551615",
            "1e308",
            "-1e308",
            "1.5",
            "99999999999999999999999",
            "\"5\"",
            "null",
            "true",
            "[1]",
        ] {
            check(bad, Err(()));
        }
    }
}
