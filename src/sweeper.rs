//! The background tasks: removing expired sessions, sampling history.
//!
//! Reads never count an expired session whatever this task does; it exists
//! so memory follows the live population. It also lets the rate limiter
//! forget users who went quiet.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use crate::store::SessionStore;

/// Sweeps every `interval` until `cancel` fires.
pub async fn run(state: AppState, interval: Duration, cancel: CancellationToken) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match state.store.sweep().await {
            Ok(0) => {}
            Ok(removed) => tracing::debug!(removed, "swept expired sessions"),
            Err(e) => tracing::warn!(error = %e, "sweep failed; will retry"),
        }
        state.limiter.forget_idle();
    }
}

/// Samples every module's `activeNow` into the history once a minute, a
/// second after each minute starts on the service's clock (so ticks never
/// drift across a minute boundary and leave a minute without a sample),
/// until `cancel` fires.
pub async fn sample(state: AppState, cancel: CancellationToken) {
    loop {
        let now = state.clock.now_ms();
        let next = now - now.rem_euclid(60_000) + 61_000;
        let wait = Duration::from_millis(u64::try_from(next - now).unwrap_or(60_000));
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if let Err(e) = state.store.record_sample().await {
            tracing::warn!(error = %e, "history sample failed; will retry");
        }
    }
}
