//! The check order, one case per line: a payment made from the spec's test vector, changed
//! one field at a time, and k256-signed edge cases.

use super::*;
use crate::config::{builtin_networks, PaidConfig};
use crate::evm::hex;
use k256::ecdsa::SigningKey;
use serde_json::json;
use std::time::Duration;

const PAYER: &str = "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A";
const PAYEE: &str = "0x1563915e194D8CfBA1943570603F7606A3115508";
const NONCE: &str = "0xc78bf66f6c3766ec7563452ef340be1013825f8c7b81ebd7666f7464a2848f13";
const SIGNATURE: &str = "0x6c45a2c1622c91513fe1e536c0442c1595c5c33264f86fb3533cb237b84dd6446e61f2f2a59c106d39a2957f80fd51132af9b28356885ab6bae726e8501169261c";
const HIGH_S_TWIN: &str = "0x6c45a2c1622c91513fe1e536c0442c1595c5c33264f86fb3533cb237b84dd644919e0d0d5a63ef92c65d6a807f02aeeb8fb52a6358c0458504eb37a48024d81b1b";
/// 200 seconds before the vector's validBefore.
const NOW: u64 = 1_899_999_800;

fn offer() -> Offer {
    let network = builtin_networks()["eip155:84532"].clone();
    Offer {
        agent: "helper".into(),
        config: PaidConfig {
            price: "10000".into(),
            price_word: super::parse_uint256("10000").unwrap(),
            network,
            pay_to: Address::parse(PAYEE).unwrap(),
            description: "One chat turn with helper".into(),
            max_timeout_seconds: 300,
            facilitator_url: "http://127.0.0.1:9".into(),
            facilitator_auth_header: None,
            verify_with_facilitator: false,
            unverified_turns_per_minute: 4,
            settle_timeout: Duration::from_secs(1),
            verify_timeout: Duration::from_secs(1),
        },
        resource: "http://127.0.0.1:8000/api/paid/helper/chat".into(),
    }
}

fn authorization() -> Value {
    json!({
        "from": PAYER, "to": PAYEE, "value": "10000",
        "validAfter": "0", "validBefore": "1900000000", "nonce": NONCE,
    })
}

fn v2(authorization: Value, signature: &str) -> Value {
    json!({
        "x402Version": 2,
        "accepted": offer().requirement_v2(),
        "payload": {"signature": signature, "authorization": authorization},
        "resource": offer().resource(),
    })
}

fn check(payment: Value, now: u64, expected: Result<(), Reason>) {
    let result = verify(&header::encode(&payment), &offer(), now);
    assert_eq!(
        result.map(|_| ()).map_err(|(r, _)| r),
        expected,
        "{payment}"
    );
}

/// A v2 payment for `authorization` signed by `key` over `domain_name`'s domain.
fn signed(key: u8, mut authorization: Value, domain_name: &str, chain_id: u64) -> (Value, Vec<u8>) {
    let signing = SigningKey::from_slice(&[key; 32]).unwrap();
    authorization["from"] = json!(eip712::address_of(signing.verifying_key()).checksummed());
    let field = |name: &str| authorization[name].as_str().unwrap().to_string();
    let auth = Authorization {
        from: Address::parse(authorization["from"].as_str().unwrap()).unwrap(),
        to: Address::parse(&field("to")).unwrap(),
        value: parse_uint256(&field("value")).unwrap(),
        valid_after: parse_uint256(&field("validAfter")).unwrap(),
        valid_before: parse_uint256(&field("validBefore")).unwrap(),
        nonce: parse_bytes32(&field("nonce")).unwrap(),
    };
    let network = &offer().config.network;
    let domain = Domain {
        name: domain_name,
        version: "2",
        chain_id,
        verifying_contract: network.asset,
    };
    let (signature, recovery) = signing.sign_prehash_recoverable(&auth.digest(&domain));
    let mut bytes = signature.to_bytes().to_vec();
    bytes.push(27 + u8::from(recovery.is_y_odd()));
    (authorization, bytes)
}

fn with(field: &str, value: Value) -> Value {
    let mut auth = authorization();
    auth[field] = value;
    auth
}

#[test]
fn the_test_vector_passes() {
    let verified = verify(
        &header::encode(&v2(authorization(), SIGNATURE)),
        &offer(),
        NOW,
    )
    .unwrap();
    assert_eq!(verified.version, 2);
    assert_eq!(verified.payer.checksummed(), PAYER);
    assert_eq!(format!("0x{}", hex(&verified.nonce)), NONCE);
    assert_eq!(verified.valid_before, 1_900_000_000);
    assert_eq!(verified.requirement, offer().requirement_v2());
}

