//! `kill -9` around a paid turn: a crash between the turn and its settlement is settled at
//! the next start with the identical body, and its payer collects the reply by the payment's
//! nonce; a crash during the turn is never settled.

use super::payer::{Payment, PAYER_KEY, PAY_TO};
use super::stub::{Mode, Stub};
use super::*;
use crate::restart::Process;

fn config(dir: &std::path::Path, stub: &Stub, delay_ms: u64) -> std::path::PathBuf {
    let path = dir.join("outpost.toml");
    let text = format!(
        "[agents.helper]\nengine = {{ kind = \"echo\", delay_ms = {delay_ms} }}\n\n[agents.helper.paid]\nprice = \"10000\"\nnetwork = \"eip155:84532\"\npay_to = \"{PAY_TO}\"\nfacilitator_url = \"{}\"\nsettle_timeout_s = 60\n",
        stub.url
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts a paid turn on the daemon in the background (its client dies with the daemon);
/// returns the client's task and its payment.
async fn start_paid_turn(
    daemon: &Process,
    message: &str,
) -> (tokio::task::JoinHandle<Reply>, Payment) {
    let info = daemon
        .call(Method::GET, "/api/paid/helper/info", None, None)
        .await;
    let payment = Payment::new(PAYER_KEY, &info.json()["accepts"][0]);
    let header = payment.v2();
    let request = build(
        Method::POST,
        "/api/paid/helper/chat",
        None,
        Some(json!({"message": message})),
        &[("payment-signature", &header)],
    );
    (
        tokio::spawn(send(daemon.addr, None, false, request)),
        payment,
    )
}

/// The payment of the only paid execution, as the admin sees it.
async fn paid_execution(daemon: &Process) -> Value {
    let login = daemon
        .call(
            Method::POST,
            "/api/token",
            None,
            Some(json!({"username": "admin", "password": ADMIN_PASSWORD})),
        )
        .await;
    let token = login.json()["access_token"].as_str().unwrap().to_string();
    let list = daemon
        .call(
            Method::GET,
            "/api/agents/helper/executions?kind=paid",
            Some(&token),
            None,
        )
        .await
        .json();
    let id = list["executions"][0]["id"].as_str().unwrap().to_string();
    daemon
        .call(
            Method::GET,
            &format!("/api/agents/helper/executions/{id}"),
            Some(&token),
            None,
        )
        .await
        .json()
}

#[tokio::test]
async fn a_crash_before_settlement_is_settled_at_the_next_start() {
    let stub = Stub::start(Mode::Slow(Duration::from_secs(60))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &stub, 0);
    let data = dir.path().join("data");
    let daemon = Process::start(&data, &config).await;
    let (client, payment) = start_paid_turn(&daemon, "worth paying for").await;
    let stub_seen = stub.clone();
    eventually(Duration::from_secs(20), || {
        let n = stub_seen.settles().len();
        async move { (n == 1).then_some(()) }
    })
    .await;
    drop(daemon); // kill -9 while the facilitator holds the settlement
    client.abort();
    stub.set_mode(Mode::Accept);
    let daemon = Process::start(&data, &config).await;
    let stub_seen = stub.clone();
    eventually(Duration::from_secs(20), || {
        let n = stub_seen.settles().len();
        async move { (n == 2).then_some(()) }
    })
    .await;
    let settles = stub.settles();
    assert_eq!(settles[0], settles[1], "the identical body is sent again");
    let record = eventually(Duration::from_secs(10), || async {
        let record = paid_execution(&daemon).await;
        (record["payment"]["state"] == "settled").then_some(record)
    })
    .await;
    assert_eq!(record["status"], "success");
    assert_eq!(record["response"], "worth paying for");
    assert!(record["payment"]["transaction"].is_string());

    // The payer never got an answer, so it has no receipt id: the payment's nonce names it.
    let nonce = payment.authorization["nonce"].as_str().unwrap().to_string();
    let header = payment.v2();
    let redeem = |id: String, header: String| {
        let request = build(
            Method::GET,
            &format!("/api/paid/helper/receipts/{id}"),
            None,
            None,
            &[("payment-signature", &header)],
        );
        send(daemon.addr, None, false, request)
    };
    let reply = redeem(nonce.clone(), header.clone()).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(reply.json()["response"], "worth paying for");
    assert_eq!(
        reply.json()["payment"]["transaction"],
        record["payment"]["transaction"]
    );
    let receipt = super::payer::decode(reply.header("payment-response").unwrap());
    assert_eq!(receipt["success"], true);
    // The nonce with another payment, or another payment's nonce: nothing.
    let other = Payment::new(PAYER_KEY, &payment.accepted);
    let other_nonce = other.authorization["nonce"].as_str().unwrap().to_string();
    let reply = redeem(nonce, other.v2()).await;
    reply.assert_error(404, "not_found");
    let reply = redeem(other_nonce, header).await;
    reply.assert_error(404, "not_found");
    assert_eq!(stub.settles().len(), 2);
}

#[tokio::test]
async fn a_crash_during_the_turn_is_never_settled() {
    let stub = Stub::start(Mode::Accept).await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &stub, 200);
    let data = dir.path().join("data");
    let daemon = Process::start(&data, &config).await;
    let words = vec!["word"; 100].join(" ");
    let (client, _) = start_paid_turn(&daemon, &words).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(daemon);
    client.abort();
    let daemon = Process::start(&data, &config).await;
    let record = paid_execution(&daemon).await;
    assert_eq!(record["status"], "failed");
    assert_eq!(record["error"], "interrupted");
    assert_eq!(record["payment"]["state"], "failed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stub.settles().is_empty());
}
