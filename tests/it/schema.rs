//! The API against its own document: schemathesis (PyPI, pinned; `tests/run.sh` installs it
//! and names it in `OUTPOST_SCHEMATHESIS`) generates requests from `/openapi.json` of a daemon
//! holding real data, and checks that no answer is a server error and that every answer has a
//! documented status, content type and body.

use crate::support::*;
use hyper::Method;
use outpost::config::{AgentConfig, Config, VoiceConfig, VoiceMode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Output;

/// The variable `tests/run.sh` sets to the `st` program of its venv.
const SCHEMATHESIS: &str = "OUTPOST_SCHEMATHESIS";
/// Examples per operation and phase: enough to reach every documented branch with real ids,
/// few enough that the three runs take well under a minute on a busy 2-core machine.
const MAX_EXAMPLES: &str = "12";
/// A fixed seed, so that a failure reruns the same requests.
const SEED: &str = "20261128";

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
response_schema_conformance,response_headers_conformance,unsupported_method,\
allow_header_conformance,ndjson_conformance";

fn schemathesis() -> PathBuf {
    match std::env::var_os(SCHEMATHESIS) {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "{SCHEMATHESIS} is not set: run the tests with tests/run.sh, which installs the pinned \
             schemathesis into target/schemathesis-venv and sets it"
        ),
    }
}

/// `echo` (the admin's, shared with bob), `helper` (alice's) and `shop` (paid); voice in echo
/// mode so that calls can start; visitor limits high enough for a fuzzer.
fn config(config: &mut Config) {
    let facilitator = "http://127.0.0.1:9"; // never reached: no generated payment is signed
    config.agents = vec![
        AgentConfig {
            shared_with: vec!["bob".into()],
            ..echo_agent("echo", 0, 8)
        },
        AgentConfig {
            owner: "alice".into(),
            ..echo_agent("helper", 0, 8)
        },
        AgentConfig {
            paid: Some(crate::paid::paid_config(facilitator)),
            ..echo_agent("shop", 0, 8)
        },
    ];
    for agent in &mut config.agents {
        agent.voice = true;
    }
    config.voice = Some(VoiceConfig {
        mode: VoiceMode::Echo,
        max_sessions: 10_000,
        max_per_user: 10_000,
        ..VoiceConfig::default()
    });
    config.public.requests_per_minute_per_ip = 1_000_000;
    config.public.default_link_rate_limit_per_minute = 10_000;
}

/// Ids a generated request may use in place of a random one.
#[derive(Default)]
struct Fixtures {
    /// Session and execution ids, of both users (`{id}` in the paths).
    ids: Vec<String>,
    link_ids: Vec<String>,
    link_tokens: Vec<String>,
    visitor_sessions: Vec<String>,
}

impl Fixtures {
    /// A chat turn, a task and a public link with a visitor's turn, as `token` on `agent`.
    async fn add(&mut self, server: &TestServer, token: &str, agent: &str) {
        let turn = server
            .chat_json(agent, token, json!({"message": "hello there"}))
            .await;
        assert_eq!(turn.status, 200, "{:?}", turn.body);
        let turn = turn.json();
        let task = server
            .post(
                &format!("/api/agents/{agent}/task"),
                token,
                json!({"message": "the weekly report"}),
            )
            .await;
        assert_eq!(task.status, 200, "{:?}", task.body);
        let link = server
            .post(
                &format!("/api/agents/{agent}/public-links"),
                token,
                json!({"name": "site"}),
            )
            .await;
        assert_eq!(link.status, 201, "{:?}", link.body);
        let link = link.json();
        let link_token = text(&link["token"]);
        let visit = server
            .call(
                Method::POST,
                &format!("/api/public/chat/{link_token}"),
                None,
                Some(json!({"message": "hi"})),
            )
            .await;
        assert_eq!(visit.status, 200, "{:?}", visit.body);
        self.ids.push(text(&turn["session_id"]));
        self.ids.push(text(&turn["execution_id"]));
        self.ids.push(text(&task.json()["execution_id"]));
        self.link_ids.push(text(&link["id"]));
        self.link_tokens.push(link_token);
        self.visitor_sessions
            .push(text(&visit.json()["session_id"]));
    }

