//! A payer for the tests: a fixed k256 test key that signs EIP-3009 authorizations for an
//! agent's offer and builds x402 payment headers (v2 and v1), each part open to tampering.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use k256::ecdsa::SigningKey;
use outpost::evm::{hex, parse_bytes32, parse_uint256, Address};
use outpost::paid::eip712::{address_of, Authorization, Domain};
use serde_json::{json, Value};

/// The payer key of the spec's test vector (32 × 0x11); never fund it.
pub const PAYER_KEY: u8 = 0x11;
/// The payee of the spec's test vector.
pub const PAY_TO: &str = "0x1563915e194D8CfBA1943570603F7606A3115508";

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A payment being put together: change any field, then sign and encode.
#[derive(Clone)]
pub struct Payment {
    key: u8,
    /// The requirement echoed as `accepted` (v2).
    pub accepted: Value,
    /// `from`, `to`, `value`, `validAfter`, `validBefore`, `nonce`.
    pub authorization: Value,
    /// The EIP-712 domain signed over: (name, chain id).
    pub domain: (String, u64),
}

impl Payment {
    /// A fresh, valid payment by the key `key` for the v2 `requirement`.
    pub fn new(key: u8, requirement: &Value) -> Payment {
        let signing = SigningKey::from_slice(&[key; 32]).unwrap();
        let mut nonce = [0u8; 32];
        outpost::ids::random_bytes(&mut nonce);
        let chain_id = requirement["network"]
            .as_str()
            .unwrap()
            .trim_start_matches("eip155:")
            .parse()
            .unwrap();
        Payment {
            key,
            accepted: requirement.clone(),
            authorization: json!({
                "from": address_of(signing.verifying_key()).checksummed(),
                "to": requirement["payTo"],
                "value": requirement["amount"],
                "validAfter": (now() - 10).to_string(),
                "validBefore": (now() + 120).to_string(),
                "nonce": format!("0x{}", hex(&nonce)),
            }),
            domain: (
                requirement["extra"]["name"].as_str().unwrap().to_string(),
                chain_id,
            ),
        }
    }

    /// r ‖ s ‖ v over the current fields (v is 27 or 28).
    pub fn signature_bytes(&self) -> Vec<u8> {
        let field = |name: &str| self.authorization[name].as_str().unwrap().to_string();
        let auth = Authorization {
            from: Address::parse(&field("from")).unwrap(),
            to: Address::parse(&field("to")).unwrap(),
            value: parse_uint256(&field("value")).unwrap(),
            valid_after: parse_uint256(&field("validAfter")).unwrap(),
            valid_before: parse_uint256(&field("validBefore")).unwrap(),
            nonce: parse_bytes32(&field("nonce")).unwrap(),
        };
        let asset = Address::parse(self.accepted["asset"].as_str().unwrap()).unwrap();
        let domain = Domain {
            name: &self.domain.0,
            version: "2",
            chain_id: self.domain.1,
            verifying_contract: asset,
        };
        let signing = SigningKey::from_slice(&[self.key; 32]).unwrap();
        let (signature, recovery) = signing.sign_prehash_recoverable(&auth.digest(&domain));
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + u8::from(recovery.is_y_odd()));
        bytes
    }

    /// The v2 payment JSON with `signature`.
    pub fn v2_with(&self, signature: &[u8]) -> Value {
        json!({
            "x402Version": 2,
            "accepted": self.accepted,
            "payload": {
                "signature": format!("0x{}", hex(signature)),
                "authorization": self.authorization,
            },
        })
    }

    /// The `PAYMENT-SIGNATURE` header.
    pub fn v2(&self) -> String {
        encode(&self.v2_with(&self.signature_bytes()))
    }

    /// The `X-PAYMENT` header (v1).
    pub fn v1(&self, network: &str) -> String {
        encode(&json!({
            "x402Version": 1,
            "scheme": "exact",
            "network": network,
            "payload": {
                "signature": format!("0x{}", hex(&self.signature_bytes())),
                "authorization": self.authorization,
            },
        }))
    }
}

/// base64 (standard, padded) of the JSON text.
pub fn encode(value: &Value) -> String {
    STANDARD.encode(value.to_string())
}

/// The JSON inside a base64 header.
pub fn decode(header: &str) -> Value {
    let bytes = STANDARD.decode(header).expect("base64");
    serde_json::from_slice(&bytes).expect("JSON")
}
