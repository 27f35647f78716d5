//! Webhooks: presence events pushed to the product's backend, signed as
//! Standard Webhooks, batched, retried, in order per endpoint (contract
//! section 9).
//!
//! - [`outbox`]: where events wait, per store, and each endpoint's cursor.
//! - [`deliver`]: one task per endpoint that sends what waits
//!   ([`deliver::run`]); [`spawn_all`] starts them.
//! - `queue.rs`: the deliverer's buffer: the event filter, the leave
//!   grace, when a batch is due.
//! - `send.rs`: one attempt: the signed POST and its bounded answer.
//! - [`sign`]: the Standard Webhooks signature.
//! - [`status`]: what each deliverer reports, for the admin API.

pub mod deliver;
pub mod outbox;
mod queue;
mod send;
pub mod sign;
pub mod status;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Webhooks;
use crate::metrics::Metrics;
use crate::store::Store;

pub use deliver::Settings;
pub use outbox::{Backlog, Cursor, Entry, MemoryLog, MemoryOutbox, Outbox, StreamId};
pub use status::{EndpointStatus, Failure, StatusBoard, WebhookStatus};

/// With `WEBHOOK_URL`: what the deliverers read and what they report.
#[derive(Debug)]
pub struct Webhooking {
    /// The `WEBHOOK_*` settings.
    pub settings: Webhooks,
    /// Where the store's events wait.
    pub outbox: Outbox,
    /// What each endpoint's deliverer reports.
    pub board: StatusBoard,
}

impl Webhooking {
    /// Events on for `store` (on Redis, its scripts write them as
    /// `Store::open` was told), into an outbox for `settings`' endpoints.
    pub fn open(settings: &Webhooks, store: &Store) -> Self {
        let keys = settings.endpoints.iter().map(|e| e.key.clone());
        let outbox = match store {
            Store::Memory(memory) => {
                let outbox = Arc::new(MemoryOutbox::new(keys, settings.queue_max));
                memory.send_events_to(outbox.clone());
                Outbox::Memory(outbox)
            }
            Store::Redis(redis) => Outbox::Redis(redis.outbox(keys)),
        };
        Self {
            settings: settings.clone(),
            outbox,
            board: StatusBoard::new(&settings.endpoints),
        }
    }
}

/// Starts one deliverer per endpoint of `webhooks`, reporting into its
/// board, until `cancel` fires; their handles, to await at shutdown.
///
/// # Errors
/// When the HTTP client cannot be built (its TLS back end).
pub fn spawn_all(
    webhooks: &Webhooking,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    cancel: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, reqwest::Error> {
    let settings = Arc::new(Settings::new(&webhooks.settings)?);
    Ok(webhooks
        .settings
        .endpoints
        .iter()
        .map(|endpoint| {
            let status = webhooks
                .board
                .endpoint(&endpoint.key)
                .unwrap_or_else(|| EndpointStatus::detached(endpoint));
            tokio::spawn(deliver::run(
                endpoint.clone(),
                webhooks.outbox.clone(),
                settings.clone(),
                clock.clone(),
                metrics.clone(),
                status,
                cancel.clone(),
            ))
        })
        .collect())
}
