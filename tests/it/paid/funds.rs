//! Who pays for the model's work: the facilitator's `/verify` (on by default) comes before
//! the turn, so a payer without funds, or a facilitator that cannot say, gets a 402 and
//! nothing runs.

use super::stub::{Mode, Stub};
use super::*;

/// The owner's log of `agent`: every execution, whatever its kind.
async fn owner_log(server: &TestServer, agent: &str) -> Vec<Value> {
    let admin = server.admin().await;
    let reply = server
        .get(&format!("/api/agents/{agent}/executions"), &admin)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["executions"].as_array().unwrap().clone()
}

#[tokio::test]
async fn an_unfunded_payer_gets_402_and_no_model_work() {
    let stub = Stub::start(Mode::Unfunded).await;
    let server = paid_server(&stub).await;
    for i in 0..3 {
        let reply = pay(&server, json!({"message": format!("free compute {i}?")})).await;
        assert_payment_required(&reply, "payment_rejected");
        let message = reply.json()["message"].as_str().unwrap().to_string();
        assert!(message.contains("insufficient_funds"), "{message}");
        assert!(reply.json().get("execution_id").is_none());
    }
    assert_eq!(stub.verifies().len(), 3);
    assert!(stub.settles().is_empty());
    let log = owner_log(&server, "helper").await;
    assert!(log.is_empty(), "the engine never ran: {log:?}");
}

#[tokio::test]
async fn a_facilitator_that_cannot_verify_runs_nothing() {
    let stub = Stub::start(Mode::Down).await;
    let server = paid_server(&stub).await;
    let offer = requirement(&server, "helper").await;
    let payment = payer::Payment::new(PAYER_KEY, &offer);
    let header = payment.v2();
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "anyone there?"}),
        &[("payment-signature", &header)],
    )
    .await;
    assert_payment_required(&reply, "facilitator_unavailable");
    assert!(stub.settles().is_empty());
    assert!(owner_log(&server, "helper").await.is_empty());
    // The authorization was not used up: once the facilitator answers, it pays the turn.
    stub.set_mode(Mode::Accept);
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "now"}),
        &[("payment-signature", &header)],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["response"], "now");
}
