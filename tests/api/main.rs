//! Integration tests: one binary, a file per area.
//!
//! Every test runs the real service on an ephemeral port (or, where noted,
//! the router in-process) with its own clock and keys. Set `TEST_LOG=1` to
//! see the service's logs.

#![allow(clippy::unwrap_used, missing_docs, unreachable_pub)]

mod admin;
mod auth;
mod binary;
mod events;
mod failover;
mod faults;
mod heartbeat;
mod helpers;
mod http;
mod layers;
mod limits;
mod presence;
mod presence_stream;
mod receiver;
mod redis;
mod redis_events;
mod redis_outbox;
mod redis_server;
mod snapshot;
mod startup;
mod store_contract;
mod stream;
mod webhooks;
