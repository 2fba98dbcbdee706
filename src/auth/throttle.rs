//! The login throttle: attempts per (account, address) and per address in a sliding minute,
//! reserved before the password is hashed, in a table bounded in bytes.
//!
//! An attempt is counted when it starts, not when its hash says no: of N concurrent wrong
//! passwords from one address at most the limit are hashed, the rest are refused at once. A
//! good login takes its own attempt back and clears that account's failures at that address;
//! the address keeps its other failures, so one valid account does not buy an address more
//! guesses at the others. An account under attack from one address can still be logged into
//! from any other. IPv6 addresses count by their /64 (one host's usual allocation).
//!
//! The table is bounded in bytes (`TABLE_BYTES`, about 6,500 entries at their largest). Past
//! the budget, expired entries go first, then those whose latest attempt is oldest: filling it
//! to evict someone's count takes thousands of addresses in a minute, each allowed only the
//! limit; the alternative, refusing new entries, would let the same flood lock everyone out.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The sliding window attempts are counted over.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The failure table's budget: past it, expired entries go, then the stalest ones.
pub const TABLE_BYTES: usize = 2 * 1024 * 1024;
/// What one entry costs besides its username and its attempts: the map slot, the key's
/// string header and address, the queue's header.
const ENTRY_OVERHEAD: usize = 96;
const ATTEMPT_BYTES: usize = std::mem::size_of::<Instant>();

/// An address as the throttle counts it: IPv4 (or IPv4-mapped IPv6) whole, IPv6 by its /64.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct Net(IpAddr);

impl Net {
    pub fn of(ip: IpAddr) -> Net {
        match ip {
            IpAddr::V4(_) => Net(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Net(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                    Net(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum Key {
    Pair(String, Net),
    Addr(Net),
}

impl Key {
    fn bytes(&self) -> usize {
        match self {
            Key::Pair(name, _) => ENTRY_OVERHEAD + name.len(),
            Key::Addr(_) => ENTRY_OVERHEAD,
        }
    }
}

#[derive(Default)]
struct Table {
    entries: HashMap<Key, VecDeque<Instant>>,
    /// What `entries` costs, by `Key::bytes` and `ATTEMPT_BYTES` per attempt.
    bytes: usize,
}

impl Table {
    /// Drops the attempts of `key` older than the window; the count left.
    fn live(&mut self, key: &Key, now: Instant) -> (usize, Option<Instant>) {
        let Some(times) = self.entries.get_mut(key) else {
            return (0, None);
        };
        let before = times.len();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= WINDOW)
        {
            times.pop_front();
        }
        let (left, oldest) = (times.len(), times.front().copied());
        self.bytes -= (before - left) * ATTEMPT_BYTES;
        if left == 0 {
            self.entries.remove(key);
            self.bytes -= key.bytes();
        }
        (left, oldest)
    }

    fn push(&mut self, key: Key, at: Instant) {
        let times = match self.entries.get_mut(&key) {
            Some(times) => times,
            None => {
                self.bytes += key.bytes();
                self.entries.entry(key).or_default()
            }
        };
        times.push_back(at);
        self.bytes += ATTEMPT_BYTES;
    }

    /// Takes one attempt made at `at` back from `key`.
    fn take_back(&mut self, key: &Key, at: Instant) {
        let Some(times) = self.entries.get_mut(key) else {
            return;
        };
        if let Some(i) = times.iter().position(|t| *t == at) {
            times.remove(i);
            self.bytes -= ATTEMPT_BYTES;
        }
        if times.is_empty() {
            self.entries.remove(key);
            self.bytes -= key.bytes();
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(times) = self.entries.remove(key) {
            self.bytes -= key.bytes() + times.len() * ATTEMPT_BYTES;
        }
    }

    /// Keeps the table within `budget`: expired entries go first; if that is not enough, the
    /// entries whose latest attempt is oldest, down to three quarters of the budget (so the
    /// sort is paid once per many inserts, not on each).
    fn shrink(&mut self, budget: usize, now: Instant) {
        if self.bytes <= budget {
            return;
        }
        self.entries.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) < WINDOW)
        });
        self.recount();
        if self.bytes <= budget {
            return;
        }
        let mut by_age: Vec<(Instant, Key)> = self
            .entries
            .iter()
            .map(|(key, times)| (times.back().copied().unwrap_or(now), key.clone()))
            .collect();
        by_age.sort_unstable_by_key(|(latest, _)| *latest);
        for (_, key) in by_age {
            if self.bytes <= budget / 4 * 3 {
                break;
            }
            self.remove(&key);
        }
    }

    fn recount(&mut self) {
        self.bytes = self
            .entries
            .iter()
            .map(|(key, times)| key.bytes() + times.len() * ATTEMPT_BYTES)
            .sum();
    }
}

/// Counts login attempts; cheap to share (`Arc` inside).
#[derive(Clone)]
pub struct Throttle {
    limit: usize,
    budget: usize,
    table: Arc<Mutex<Table>>,
}

/// Refused: this many seconds until the oldest counted attempt leaves the window.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub retry_after: u64,
}

impl Throttle {
    /// `limit` attempts a minute per (account, address) and per address, in at most `budget`
    /// bytes of table.
    pub fn new(limit: usize, budget: usize) -> Throttle {
        Throttle {
            limit: limit.max(1),
            budget,
            table: Arc::default(),
        }
    }