#[test]
fn the_check_order() {
    use Reason::*;
    let good = || v2(authorization(), SIGNATURE);
    check(good(), NOW, Ok(()));
    // 1. shape
    check(
        json!({"x402Version": 3, "payload": {}}),
        NOW,
        Err(InvalidPayload),
    );
    check(
        json!({"x402Version": "2", "payload": {}}),
        NOW,
        Err(InvalidPayload),
    );
    let mut no_payload = good();
    no_payload.as_object_mut().unwrap().remove("payload");
    check(no_payload, NOW, Err(InvalidPayload));
    let mut no_accepted = good();
    no_accepted.as_object_mut().unwrap().remove("accepted");
    check(no_accepted, NOW, Err(InvalidPayload));
    // 2. accepted is our offer (addresses by bytes, amount as an integer)
    for (field, value) in [
        ("scheme", json!("upto")),
        ("network", json!("eip155:8453")),
        ("amount", json!("9999")),
        ("payTo", json!(PAYER)),
        ("asset", json!("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913")),
        ("maxTimeoutSeconds", json!(3600)),
    ] {
        let mut payment = good();
        payment["accepted"][field] = value;
        check(payment, NOW, Err(InvalidRequirements));
    }
    let mut lower = good();
    lower["accepted"]["payTo"] = json!(PAYEE.to_lowercase());
    lower["accepted"]["amount"] = json!(10000);
    check(lower, NOW, Ok(()));
    // 3. an exact EVM payload
    let mut permit = good();
    permit["payload"] = json!({"permit2Authorization": {}, "signature": SIGNATURE});
    check(permit, NOW, Err(UnsupportedScheme));
    check(
        v2(with("value", json!(10000)), SIGNATURE),
        NOW,
        Err(InvalidPayload),
    );
    check(
        v2(with("from", json!("0x19E7")), SIGNATURE),
        NOW,
        Err(InvalidPayload),
    );
    check(
        v2(with("nonce", json!("0x1234")), SIGNATURE),
        NOW,
        Err(InvalidPayload),
    );
    // 4.–6. recipient, exact value, time window (before the signature is looked at)
    check(
        v2(with("to", json!(PAYER)), SIGNATURE),
        NOW,
        Err(RecipientMismatch),
    );
    check(
        v2(with("value", json!("10001")), SIGNATURE),
        NOW,
        Err(ValueMismatch),
    );
    check(
        v2(with("value", json!("010000")), SIGNATURE),
        NOW,
        Err(ValueMismatch),
    );
    check(
        v2(with("value", json!("1e4")), SIGNATURE),
        NOW,
        Err(ValueMismatch),
    );
    check(
        v2(with("validAfter", json!("1899999801")), SIGNATURE),
        NOW,
        Err(ValidAfter),
    );
    check(
        v2(with("validAfter", json!("-1")), SIGNATURE),
        NOW,
        Err(ValidAfter),
    );
    check(good(), 1_900_000_000 - 5, Err(ValidBefore));
    check(good(), 1_900_000_000 - 6, Ok(()));
    check(good(), 1_900_000_000 - 360, Ok(()));
    check(good(), 1_900_000_000 - 361, Err(ValidBefore));
    check(
        v2(with("validBefore", json!("0x1")), SIGNATURE),
        NOW,
        Err(ValidBefore),
    );
    // 7. the signature
    check(v2(authorization(), HIGH_S_TWIN), NOW, Err(Signature));
    check(v2(authorization(), &SIGNATURE[..130]), NOW, Err(Signature));
    check(v2(authorization(), "6c45"), NOW, Err(Signature));
    check(
        v2(
            with("nonce", json!(format!("0x{}", "00".repeat(32)))),
            SIGNATURE,
        ),
        NOW,
        Err(Signature),
    );
    check(
        v2(with("validBefore", json!("1900000001")), SIGNATURE),
        NOW,
        Err(Signature),
    );
    let mut number = good();
    number["payload"]["signature"] = json!(12);
    check(number, NOW, Err(Signature));
}

#[test]
fn k256_signed_edge_cases() {
    use Reason::*;
    let pay = |auth: Value, name: &str, chain: u64| {
        let (auth, signature) = signed(0x33, auth, name, chain);
        v2(auth, &format!("0x{}", hex(&signature)))
    };
    check(pay(authorization(), "USDC", 84532), NOW, Ok(()));
    check(pay(authorization(), "USD Coin", 84532), NOW, Err(Signature));
    check(pay(authorization(), "USDC", 8453), NOW, Err(Signature));
    check(
        pay(with("validBefore", json!("1899999000")), "USDC", 84532),
        NOW,
        Err(ValidBefore),
    );
    check(
        pay(with("validAfter", json!("1899999900")), "USDC", 84532),
        NOW,
        Err(ValidAfter),
    );
    check(
        pay(with("validBefore", json!("1900000500")), "USDC", 84532),
        NOW,
        Err(ValidBefore),
    );
    let (auth, mut signature) = signed(0x33, authorization(), "USDC", 84532);
    let v = signature[64];
    signature[64] = v - 27;
    check(
        v2(auth.clone(), &format!("0x{}", hex(&signature))),
        NOW,
        Err(Signature),
    );
    check(
        v2(auth.clone(), &format!("0x{}", hex(&signature[..64]))),
        NOW,
        Err(Signature),
    );
    // Someone else's signature over our authorization.
    let (_, other) = signed(0x44, authorization(), "USDC", 84532);
    check(v2(auth, &format!("0x{}", hex(&other))), NOW, Err(Signature));
}

#[test]
fn version_one_payments() {
    let v1 = |network: &str| {
        json!({
            "x402Version": 1, "scheme": "exact", "network": network,
            "payload": {"signature": SIGNATURE, "authorization": authorization()},
        })
    };
    let verified = verify(&header::encode(&v1("base-sepolia")), &offer(), NOW).unwrap();
    assert_eq!(verified.version, 1);
    assert_eq!(verified.requirement, offer().requirement_v1());
    assert!(verified.requirement.get("outputSchema").is_none());
    check(v1("base"), NOW, Err(Reason::InvalidRequirements));
    let mut no_scheme = v1("base-sepolia");
    no_scheme.as_object_mut().unwrap().remove("scheme");
    check(no_scheme, NOW, Err(Reason::InvalidPayload));
}

#[test]
fn unreadable_headers_are_invalid_payloads() {
    for header in ["", "%%%", &"A".repeat(9000)] {
        let result = verify(header, &offer(), NOW).map(|_| ());
        assert_eq!(result.map_err(|(r, _)| r), Err(Reason::InvalidPayload));
    }
}
