//! The stored aggregates — users, chat sessions, messages, executions — as services and the
//! API see them. Their serde form is both the stored value and the JSON the API returns.

use crate::clock::Timestamp;
pub use crate::engine_spec::EngineSpec;
use crate::ids::{AgentName, ExecutionId, SessionId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A user's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

/// An account. The hash is argon2id in PHC form and never leaves the store through the API.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: Timestamp,
    /// Made once with the account and never reused: a token names the account it was minted
    /// for, so a later account of the same name does not accept it. Empty for accounts made
    /// before ids existed (their tokens are judged by `created_at`).
    #[serde(default)]
    pub id: String,
    /// Bumped by every password change: tokens minted under an earlier generation are refused.
    #[serde(default)]
    pub token_generation: u64,
}

/// A device token as the store records it when it is minted, so it can be listed and revoked.
/// The token itself is not kept: its id (the JWT's `jti`) is enough to refuse it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeviceToken {
    pub id: String,
    pub username: String,
    /// The account the token was minted for (`User::id`).
    #[serde(default)]
    pub account_id: String,
    pub scope: Option<String>,
    pub label: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// Whether a chat session takes new turns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionStatus {
    Active,
    Closed,
}

/// A chat session of one (agent, user).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Session {
    pub id: SessionId,
    pub agent_name: AgentName,
    pub username: String,
    pub status: SessionStatus,
    pub started_at: Timestamp,
    pub last_message_at: Option<Timestamp>,
    pub message_count: u64,
    pub total_cost_usd: f64,
    pub context_tokens: u64,
    pub title: Option<String>,
}

impl Session {
    /// When the session last changed: its last message, else its start.
    pub fn activity_at(&self) -> Timestamp {
        self.last_message_at.unwrap_or(self.started_at)
    }
}

/// One message of a session.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    pub session_id: SessionId,
    pub role: String,
    pub content: String,
    pub created_at: Timestamp,
    pub source: String,
    pub execution_id: Option<ExecutionId>,
    pub cost_usd: Option<f64>,
    pub usage: Option<Value>,
    pub tool_calls: Vec<Value>,
    pub duration_ms: Option<u64>,
    pub status: Option<String>,
    /// Position in the session: the store key's suffix, read back from the key.
    #[serde(skip_serializing, default)]
    pub seq: u32,
}

/// What kind of run an execution is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionKind {
    Chat,
    Task,
    Voice,
    Public,
    Paid,
}

impl ExecutionKind {
    pub const ALL: [ExecutionKind; 5] = [
        ExecutionKind::Chat,
        ExecutionKind::Task,
        ExecutionKind::Voice,
        ExecutionKind::Public,
        ExecutionKind::Paid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionKind::Chat => "chat",
            ExecutionKind::Task => "task",
            ExecutionKind::Voice => "voice",
            ExecutionKind::Public => "public",
            ExecutionKind::Paid => "paid",
        }
    }

    pub fn parse(text: &str) -> Option<ExecutionKind> {
        ExecutionKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// The `source` of the messages its turns store.
    pub fn source(self) -> &'static str {
        match self {
            ExecutionKind::Chat => "text",
            other => other.as_str(),
        }
    }
}

/// Where an execution stands; it reaches a final state exactly once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionStatus {
    Queued,
    Running,
    Success,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub const ALL: [ExecutionStatus; 5] = [
        ExecutionStatus::Queued,
        ExecutionStatus::Running,
        ExecutionStatus::Success,
        ExecutionStatus::Failed,
        ExecutionStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Success => "success",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<ExecutionStatus> {
        ExecutionStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Success | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }
}

/// Why a run did not succeed: what callers decide on (a status code, a visitor's word, whether
/// a payment is settled), kept beside the `error` text, which is for people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The engine did not answer within the run's time limit.
    Timeout,
    /// The engine could not be reached or started.
    EngineUnavailable,
    /// The engine ran and reported a failure.
    EngineFailed,
    /// A caller stopped it (terminate), or it was cancelled while queued.
    Cancelled,
    /// The daemon stopped, or died, while it ran.
    Interrupted,
    /// Its reply could not be stored: the disk is full. Never on disk (the commit that
    /// would have kept it failed); its caller hears of it instead of a reply.
    DiskFull,
    /// Its reply could not be stored after an I/O error; as `DiskFull`, never on disk.
    NotStored,
}

