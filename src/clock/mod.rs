//! Where the service gets the time from.
//!
//! Every decision that depends on time (is a session live, has `today` rolled
//! over, is a token expired) reads a [`Clock`] held in the application state,
//! never the system clock directly, so tests move time instead of sleeping
//! through a TTL. [`day`] says where a local day starts.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

pub(crate) mod day;

/// Milliseconds since the Unix epoch, UTC: the one time unit used inside the
/// service. Converted to RFC 3339 only at the edge ([`rfc3339`]).
pub type Millis = i64;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
}

/// The real wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to; for tests and benchmarks.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: AtomicI64::new(start.timestamp_millis()),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

/// Formats `ms` as the contract's timestamp: RFC 3339, UTC, milliseconds.
pub(crate) fn rfc3339(ms: Millis) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Converts a duration to whole milliseconds, saturating.
pub(crate) fn duration_ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_milliseconds_and_z() {
        assert_eq!(rfc3339(1_768_383_000_123), "2026-01-14T09:30:00.123Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::<Utc>::from_timestamp_millis(1_000).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now_ms(), 1_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(clock.now_ms(), 3_000);
    }
}
