//! Paid chat over x402 against a facilitator stub on 127.0.0.1: the offer and the challenge,
//! a paid turn settled once, replays refused, paid visitor sessions, and the v1 protocol.
//! Refusals and faults are in `paid/faults.rs`, the facilitator's `/verify` in `paid/funds.rs`,
//! receipts of undecided settlements in `paid/receipts.rs`, withheld replies and the model's
//! history in `paid/history.rs`, restarts in `paid/crash.rs`.

mod crash;
mod faults;
mod funds;
mod history;
pub mod payer;
mod receipts;
pub mod stub;

use crate::support::*;
use hyper::Method;
use outpost::config::{AgentConfig, Config, PaidConfig};
use payer::{decode, Payment, PAYER_KEY, PAY_TO};
use serde_json::{json, Value};
use std::time::Duration;
use stub::{Mode, Stub};

/// The `paid` section of the test agents: 10000 units of Base Sepolia USDC per turn, read
/// through the configuration file's parser so that every other key keeps its default.
pub fn paid_config(facilitator_url: &str) -> PaidConfig {
    let text = format!(
        "[agents.helper]\nengine = {{ kind = \"echo\" }}\n[agents.helper.paid]\nprice = \"10000\"\nnetwork = \"eip155:84532\"\npay_to = \"{PAY_TO}\"\nfacilitator_url = \"{facilitator_url}\"\nsettle_timeout_s = 2\nverify_timeout_s = 2\n"
    );
    let config = Config::from_raw(outpost::config::parse(&text).unwrap()).unwrap();
    config.agents[0].paid.clone().unwrap()
}

/// An echo agent that takes payments through `stub`.
pub fn paid_agent(name: &str, stub: &Stub) -> AgentConfig {
    AgentConfig {
        paid: Some(paid_config(&stub.url)),
        ..echo_agent(name, 0, 4)
    }
}

/// A daemon with the free `echo` agent and the paid `helper`.
pub async fn paid_server(stub: &Stub) -> TestServer {
    let helper = paid_agent("helper", stub);
    TestServer::with(|c| c.agents = vec![echo_agent("echo", 0, 4), helper]).await
}

/// The v2 requirement the agent offers.
pub async fn requirement(server: &TestServer, agent: &str) -> Value {
    let info = server
        .call(Method::GET, &format!("/api/paid/{agent}/info"), None, None)
        .await;
    assert_eq!(info.status, 200, "{:?}", info.body);
    info.json()["accepts"][0].clone()
}

/// `POST /api/paid/{agent}/chat` with these headers.
pub async fn paid_chat(
    server: &TestServer,
    agent: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> Reply {
    let path = format!("/api/paid/{agent}/chat");
    server
        .send(build(Method::POST, &path, None, Some(body), headers))
        .await
}

/// One paid turn with a fresh v2 payment of the test payer.
pub async fn pay(server: &TestServer, body: Value) -> Reply {
    let payment = Payment::new(PAYER_KEY, &requirement(server, "helper").await);
    paid_chat(
        server,
        "helper",
        body,
        &[("payment-signature", &payment.v2())],
    )
    .await
}

/// Asserts a 402 with `code` in the body and in the `PAYMENT-REQUIRED` header.
pub fn assert_payment_required(reply: &Reply, code: &str) -> Value {
    reply.assert_error(402, code);
    let body = reply.json();
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["accepts"][0]["network"], "base-sepolia");
    assert!(body.get("response").is_none(), "no reply text in a 402");
    let required = decode(reply.header("payment-required").expect("PAYMENT-REQUIRED"));
    assert_eq!(required["x402Version"], 2);
    assert_eq!(required["error"], code);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    required
}

/// The execution as the admin sees it.
pub async fn execution(server: &TestServer, agent: &str, id: &str) -> Value {
    let admin = server.admin().await;
    let reply = server
        .get(&format!("/api/agents/{agent}/executions/{id}"), &admin)
        .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()
}

