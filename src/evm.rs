//! EVM values as x402 carries them: 20-byte addresses, 32-byte words, strict decimal uint256
//! and `0x` hex. Parsing is strict and compares bytes, never text: case, padding and leading
//! zeros cannot make two spellings of one value look different to the checks that matter.

use sha3::{Digest, Keccak256};
use std::fmt;

/// An account or contract address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 20]);

/// A 32-byte big-endian word (uint256, bytes32).
pub type Word = [u8; 32];

impl Address {
    /// `0x` followed by 40 hex digits, in any case.
    pub fn parse(text: &str) -> Option<Address> {
        let bytes = hex_bytes(text)?;
        Some(Address(bytes.try_into().ok()?))
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 20]
    }

    /// The address as a 32-byte ABI word (left-padded with zeros).
    pub fn word(&self) -> Word {
        let mut word = [0u8; 32];
        word[12..].copy_from_slice(&self.0);
        word
    }

    /// The EIP-55 mixed-case spelling.
    pub fn checksummed(&self) -> String {
        let lower = hex(&self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            out.push(if c.is_ascii_alphabetic() && nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.checksummed())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.checksummed())
    }
}

/// Lowercase hex without a prefix.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// `0x` followed by an even number of hex digits, in any case.
pub fn hex_bytes(text: &str) -> Option<Vec<u8>> {
    let digits = text.strip_prefix("0x")?.as_bytes();
    if digits.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    digits
        .chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}

/// A `bytes32` written as `0x` and 64 hex digits.
pub fn parse_bytes32(text: &str) -> Option<Word> {
    hex_bytes(text)?.try_into().ok()
}

/// A uint256 written as plain decimal digits: no sign, exponent, hex, spaces or leading
/// zeros ("0" itself excepted), and no more than fits in 256 bits.
pub fn parse_uint256(text: &str) -> Option<Word> {
    let digits = text.as_bytes();
    if digits.is_empty() || digits.len() > 78 || (digits.len() > 1 && digits[0] == b'0') {
        return None;
    }
    let mut word = [0u8; 32];
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        // word = word * 10 + d, from the low byte up; a carry out of the top byte overflows.
        let mut carry = u32::from(d - b'0');
        for byte in word.iter_mut().rev() {
            let next = u32::from(*byte) * 10 + carry;
            *byte = (next & 0xff) as u8;
            carry = next >> 8;
        }
        if carry != 0 {
            return None;
        }
    }
    Some(word)
}

/// The word as a u64, when it fits.
pub fn word_to_u64(word: &Word) -> Option<u64> {
    if word[..24].iter().any(|b| *b != 0) {
        return None;
    }
    Some(u64::from_be_bytes(word[24..].try_into().ok()?))
}

/// A u64 as a word.
pub fn u64_word(value: u64) -> Word {
    let mut word = [0u8; 32];
    word[24..].copy_from_slice(&value.to_be_bytes());
    word
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_uint(text: &str, expected: Option<u64>) {
        let parsed = parse_uint256(text);
        match expected {
            Some(value) => assert_eq!(parsed, Some(u64_word(value)), "{text:?}"),
            None => assert_eq!(parsed, None, "{text:?} should be refused"),
        }
    }

    #[test]
    fn decimals_are_strict() {
        check_uint("0", Some(0));
        check_uint("10000", Some(10_000));
        check_uint("18446744073709551615", Some(u64::MAX));
        check_uint("", None);
        check_uint("010000", None);
        check_uint("00", None);
        check_uint("+10000", None);
        check_uint("-1", None);
        check_uint("1e4", None);
        check_uint("0x2710", None);
        check_uint(" 10000", None);
        check_uint("10000 ", None);
        check_uint("10_000", None);
        check_uint("10000.0", None);
        check_uint("１", None);
        let max = "115792089237316195423570985008687907853269984665640564039457584007913129639935";
        assert_eq!(parse_uint256(max), Some([0xff; 32]));
        let over = "115792089237316195423570985008687907853269984665640564039457584007913129639936";
        assert_eq!(parse_uint256(over), None);
        assert_eq!(parse_uint256(&"9".repeat(79)), None);
        assert_eq!(word_to_u64(&[0xff; 32]), None);
    }

    #[test]
    fn addresses_compare_as_bytes() {
        let lower = Address::parse("0x1563915e194d8cfba1943570603f7606a3115508").unwrap();
        let mixed = Address::parse("0x1563915e194D8CfBA1943570603F7606A3115508").unwrap();
        assert_eq!(lower, mixed);
        assert_eq!(
            lower.checksummed(),
            "0x1563915e194D8CfBA1943570603F7606A3115508"
        );
        assert_eq!(
            Address::parse("1563915e194d8cfba1943570603f7606a3115508"),
            None
        );
        assert_eq!(
            Address::parse("0x1563915e194d8cfba1943570603f7606a31155"),
            None
        );
        assert_eq!(
            Address::parse("0x1563915e194d8cfba1943570603f7606a311550g"),
            None
        );
        assert!(parse_bytes32(&format!("0x{}", "ab".repeat(32))).is_some());
        assert!(parse_bytes32(&format!("0x{}", "ab".repeat(31))).is_none());
    }
}