impl Failure {
    /// The `error` text a run that ended so stores (an engine's failure has its own).
    pub fn text(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::EngineUnavailable => "engine unavailable",
            Failure::EngineFailed => "engine failed",
            Failure::Cancelled => "cancelled",
            Failure::Interrupted => "interrupted",
            Failure::DiskFull => "the disk is full: the reply could not be stored",
            Failure::NotStored => "the reply could not be stored",
        }
    }
}

/// One run of an agent, of any kind.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Execution {
    pub id: ExecutionId,
    pub agent: AgentName,
    pub kind: ExecutionKind,
    pub status: ExecutionStatus,
    pub username: Option<String>,
    pub origin: Option<String>,
    pub message: String,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub cost_usd: f64,
    pub session_id: Option<SessionId>,
    pub response: Option<String>,
    pub error: Option<String>,
    pub tool_calls: Vec<Value>,
    pub usage: Value,
    pub model: Option<String>,
    pub num_turns: u32,
    pub events_count: u32,
    pub payment: Option<Value>,
    /// The run-time limit asked for a task (already clamped to the agent's cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// Why it did not succeed, once it is final and did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

impl Execution {
    /// Why it did not succeed. Records written before `failure` was kept tell by their
    /// `error` text, read here and nowhere else.
    pub fn why_failed(&self) -> Option<Failure> {
        match self.status {
            ExecutionStatus::Success | ExecutionStatus::Queued | ExecutionStatus::Running => None,
            ExecutionStatus::Cancelled => Some(Failure::Cancelled),
            ExecutionStatus::Failed => self.failure.or_else(|| {
                let error = self.error.as_deref().unwrap_or("");
                Some(match error {
                    "timeout" => Failure::Timeout,
                    "interrupted" => Failure::Interrupted,
                    _ if error.starts_with("engine unavailable") => Failure::EngineUnavailable,
                    _ => Failure::EngineFailed,
                })
            }),
        }
    }
}

/// The first characters of `text` (at most `max` characters), for list rows and titles.
pub fn preview(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => text[..cut].to_string(),
        None => text.to_string(),
    }
}

/// The list row of an execution: the record less the long fields.
#[derive(Serialize)]
pub struct ExecutionRow<'a> {
    pub id: &'a str,
    pub agent: &'a str,
    pub kind: ExecutionKind,
    pub status: ExecutionStatus,
    pub username: &'a Option<String>,
    pub origin: &'a Option<String>,
    pub message: &'a str,
    pub created_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub cost_usd: f64,
    pub session_id: &'a Option<SessionId>,
}

impl Execution {
    /// The list row of the spec.
    pub fn row(&self) -> ExecutionRow<'_> {
        let cut = self
            .message
            .char_indices()
            .nth(200)
            .map_or(self.message.len(), |(i, _)| i);
        ExecutionRow {
            id: &self.id,
            agent: &self.agent,
            kind: self.kind,
            status: self.status,
            username: &self.username,
            origin: &self.origin,
            message: &self.message[..cut],
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration_ms: self.duration_ms,
            cost_usd: self.cost_usd,
            session_id: &self.session_id,
        }
    }
}

/// An agent as the store keeps it: the whole definition of an agent made through the API,
/// or only the run-time state (stopped, extra shares) of one from the configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentRecord {
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub owner: String,
    pub shared_with: Vec<String>,
    pub engine: EngineSpec,
    pub max_concurrent: usize,
    pub queue_capacity: usize,
    pub timeout_seconds: u64,
    pub voice: bool,
    /// `api` or `config`.
    pub source: String,
    pub stopped: bool,
    pub created_at: Timestamp,
    /// True when an admin (or the file) set the engine, so its URLs may reach private
    /// addresses; an engine a user set reaches public ones and `[outbound] allow`. None in a
    /// record stored before the rule: start-up decides it by whether its owner is an admin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine_trusted: Option<bool>,
}

/// What deleting an agent removed, by kind of record.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Removed {
    pub sessions: u64,
    pub messages: u64,
    pub executions: u64,
    pub events: u64,
    pub idempotency_keys: u64,
    pub queued_tasks: u64,
    pub public_links: u64,
    /// Payment records: nonce claims and settlements owed.
    pub payments: u64,
}

