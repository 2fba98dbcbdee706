//! Placeholder for the command engine while it is being built.

use super::{BoxFuture, Engine, Error, EventSink, Outcome, Turn};
use crate::config::EngineConfig;

pub struct Command {
    _config: EngineConfig,
}

impl Command {
    pub fn new(config: EngineConfig) -> Command {
        Command { _config: config }
    }
}

impl Engine for Command {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn run<'a>(&'a self, _turn: Turn, _sink: EventSink) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async { Err(Error::Unavailable("not built yet".into())) })
    }
}
