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

/// Names a kind of id that crosses modules: a `String` on the wire and on disk
/// (`#[serde(transparent)]`), its own type in the code, so an execution's id cannot be handed
/// where a session's is meant. It reads as `&str` wherever text is wanted.
macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[derive(serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<String> for $name {
            fn from(text: String) -> $name {
                $name(text)
            }
        }

        impl From<&str> for $name {
            fn from(text: &str) -> $name {
                $name(text.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl From<$name> for serde_json::Value {
            fn from(id: $name) -> serde_json::Value {
                serde_json::Value::String(id.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

id_type!(
    /// An execution's id (a [`new_id`]).
    ExecutionId
);
id_type!(
    /// A chat session's id (a [`new_id`]).
    SessionId
);
id_type!(
    /// An agent's name, as the file and the agents API give it.
    AgentName
);

impl ExecutionId {
    /// A new execution id.
    pub fn new() -> ExecutionId {
        ExecutionId(new_id())
    }
}

impl SessionId {
    /// A new session id.
    pub fn new() -> SessionId {
        SessionId(new_id())
    }

    /// A new session id that sorts at `at`.
    pub fn new_at(at: Timestamp) -> SessionId {
        SessionId(new_id_at(at))
    }
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
    fn id_types_are_plain_strings_on_the_wire_and_on_disk() {
        let id = ExecutionId::new();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<ExecutionId>(&json).unwrap(), id);
        let agents: std::collections::HashMap<AgentName, u32> = [("helper".into(), 1)].into();
        assert_eq!(agents.get("helper"), Some(&1));
        assert_eq!(SessionId::from("s"), "s");
    }

    #[test]
    fn base32_and_hex() {
        assert_eq!(base32(&[0xff]), "zw");
        assert_eq!(hex(&[0, 171]), "00ab");
    }
}