    /// Counts an attempt of `username` from `ip` before it is evaluated, or refuses it while
    /// the pair or the address has used up the minute. `username` must already be short
    /// (the login handler refuses longer ones before calling this).
    pub fn reserve(&self, username: &str, ip: IpAddr) -> Result<Reservation, Refused> {
        let net = Net::of(ip);
        let pair = Key::Pair(username.to_string(), net);
        let addr = Key::Addr(net);
        let now = Instant::now();
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        let mut wait = Duration::ZERO;
        for key in [&pair, &addr] {
            let (count, oldest) = table.live(key, now);
            if count >= self.limit {
                let oldest = oldest.unwrap_or(now);
                wait = wait.max(WINDOW.saturating_sub(now.duration_since(oldest)));
            }
        }
        if !wait.is_zero() {
            return Err(Refused {
                retry_after: wait.as_secs().max(1),
            });
        }
        table.push(pair.clone(), now);
        table.push(addr.clone(), now);
        table.shrink(self.budget, now);
        Ok(Reservation {
            throttle: self.clone(),
            pair,
            addr,
            at: now,
        })
    }

    /// Bytes the table holds now (by its own accounting).
    pub fn table_bytes(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }

    /// Entries in the table now.
    pub fn table_len(&self) -> usize {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.entries.len()
    }
}

/// An attempt counted in advance. Dropped as is, it stays counted: a failure, or an attempt
/// whose client went away while it was evaluated.
#[must_use = "a reservation is settled by succeeded, not_evaluated, or dropping it (a failure)"]
pub struct Reservation {
    throttle: Throttle,
    pair: Key,
    addr: Key,
    at: Instant,
}

impl Reservation {
    /// The login was good: the attempt is taken back and the account's failures at this
    /// address are forgotten.
    pub fn succeeded(self) {
        let mut table = self
            .throttle
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        table.remove(&self.pair);
        table.take_back(&self.addr, self.at);
    }

