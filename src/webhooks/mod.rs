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
use crate::metrics::Metrics;

pub use deliver::Settings;
pub use outbox::{Backlog, Cursor, Entry, MemoryLog, MemoryOutbox, Outbox, StreamId};
pub use status::{EndpointStatus, Failure, StatusBoard, WebhookStatus};

/// Starts one deliverer per endpoint of `webhooks`, reading `outbox` and
/// reporting into `board` (made with [`StatusBoard::new`] for the same
/// endpoints) until `cancel` fires; their handles, to await at shutdown.
///
/// # Errors
/// When the HTTP client cannot be built (its TLS back end).
pub fn spawn_all(
    webhooks: &crate::config::Webhooks,
    outbox: &Outbox,
    board: &StatusBoard,
    clock: &Arc<dyn Clock>,
    metrics: &Arc<Metrics>,
    cancel: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>, reqwest::Error> {
    let settings = Arc::new(Settings::new(webhooks)?);
    Ok(webhooks
        .endpoints
        .iter()
        .map(|endpoint| {
            let status = board
                .endpoint(&endpoint.key)
                .unwrap_or_else(|| EndpointStatus::detached(endpoint));
            tokio::spawn(deliver::run(
                endpoint.clone(),
                outbox.clone(),
                settings.clone(),
                clock.clone(),
                metrics.clone(),
                status,
                cancel.clone(),
            ))
        })
        .collect())
}
