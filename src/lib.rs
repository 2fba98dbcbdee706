//! Outpost: one binary that serves the agent API from an edge box.
//!
//! Reading order: `config` → `store` → `records` → `engines` → `executions` → `chat` → `http` → `api`.

pub mod clock;
pub mod config;
pub mod ids;
pub mod records;
pub mod store;
pub mod engines;
