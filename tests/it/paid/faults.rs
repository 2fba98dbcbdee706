//! What must not be served or settled: replays in other spellings, tampered payments,
//! k256-signed edge cases, facilitator faults, and a turn whose engine fails.

use super::payer::{decode, encode, now, Payment, PAYER_KEY};
use super::stub::{Mode, Stub};
use super::*;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;
use outpost::config::EngineSpec;

/// secp256k1's group order n.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

/// The same signature with s' = n - s and v flipped: valid for the curve, refused by us.
fn high_s_twin(signature: &[u8]) -> Vec<u8> {
    let mut twin = signature.to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut digit = i16::from(ORDER[i]) - i16::from(signature[32 + i]) - borrow;
        borrow = i16::from(digit < 0);
        if digit < 0 {
            digit += 256;
        }
        twin[32 + i] = digit as u8;
    }
    twin[64] = if signature[64] == 27 { 28 } else { 27 };
    twin
}

async fn refused(server: &TestServer, header: &str, code: &str) {
    let reply = paid_chat(
        server,
        "helper",
        json!({"message": "x"}),
        &[("payment-signature", header)],
    )
    .await;
    assert_payment_required(&reply, code);
}

#[tokio::test]
async fn copies_in_other_spellings_are_the_same_used_payment() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let payment = Payment::new(PAYER_KEY, &requirement(&server, "helper").await);
    let header = payment.v2();
    let first = paid_chat(
        &server,
        "helper",
        json!({"message": "x"}),
        &[("payment-signature", &header)],
    )
    .await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let json = decode(&header);
    let text = json.to_string();
    // Key order: the same object written with its top-level keys reversed.
    let object = json.as_object().unwrap();
    let reversed: Vec<String> = object
        .iter()
        .rev()
        .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v))
        .collect();
    let reordered = format!("{{{}}}", reversed.join(","));
    assert_ne!(reordered, text);
    let mut lower = json.clone();
    let auth = &mut lower["payload"]["authorization"];
    auth["from"] = json!(auth["from"].as_str().unwrap().to_lowercase());
    auth["to"] = json!(auth["to"]
        .as_str()
        .unwrap()
        .to_uppercase()
        .replace("0X", "0x"));
    let copies = [
        STANDARD_NO_PAD.encode(&reordered),
        encode(&lower),
        STANDARD_NO_PAD.encode(&text),
        URL_SAFE_NO_PAD.encode(&text),
    ];
    for copy in copies {
        assert_ne!(copy, header);
        refused(&server, &copy, "invalid_exact_evm_nonce_already_used").await;
    }
    assert_eq!(stub.settles().len(), 1);
}

#[tokio::test]
async fn tampered_payments_are_refused_and_never_settled() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let good = Payment::new(PAYER_KEY, &requirement(&server, "helper").await);
    let signature = good.signature_bytes();
    let tampered = |field: &str, value: Value| {
        let mut payment = good.clone();
        payment.authorization[field] = value;
        encode(&payment.v2_with(&signature))
    };
    refused(
        &server,
        &tampered("value", json!("10001")),
        "invalid_exact_evm_payload_authorization_value_mismatch",
    )
    .await;
    refused(
        &server,
        &tampered("value", json!("1")),
        "invalid_exact_evm_payload_authorization_value_mismatch",
    )
    .await;
    refused(
        &server,
        &tampered("to", good.authorization["from"].clone()),
        "invalid_exact_evm_payload_recipient_mismatch",
    )
    .await;
    let other_nonce = format!("0x{}", "ab".repeat(32));
    refused(
        &server,
        &tampered("nonce", json!(other_nonce)),
        "invalid_exact_evm_payload_signature",
    )
    .await;
    let later = (now() + 150).to_string();
    refused(
        &server,
        &tampered("validBefore", json!(later)),
        "invalid_exact_evm_payload_signature",
    )
    .await;
    refused(
        &server,
        &tampered("validAfter", json!("0")),
        "invalid_exact_evm_payload_signature",
    )
    .await;
    for (field, value) in [
        ("amount", json!("1")),
        ("network", json!("eip155:8453")),
        ("payTo", good.authorization["from"].clone()),
        ("maxTimeoutSeconds", json!(60)),
        ("scheme", json!("upto")),
    ] {
        let mut payment = good.clone();
        payment.accepted[field] = value;
        refused(
            &server,
            &encode(&payment.v2_with(&signature)),
            "invalid_payment_requirements",
        )
        .await;
    }
    refused(&server, "bm90IGpzb24", "invalid_payload").await;
    refused(&server, &"A".repeat(9000), "invalid_payload").await;
    assert!(stub.settles().is_empty());
    // The untampered payment still works: refusals claimed nothing.
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "x"}),
        &[("payment-signature", &good.v2())],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test]