/// A public link of an agent. The token itself is never stored: only its SHA-256 (hex).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkRecord {
    pub id: String,
    pub agent: String,
    pub name: String,
    pub token_sha256: String,
    pub created_by: String,
    pub created_at: Timestamp,
    /// None: the link never expires.
    pub expires_at: Option<Timestamp>,
    pub enabled: bool,
    /// None: a visitor session takes any number of messages.
    pub max_messages_per_session: Option<u32>,
    /// Messages per minute through this link, over all its visitors.
    pub rate_limit_per_minute: u32,
    /// Visitor sessions minted for this link.
    pub visitors: u64,
    /// Visitor messages accepted through this link.
    pub messages: u64,
    pub last_used_at: Option<Timestamp>,
}

/// The binding of a visitor's chat session to the link that minted it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VisitorSession {
    pub session_id: SessionId,
    pub link_id: String,
    pub agent: String,
    /// Messages the visitor sent in this session (counted against `max_messages_per_session`).
    pub messages: u32,
    pub created_at: Timestamp,
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    fn finished(
        status: ExecutionStatus,
        error: Option<&str>,
        failure: Option<Failure>,
    ) -> Execution {
        let at = serde_json::to_value(Timestamp(0)).unwrap();
        let record = serde_json::json!({
            "id": "e", "agent": "a", "kind": "chat", "status": status, "username": null,
            "origin": null, "message": "hi", "created_at": at, "started_at": at,
            "finished_at": at, "duration_ms": 1, "cost_usd": 0.0, "session_id": null,
            "response": null, "error": error, "tool_calls": [], "usage": null, "model": null,
            "num_turns": 0, "events_count": 1, "payment": null, "failure": failure,
        });
        serde_json::from_value(record).unwrap()
    }

    #[test]
    fn a_kept_failure_is_the_answer() {
        let e = finished(
            ExecutionStatus::Failed,
            Some("engine failed: timeout"),
            Some(Failure::EngineFailed),
        );
        assert_eq!(e.why_failed(), Some(Failure::EngineFailed));
    }

    #[test]
    fn records_from_before_the_failure_was_kept_tell_by_their_text() {
        let cases = [
            ("timeout", Failure::Timeout),
            ("interrupted", Failure::Interrupted),
            (
                "engine unavailable: connection refused",
                Failure::EngineUnavailable,
            ),
            ("engine failed: exit status 1", Failure::EngineFailed),
        ];
        for (text, failure) in cases {
            assert_eq!(
                finished(ExecutionStatus::Failed, Some(text), None).why_failed(),
                Some(failure)
            );
        }
        assert_eq!(
            finished(ExecutionStatus::Cancelled, Some("cancelled"), None).why_failed(),
            Some(Failure::Cancelled)
        );
        assert_eq!(
            finished(ExecutionStatus::Success, None, None).why_failed(),
            None
        );
    }
}

#[cfg(test)]
mod agent_record_tests {
    use super::*;

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

    /// Every kind of engine, as the store has always written it and as the file means it: the
    /// file's format and the API's share `EngineSpec`, so these pin what is on disk.
    fn engines() -> Vec<(&'static str, EngineSpec)> {
        vec![
            (
                r#"{"kind":"echo","delay_ms":25}"#,
                EngineSpec::Echo { delay_ms: 25 },
            ),
            (
                concat!(
                    r#"{"kind":"command","program":"/usr/bin/agent","args":["-p"],"#,
                    r#""workdir":"/srv/agent","env":{"MODE":"quiet"},"#,
                    r#""resume_args":["--resume","{resume}"]}"#
                ),
                EngineSpec::Command {
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
                EngineSpec::OpenAi {
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
            assert_eq!(record.engine, engine, "{engine_json}");
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
            record.engine,
            EngineSpec::Command {
                program: "agent".into(),
                args: Vec::new(),
                workdir: None,
                env: Default::default(),
                resume_args: Vec::new(),
            }
        );
        let echo = record_json(r#"{"kind":"echo"}"#);
        let record: AgentRecord = serde_json::from_str(&echo).unwrap();
        assert_eq!(record.engine, EngineSpec::Echo { delay_ms: 0 });
    }

    #[test]
    fn an_engine_with_an_unknown_field_is_refused_as_before() {
        let json = record_json(r#"{"kind":"echo","delay_ms":1,"speed":2}"#);
        assert!(serde_json::from_str::<AgentRecord>(&json).is_err());
    }
}
