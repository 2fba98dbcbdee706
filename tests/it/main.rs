//! The one integration-test binary: each module is a capability, each test a real daemon.

mod agents;
mod chat;
mod cli;
mod engines;
mod http;
mod identity;
mod restart;
mod sessions;
mod support;
mod tasks;
mod voice;
