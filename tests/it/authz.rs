//! The authorization matrix: every route of `openapi.json` × every kind of caller (no token,
//! expired, revoked, another user, a re-created account, a shared user, the owner, an admin,
//! scoped device tokens) ×
//! the caller's own ids, another user's, and the admin's private agent. Each cell expects
//! its documented status, and no successful answer may carry an id the caller may not see.

mod cache;
mod callers;
mod routes;

use crate::support::*;
use callers::{Ids, Who, World, AGENT, NOBODY, VAULT};
use hyper::Method;
use routes::{Ctx, Row, Setup};
use serde_json::json;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// One cell's outcome.
struct Cell {
    who: Who,
    ids: Ids,
    expected: u16,
    status: u16,
    /// A secret found in a successful answer.
    leak: Option<String>,
}

impl Cell {
    fn passed(&self) -> bool {
        self.expected == self.status && self.leak.is_none()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_caller_as_documented() {
    let world = World::build().await;
    let rows = routes::rows();
    assert_rows_cover_the_document(&world, &rows).await;
    let mut results: Vec<(&Row, Vec<Cell>)> = Vec::new();
    let mut n = 0;
    for row in &rows {
        let mut cells = Vec::new();
        for &ids in row.variants {
            for who in Who::ALL {
                n += 1;
                cells.push(run(&world, row, who, ids, n).await);
            }
        }
        results.push((row, cells));
    }
    let failed = results
        .iter()
        .flat_map(|(_, cells)| cells)
        .filter(|c| !c.passed())
        .count();
    assert!(
        failed == 0,
        "{failed} of {n} cells differ from the documented answer (expected!got, leak=*):\n{}",
        matrix(&results)
    );
}

/// Every documented operation has a row, and every row is a documented operation.
async fn assert_rows_cover_the_document(world: &World, rows: &[Row]) {
    let doc = world
        .server
        .call(Method::GET, "/openapi.json", None, None)
        .await
        .json();
    let mut documented = BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert((method.to_uppercase(), template.clone()));
            }
        }
    }
    let covered: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.method.to_string(), r.template.to_string()))
        .collect();
    let missing: Vec<_> = documented.difference(&covered).collect();
    assert!(missing.is_empty(), "routes without a row: {missing:?}");
    let extra: Vec<_> = covered.difference(&documented).collect();
    assert!(extra.is_empty(), "rows of undocumented routes: {extra:?}");
}

/// Makes what the cell uses up, sends its request, and judges the answer.
async fn run(world: &World, row: &Row, who: Who, ids: Ids, n: usize) -> Cell {
    let server = &world.server;
    let admin = world.token(Who::Admin).unwrap();
    let turn = world.turn(who, ids);
    let mut agent = match ids {
        Ids::Vault => VAULT.to_string(),
        _ => AGENT.to_string(),
    };
    let mut token = world.token(who).map(str::to_string);
    let mut fresh = String::new();
    match row.setup {
        Setup::None => {}
        Setup::Agent | Setup::StoppedAgent if ids == Ids::Vault => {}
        Setup::Agent | Setup::StoppedAgent => {
            agent = format!("fresh-{n}");
            let olive = world.token(Who::Owner).unwrap();
            let made = server
                .post("/api/agents", olive, json!({"name": agent}))
                .await;
            assert_eq!(made.status, 201, "{:?}", made.body);
            share(server, olive, &agent, "sam").await;
        }
        Setup::Link => fresh = callers::link_of(server, admin, &agent).await.id,
        Setup::User => {
            fresh = format!("gone-{n}");
            let body = json!({"username": fresh, "password": "a-long-password"});
            let made = server.post("/api/users", admin, body).await;
            assert_eq!(made.status, 201, "{:?}", made.body);
        }
        Setup::Share => share(server, admin, &agent, NOBODY).await,
        Setup::Voice => {
            let path = format!("/api/agents/{agent}/voice/start");
            let started = server.post(&path, world.token_of(turn), json!({})).await;
            assert_eq!(started.status, 201, "{:?}", started.body);
            fresh = started.json()["voice_session_id"]
                .as_str()
                .unwrap()
                .to_string();
        }
        Setup::Token => token = world.fresh_token(who).await,
        Setup::DeviceToken => {
            let body = json!({"username": "olive", "ttl": "1h", "label": format!("cell-{n}")});
            let minted = server.post("/api/tokens", admin, body).await;
            assert_eq!(minted.status, 201, "{:?}", minted.body);
            fresh = minted.json()["id"].as_str().unwrap().to_string();
        }
    }
    let ctx = Ctx {
        world,
        ids,
        agent,
        turn,
        fresh,
        n,
    };
    let request = (row.request)(&ctx);
    let headers: Vec<(&str, &str)> = request
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let reply = server
        .send(build(
            row.method.clone(),
            &request.path,
            token.as_deref(),
            request.body,
            &headers,
        ))
        .await;
    if row.setup == Setup::StoppedAgent && ids == Ids::Vault {
        let started = server
            .call(
                Method::POST,
                &format!("/api/agents/{VAULT}/start"),
                Some(admin),
                None,
            )
            .await;
        assert_eq!(started.status, 200, "{:?}", started.body);
    }
    let leak = if (200..300).contains(&reply.status) {
        let body = String::from_utf8_lossy(&reply.body);
        world
            .secrets(who, matches!(row.access, routes::Access::Open(_)))
            .into_iter()
            .find(|secret| body.contains(secret.as_str()))
    } else {
        None
    };
    Cell {
        who,
        ids,
        expected: row.expected(who, ids),
        status: reply.status,
        leak,
    }
}

