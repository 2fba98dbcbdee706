//! The one integration-test binary: each module is a capability, each test a real daemon.

mod agents;
mod authz;
mod backup;
mod chat;
mod cli;
mod engines;
mod fuzz_corpus;
mod http;
mod identity;
mod links;
mod mdns;
mod outbound;
mod packaging;
mod paid;
mod reload;
mod restart;
mod revocation;
mod schema;
mod service;
mod sessions;
mod supervised;
mod support;
mod tasks;
mod voice;
