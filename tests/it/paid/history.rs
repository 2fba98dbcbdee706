//! A reply that was withheld (its settlement refused or undecided) never reaches its payer
//! through the session's history sent to a model on a later turn; once it settles, it does.

use super::payer::{Payment, PAYER_KEY};
use super::stub::{Mode, Stub};
use super::*;

/// One paid turn in `session_id` (or a new session) with a fresh payment.
async fn turn(server: &TestServer, message: &str, session_id: Option<&str>) -> (Reply, String) {
    let payment = Payment::new(PAYER_KEY, &requirement(server, "helper").await);
    let header = payment.v2();
    let mut body = json!({"message": message});
    if let Some(id) = session_id {
        body["session_id"] = json!(id);
    }
    let reply = paid_chat(server, "helper", body, &[("payment-signature", &header)]).await;
    (reply, header)
}

/// The assistant messages of a chat completion request.
fn assistant_said(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "assistant")
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_withheld_reply_stays_out_of_the_history_until_it_is_settled() {
    let (base_url, mut seen) = crate::engines::fake_openai().await;
    let stub = Stub::start(Mode::Accept).await;
    let agent = AgentConfig {
        paid: Some(paid_config(&stub.url)),
        ..crate::engines::openai_agent("helper", base_url, "tiny-model")
    };
    let server = TestServer::with(|c| c.agents = vec![agent]).await;

    let (first, _) = turn(&server, "first question", None).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let session = first.json()["session_id"].as_str().unwrap().to_string();
    seen.recv().await.unwrap();

    stub.set_mode(Mode::Reject);
    let (refused, _) = turn(&server, "refused secret", Some(&session)).await;
    assert_payment_required(&refused, "settlement_failed");
    seen.recv().await.unwrap();

    stub.set_mode(Mode::Fail);
    let (undecided, header) = turn(&server, "undecided secret", Some(&session)).await;
    assert_eq!(undecided.status, 202, "{:?}", undecided.body);
    let receipt_id = undecided.json()["receipt_id"].as_str().unwrap().to_string();
    seen.recv().await.unwrap();

    stub.set_mode(Mode::Accept);
    let (fourth, _) = turn(&server, "fourth", Some(&session)).await;
    assert_eq!(fourth.status, 200, "{:?}", fourth.body);
    let sent = seen.recv().await.unwrap();
    assert_eq!(assistant_said(&sent), ["first question "], "{sent}");
    let text = sent.to_string();
    assert!(text.contains("refused secret") && text.contains("undecided secret"));

    // Collected: the undecided reply settles, and from then on it is history like any other.
    let path = format!("/api/paid/helper/receipts/{receipt_id}");
    let collected = server
        .send(build(
            Method::GET,
            &path,
            None,
            None,
            &[("payment-signature", &header)],
        ))
        .await;
    assert_eq!(collected.status, 200, "{:?}", collected.body);
    let (fifth, _) = turn(&server, "fifth", Some(&session)).await;
    assert_eq!(fifth.status, 200, "{:?}", fifth.body);
    let sent = seen.recv().await.unwrap();
    assert_eq!(
        assistant_said(&sent),
        ["first question ", "undecided secret ", "fourth "],
        "{sent}"
    );
}

/// A command engine keeps the conversation itself and is resumed from a handle: a turn
/// after a withheld one resumes from the last settled turn, never from the withheld one.
#[tokio::test]
async fn a_withheld_reply_is_not_resumed_by_a_command_engine() {
    let stub = Stub::start(Mode::Accept).await;
    let agent = AgentConfig {
        paid: Some(paid_config(&stub.url)),
        ..fixture_agent("helper", "recall.sh", None, 4)
    };
    let server = TestServer::with(|c| c.agents = vec![agent]).await;
    let (first, _) = turn(&server, "alpha", None).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.json()["response"], "resumed none: alpha");
    let session = first.json()["session_id"].as_str().unwrap().to_string();

    stub.set_mode(Mode::Reject);
    let (refused, _) = turn(&server, "refused secret", Some(&session)).await;
    assert_payment_required(&refused, "settlement_failed");
    stub.set_mode(Mode::Fail);
    let (undecided, header) = turn(&server, "undecided secret", Some(&session)).await;
    assert_eq!(undecided.status, 202, "{:?}", undecided.body);
    let receipt_id = undecided.json()["receipt_id"].as_str().unwrap().to_string();

    stub.set_mode(Mode::Accept);
    let (next, _) = turn(&server, "gamma", Some(&session)).await;
    assert_eq!(next.status, 200, "{:?}", next.body);
    assert_eq!(next.json()["response"], "resumed sess-alpha: gamma");

    // The undecided turn settles after a later one: the conversation stays where it is.
    let path = format!("/api/paid/helper/receipts/{receipt_id}");
    let request = build(
        Method::GET,
        &path,
        None,
        None,
        &[("payment-signature", &header)],
    );
    let collected = server.send(request).await;
    assert_eq!(collected.status, 200, "{:?}", collected.body);
    let (last, _) = turn(&server, "delta", Some(&session)).await;
    assert_eq!(last.json()["response"], "resumed sess-gamma: delta");
}
