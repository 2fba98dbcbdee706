//! Local verification of a payment header, in the contract's order: cheap checks first, the
//! signature last; the nonce claim (step 8) is the caller's, in the store. Our requirement is
//! the truth from step 2 on: chain id, contract, name and version come from configuration.

use super::eip712::{self, Authorization, Domain};
use super::header;
use super::offer::Offer;
use super::Reason;
use crate::evm::{hex_bytes, parse_bytes32, parse_uint256, word_to_u64, Address, Word};
use serde_json::{Map, Value};

/// `validBefore` must leave at least this many seconds.
const MIN_VALIDITY_SECONDS: u64 = 6;
/// Slack on top of `maxTimeoutSeconds` for `validBefore`.
const VALIDITY_SLACK_SECONDS: u64 = 60;

/// A payment that passed every local check.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The protocol version the client used (1 or 2).
    pub version: u8,
    pub payer: Address,
    pub nonce: Word,
    pub valid_before: u64,
    /// The payment as decoded, for the facilitator.
    pub payload: Value,
    /// Our requirement it matched, in the client's version.
    pub requirement: Value,
}

/// A refusal: the reason code and a sentence for people.
pub type Refused = (Reason, String);

fn refuse<T>(reason: Reason, detail: impl Into<String>) -> Result<T, Refused> {
    Err((reason, detail.into()))
}

/// Checks a payment header against `offer` at `now` (unix seconds).
pub fn verify(header_value: &str, offer: &Offer, now: u64) -> Result<Verified, Refused> {
    // 1. Size, base64, JSON, shape.
    let payload = header::decode(header_value)
        .or_else(|err| refuse(Reason::InvalidPayload, err.describe()))?;
    let object = payload.as_object().expect("decode returns objects");
    let version = match object.get("x402Version").and_then(Value::as_u64) {
        Some(1) => 1u8,
        Some(2) => 2u8,
        _ => return refuse(Reason::InvalidPayload, "x402Version must be 1 or 2"),
    };
    let Some(inner) = object.get("payload").and_then(Value::as_object) else {
        return refuse(Reason::InvalidPayload, "the payment has no payload object");
    };
    // 2. The requirement the client chose is one of ours.
    if version == 2 {
        let Some(accepted) = object.get("accepted").and_then(Value::as_object) else {
            return refuse(
                Reason::InvalidPayload,
                "a v2 payment needs an accepted object",
            );
        };
        if !matches_offer(accepted, offer) {
            return refuse(
                Reason::InvalidRequirements,
                "accepted is not one of this route's offers",
            );
        }
    } else {
        let scheme = object.get("scheme").and_then(Value::as_str);
        let network = object.get("network").and_then(Value::as_str);
        if scheme.is_none() || network.is_none() {
            return refuse(
                Reason::InvalidPayload,
                "a v1 payment needs scheme and network",
            );
        }
        if scheme != Some("exact") || network != Some(offer.config.network.v1_name.as_str()) {
            return refuse(
                Reason::InvalidRequirements,
                "scheme and network do not match this route's offer",
            );
        }
    }
    // 3. An exact EVM payload.
    let (Some(authorization), Some(signature)) = (
        inner.get("authorization").and_then(Value::as_object),
        inner.get("signature"),
    ) else {
        return refuse(
            Reason::UnsupportedScheme,
            "only exact payloads with an EIP-3009 authorization and signature are taken",
        );
    };
    let field = |name: &str| authorization.get(name).and_then(Value::as_str);
    let (Some(from), Some(to), Some(value), Some(after), Some(before), Some(nonce)) = (
        field("from"),
        field("to"),
        field("value"),
        field("validAfter"),
        field("validBefore"),
        field("nonce"),
    ) else {
        return refuse(
            Reason::InvalidPayload,
            "authorization needs from, to, value, validAfter, validBefore and nonce as strings",
        );
    };
    let Some(from) = Address::parse(from) else {
        return refuse(
            Reason::InvalidPayload,
            "authorization.from is not an address",
        );
    };
    let Some(nonce) = parse_bytes32(nonce) else {
        return refuse(
            Reason::InvalidPayload,
            "authorization.nonce is not 32 bytes of hex",
        );
    };
    let config = &offer.config;
    // 4. To us.
    let to = match Address::parse(to) {
        Some(to) if to == config.pay_to => to,
        _ => {
            return refuse(
                Reason::RecipientMismatch,
                "the authorization pays someone else",
            )
        }
    };
    // 5. Exactly the price.
    let value = match parse_uint256(value) {
        Some(value) if value == config.price_word => value,
        _ => {
            return refuse(
                Reason::ValueMismatch,
                format!(
                    "the authorization must be for exactly {} atomic units",
                    config.price
                ),
            )
        }
    };
    // 6. The time window.
    let valid_after_word = parse_uint256(after);
    if valid_after_word
        .and_then(|w| word_to_u64(&w))
        .is_none_or(|t| t > now)
    {
        return refuse(Reason::ValidAfter, "the authorization is not valid yet");
    }
    let valid_before_word = parse_uint256(before);
    let valid_before = valid_before_word.and_then(|w| word_to_u64(&w));
    let latest = now + config.max_timeout_seconds + VALIDITY_SLACK_SECONDS;
    match valid_before {
        Some(t) if t < now + MIN_VALIDITY_SECONDS => {
            return refuse(Reason::ValidBefore, "the authorization expires too soon")
        }
        Some(t) if t <= latest => {}
        _ => {
            return refuse(
                Reason::ValidBefore,
                format!(
                    "validBefore must be within {} seconds from now",
                    config.max_timeout_seconds + VALIDITY_SLACK_SECONDS
                ),
            )
        }
    }
    // 7. Signed by `from`, over our domain.
    let bad_signature = || refuse(Reason::Signature, "the signature does not check out");
    let Some(signature) = signature.as_str().and_then(hex_bytes) else {
        return bad_signature();
    };
    let authorization = Authorization {
        from,
        to,
        value,
        valid_after: valid_after_word.expect("checked above"),
        valid_before: valid_before_word.expect("checked above"),
        nonce,
    };
    let domain = Domain {
        name: &config.network.name,
        version: &config.network.version,
        chain_id: config.network.chain_id,
        verifying_contract: config.network.asset,
    };
    match eip712::recover(&authorization.digest(&domain), &signature) {
        Ok(signer) if signer == from && !from.is_zero() => {}
        _ => return bad_signature(),
    }
    Ok(Verified {
        version,
        payer: from,
        nonce,
        valid_before: valid_before.expect("checked above"),
        requirement: offer.requirement(version),
        payload,
    })
}

/// Scheme, network, asset and payTo (as bytes), amount (as an integer), maxTimeoutSeconds.
fn matches_offer(accepted: &Map<String, Value>, offer: &Offer) -> bool {
    let config = &offer.config;
    let text = |name: &str| accepted.get(name).and_then(Value::as_str);
    let address = |name: &str| text(name).and_then(Address::parse);
    let amount = match accepted.get("amount") {
        Some(Value::String(s)) => parse_uint256(s),
        Some(Value::Number(n)) => n.as_u64().map(crate::evm::u64_word),
        _ => None,
    };
    text("scheme") == Some("exact")
        && text("network") == Some(config.network.id.as_str())
        && address("asset") == Some(config.network.asset)
        && address("payTo") == Some(config.pay_to)
        && amount == Some(config.price_word)
        && accepted.get("maxTimeoutSeconds").and_then(Value::as_u64)
            == Some(config.max_timeout_seconds)
}

#[cfg(test)]
mod tests;