async fn signed_edge_cases_are_refused() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let offer = requirement(&server, "helper").await;
    let signed = |field: &str, value: String| {
        let mut payment = Payment::new(PAYER_KEY, &offer);
        payment.authorization[field] = json!(value);
        payment.v2()
    };
    let valid_before = "invalid_exact_evm_payload_authorization_valid_before";
    refused(
        &server,
        &signed("validBefore", (now() - 10).to_string()),
        valid_before,
    )
    .await;
    refused(
        &server,
        &signed("validBefore", (now() + 3).to_string()),
        valid_before,
    )
    .await;
    refused(
        &server,
        &signed("validBefore", (now() + 1000).to_string()),
        valid_before,
    )
    .await;
    let future = (now() + 60).to_string();
    refused(
        &server,
        &signed("validAfter", future),
        "invalid_exact_evm_payload_authorization_valid_after",
    )
    .await;
    let bad_signature = "invalid_exact_evm_payload_signature";
    let mut wrong_domain = Payment::new(PAYER_KEY, &offer);
    wrong_domain.domain.0 = "USD Coin".into();
    refused(&server, &wrong_domain.v2(), bad_signature).await;
    let mut wrong_chain = Payment::new(PAYER_KEY, &offer);
    wrong_chain.domain.1 = 8453;
    refused(&server, &wrong_chain.v2(), bad_signature).await;
    let payment = Payment::new(PAYER_KEY, &offer);
    let signature = payment.signature_bytes();
    refused(
        &server,
        &encode(&payment.v2_with(&high_s_twin(&signature))),
        bad_signature,
    )
    .await;
    for v in [0u8, 1] {
        let mut low_v = signature.clone();
        low_v[64] = v;
        refused(&server, &encode(&payment.v2_with(&low_v)), bad_signature).await;
    }
    refused(
        &server,
        &encode(&payment.v2_with(&signature[..64])),
        bad_signature,
    )
    .await;
    assert!(stub.settles().is_empty());
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "x"}),
        &[("payment-signature", &payment.v2())],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
}

#[tokio::test]
async fn a_refused_settlement_withholds_the_reply() {
    let stub = Stub::start(Mode::Reject).await;
    let server = paid_server(&stub).await;
    let reply = pay(&server, json!({"message": "secret answer"})).await;
    let body = assert_payment_required(&reply, "settlement_failed");
    assert!(!String::from_utf8_lossy(&reply.body).contains("secret answer"));
    assert!(body.get("response").is_none());
    let receipt = decode(reply.header("payment-response").expect("a failure receipt"));
    assert_eq!(receipt["success"], false);
    assert_eq!(receipt["errorReason"], "insufficient_funds");
    assert_eq!(stub.settles().len(), 1);
    // The turn ran and is kept in the log, with its payment state.
    let id = reply.json()["execution_id"].as_str().unwrap().to_string();
    let record = execution(&server, "helper", &id).await;
    assert_eq!(record["status"], "success");
    assert_eq!(record["response"], "secret answer");
    assert_eq!(record["payment"]["state"], "failed");
}