async fn share(server: &TestServer, token: &str, agent: &str, username: &str) {
    let path = format!("/api/agents/{agent}/shares");
    let shared = server
        .post(&path, token, json!({"username": username}))
        .await;
    assert_eq!(shared.status, 201, "{:?}", shared.body);
}

/// The matrix as text: a line per route and ids, a column per caller; a cell is its status,
/// `expected!got` when it differs, with `*` when the answer leaked something.
fn matrix(results: &[(&Row, Vec<Cell>)]) -> String {
    let mut out = format!("{:<58} {:<8}", "route", "ids");
    for who in Who::ALL {
        let _ = write!(out, " {:>9}", who.label());
    }
    out.push('\n');
    for (row, cells) in results {
        for &ids in row.variants {
            let route = format!("{} {}", row.method, row.template);
            let _ = write!(out, "{route:<58} {:<8}", ids.label());
            for cell in cells.iter().filter(|c| c.ids == ids) {
                let mut text = if cell.status == cell.expected {
                    cell.status.to_string()
                } else {
                    format!("{}!{}", cell.expected, cell.status)
                };
                if cell.leak.is_some() {
                    text.push('*');
                }
                let _ = write!(out, " {text:>9}");
            }
            out.push('\n');
        }
    }
    for (row, cells) in results {
        for cell in cells {
            if let Some(leak) = &cell.leak {
                let _ = writeln!(
                    out,
                    "leak: {} {} [{}] as {} shows {leak}",
                    row.method,
                    row.template,
                    cell.ids.label(),
                    cell.who.label()
                );
            }
        }
    }
    out
}

/// A removed account's token stays refused once the name is taken again, also after a
/// restart (the accounts are read from the store at start).
#[tokio::test]
async fn a_removed_accounts_token_is_refused_even_when_the_name_returns() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let old = server.user("dora").await;
    assert_eq!(server.get("/api/users/me", &old).await.status, 200);
    let removed = server
        .call(Method::DELETE, "/api/users/dora", Some(&admin), None)
        .await;
    assert_eq!(removed.status, 200, "{:?}", removed.body);
    let me = server.get("/api/users/me", &old).await;
    me.assert_error(401, "unauthorized");
    // Tokens carry whole seconds: the new account is made in a later second than the old token.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let new = server.user("dora").await;
    let me = server.get("/api/users/me", &old).await;
    me.assert_error(401, "unauthorized");
    assert_eq!(server.get("/api/users/me", &new).await.status, 200);

    let dir = server.stop().await;
    let server = TestServer::in_dir(dir, |_| {}).await;
    let me = server.get("/api/users/me", &old).await;
    me.assert_error(401, "unauthorized");
    assert_eq!(server.get("/api/users/me", &new).await.status, 200);
}
