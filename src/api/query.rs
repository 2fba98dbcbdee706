//! Query strings and form bodies: percent-decoding and typed lookups that answer 400.

use crate::error::ApiError;
use std::collections::HashMap;

/// Default and largest page sizes of lists.
pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 500;

/// Decoded `key=value` pairs (the last of a repeated key wins).
#[derive(Debug, Default)]
pub struct Query {
    pairs: HashMap<String, String>,
}

impl Query {
    /// Parses the query of a URI (or a form body).
    pub fn parse(text: Option<&str>) -> Query {
        let mut pairs = HashMap::new();
        for pair in text.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.insert(decode(key), decode(value));
        }
        Query { pairs }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A boolean flag: `true`/`1`/`yes` or `false`/`0`/`no`.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ApiError::bad_request(format!(
                "{key}={other:?} is not true or false"
            ))),
        }
    }

    /// A whole number in `min..=max`, or `default` when absent.
    pub fn number(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(text) => match text.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{key} must be a whole number from {min} to {max}"
                ))),
            },
        }
    }

    /// An optional value read by `parse`; 400 with `what` when it does not parse.
    pub fn parsed<T>(
        &self,
        key: &str,
        parse: impl Fn(&str) -> Option<T>,
        what: &str,
    ) -> Result<Option<T>, ApiError> {
        self.get(key)
            .map(|text| {
                parse(text)
                    .ok_or_else(|| ApiError::bad_request(format!("{key}={text:?} is not {what}")))
            })
            .transpose()
    }

    /// The page size: `limit`, default 50, at most 500.
    pub fn limit(&self) -> Result<usize, ApiError> {
        self.number("limit", DEFAULT_LIMIT as u64, 1, MAX_LIMIT as u64)
            .map(|n| n as usize)
    }
}

/// Percent-decoding, with `+` as space (form encoding).
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
            {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes() {
        assert_eq!(decode("a+b%20c%2F"), "a b c/");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("%é"), "%é");
        let q = Query::parse(Some("limit=5&all=true&x="));
        assert_eq!(q.limit().unwrap(), 5);
        assert!(q.flag("all").unwrap());
        assert_eq!(q.get("x"), None);
        assert!(Query::parse(Some("limit=0")).limit().is_err());
        assert!(Query::parse(Some("limit=501")).limit().is_err());
    }
}