/// No definite answer from `/settle` (HTTP 500, a timeout, still pending after the resend):
/// the transfer may yet happen, so the payer is not told to pay again but gets a receipt.
#[tokio::test]
async fn an_undecided_settlement_answers_202_with_a_receipt_and_no_reply() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let cases = [
        (Mode::Fail, 1),
        (Mode::Slow(Duration::from_secs(4)), 1),
        (Mode::Pending, 2),
    ];
    let mut settles = 0;
    for (mode, attempts) in cases {
        stub.set_mode(mode);
        let reply = pay(&server, json!({"message": "secret answer"})).await;
        assert_eq!(reply.status, 202, "{mode:?}: {:?}", reply.body);
        assert!(
            !String::from_utf8_lossy(&reply.body).contains("secret answer"),
            "{mode:?}"
        );
        assert!(
            reply.header("payment-required").is_none(),
            "no new challenge"
        );
        assert!(reply.header("payment-response").is_none());
        assert_eq!(reply.header("retry-after"), Some("10"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
        let body = reply.json();
        assert_eq!(body["status"], "settlement_pending");
        let id = body["receipt_id"].as_str().unwrap().to_string();
        assert_eq!(body["execution_id"], id.as_str());
        assert_eq!(
            body["receipt_url"],
            format!("/api/paid/helper/receipts/{id}").as_str()
        );
        assert!(body["session_id"].is_string());
        settles += attempts;
        let seen = stub.settles();
        assert_eq!(seen.len(), settles, "{mode:?}");
        assert_eq!(
            seen[settles - 1],
            seen[settles - attempts],
            "a resend is identical"
        );
        let record = execution(&server, "helper", &id).await;
        assert_eq!(record["status"], "success");
        assert_eq!(
            record["payment"]["state"], "needs_reconciliation",
            "{mode:?}"
        );
    }
}

#[tokio::test]
async fn a_pending_settlement_is_sent_again_once() {
    let stub = Stub::start(Mode::PendingOnce).await;
    let server = paid_server(&stub).await;
    let reply = pay(&server, json!({"message": "patience"})).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let settles = stub.settles();
    assert_eq!(settles.len(), 2);
    assert_eq!(settles[0], settles[1]);
}

#[tokio::test]
async fn a_failed_turn_is_never_settled() {
    let stub = Stub::start(Mode::Accept).await;
    let broken = AgentConfig {
        engine: EngineSpec::OpenAi {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "nothing".into(),
            api_key: None,
            system_prompt: None,
        },
        ..paid_agent("helper", &stub)
    };
    let server = TestServer::with(|c| c.agents = vec![broken]).await;
    let reply = pay(&server, json!({"message": "hello?"})).await;
    reply.assert_error(503, "turn_failed");
    assert!(stub.settles().is_empty());
    let id = reply.json()["execution_id"].as_str().unwrap().to_string();
    let record = execution(&server, "helper", &id).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["payment"]["state"], "failed");
    assert_eq!(record["payment"]["error"], "turn_failed");
}

#[tokio::test]
async fn a_payment_the_facilitator_refuses_at_verify_is_not_used_up() {
    let stub = Stub::start(Mode::Unfunded).await;
    let mut agent = paid_agent("helper", &stub);
    agent.paid.as_mut().unwrap().verify_with_facilitator = true;
    let server = TestServer::with(|c| c.agents = vec![agent]).await;
    let payment = Payment::new(PAYER_KEY, &requirement(&server, "helper").await);
    refused(&server, &payment.v2(), "payment_rejected").await;
    assert_eq!(stub.verifies().len(), 1);
    assert!(stub.settles().is_empty());
    stub.set_mode(Mode::Accept);
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "x"}),
        &[("payment-signature", &payment.v2())],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(stub.verifies()[1], stub.settles()[0]);
}
