//! The one loop behind every periodic task: a tick every period until a
//! cancellation token fires.

use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// When a periodic task first runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum First {
    /// At once, then every period.
    Now,
    /// One period from now.
    AfterPeriod,
}

/// Runs `tick` every `period` until `cancel` fires. A tick that runs late
/// (a slow store, a busy runtime) delays the next one rather than bunching
/// the missed ones together; a tick in progress when `cancel` fires is
/// finished first, so the caller can do a last run after this returns
/// without the two overlapping.
pub async fn every<F, Fut>(period: Duration, first: First, cancel: &CancellationToken, mut tick: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let start = match first {
        First::Now => Instant::now(),
        First::AfterPeriod => Instant::now() + period,
    };
    let mut ticks = tokio::time::interval_at(start, period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        tick().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    async fn count_ticks(first: First, run_for: Duration) -> u32 {
        let cancel = CancellationToken::new();
        let ticks = Arc::new(AtomicU32::new(0));
        let counted = ticks.clone();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(run_for).await;
            stop.cancel();
        });
        every(Duration::from_secs(10), first, &cancel, || {
            counted.fetch_add(1, Ordering::Relaxed);
            std::future::ready(())
        })
        .await;
        ticks.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn now_ticks_at_once_and_after_period_waits_a_period() {
        assert_eq!(count_ticks(First::Now, Duration::from_secs(25)).await, 3);
        assert_eq!(
            count_ticks(First::AfterPeriod, Duration::from_secs(25)).await,
            2
        );
        assert_eq!(
            count_ticks(First::AfterPeriod, Duration::from_secs(5)).await,
            0
        );
    }
}
