//! Where the service gets the time from.
//!
//! Every decision that depends on time (is a session live, has `today` rolled
//! over, is a token expired) reads a [`Clock`] held in the application state,
//! never the system clock directly, so tests move time instead of sleeping
//! through a TTL. [`day`] says where a local day starts; [`every`] is the
//! loop behind every periodic task.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

pub(crate) mod day;
mod every;

pub use every::{First, every};

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
///
/// Every response carries one, so the years 0 to 9999 (every instant a
/// clock reads) are written by hand, a few dozen instructions instead of
/// chrono's general formatter; any other instant goes through chrono.
pub(crate) fn rfc3339(ms: Millis) -> String {
    const FIRST: Millis = -62_167_219_200_000; // 0000-01-01T00:00:00Z
    const END: Millis = 253_402_300_800_000; // 10000-01-01T00:00:00Z
    if !(FIRST..END).contains(&ms) {
        return DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap_or_default()
            .to_rfc3339_opts(SecondsFormat::Millis, true);
    }
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (second, milli) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    let mut out = [0_u8; 24];
    for (at, value, width) in [
        (0, year, 4),
        (5, month, 2),
        (8, day, 2),
        (11, hour, 2),
        (14, minute, 2),
        (17, second, 2),
        (20, milli, 3),
    ] {
        let mut value = value;
        for slot in out[at..at + width].iter_mut().rev() {
            // In range: each value is below 10^width.
            *slot = b'0' + u8::try_from(value % 10).unwrap_or(0);
            value /= 10;
        }
    }
    for (at, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = separator;
    }
    // Digits and separators only: always ASCII.
    std::str::from_utf8(&out).map_or_else(|_| String::new(), str::to_owned)
}

/// The proleptic Gregorian (year, month, day) of a day count since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }

    proptest::proptest! {
        /// The hand-written formatter writes what chrono writes, across
        /// the years it handles and past both ends.
        #[test]
        fn rfc3339_matches_chrono(ms in -63_000_000_000_000_i64..260_000_000_000_000) {
            let chrono = DateTime::<Utc>::from_timestamp_millis(ms)
                .unwrap_or_default()
                .to_rfc3339_opts(SecondsFormat::Millis, true);
            proptest::prop_assert_eq!(rfc3339(ms), chrono);
        }
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
