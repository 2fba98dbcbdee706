//! Key encodings: parts joined by a 0 byte, numbers big-endian, so byte order is scan order.

/// `a 0 b 0 …` for text parts (names never contain a 0 byte).
pub fn joined(parts: &[&str]) -> Vec<u8> {
    let mut key = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(part.as_bytes());
    }
    key
}

/// `joined(parts) 0` — the prefix of every key below those parts.
pub fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut key = joined(parts);
    key.push(0);
    key
}

/// The first key after every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0xff; prefix.len() + 1]
}

/// `id ‖ seq` for messages and events.
pub fn sequenced(id: &str, seq: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 4);
    key.extend_from_slice(id.as_bytes());
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number at the end of a `sequenced` key.
pub fn seq_of(key: &[u8]) -> u32 {
    let tail: [u8; 4] = key[key.len() - 4..].try_into().unwrap_or([0; 4]);
    u32::from_be_bytes(tail)
}

/// `prefix ‖ millis ‖ id` for time indexes.
pub fn timed(prefix: &[u8], millis: i64, id: &str) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.extend_from_slice(&(millis as u64).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_sort_as_intended() {
        assert_eq!(joined(&["a", "b"]), b"a\0b");
        assert_eq!(prefix_end(b"a\0"), b"a\x01");
        assert!(sequenced("x", 2) < sequenced("x", 256));
        assert_eq!(seq_of(&sequenced("abc", 77)), 77);
        assert!(timed(b"p", 5, "z") < timed(b"p", 6, "a"));
        // A user named "ab" must not fall inside the prefix of user "a".
        let a = prefix(&["agent", "a"]);
        assert!(!joined(&["agent", "ab", "x"]).starts_with(&a));
    }
}
