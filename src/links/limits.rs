//! Rate limits of the visitor routes: a sliding one-minute window per key (a client address
//! or a link), and the rule that decides which address a request comes from.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The window every limit counts over.
const WINDOW: Duration = Duration::from_secs(60);
/// Keys tracked at once. Beyond this, idle keys are dropped; if every key is busy, new keys
/// are refused until the window moves on (a flood from many addresses is held, not stored).
const MAX_TRACKED_KEYS: usize = 20_000;
/// Every this many hits, keys whose window is empty are dropped.
const PRUNE_EVERY: u64 = 4096;

/// Hits per key in the last minute.
#[derive(Default)]
pub struct RateLimiter {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    hits: HashMap<String, VecDeque<Instant>>,
    calls: u64,
}

impl State {
    fn prune(&mut self, now: Instant) {
        self.hits
            .retain(|_, hits| hits.back().is_some_and(|t| now.duration_since(*t) < WINDOW));
    }
}

impl RateLimiter {
    /// Counts one hit for `key` if fewer than `per_minute` fell in the last minute; otherwise
    /// returns the seconds until the next one is allowed (at least 1).
    pub fn hit(&self, key: &str, per_minute: u32, now: Instant) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.calls += 1;
        if state.calls % PRUNE_EVERY == 0 {
            state.prune(now);
        }
        if !state.hits.contains_key(key) && state.hits.len() >= MAX_TRACKED_KEYS {
            state.prune(now);
            if state.hits.len() >= MAX_TRACKED_KEYS {
                return Err(WINDOW.as_secs());
            }
        }
        let hits = state.hits.entry(key.to_string()).or_default();
        while hits
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            hits.pop_front();
        }
        if hits.len() >= per_minute as usize {
            let oldest = hits.front().copied().unwrap_or(now);
            let wait = WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(wait.as_secs_f64().ceil().max(1.0) as u64);
        }
        hits.push_back(now);
        Ok(())
    }
}

/// The client address of a request from `peer`. `X-Forwarded-For` counts only when the peer
/// is a trusted proxy; then the header is read from the right, skipping trusted proxies, and
/// the first other address is the client. A malformed entry stops the walk at the proxy
/// that passed it on.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|t| t.to_canonical() == *ip);
    let Some(header) = forwarded_for.filter(|_| is_trusted(&peer)) else {
        return peer;
    };
    let mut client = peer;
    for entry in header.rsplit(',') {
        let Some(ip) = parse_hop(entry) else {
            return client;
        };
        client = ip;
        if !is_trusted(&ip) {
            return ip;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, perhaps bracketed or with a port.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(addr.ip().to_canonical());
    }
    entry
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inner| inner.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// The key a client address is limited under: IPv6 clients by their /64, since one host
/// usually holds a whole /64.
pub fn client_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(peer: &str, header: Option<&str>, trusted: &[&str], expected: &str) {
        let trusted: Vec<IpAddr> = trusted.iter().map(|t| t.parse().unwrap()).collect();
        let got = client_ip(peer.parse().unwrap(), header, &trusted);
        assert_eq!(got.to_string(), expected, "{peer} {header:?} {trusted:?}");
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        check("127.0.0.1", None, &[], "127.0.0.1");
        check("127.0.0.1", Some("127.0.0.9"), &[], "127.0.0.1");
        check("127.0.0.1", Some("127.0.0.9"), &["127.0.0.2"], "127.0.0.1");
        check("127.0.0.1", Some("127.0.0.9"), &["127.0.0.1"], "127.0.0.9");
        check(
            "127.0.0.1",
            Some("127.0.0.8, 127.0.0.9"),
            &["127.0.0.1"],
            "127.0.0.9",
        );
        check(
            "127.0.0.1",
            Some("127.0.0.8, 127.0.0.9, 127.0.0.2"),
            &["127.0.0.1", "127.0.0.2"],
            "127.0.0.9",
        );
        check("127.0.0.1", Some("garbage"), &["127.0.0.1"], "127.0.0.1");
        check(
            "127.0.0.1",
            Some("127.0.0.9, garbage, 127.0.0.2"),
            &["127.0.0.1", "127.0.0.2"],
            "127.0.0.2",
        );
        check(
            "127.0.0.1",
            Some("127.0.0.2"),
            &["127.0.0.1", "127.0.0.2"],
            "127.0.0.2",
        );
        check("127.0.0.1", Some("[::1]:4711"), &["127.0.0.1"], "::1");
        check(
            "127.0.0.1",
            Some("127.0.0.9:4711"),
            &["127.0.0.1"],
            "127.0.0.9",
        );
        check(
            "::ffff:127.0.0.1",
            Some("127.0.0.9"),
            &["127.0.0.1"],
            "127.0.0.9",
        );
    }

    #[test]
    fn a_window_holds_per_minute_hits_per_key() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert_eq!(limiter.hit("a", 2, start), Ok(()));
        assert_eq!(limiter.hit("a", 2, start + Duration::from_secs(10)), Ok(()));
        assert_eq!(limiter.hit("b", 2, start), Ok(()));
        assert_eq!(
            limiter.hit("a", 2, start + Duration::from_secs(20)),
            Err(40)
        );
        assert_eq!(limiter.hit("a", 2, start + Duration::from_secs(60)), Ok(()));
        assert_eq!(limiter.hit("a", 2, start + Duration::from_secs(61)), Err(9));
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a: IpAddr = "::1".parse().unwrap();
        assert_eq!(client_key(a), "0:0:0:0::/64");
        let v4: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(client_key(v4), "127.0.0.1");
    }
}