    /// The password was never checked (the hashing pool was full): the attempt is taken back.
    pub fn not_evaluated(self) {
        let mut table = self
            .throttle
            .table
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        table.take_back(&self.pair, self.at);
        table.take_back(&self.addr, self.at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_attempt_past_the_limit_is_refused_before_it_is_evaluated() {
        let throttle = Throttle::new(10, TABLE_BYTES);
        // Reserved at once, as concurrent logins would be: none has failed yet.
        let held: Vec<Reservation> = (0..10)
            .map(|_| throttle.reserve("alice", ip("10.0.0.1")).unwrap())
            .collect();
        let refused = throttle.reserve("alice", ip("10.0.0.1")).err().unwrap();
        assert!((1..=60).contains(&refused.retry_after));
        // Another account from the same address: the address has used its minute too.
        assert!(throttle.reserve("bob", ip("10.0.0.1")).is_err());
        drop(held);
        assert!(throttle.reserve("alice", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn hashes_are_bounded_by_the_limit_however_many_try_at_once() {
        let throttle = Throttle::new(10, TABLE_BYTES);
        let hashes = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|scope| {
            for _ in 0..150 {
                scope.spawn(|| {
                    if let Ok(reservation) = throttle.reserve("alice", ip("10.0.0.1")) {
                        hashes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(20));
                        drop(reservation);
                    }
                });
            }
        });
        assert_eq!(hashes.into_inner(), 10);
    }

    #[test]
    fn an_account_under_attack_from_one_address_opens_from_another() {
        let throttle = Throttle::new(3, TABLE_BYTES);
        for _ in 0..3 {
            drop(throttle.reserve("alice", ip("10.0.0.1")).unwrap());
        }
        assert!(throttle.reserve("alice", ip("10.0.0.1")).is_err());
        throttle
            .reserve("alice", ip("10.0.0.2"))
            .expect("the owner elsewhere is not locked out")
            .succeeded();
    }

    #[test]
    fn a_success_clears_the_pair_but_not_the_address() {
        let throttle = Throttle::new(3, TABLE_BYTES);
        drop(throttle.reserve("bob", ip("10.0.0.1")).unwrap());
        drop(throttle.reserve("bob", ip("10.0.0.1")).unwrap());
        throttle
            .reserve("alice", ip("10.0.0.1"))
            .unwrap()
            .succeeded();
        // bob's two failures still count against the address: one attempt is left.
        drop(throttle.reserve("carol", ip("10.0.0.1")).unwrap());
        assert!(throttle.reserve("alice", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn an_attempt_never_evaluated_is_taken_back() {
        let throttle = Throttle::new(1, TABLE_BYTES);
        throttle
            .reserve("alice", ip("10.0.0.1"))
            .unwrap()
            .not_evaluated();
        assert_eq!(throttle.table_len(), 0);
        assert_eq!(throttle.table_bytes(), 0);
        drop(throttle.reserve("alice", ip("10.0.0.1")).unwrap());
        assert!(throttle.reserve("alice", ip("10.0.0.1")).is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let throttle = Throttle::new(2, TABLE_BYTES);
        drop(throttle.reserve("a", ip("2001:db8:1:2::1")).unwrap());
        drop(throttle.reserve("b", ip("2001:db8:1:2:ffff::9")).unwrap());
        assert!(throttle.reserve("c", ip("2001:db8:1:2::77")).is_err());
        assert!(throttle.reserve("c", ip("2001:db8:1:3::1")).is_ok());
        drop(throttle.reserve("a", ip("192.0.2.1")).unwrap());
        drop(throttle.reserve("b", ip("::ffff:192.0.2.1")).unwrap());
        assert!(throttle.reserve("c", ip("192.0.2.1")).is_err());
    }

    #[test]
    fn the_table_stays_within_its_budget_under_many_addresses_and_names() {
        let budget = 64 * 1024;
        let throttle = Throttle::new(10, budget);
        for i in 0..20_000u32 {
            let name = format!("{:064}", i);
            let addr = IpAddr::from((10u32 << 24 | i).to_be_bytes());
            drop(throttle.reserve(&name, addr).unwrap());
            assert!(throttle.table_bytes() <= budget, "at {i}");
        }
        assert!(
            throttle.table_len() > 100,
            "the table still holds recent entries"
        );
        // The accounting matches a recount.
        let mut table = throttle.table.lock().unwrap();
        let counted = table.bytes;
        table.recount();
        assert_eq!(counted, table.bytes);
    }
}
