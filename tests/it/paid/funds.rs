//! Who pays for the model's work: the facilitator's `/verify` (on by default) comes before
//! the turn, so a payer without funds, or a facilitator that cannot say, gets a 402 and
//! nothing runs; an agent that trusts signatures alone caps the turns a minute that may go
//! unpaid.

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

/// A paid agent that trusts signatures alone, with room for `per_minute` unpaid turns.
fn unverified_agent(stub: &Stub, per_minute: u32) -> AgentConfig {
    let mut agent = paid_agent("helper", stub);
    let paid = agent.paid.as_mut().unwrap();
    paid.verify_with_facilitator = false;
    paid.unverified_turns_per_minute = per_minute;
    agent
}

/// One turn paid by the key `key` (any key: fresh keys cost nothing).
async fn pay_as(server: &TestServer, key: u8, message: &str) -> Reply {
    let payment = payer::Payment::new(key, &requirement(server, "helper").await);
    paid_chat(
        server,
        "helper",
        json!({"message": message}),
        &[("payment-signature", &payment.v2())],
    )
    .await
}

#[tokio::test]
async fn without_verify_fresh_keys_get_only_the_unpaid_turns_a_minute_allows() {
    let stub = Stub::start(Mode::Unfunded).await;
    let server = TestServer::with(|c| c.agents = vec![unverified_agent(&stub, 2)]).await;
    for key in [0x40, 0x41] {
        let reply = pay_as(&server, key, "free compute?").await;
        assert_payment_required(&reply, "settlement_failed");
    }
    for key in [0x42, 0x43, 0x44] {
        let reply = pay_as(&server, key, "more free compute?").await;
        reply.assert_error(429, "rate_limited");
        let wait: u64 = reply.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&wait), "{wait}");
    }
    assert!(stub.verifies().is_empty());
    assert_eq!(stub.settles().len(), 2);
    let log = owner_log(&server, "helper").await;
    assert_eq!(log.len(), 2, "only two turns ran: {log:?}");
}

#[tokio::test]
async fn without_verify_settled_turns_give_their_place_back() {
    let stub = Stub::start(Mode::Accept).await;
    let server = TestServer::with(|c| c.agents = vec![unverified_agent(&stub, 1)]).await;
    for i in 0..4 {
        let reply = pay_as(&server, PAYER_KEY, &format!("paid {i}")).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    stub.set_mode(Mode::Unfunded);
    let reply = pay_as(&server, 0x40, "unpaid").await;
    assert_payment_required(&reply, "settlement_failed");
    stub.set_mode(Mode::Accept);
    let reply = pay_as(&server, PAYER_KEY, "paying customer").await;
    reply.assert_error(429, "rate_limited");
    assert_eq!(stub.settles().len(), 5);
}
