//! Command engine tests against the fixture scripts in `tests/data/engines/`.

use super::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::time::timeout;

/// How long a test waits for something that should happen at once.
const BOUND: Duration = Duration::from_secs(10);

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/engines")
        .join(name);
    path.to_string_lossy().into_owned()
}

fn engine(program: String, env: &[(&str, &Path)], workdir: Option<&Path>) -> Command {
    Command::new(EngineSpec::Command {
        program,
        args: Vec::new(),
        workdir: workdir.map(Path::to_path_buf),
        env: env
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string_lossy().into_owned()))
            .collect(),
        resume_args: Vec::new(),
    })
}

/// Runs one turn to its end (within [`BOUND`]) and returns its result and every event sent.
async fn run(engine: &Command, turn: Turn) -> (Result<Outcome, Error>, Vec<Value>) {
    let (sink, mut rx) = EventSink::channel();
    let result = timeout(BOUND, engine.run(turn, sink))
        .await
        .expect("the turn ends");
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    (result, events)
}

fn prompt(text: &str) -> Turn {
    Turn {
        prompt: text.into(),
        ..Turn::default()
    }
}

/// The state and process group of a process from `/proc/<pid>/stat`; `None` once it is gone.
fn stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let group = fields.nth(1)?.parse().ok()?;
    Some((state, group))
}

/// Waits (bounded) until the process is gone or a zombie nobody has reaped yet.
async fn is_dead(pid: u32) -> bool {
    let dead = || matches!(stat(pid), None | Some(('Z' | 'X', _)));
    timeout(BOUND, async {
        while !dead() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

fn pid_in(dir: &Path, name: &str) -> u32 {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    text.trim().parse().unwrap()
}

#[tokio::test]
async fn relays_the_agents_events_and_absorbs_its_init_and_result() {
    let (result, events) = run(
        &engine(fixture("agent.sh"), &[], None),
        prompt("hello outpost"),
    )
    .await;
    let outcome = result.unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|event| event["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["stream_event", "fixture_unknown", "assistant"]);
    assert_eq!(
        events[1],
        json!({"type": "fixture_unknown", "detail": {"kept": true}})
    );
    assert_eq!(
        events[2]["message"]["content"][0]["text"],
        "you said: hello outpost"
    );

    assert_eq!(outcome.text, "you said: hello outpost");
    assert_eq!(outcome.resume.as_deref(), Some("sess-42"));
    assert_eq!(outcome.model.as_deref(), Some("fixture-model"));
    assert_eq!((outcome.num_turns, outcome.cost_usd), (2, 0.0123));
    let usage = &outcome.usage;
    assert_eq!(
        (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens
        ),
        (30, 40, 5)
    );
    assert_eq!(
        outcome.tool_calls,
        vec![
            json!({"type": "tool_use", "id": "tool-1", "name": "Bash", "input": {"command": "ls"}})
        ]
    );
}

#[tokio::test]
async fn passes_arguments_resume_handle_environment_and_workdir() {
    let workdir = tempfile::tempdir().unwrap();
    let command = Command::new(EngineSpec::Command {
        program: fixture("probe.sh"),
        args: vec!["--print".into(), "two words".into()],
        workdir: Some(workdir.path().to_path_buf()),
        env: [(
            "OUTPOST_FIXTURE_VALUE".to_string(),
            "from config".to_string(),
        )]
        .into(),
        resume_args: vec![
            "--resume".into(),
            "{session}".into(),
            "--tag=s:{session}".into(),
        ],
    });

    let (result, events) = run(&command, prompt("first")).await;
    assert_eq!(result.unwrap().resume.as_deref(), Some("sess-next"));
    assert_eq!(events[0]["args"], "[--print][two words]");
    assert_eq!(events[0]["env"], "from config");
    let cwd = Path::new(events[0]["cwd"].as_str().unwrap())
        .canonicalize()
        .unwrap();
    assert_eq!(cwd, workdir.path().canonicalize().unwrap());

    let turn = Turn {
        resume: Some("sess-next".into()),
        ..prompt("second")
    };
    let (result, events) = run(&command, turn).await;
    assert!(result.is_ok());
    assert_eq!(
        events[0]["args"],
        "[--print][two words][--resume][sess-next][--tag=s:sess-next]"
    );
}

#[tokio::test]
async fn dropping_the_turn_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let command = engine(
        fixture("hang.sh"),
        &[("OUTPOST_FIXTURE_DIR", dir.path())],
        None,
    );
    let (sink, mut rx) = EventSink::channel();
    let mut turn = command.run(Turn::default(), sink);
    let ready = timeout(BOUND, async {
        tokio::select! {
            result = &mut turn => panic!("the hanging agent finished: {result:?}"),
            event = rx.recv() => event,
        }
    });
    assert_eq!(
        ready.await.expect("the agent gets ready"),
        Some(json!({"type": "fixture_ready"}))
    );

    let leader = pid_in(dir.path(), "leader");
    let grandchild = pid_in(dir.path(), "grandchild");
    assert_eq!(
        stat(leader).map(|(_, group)| group),
        Some(leader),
        "the agent leads its own group"
    );
    assert_eq!(stat(grandchild).map(|(_, group)| group), Some(leader));

    // The daemon's turn timeout: the future is dropped when it elapses.
    assert!(timeout(Duration::from_millis(300), &mut turn)
        .await
        .is_err());
    drop(turn);
    assert!(is_dead(leader).await, "the agent outlived its turn");
    assert!(
        is_dead(grandchild).await,
        "the agent's child outlived the turn"
    );
}

#[tokio::test]
async fn a_background_process_does_not_hold_the_turn_open() {
    let dir = tempfile::tempdir().unwrap();
    let command = engine(
        fixture("linger.sh"),
        &[("OUTPOST_FIXTURE_DIR", dir.path())],
        None,
    );
    let (result, _) = run(&command, Turn::default()).await;
    assert_eq!(result.unwrap().text, "finished");
    assert!(is_dead(pid_in(dir.path(), "grandchild")).await);
}

#[tokio::test]
async fn a_failing_agent_reports_its_stderr() {
    let (result, events) = run(&engine(fixture("fail.sh"), &[], None), prompt("hi")).await;
    match result {
        Err(Error::Failed { message, detail }) => {
            assert!(message.contains("exit status: 3"), "{message}");
            assert_eq!(detail, "fatal: no model configured");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(events.is_empty());
}

#[tokio::test]
async fn an_error_result_fails_with_its_text() {
    let (result, _) = run(&engine(fixture("error_result.sh"), &[], None), prompt("hi")).await;
    match result {
        Err(Error::Failed { message, detail }) => {
            assert_eq!(message, "rate limited");
            assert_eq!(detail, "retrying after 429");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_missing_program_or_workdir_is_unavailable() {
    let missing = engine("/nonexistent/outpost-fixture-agent".into(), &[], None);
    match run(&missing, prompt("hi")).await.0 {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains("program not found"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    let no_workdir = engine(
        fixture("agent.sh"),
        &[],
        Some(Path::new("/nonexistent/outpost-workdir")),
    );
    match run(&no_workdir, prompt("hi")).await.0 {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains("working directory"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn another_engine_kind_is_unavailable() {
    let command = Command::new(EngineSpec::Echo { delay_ms: 0 });
    assert!(matches!(
        run(&command, prompt("hi")).await.0,
        Err(Error::Unavailable(_))
    ));
}
