//! Placeholder for the openai engine while it is being built.

use super::{BoxFuture, Engine, Error, EventSink, Outcome, Turn};
use crate::config::EngineConfig;

pub struct OpenAi {
    _config: EngineConfig,
}

impl OpenAi {
    pub fn new(config: EngineConfig) -> OpenAi {
        OpenAi { _config: config }
    }
}

impl Engine for OpenAi {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn run<'a>(&'a self, _turn: Turn, _sink: EventSink) -> BoxFuture<'a, Result<Outcome, Error>> {
        Box::pin(async { Err(Error::Unavailable("not built yet".into())) })
    }
}
