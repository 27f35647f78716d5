//! Webhooks: presence events pushed to the product's backend, signed as
//! Standard Webhooks, batched, retried, in order per endpoint (contract
//! section 9).
//!
//! - [`outbox`]: where events wait, per store, and each endpoint's cursor.

pub mod outbox;

pub use outbox::{Backlog, Cursor, Entry, MemoryLog, MemoryOutbox, Outbox, StreamId};
