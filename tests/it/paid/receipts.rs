//! Receipts: a paid turn whose settlement had no definite answer is collected later with the
//! same payment header, once it settled (after a restart's reconciliation, or when asked),
//! and never when it finally did not; nothing but the payment itself opens a receipt.

use super::payer::{encode, Payment, PAYER_KEY};
use super::stub::{Mode, Stub};
use super::*;
use std::sync::Arc;

fn agents(stub: &Stub) -> impl FnOnce(&mut outpost::config::Config) + '_ {
    move |c| c.agents = vec![paid_agent("helper", stub)]
}

/// `GET /api/paid/helper/receipts/{id}` with these headers.
async fn redeem(server: &TestServer, id: &str, headers: &[(&str, &str)]) -> Reply {
    let path = format!("/api/paid/helper/receipts/{id}");
    server
        .send(build(Method::GET, &path, None, None, headers))
        .await
}

/// One paid turn whose settlement the stub leaves undecided: its payment and receipt id.
async fn undecided_turn(server: &TestServer, message: &str) -> (Payment, String) {
    let payment = Payment::new(PAYER_KEY, &requirement(server, "helper").await);
    let reply = paid_chat(
        server,
        "helper",
        json!({"message": message}),
        &[("payment-signature", &payment.v2())],
    )
    .await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    assert!(!String::from_utf8_lossy(&reply.body).contains(message));
    let id = reply.json()["receipt_id"].as_str().unwrap().to_string();
    (payment, id)
}

/// A 200 with the reply `text` and a success receipt in the header of the client's version.
fn assert_released(reply: &Reply, text: &str) -> Value {
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["response"], text);
    let name = ["payment-response", "x-payment-response"]
        .into_iter()
        .find(|name| reply.header(name).is_some())
        .expect("a receipt");
    let receipt = decode(reply.header(name).unwrap());
    assert_eq!(receipt["success"], true);
    assert_eq!(
        receipt["transaction"],
        reply.json()["payment"]["transaction"]
    );
    assert!(receipt["transaction"].as_str().unwrap().starts_with("0x"));
    receipt
}

#[tokio::test]
async fn an_undecided_payment_settled_at_the_next_start_is_collected_without_paying_again() {
    let stub = Stub::start(Mode::Fail).await;
    let server = TestServer::with(agents(&stub)).await;
    let (payment, id) = undecided_turn(&server, "worth the wait").await;
    let header = payment.v2();
    stub.set_mode(Mode::Down);
    let still = redeem(&server, &id, &[("payment-signature", &header)]).await;
    assert_eq!(still.status, 202, "{:?}", still.body);
    assert!(!String::from_utf8_lossy(&still.body).contains("worth the wait"));
    assert_eq!(still.json()["status"], "settlement_pending");

    let dir: Arc<tempfile::TempDir> = server.stop().await;
    stub.set_mode(Mode::Accept);
    let server = TestServer::in_dir(dir, agents(&stub)).await;
    let stub_seen = stub.clone();
    eventually(Duration::from_secs(20), || {
        let n = stub_seen.settles().len();
        async move { (n == 3).then_some(()) }
    })
    .await;
    let settles = stub.settles();
    assert_eq!(
        settles[0], settles[2],
        "reconciliation sends the identical body"
    );
    let reply = eventually(Duration::from_secs(10), || async {
        let reply = redeem(&server, &id, &[("payment-signature", &header)]).await;
        (reply.status == 200).then_some(reply)
    })
    .await;
    assert_released(&reply, "worth the wait");
    assert_eq!(reply.json()["execution_id"], id.as_str());
    // Settled once: collecting again settles nothing more, and the payment cannot pay twice.
    let again = redeem(&server, &id, &[("payment-signature", &header)]).await;
    assert_released(&again, "worth the wait");
    let replay = paid_chat(
        &server,
        "helper",
        json!({"message": "worth the wait"}),
        &[("payment-signature", &header)],
    )
    .await;
    assert_payment_required(&replay, "invalid_exact_evm_nonce_already_used");
    assert_eq!(stub.settles().len(), 3);
}

#[tokio::test]
async fn only_the_payment_opens_its_receipt() {
    let stub = Stub::start(Mode::Fail).await;
    let server = TestServer::with(agents(&stub)).await;
    let (payment, id) = undecided_turn(&server, "for my payer only").await;
    stub.set_mode(Mode::Accept);
    let offer = requirement(&server, "helper").await;
    let stranger = Payment::new(0x33, &offer).v2();
    let same_payer_other_nonce = Payment::new(PAYER_KEY, &offer).v2();
    let mut other_signature = payment.clone();
    other_signature.authorization["validAfter"] = json!("1");
    let forged = encode(&payment.v2_with(&other_signature.signature_bytes()));
    let unknown = "06h25n6p8vtdyszq6vvadz3a0va9k02r00g0";
    let header = payment.v2();
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (id.as_str(), vec![]),
        (id.as_str(), vec![("payment-signature", &stranger)]),
        (
            id.as_str(),
            vec![("payment-signature", &same_payer_other_nonce)],
        ),
        (id.as_str(), vec![("payment-signature", &forged)]),
        (id.as_str(), vec![("payment-signature", "bm90IGpzb24")]),
        (unknown, vec![("payment-signature", &header)]),
        ("not-an-id", vec![("payment-signature", &header)]),
    ];
    for (receipt, headers) in cases {
        let reply = redeem(&server, receipt, &headers).await;
        reply.assert_error(404, "not_found");
        assert!(!String::from_utf8_lossy(&reply.body).contains("for my payer only"));
    }
    assert_eq!(stub.settles().len(), 1, "no proof, no settlement attempt");
    // The payment itself, in its v1 spelling too: asked while still owed, it settles now.
    let v1 = payment.v1("base-sepolia");
    let reply = redeem(&server, &id, &[("x-payment", &v1)]).await;
    let v1_receipt = assert_released(&reply, "for my payer only");
    assert!(reply.header("payment-response").is_none());
    assert_eq!(v1_receipt["network"], "base-sepolia");
    assert_eq!(stub.settles().len(), 2);
}

#[tokio::test]
async fn a_payment_that_finally_fails_never_releases_its_reply() {
    let stub = Stub::start(Mode::Fail).await;
    let server = TestServer::with(agents(&stub)).await;
    let (payment, id) = undecided_turn(&server, "never yours").await;
    let header = payment.v2();
    // Asked again within the retry interval: one attempt, not one per request.
    let first = redeem(&server, &id, &[("payment-signature", &header)]).await;
    assert_eq!(first.status, 202, "{:?}", first.body);
    let second = redeem(&server, &id, &[("payment-signature", &header)]).await;
    assert_eq!(second.status, 202, "{:?}", second.body);
    assert_eq!(stub.settles().len(), 2);

    let dir = server.stop().await;
    stub.set_mode(Mode::Reject);
    let server = TestServer::in_dir(dir, agents(&stub)).await;
    let reply = eventually(Duration::from_secs(20), || async {
        let reply = redeem(&server, &id, &[("payment-signature", &header)]).await;
        (reply.status == 402).then_some(reply)
    })
    .await;
    assert_payment_required(&reply, "settlement_failed");
    assert!(!String::from_utf8_lossy(&reply.body).contains("never yours"));
    let receipt = decode(reply.header("payment-response").expect("a failure receipt"));
    assert_eq!(receipt["success"], false);
    assert_eq!(receipt["errorReason"], "insufficient_funds");
    let record = execution(&server, "helper", &id).await;
    assert_eq!(record["payment"]["state"], "failed");
    assert_eq!(stub.settles().len(), 3);
}
