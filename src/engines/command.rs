//! The command engine: runs a local CLI agent (for example Claude Code with
//! `-p --output-format stream-json --verbose`) once per turn and relays its stream-json output.
//!
//! The prompt goes to the agent's stdin, which is then closed. Every JSON object line of its
//! stdout is forwarded unchanged, except its own `system`/`init` and `result` events: Outpost
//! emits its own, so those are absorbed and read for the session id, usage and cost. Lines that
//! are not JSON objects are skipped. The agent runs in a process group of its own, killed as a
//! whole when the turn ends or is dropped (timeout, cancel), so no grandchild outlives its turn.
//! History is not passed on: the CLI keeps its own conversation, continued through `resume_args`.
//! Nor is a model the caller asks for: the configured `args` choose the model.

mod group;
mod pipes;
mod transcript;

use super::{BoxFuture, Engine, Error, EventSink, Outcome, Turn};
use crate::config::EngineSpec;
use group::ProcessGroup;
use pipes::Line;
use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};
use tokio::process::ChildStdin;
use tracing::debug;
use transcript::{Transcript, Verdict};

/// The longest stdout line kept; a longer one is skipped so a runaway line cannot eat memory.
const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
/// How much of the end of stderr is kept for error reports.
const STDERR_TAIL_BYTES: usize = 16 * 1024;

/// The command engine.
pub struct Command {
    /// What to run, or why this engine cannot run anything.
    invocation: Result<Invocation, String>,
}

/// The program, arguments and surroundings of every turn.
struct Invocation {
    program: String,
    args: Vec<String>,
    workdir: Option<PathBuf>,
    env: BTreeMap<String, String>,
    /// Appended to `args` when a turn resumes; `{session}` stands for the resume handle.
    resume_args: Vec<String>,
}

impl Command {
    /// An engine for an `EngineSpec::Command`; any other kind gives an engine whose turns
    /// fail as unavailable.
    pub fn new(config: EngineSpec) -> Command {
        let invocation = match config {
            EngineSpec::Command {
                program,
                args,
                workdir,
                env,
                resume_args,
            } => Ok(Invocation {
                program,
                args,
                workdir,
                env,
                resume_args,
            }),
            other => Err(format!(
                "the command engine cannot run a {} configuration",
                other.kind()
            )),
        };
        Command { invocation }
    }
}

impl Engine for Command {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn run<'a>(&'a self, turn: Turn, sink: EventSink) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async move {
            match &self.invocation {
                Ok(invocation) => invocation.run(turn, sink).await,
                Err(reason) => Err(Error::Unavailable(reason.clone())),
            }
        })
    }
}

impl Invocation {
    async fn run(&self, turn: Turn, sink: EventSink) -> Result<Outcome, Error> {
        let mut child = match self.command(&turn).spawn() {
            Ok(child) => child,
            Err(err) => return Err(self.spawn_error(err).await),
        };
        // Declared after `child`, so dropped before it: the whole group dies, then the leader
        // is reaped by tokio (`kill_on_drop`).
        let mut group = ProcessGroup::led_by(child.id());
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(Error::Unavailable(format!(
                "cannot connect to the pipes of {}",
                self.program
            )));
        };
        debug!(program = %self.program, pid = child.id(), resume = turn.resume.is_some(), "started the agent");