    /// The schemathesis configuration: path and query parameters drawn from these ids most of
    /// the time (so handlers get past their 404s), random otherwise.
    fn write_config(&self, path: &Path) {
        let list = |values: &[String]| serde_json::to_string(values).unwrap();
        let names = ["echo", "helper", "shop"].map(String::from);
        let users = ["bob", "carol"].map(String::from);
        let text = format!(
            "[dictionaries.agent]\nvalues = {}\n\
             [dictionaries.paid]\nvalues = [\"shop\"]\n\
             [dictionaries.id]\nvalues = {}\n\
             [dictionaries.link]\nvalues = {}\n\
             [dictionaries.token]\nvalues = {}\n\
             [dictionaries.user]\nvalues = {}\n\
             [dictionaries.visitor]\nvalues = {}\n\
             [parameters]\n\
             \"path.name\" = {{ dictionary = \"agent\", probability = 0.8 }}\n\
             \"path.agent\" = {{ dictionary = \"paid\", probability = 0.8 }}\n\
             \"path.id\" = {{ dictionary = \"id\", probability = 0.8 }}\n\
             \"path.link_id\" = {{ dictionary = \"link\", probability = 0.8 }}\n\
             \"path.token\" = {{ dictionary = \"token\", probability = 0.8 }}\n\
             \"path.username\" = {{ dictionary = \"user\", probability = 0.5 }}\n\
             \"query.session_id\" = {{ dictionary = \"visitor\", probability = 0.8 }}\n",
            list(&names),
            list(&self.ids),
            list(&self.link_ids),
            list(&self.link_tokens),
            list(&users),
            list(&self.visitor_sessions),
        );
        std::fs::write(path, text).unwrap();
    }
}

fn text(value: &Value) -> String {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value}"))
        .to_string()
}

/// One `st run` against the daemon with `token`, limited by `filters`.
async fn run(server: &TestServer, dir: &Path, token: &str, filters: &[&str]) -> Output {
    let hooks = format!(
        "{}/tests/data/schemathesis/hooks.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let url = format!("http://{}/openapi.json", server.addr);
    // One worker: with two, hypothesis describing its filters (`ast.parse` on two threads)
    // sometimes failed inside Python 3.11 with "AST constructor recursion depth mismatch".
    tokio::process::Command::new(schemathesis())
        .current_dir(dir)
        .env("SCHEMATHESIS_HOOKS", hooks)
        .args([
            "--no-color",
            "--config-file",
            "schemathesis.toml",
            "run",
            &url,
        ])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS, "--max-examples", MAX_EXAMPLES])
        .args(["--seed", SEED, "--workers", "1", "--request-timeout", "20"])
        .args(filters)
        .output()
        .await
        .expect("schemathesis runs")
}

fn assert_passed(who: &str, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis as {who} found answers that break the document ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(" generated"),
        "schemathesis as {who} ran no case:\n{stdout}"
    );
}

/// Left out of the general runs, with reasons:
/// - logout revokes the token the run uses, so it gets its own run with a spare token;
/// - stop makes the agents answer `503 agent_stopped` by design, which `not_a_server_error`
///   counts (stopping is covered in `agents.rs` and by the authorization matrix).
const EXCLUDED: [&str; 4] = [
    "--exclude-path",
    "/api/auth/logout",
    "--exclude-path",
    "/api/agents/{name}/stop",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_matches_the_openapi_document() {
    let st = schemathesis();
    assert!(
        st.exists(),
        "{SCHEMATHESIS}={} does not exist",
        st.display()
    );
    let server = TestServer::with(config).await;
    let admin = server.admin().await;
    let alice = server.user("alice").await;
    server.user("bob").await;
    server.user("carol").await;
    let mut fixtures = Fixtures::default();
    fixtures.add(&server, &admin, "echo").await;
    fixtures.add(&server, &alice, "helper").await;
    // Minted before the runs: the admin's run may delete bob, which leaves his token valid.
    let spare = server.login("bob", "bob-password").await;
    let dir = tempfile::tempdir().unwrap();
    fixtures.write_config(&dir.path().join("schemathesis.toml"));

    // A plain user first: the admin's run may delete users.
    let output = run(&server, dir.path(), &alice, &EXCLUDED).await;
    assert_passed("alice (a user)", &output);
    let output = run(&server, dir.path(), &admin, &EXCLUDED).await;
    assert_passed("admin", &output);
    let logout = ["--include-path", "/api/auth/logout"];
    let output = run(&server, dir.path(), &spare, &logout).await;
    assert_passed("bob, logging out", &output);
}
