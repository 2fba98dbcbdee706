//! Every table of the store, with its stable name, and the schema version.
//!
//! Values are a version byte followed by JSON (see `codec`); keys are big-endian byte strings
//! built in `keys`, so range scans come out in order.

use redb::TableDefinition;

/// Bumped when a table's layout changes; `Store::open` migrates older files in one transaction.
pub const SCHEMA_VERSION: u64 = 1;

/// `schema_version` and other single values.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// username → User
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// jti → expiry (unix seconds) of a revoked token
pub const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_tokens");
/// jti → DeviceToken, for every device token minted and not revoked
pub const DEVICE_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("device_tokens");
/// session id → Session
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// agent 0 user 0 session id → ()
pub const SESSIONS_BY_OWNER: TableDefinition<&[u8], ()> = TableDefinition::new("sessions_by_owner");
/// agent 0 user → the active session id
pub const ACTIVE_SESSIONS: TableDefinition<&[u8], &str> = TableDefinition::new("active_sessions");
/// session id ‖ seq → Message
pub const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
/// agent 0 user 0 time ‖ message id → message key
pub const MESSAGES_BY_USER: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("messages_by_user");
/// agent 0 time ‖ message id → message key
pub const MESSAGES_BY_AGENT: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("messages_by_agent");
/// execution id → Execution
pub const EXECUTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("executions");
/// agent 0 execution id → ()
pub const EXECUTIONS_BY_AGENT: TableDefinition<&[u8], ()> =
    TableDefinition::new("executions_by_agent");
/// execution id → () while it is queued or running
pub const UNFINISHED: TableDefinition<&str, ()> = TableDefinition::new("unfinished_executions");
/// execution id ‖ seq → one stream-json event
pub const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
/// agent 0 user 0 key → IdempotencyRecord
pub const IDEMPOTENCY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("idempotency_keys");
/// session id → the engine's own resume handle for it
pub const ENGINE_STATE: TableDefinition<&str, &str> = TableDefinition::new("engine_state");
/// queue position → execution id of a task waiting for a worker
pub const TASK_QUEUE: TableDefinition<u64, &str> = TableDefinition::new("task_queue");
/// agent name → AgentRecord
pub const AGENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("agents");
/// link id → LinkRecord
pub const PUBLIC_LINKS: TableDefinition<&str, &[u8]> = TableDefinition::new("public_links");
/// SHA-256 (hex) of a link token → link id; the token itself is never stored
pub const PUBLIC_LINK_HASHES: TableDefinition<&str, &str> =
    TableDefinition::new("public_link_hashes");
/// agent 0 link id → ()
pub const PUBLIC_LINKS_BY_AGENT: TableDefinition<&[u8], ()> =
    TableDefinition::new("public_links_by_agent");
/// session id → VisitorSession (the link that minted a visitor's session)
pub const VISITOR_SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("visitor_sessions");
/// chain id ‖ asset ‖ payer ‖ nonce → NonceClaim of an x402 payment
pub const PAYMENT_NONCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("payment_nonces");
/// expiry (unix seconds) ‖ nonce key → (), to drop claims once they expire
pub const PAYMENT_NONCE_EXPIRY: TableDefinition<&[u8], ()> =
    TableDefinition::new("payment_nonce_expiry");
/// execution id → PendingSettlement while a paid turn's payment is not final
pub const PENDING_SETTLEMENTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("pending_settlements");