        let mut transcript = Transcript::default();
        let exit = async {
            let status = child.wait().await;
            // Whatever the agent left running in the background ends with it, which also
            // closes the pipes those processes inherited so the readers see the end.
            group.kill();
            status
        };
        let ((), (), stderr_tail, status) = tokio::join!(
            feed_prompt(stdin, &turn.prompt),
            relay_events(
                BufReader::new(stdout),
                &sink,
                &mut transcript,
                MAX_LINE_BYTES
            ),
            pipes::read_tail(stderr, STDERR_TAIL_BYTES),
            exit,
        );
        let status = status.map_err(|err| Error::Failed {
            message: "lost track of the agent process".into(),
            detail: err.to_string(),
        })?;
        finish(transcript, status, stderr_tail)
    }

    fn command(&self, turn: &Turn) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.program);
        command.args(&self.args);
        if let Some(handle) = &turn.resume {
            command.args(
                self.resume_args
                    .iter()
                    .map(|arg| arg.replace("{session}", handle)),
            );
        }
        if let Some(workdir) = &self.workdir {
            command.current_dir(workdir);
        }
        command
            .envs(&self.env)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        command
    }

    /// Names why the agent could not start; a missing working directory also shows as
    /// `NotFound`, so it is told apart from a missing program here.
    async fn spawn_error(&self, err: io::Error) -> Error {
        let program = &self.program;
        let message = match (err.kind(), &self.workdir) {
            (io::ErrorKind::NotFound, Some(workdir)) if !is_dir(workdir).await => {
                format!("working directory {} not found", workdir.display())
            }
            (io::ErrorKind::NotFound, _) => format!("program not found: {program}"),
            (io::ErrorKind::PermissionDenied, _) => format!("not allowed to run {program}"),
            _ => format!("cannot start {program}: {err}"),
        };
        Error::Unavailable(message)
    }
}

async fn is_dir(path: &std::path::Path) -> bool {
    tokio::fs::metadata(path)
        .await
        .is_ok_and(|meta| meta.is_dir())
}

/// Writes the prompt and closes stdin, so the agent sees the end of its input.
async fn feed_prompt(mut stdin: ChildStdin, prompt: &str) {
    let written = async {
        stdin.write_all(prompt.as_bytes()).await?;
        stdin.shutdown().await
    };
    // An agent that exits without reading its input is judged by its exit status, not here.
    if let Err(err) = written.await {
        debug!(cause = %err, "could not write the whole prompt to the agent");
    }
}

/// Forwards the agent's stdout events to `sink` until the end of the stream, skipping lines
/// longer than `max_line_bytes`.
async fn relay_events<R>(
    mut reader: R,
    sink: &EventSink,
    transcript: &mut Transcript,
    max_line_bytes: usize,
) where
    R: AsyncBufRead + Unpin,
{
    let mut line = Vec::new();
    loop {
        match pipes::next_line(&mut reader, &mut line, max_line_bytes).await {
            Ok(Some(Line::Complete)) => {
                if let Some(event) = transcript.observe_line(&line) {
                    sink.send(event);
                }
            }
            Ok(Some(Line::TooLong)) => debug!(
                max_bytes = max_line_bytes,
                "skipping an overlong line of agent output"
            ),
            Ok(None) => return,
            Err(err) => {
                debug!(cause = %err, "stopped reading the agent's stdout");
                return;
            }
        }
    }
}

/// Reads a whole stdout as a turn does (the agent exiting with status 0): the events passed on
/// and the turn's result. `reader` holds the bytes, `max_line_bytes` is the line limit. For
/// the fuzzing targets (`crate::fuzzing`), which feed it arbitrary output.
pub(crate) async fn replay_stdout<R>(
    reader: R,
    max_line_bytes: usize,
) -> (Vec<serde_json::Value>, Result<Outcome, Error>)
where
    R: AsyncBufRead + Unpin,
{
    use std::os::unix::process::ExitStatusExt;
    let (sink, mut events) = EventSink::channel();
    let mut transcript = Transcript::default();
    relay_events(reader, &sink, &mut transcript, max_line_bytes).await;
    drop(sink);
    let mut forwarded = Vec::new();
    while let Ok(event) = events.try_recv() {
        forwarded.push(event);
    }
    let result = finish(transcript, ExitStatus::from_raw(0), String::new());
    (forwarded, result)
}

/// Judges the turn: the agent's own error first, then its exit status.
fn finish(
    transcript: Transcript,
    status: ExitStatus,
    stderr_tail: String,
) -> Result<Outcome, Error> {
    debug!(%status, "the agent exited");
    match transcript.verdict() {
        Verdict::Error(text) => Err(Error::Failed {
            message: text.unwrap_or_else(|| "the agent reported an error".into()),
            detail: stderr_tail,
        }),
        Verdict::Success(_) if !status.success() => Err(Error::Failed {
            message: format!("the agent failed ({status})"),
            detail: stderr_tail,
        }),
        Verdict::Success(outcome) => Ok(outcome),
    }
}

#[cfg(test)]
mod tests;
