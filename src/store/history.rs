//! Per-minute history: what `/api/admin/history` is computed from.
//!
//! Every store keeps, per minute and module, a [`ModuleMinute`]: the
//! `activeNow` sampled once a minute, the peak `activeNow` seen after any
//! heartbeat in that minute (and when), and the sessions that started and
//! ended in it, with their total length. 24 hours of minutes are kept: a
//! bounded ring in memory, keys that expire in Redis.

use std::collections::VecDeque;

use crate::clock::Millis;

/// Minutes of history kept: 24 hours.
pub(crate) const HISTORY_MINUTES: i64 = 24 * 60;

const MINUTE_MS: Millis = 60_000;

/// The start of the minute `t` falls in.
pub(crate) fn minute_of(t: Millis) -> Millis {
    t - t.rem_euclid(MINUTE_MS)
}

/// One module in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleMinute {
    /// `activeNow` when the minute was sampled, if it was.
    pub sample: Option<u64>,
    /// The highest `activeNow` seen in the minute (after heartbeats, and the
    /// sample).
    pub peak: u64,
    /// When that peak was first reached.
    pub peak_at: Option<Millis>,
    /// Sessions that started in the module in the minute.
    pub started: u64,
    /// Sessions that ended (left, moved away or expired) in the minute.
    pub ended: u64,
    /// Their total length, in milliseconds.
    pub ended_ms: u64,
}

impl ModuleMinute {
    /// Counts a session that started in the minute. Counts saturate: a
    /// value restored from elsewhere must not wrap one round.
    pub(crate) fn count_start(&mut self) {
        self.started = self.started.saturating_add(1);
    }

    /// Counts a session that ended in the minute, `length_ms` long.
    pub(crate) fn count_end(&mut self, length_ms: u64) {
        self.ended = self.ended.saturating_add(1);
        self.ended_ms = self.ended_ms.saturating_add(length_ms);
    }

    /// Raises the peak to `active` at `at` if it is higher.
    pub(crate) fn see(&mut self, active: u64, at: Millis) {
        if active > self.peak {
            self.peak = active;
            self.peak_at = Some(at);
        }
    }
}

/// One minute of every module, in registry order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinuteBucket {
    /// The minute's start.
    pub start: Millis,
    /// Indexed by module.
    pub modules: Vec<ModuleMinute>,
}

/// The minutes of a window, oldest first (minutes with nothing recorded
/// may be missing), and when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// Oldest first.
    pub minutes: Vec<MinuteBucket>,
    /// The instant the window ends.
    pub at: Millis,
}

/// The memory store's history: a ring of at most [`HISTORY_MINUTES`]
/// minutes.
#[derive(Debug)]
pub(crate) struct HistoryRing {
    modules: usize,
    minutes: VecDeque<MinuteBucket>,
    /// Where events older than the ring go (a session that expired over a
    /// day ago): recorded nowhere.
    discard: ModuleMinute,
}

impl HistoryRing {
    pub(crate) fn new(modules: usize) -> Self {
        Self {
            modules,
            minutes: VecDeque::new(),
            discard: ModuleMinute::default(),
        }
    }

    /// The bucket of module `m` in the minute of `t`, created if needed.
    pub(crate) fn at(&mut self, m: usize, t: Millis) -> &mut ModuleMinute {
        let start = minute_of(t);
        let newest = self.minutes.back().map_or(start, |b| b.start.max(start));
        if start <= newest - HISTORY_MINUTES * MINUTE_MS || m >= self.modules {
            self.discard = ModuleMinute::default();
            return &mut self.discard;
        }
        let i = match self.minutes.binary_search_by_key(&start, |b| b.start) {
            Ok(i) => i,
            Err(i) => {
                self.minutes.insert(
                    i,
                    MinuteBucket {
                        start,
                        modules: vec![ModuleMinute::default(); self.modules],
                    },
                );
                i
            }
        };
        let i = i - self.forget_old();
        &mut self.minutes[i].modules[m]
    }

    /// Drops minutes older than the newest minus [`HISTORY_MINUTES`];
    /// returns how many were dropped.
    fn forget_old(&mut self) -> usize {
        let Some(newest) = self.minutes.back().map(|b| b.start) else {
            return 0;
        };
        let oldest_kept = newest - (HISTORY_MINUTES - 1) * MINUTE_MS;
        let mut dropped = 0;
        while self.minutes.front().is_some_and(|b| b.start < oldest_kept) && self.minutes.len() > 1
        {
            self.minutes.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Puts back minutes taken from another ring (a snapshot), keeping
    /// those within the 24 hours that end at `now`. A module index beyond
    /// this ring's modules is ignored.
    pub(crate) fn restore(&mut self, minutes: Vec<MinuteBucket>, now: Millis) {
        let oldest_kept = minute_of(now) - (HISTORY_MINUTES - 1) * MINUTE_MS;
        for bucket in minutes {
            if bucket.start < oldest_kept || bucket.start > now {
                continue;
            }
            for (m, minute) in bucket.modules.into_iter().enumerate() {
                if minute != ModuleMinute::default() {
                    *self.at(m, bucket.start) = minute;
                }
            }
        }
    }

    /// The minutes of the `minutes`-minute window ending at `now`.
    pub(crate) fn window(&self, now: Millis, minutes: i64) -> Vec<MinuteBucket> {
        let from = minute_of(now) - (minutes - 1) * MINUTE_MS;
        self.minutes
            .iter()
            .filter(|b| b.start >= from && b.start <= now)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_24_hours_in_order() {
        let mut ring = HistoryRing::new(1);
        let t0 = 1_768_383_000_000;
        for minute in 0..(HISTORY_MINUTES + 100) {
            ring.at(0, t0 + minute * MINUTE_MS).started += 1;
        }
        assert_eq!(
            ring.minutes.len(),
            usize::try_from(HISTORY_MINUTES).unwrap_or(0)
        );
        // A late event for an older minute slots in order.
        let newest = t0 + (HISTORY_MINUTES + 99) * MINUTE_MS;
        ring.at(0, newest - 5 * MINUTE_MS + 1).ended += 1;
        let window = ring.window(newest, 10);
        assert_eq!(window.len(), 10);
        assert!(window.windows(2).all(|w| w[0].start < w[1].start));
        assert_eq!(window[4].modules[0].ended, 1);
    }

    #[test]
    fn a_restore_keeps_the_last_24_hours_only() {
        let now = 1_768_383_000_000;
        let minute = |start: Millis, started: u64| MinuteBucket {
            start,
            modules: vec![ModuleMinute {
                started,
                ..ModuleMinute::default()
            }],
        };
        let mut ring = HistoryRing::new(1);
        ring.restore(
            vec![
                minute(now - HISTORY_MINUTES * MINUTE_MS, 1),
                minute(now - 5 * MINUTE_MS, 2),
                minute(now + MINUTE_MS, 3),
            ],
            now,
        );
        let kept = ring.window(now + 2 * MINUTE_MS, HISTORY_MINUTES);
        assert_eq!(kept, vec![minute(now - 5 * MINUTE_MS, 2)]);
    }

    #[test]
    fn the_peak_remembers_when_it_was_first_reached() {
        let mut m = ModuleMinute::default();
        m.see(2, 10);
        m.see(2, 20);
        m.see(1, 30);
        assert_eq!((m.peak, m.peak_at), (2, Some(10)));
    }
}
