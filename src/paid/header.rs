//! x402 header values: base64 of UTF-8 JSON. We send the standard alphabet with padding and
//! accept the URL-safe alphabet and missing padding too; anything over 8 KiB, not base64 or
//! not a JSON object is refused before any other work.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::Value;

/// The largest payment header accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Why a header could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    TooLarge,
    NotBase64,
    NotJson,
}

impl HeaderError {
    pub fn describe(self) -> &'static str {
        match self {
            HeaderError::TooLarge => "the payment header is larger than 8 KiB",
            HeaderError::NotBase64 => "the payment header is not base64",
            HeaderError::NotJson => "the payment header is not a base64 JSON object",
        }
    }
}

/// Decodes a payment header into its JSON object.
pub fn decode(header: &str) -> Result<Value, HeaderError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(HeaderError::TooLarge);
    }
    let text = header.trim();
    let engine = if text.contains(['-', '_']) {
        &URL_SAFE_LENIENT
    } else {
        &STANDARD_LENIENT
    };
    let bytes = engine.decode(text).map_err(|_| HeaderError::NotBase64)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(HeaderError::NotJson),
    }
}

/// Encodes a JSON value as a header: standard alphabet, padded.
pub fn encode(value: &Value) -> String {
    STANDARD.encode(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use serde_json::json;

    fn check(header: &str, expected: Result<Value, HeaderError>) {
        assert_eq!(decode(header), expected, "{header:?}");
    }

    #[test]
    fn header_decoding() {
        // "?>" and "~" make bytes whose base64 differs between the two alphabets.
        let value = json!({"x402Version": 2, "note": "??>>~~~"});
        let text = value.to_string();
        check(&STANDARD.encode(&text), Ok(value.clone()));
        check(&STANDARD_NO_PAD.encode(&text), Ok(value.clone()));
        check(&URL_SAFE.encode(&text), Ok(value.clone()));
        check(&URL_SAFE_NO_PAD.encode(&text), Ok(value.clone()));
        check(&format!(" {} ", STANDARD.encode(&text)), Ok(value.clone()));
        assert_eq!(decode(&encode(&value)), Ok(value));
        check("not base64 at all!", Err(HeaderError::NotBase64));
        check("", Err(HeaderError::NotJson));
        check(&STANDARD.encode("not json"), Err(HeaderError::NotJson));
        check(&STANDARD.encode("[1, 2]"), Err(HeaderError::NotJson));
        check(&STANDARD.encode("\"text\""), Err(HeaderError::NotJson));
        check(
            &STANDARD.encode([0xff, 0xfe, b'{', b'}']),
            Err(HeaderError::NotJson),
        );
        let big = json!({"pad": "x".repeat(7000)});
        check(
            &STANDARD.encode(big.to_string()),
            Err(HeaderError::TooLarge),
        );
        check(
            &"A".repeat(MAX_HEADER_BYTES + 1),
            Err(HeaderError::TooLarge),
        );
        // A mix of both alphabets is neither.
        check("eyJh-+==", Err(HeaderError::NotBase64));
    }
}
