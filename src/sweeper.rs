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

/// Samples every module's `activeNow` into the history once a minute until
/// `cancel` fires.
pub async fn sample(state: AppState, cancel: CancellationToken) {
    let minute = Duration::from_secs(60);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + minute, minute);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        if let Err(e) = state.store.record_sample().await {
            tracing::warn!(error = %e, "history sample failed; will retry");
        }
    }
}
