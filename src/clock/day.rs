//! Where "today" starts: local midnights in `STATS_TIMEZONE`.

use chrono::{DateTime, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::clock::Millis;

/// The start of the local day containing `now`, and of the next one.
pub(crate) fn day_bounds(timezone: Tz, now: Millis) -> (Millis, Millis) {
    let date = local_date(timezone, now);
    let next = date.succ_opt().unwrap_or(date);
    (
        local_midnight(timezone, date),
        local_midnight(timezone, next),
    )
}

/// The local date at `now`.
pub(crate) fn local_date(timezone: Tz, now: Millis) -> NaiveDate {
    DateTime::<Utc>::from_timestamp_millis(now)
        .unwrap_or_default()
        .with_timezone(&timezone)
        .date_naive()
}

/// The instant the local day `date` starts in `timezone`. Where a DST change
/// skips midnight, the day starts at the first local time that exists.
pub(crate) fn local_midnight(timezone: Tz, date: NaiveDate) -> Millis {
    (0..=3)
        .filter_map(|h| NaiveTime::from_hms_opt(h, 0, 0))
        .find_map(|t| timezone.from_local_datetime(&date.and_time(t)).earliest())
        .map_or_else(
            || date.and_time(NaiveTime::MIN).and_utc().timestamp_millis(),
            |dt| dt.timestamp_millis(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(rfc3339: &str) -> Millis {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid time")
            .timestamp_millis()
    }

    #[test]
    fn a_new_york_day_runs_from_local_midnight_to_local_midnight() {
        let tz: Tz = "America/New_York".parse().expect("zone");
        let (start, next) = day_bounds(tz, ms("2026-01-15T03:00:00Z"));
        assert_eq!(start, ms("2026-01-14T00:00:00-05:00"));
        assert_eq!(next, ms("2026-01-15T00:00:00-05:00"));
    }

    #[test]
    fn a_dst_day_is_23_hours_long() {
        let tz: Tz = "Europe/Berlin".parse().expect("zone");
        let (start, next) = day_bounds(tz, ms("2026-03-29T12:00:00Z"));
        assert_eq!(next - start, 23 * 3600 * 1000);
    }

    #[test]
    fn where_midnight_does_not_exist_the_day_starts_at_one() {
        // Santiago skipped 00:00-01:00 on 2026-09-06.
        let tz: Tz = "America/Santiago".parse().expect("zone");
        let date = NaiveDate::from_ymd_opt(2026, 9, 6).expect("date");
        assert_eq!(local_midnight(tz, date), ms("2026-09-06T01:00:00-03:00"));
    }
}
