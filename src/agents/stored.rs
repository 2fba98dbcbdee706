//! An agent's engine between the configuration's type and the store's: every field is named
//! on both sides, so a change to either format is a compile error here rather than a silent
//! change of what is on disk.

use crate::config::EngineConfig;
use crate::records::StoredEngine;

/// The store's form of `engine`.
pub(super) fn to_stored(engine: &EngineConfig) -> StoredEngine {
    match engine.clone() {
        EngineConfig::Echo { delay_ms } => StoredEngine::Echo { delay_ms },
        EngineConfig::Command {
            program,
            args,
            workdir,
            env,
            resume_args,
        } => StoredEngine::Command {
            program,
            args,
            workdir,
            env,
            resume_args,
        },
        EngineConfig::OpenAi {
            base_url,
            model,
            api_key,
            system_prompt,
        } => StoredEngine::OpenAi {
            base_url,
            model,
            api_key,
            system_prompt,
        },
    }
}

/// The engine a stored record names.
pub(super) fn from_stored(engine: &StoredEngine) -> EngineConfig {
    match engine.clone() {
        StoredEngine::Echo { delay_ms } => EngineConfig::Echo { delay_ms },
        StoredEngine::Command {
            program,
            args,
            workdir,
            env,
            resume_args,
        } => EngineConfig::Command {
            program,
            args,
            workdir,
            env,
            resume_args,
        },
        StoredEngine::OpenAi {
            base_url,
            model,
            api_key,
            system_prompt,
        } => EngineConfig::OpenAi {
            base_url,
            model,
            api_key,
            system_prompt,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::AgentRecord;

    /// A record as stores hold it, with `engine` as the engine's stored JSON.
    fn record_json(engine: &str) -> String {
        format!(
            concat!(
                r#"{{"name":"helper","display_name":"Helper","description":"Answers.","#,
                r#""owner":"alice","shared_with":["bob"],"engine":{},"max_concurrent":4,"#,
                r#""queue_capacity":100,"timeout_seconds":600,"voice":false,"source":"api","#,
                r#""stopped":false,"created_at":"2026-11-28T14:03:11.120Z","engine_trusted":true}}"#
            ),
            engine
        )
    }

    /// Every kind of engine, as the store has always written it and as the file means it.
    fn engines() -> Vec<(&'static str, EngineConfig)> {
        vec![
            (
                r#"{"kind":"echo","delay_ms":25}"#,
                EngineConfig::Echo { delay_ms: 25 },
            ),
            (
                concat!(
                    r#"{"kind":"command","program":"/usr/bin/agent","args":["-p"],"#,
                    r#""workdir":"/srv/agent","env":{"MODE":"quiet"},"#,
                    r#""resume_args":["--resume","{resume}"]}"#
                ),
                EngineConfig::Command {
                    program: "/usr/bin/agent".into(),
                    args: vec!["-p".into()],
                    workdir: Some("/srv/agent".into()),
                    env: [("MODE".to_string(), "quiet".to_string())].into(),
                    resume_args: vec!["--resume".into(), "{resume}".into()],
                },
            ),
            (
                concat!(
                    r#"{"kind":"openai","base_url":"http://127.0.0.1:8080/v1","model":"small","#,
                    r#""api_key":null,"system_prompt":"Be brief."}"#
                ),
                EngineConfig::OpenAi {
                    base_url: "http://127.0.0.1:8080/v1".into(),
                    model: "small".into(),
                    api_key: None,
                    system_prompt: Some("Be brief.".into()),
                },
            ),
        ]
    }

    #[test]
    fn stored_records_decode_and_encode_byte_for_byte() {
        for (engine_json, engine) in engines() {
            let json = record_json(engine_json);
            let record: AgentRecord = serde_json::from_str(&json).expect(engine_json);
            assert_eq!(from_stored(&record.engine), engine, "{engine_json}");
            assert_eq!(record.engine, to_stored(&engine), "{engine_json}");
            assert_eq!(serde_json::to_string(&record).unwrap(), json);
        }
    }

    #[test]
    fn records_written_before_optional_fields_still_decode() {
        let json = record_json(r#"{"kind":"command","program":"agent"}"#)
            .replace(r#","engine_trusted":true"#, "");
        let record: AgentRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(record.engine_trusted, None);
        assert_eq!(
            from_stored(&record.engine),
            EngineConfig::Command {
                program: "agent".into(),
                args: Vec::new(),
                workdir: None,
                env: Default::default(),
                resume_args: Vec::new(),
            }
        );
        let echo = record_json(r#"{"kind":"echo"}"#);
        let record: AgentRecord = serde_json::from_str(&echo).unwrap();
        assert_eq!(record.engine, StoredEngine::Echo { delay_ms: 0 });
    }

    #[test]
    fn an_engine_with_an_unknown_field_is_refused_as_before() {
        let json = record_json(r#"{"kind":"echo","delay_ms":1,"speed":2}"#);
        assert!(serde_json::from_str::<AgentRecord>(&json).is_err());
    }
}