#[tokio::test]
async fn the_offer_and_the_challenge() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let info = server
        .call(Method::GET, "/api/paid/helper/info", None, None)
        .await;
    assert_eq!(info.status, 200);
    assert_eq!(info.header("cache-control"), Some("no-store"));
    assert_eq!(info.header("access-control-allow-origin"), Some("*"));
    let info = info.json();
    assert_eq!(info["agent"], "helper");
    assert_eq!(info["x402Version"], 2);
    assert_eq!(
        info["price"],
        json!({"amount": "10000", "asset": "0x036CbD53842c5426634e7929541eC2318f3dCF7e", "network": "eip155:84532"})
    );
    let offer = &info["accepts"][0];
    assert_eq!(offer["scheme"], "exact");
    assert_eq!(offer["payTo"], PAY_TO);
    assert_eq!(offer["maxTimeoutSeconds"], 300);
    assert_eq!(offer["extra"], json!({"name": "USDC", "version": "2"}));
    assert!(info["resource"]["url"]
        .as_str()
        .unwrap()
        .ends_with("/api/paid/helper/chat"));
    for path in ["/api/paid/echo/info", "/api/paid/nobody/info"] {
        let reply = server.call(Method::GET, path, None, None).await;
        reply.assert_error(404, "not_found");
    }
    let reply = paid_chat(&server, "echo", json!({"message": "hi"}), &[]).await;
    reply.assert_error(404, "not_found");

    let reply = paid_chat(&server, "helper", json!({"message": "hi"}), &[]).await;
    let required = assert_payment_required(&reply, "payment_required");
    assert_eq!(required["accepts"], info["accepts"]);
    assert_eq!(required["resource"], info["resource"]);
    let v1 = &reply.json()["accepts"][0];
    assert_eq!(v1["maxAmountRequired"], "10000");
    assert_eq!(v1["resource"], info["resource"]["url"]);
    assert!(v1.get("outputSchema").is_none());
    let exposed = reply.header("access-control-expose-headers").unwrap();
    assert!(exposed.contains("PAYMENT-REQUIRED") && exposed.contains("X-PAYMENT-RESPONSE"));

    let preflight = server
        .call(Method::OPTIONS, "/api/paid/helper/chat", None, None)
        .await;
    assert_eq!(preflight.status, 204);
    let allowed = preflight.header("access-control-allow-headers").unwrap();
    assert!(allowed.contains("PAYMENT-SIGNATURE") && allowed.contains("X-PAYMENT"));
    assert!(stub.settles().is_empty());
}

#[tokio::test]
async fn a_fresh_payment_is_served_and_settled_once_and_never_twice() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let offer = requirement(&server, "helper").await;
    let payment = Payment::new(PAYER_KEY, &offer);
    let header = payment.v2();
    let body = json!({"message": "hello paid world"});
    let reply = paid_chat(
        &server,
        "helper",
        body.clone(),
        &[("payment-signature", &header)],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    let doc = reply.json();
    assert_eq!(doc["response"], "hello paid world");
    let receipt = decode(reply.header("payment-response").expect("a receipt"));
    assert_eq!(receipt["success"], true);
    assert_eq!(receipt["payer"], payment.authorization["from"]);
    assert_eq!(receipt["network"], "eip155:84532");
    assert_eq!(doc["payment"]["transaction"], receipt["transaction"]);
    assert_eq!(doc["payment"]["payer"], receipt["payer"]);
    let settles = stub.settles();
    assert_eq!(settles.len(), 1);
    assert_eq!(settles[0]["x402Version"], 2);
    assert_eq!(settles[0]["paymentRequirements"], offer);
    assert_eq!(settles[0]["paymentPayload"], decode(&header));

    let record = execution(&server, "helper", doc["execution_id"].as_str().unwrap()).await;
    assert_eq!(record["kind"], "paid");
    assert_eq!(record["status"], "success");
    let paid = &record["payment"];
    assert_eq!(paid["state"], "settled");
    assert_eq!(paid["payer"], receipt["payer"]);
    assert_eq!(paid["amount"], "10000");
    assert_eq!(paid["network"], "eip155:84532");
    assert_eq!(paid["transaction"], receipt["transaction"]);
    assert!(record["username"]
        .as_str()
        .unwrap()
        .starts_with("paid:0x19e7e376"));

    // The same header again: refused, nothing runs, nothing settles.
    let again = paid_chat(&server, "helper", body, &[("payment-signature", &header)]).await;
    assert_payment_required(&again, "invalid_exact_evm_nonce_already_used");
    assert_eq!(stub.settles().len(), 1);
}

#[tokio::test]
async fn the_same_payment_eight_times_at_once_is_served_once() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let header = Payment::new(PAYER_KEY, &requirement(&server, "helper").await).v2();
    let replies = futures_join(&server, &header, 8).await;
    let served = replies.iter().filter(|r| r.status == 200).count();
    assert_eq!(
        served,
        1,
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for reply in replies.iter().filter(|r| r.status != 200) {
        assert_payment_required(reply, "invalid_exact_evm_nonce_already_used");
    }
    assert_eq!(stub.settles().len(), 1);
}

async fn futures_join(server: &TestServer, header: &str, n: usize) -> Vec<Reply> {
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let request = build(
            Method::POST,
            "/api/paid/helper/chat",
            None,
            Some(json!({"message": format!("race {i}")})),
            &[("payment-signature", header)],
        );
        let addr = server.addr;
        tasks.spawn(async move { send(addr, None, false, request).await });
    }
    tasks.join_all().await
}

