//! The store's background tasks: removing expired sessions ([`run`]) and
//! sampling history once a minute ([`sample`]).
//!
//! Reads never count an expired session whatever the sweep does; it exists
//! so memory follows the live population. It also lets the rate limiter
//! forget users who went quiet. Each task takes only what it uses, so it
//! runs, and is tested, without the HTTP application.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, First, every};
use crate::limiter::UserRateLimiter;
use crate::store::{SessionStore, Store, StoreError};

/// Sweeps `store` every `interval`, and lets `limiter` forget idle users,
/// until `cancel` fires.
pub async fn run(
    store: Store,
    limiter: Arc<UserRateLimiter>,
    interval: Duration,
    cancel: CancellationToken,
) {
    every(interval, First::Now, &cancel, || async {
        match store.sweep().await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "swept expired sessions"),
            // An outage is the requests' to report, once (see `metrics`).
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::debug!(error = %e, "sweep failed; will retry")
            }
            Err(e) => tracing::warn!(error = %e, "sweep failed; will retry"),
        }
        limiter.forget_idle();
    })
    .await;
}

/// Samples every module's `activeNow` into the history once a minute, a
/// second after each minute starts on the service's clock (so ticks never
/// drift across a minute boundary and leave a minute without a sample),
/// until `cancel` fires.
pub async fn sample(store: Store, clock: Arc<dyn Clock>, cancel: CancellationToken) {
    loop {
        let now = clock.now_ms();
        let next = now - now.rem_euclid(60_000) + 61_000;
        let wait = Duration::from_millis(u64::try_from(next - now).unwrap_or(60_000));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        match store.record_sample().await {
            Ok(()) => {}
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::debug!(error = %e, "history sample failed; will retry");
            }
            Err(e) => tracing::warn!(error = %e, "history sample failed; will retry"),
        }
    }
}
