//! Identifiers and secrets: time-ordered ids with 128 random bits, random tokens, hex.
//!
//! An id is 6 bytes of milliseconds since the epoch followed by 16 random bytes, written in
//! lowercase Crockford base32; ids of later moments sort after earlier ones as plain strings,
//! so store keys built from them come out in time order.

use crate::clock::Timestamp;
use ring::rand::{SecureRandom, SystemRandom};

const CROCKFORD: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the operating system's random source failed");
}

/// A new time-ordered id (36 characters, 128 random bits).
pub fn new_id() -> String {
    new_id_at(Timestamp::now())
}

/// A new id that sorts at `at`.
pub fn new_id_at(at: Timestamp) -> String {
    let mut raw = [0u8; 22];
    raw[..6].copy_from_slice(&(at.0 as u64).to_be_bytes()[2..]);
    random_bytes(&mut raw[6..]);
    base32(&raw)
}

/// A random secret of `n_bytes`, as base32 text (for tokens and passwords).
pub fn random_token(n_bytes: usize) -> String {
    let mut raw = vec![0u8; n_bytes];
    random_bytes(&mut raw);
    base32(&raw)
}

/// True when `text` could be an id made by [`new_id`]: guards store look-ups.
pub fn looks_like_id(text: &str) -> bool {
    text.len() == 36 && text.bytes().all(|b| CROCKFORD.contains(&b))
}

/// Lowercase Crockford base32 of `raw`, most significant bits first (order preserving).
pub fn base32(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len() * 8 / 5 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &byte in raw {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(CROCKFORD[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(CROCKFORD[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Lowercase hex of `raw`.
pub fn hex(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`, as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time_and_look_like_ids() {
        let early = new_id_at(Timestamp(1_000));
        let late = new_id_at(Timestamp(2_000));
        assert!(early < late);
        assert!(looks_like_id(&early));
        assert!(!looks_like_id("../etc/passwd"));
        assert_ne!(new_id(), new_id());
    }

    #[test]
    fn base32_and_hex() {
        assert_eq!(base32(&[0xff]), "zw");
        assert_eq!(hex(&[0, 171]), "00ab");
    }
}