#[tokio::test]
async fn paid_visitor_sessions_continue_for_their_payer_only() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let first = pay(&server, json!({"message": "one"})).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let session_id = first.json()["session_id"].as_str().unwrap().to_string();
    let second = pay(&server, json!({"message": "two", "session_id": session_id})).await;
    assert_eq!(second.status, 200, "{:?}", second.body);
    assert_eq!(second.json()["session_id"], session_id.as_str());
    assert_eq!(second.json()["response"], "two");
    let admin = server.admin().await;
    let session = server
        .get(
            &format!("/api/agents/helper/chat/sessions/{session_id}"),
            &admin,
        )
        .await
        .json();
    let messages = session["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert!(messages.iter().all(|m| m["source"] == "paid"));

    // A session id that is not a paid session of this agent and payer: 404, not charged.
    let offer = requirement(&server, "helper").await;
    let payment = Payment::new(PAYER_KEY, &offer);
    let unknown = "06h25n6p8vtdyszq6vvadz3a0va9k02r00g0";
    for id in [unknown, "not-an-id"] {
        let body = json!({"message": "three", "session_id": id});
        let reply = paid_chat(
            &server,
            "helper",
            body,
            &[("payment-signature", &payment.v2())],
        )
        .await;
        reply.assert_error(404, "not_found");
    }
    let stranger = Payment::new(0x33, &offer);
    let body = json!({"message": "mine now", "session_id": session_id});
    let reply = paid_chat(
        &server,
        "helper",
        body,
        &[("payment-signature", &stranger.v2())],
    )
    .await;
    reply.assert_error(404, "not_found");
    let user_chat = server
        .chat_json(
            "echo",
            &admin,
            json!({"message": "x", "session_id": session_id}),
        )
        .await;
    user_chat.assert_error(404, "not_found");
    // The refused payment was not used up.
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "three"}),
        &[("payment-signature", &payment.v2())],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert_eq!(stub.settles().len(), 3);
}

#[tokio::test]
async fn version_one_clients_pay_with_x_payment() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let challenge = paid_chat(&server, "helper", json!({"message": "hi"}), &[]).await;
    let v1_offer = challenge.json()["accepts"][0].clone();
    let payment = Payment::new(PAYER_KEY, &requirement(&server, "helper").await);
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "old client"}),
        &[("x-payment", &payment.v1("base-sepolia"))],
    )
    .await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    assert!(reply.header("payment-response").is_none());
    let receipt = decode(reply.header("x-payment-response").expect("a v1 receipt"));
    assert_eq!(receipt["success"], true);
    let settles = stub.settles();
    assert_eq!(settles[0]["x402Version"], 1);
    assert_eq!(settles[0]["paymentRequirements"], v1_offer);
    let wrong = Payment::new(PAYER_KEY, &requirement(&server, "helper").await);
    let reply = paid_chat(
        &server,
        "helper",
        json!({"message": "x"}),
        &[("x-payment", &wrong.v1("base"))],
    )
    .await;
    assert_payment_required(&reply, "invalid_payment_requirements");
}

#[tokio::test]
async fn a_stopped_agent_refuses_paid_turns_without_charging() {
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let admin = server.admin().await;
    let stop = server
        .call(Method::POST, "/api/agents/helper/stop", Some(&admin), None)
        .await;
    assert_eq!(stop.status, 200);
    let reply = pay(&server, json!({"message": "anyone?"})).await;
    reply.assert_error(503, "agent_stopped");
    assert!(stub.settles().is_empty());
}

/// Black box: the PyPI `x402` client pays a running Outpost and gets the reply and a receipt.
/// `tests/run.sh` installs the pinned client into a venv and names its python in
/// `OUTPOST_X402_PYTHON`; a plain `cargo test` without it has nothing to run here.
#[tokio::test]
async fn the_python_x402_client_pays_and_gets_the_reply() {
    let Ok(python) = std::env::var("OUTPOST_X402_PYTHON") else {
        return;
    };
    let stub = Stub::start(Mode::Accept).await;
    let server = paid_server(&stub).await;
    let url = format!("http://{}/api/paid/helper/chat", server.addr);
    let output = tokio::process::Command::new(python)
        .arg(format!(
            "{}/tests/data/x402/pay.py",
            env!("CARGO_MANIFEST_DIR")
        ))
        .args([&url, "hello from python"])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(result["status"], 200, "{result}");
    assert_eq!(result["body"]["response"], "hello from python");
    assert_eq!(result["receipt"]["success"], true);
    assert_eq!(
        result["receipt"]["payer"],
        "0x19E7E376E7C213B7E7e7e46cc70A5dD086DAff2A"
    );
    let settles = stub.settles();
    assert_eq!(settles.len(), 1);
    assert_eq!(
        settles[0]["paymentRequirements"],
        requirement(&server, "helper").await
    );
}
