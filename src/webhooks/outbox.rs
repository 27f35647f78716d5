//! Where events wait for delivery: a log that the stores append to and
//! each endpoint's deliverer reads from its own cursor.
//!
//! The log is split in shards (one on the memory store; one per Redis
//! shard, each a Redis Stream written by the same script that makes the
//! change). Every entry has a [`StreamId`] (`ms-seq`, increasing within
//! its shard, as Redis Streams number entries); an endpoint's [`Cursor`]
//! holds, per shard, the last entry it is done with (delivered, cancelled
//! by the leave grace, or dropped after the retry window). Entries before
//! every endpoint's cursor are trimmed; past `WEBHOOK_QUEUE_MAX` entries in
//! a shard the oldest are dropped and counted.
//!
//! On Redis several instances share the log: one holds an endpoint's
//! claim at a time ([`Outbox::claim`], renewed while it delivers), and
//! another takes over from the committed cursor when the claim lapses.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::events::Event;
use crate::store::StoreError;
use crate::store::redis::RedisOutbox;

/// An entry's place in its shard: `ms-seq`, as Redis Streams number them.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct StreamId {
    /// Milliseconds (the entry's append time on Redis).
    pub ms: u64,
    /// Order within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// Parses `ms-seq`.
    pub fn parse(s: &str) -> Option<Self> {
        let (ms, seq) = s.split_once('-')?;
        Some(Self {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Per shard, the last entry an endpoint is done with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor(pub Vec<StreamId>);

impl Cursor {
    /// Moves past `entry`.
    pub fn advance(&mut self, entry: &Entry) {
        if self.0.len() <= entry.shard {
            self.0.resize(entry.shard + 1, StreamId::default());
        }
        let at = &mut self.0[entry.shard];
        *at = (*at).max(entry.id);
    }

    /// The position in `shard` (the start when never advanced).
    pub fn at(&self, shard: usize) -> StreamId {
        self.0.get(shard).copied().unwrap_or_default()
    }
}

/// One waiting event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its shard.
    pub shard: usize,
    /// Its place there.
    pub id: StreamId,
    /// The event.
    pub event: Event,
}

impl Entry {
    /// The event's id as sent: unique and stable across retries and
    /// instances.
    pub fn event_id(&self) -> String {
        format!("evt_{}_{}", self.shard, self.id)
    }
}

/// How many events wait for an endpoint, and since when.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Entries after the endpoint's cursor.
    pub events: u64,
    /// When the oldest of them happened.
    pub oldest_at: Option<Millis>,
}

/// The log of one store.
#[derive(Debug, Clone)]
pub enum Outbox {
    /// In this process (memory store).
    Memory(Arc<MemoryOutbox>),
    /// In Redis, shared by every instance (Redis store).
    Redis(RedisOutbox),
}

impl Outbox {
    /// Takes or renews, for `holder`, the right to deliver to `endpoint`
    /// for `ttl`; false while another holder has it.
    ///
    /// # Errors
    /// The store's.
    pub async fn claim(
        &self,
        endpoint: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        match self {
            Self::Memory(_) => Ok(true),
            Self::Redis(r) => r.claim(endpoint, holder, ttl).await,
        }
    }

    /// The committed cursor of `endpoint` (where a new holder starts).
    ///
    /// # Errors
    /// The store's.
    pub async fn committed(&self, endpoint: &str) -> Result<Cursor, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.committed(endpoint)),
            Self::Redis(r) => r.committed(endpoint).await,
        }
    }

    /// Up to `max` entries after `from`, oldest first (by [`StreamId`],
    /// across shards).
    ///
    /// # Errors
    /// The store's.
    pub async fn read(&self, from: &Cursor, max: usize) -> Result<Vec<Entry>, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.read(from, max)),
            Self::Redis(r) => r.read(from, max).await,
        }
    }

    /// `endpoint` is done with everything up to `cursor`.
    ///
    /// # Errors
    /// The store's.
    pub async fn commit(&self, endpoint: &str, cursor: &Cursor) -> Result<(), StoreError> {
        match self {
            Self::Memory(m) => {
                m.commit(endpoint, cursor);
                Ok(())
            }
            Self::Redis(r) => r.commit(endpoint, cursor).await,
        }
    }

    /// What waits for `endpoint`.
    ///
    /// # Errors
    /// The store's.
    pub async fn backlog(&self, endpoint: &str) -> Result<Backlog, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.backlog(endpoint)),
            Self::Redis(r) => r.backlog(endpoint).await,
        }
    }

    /// Events dropped because a queue was full, since the log began.
    ///
    /// # Errors
    /// The store's.
    pub async fn dropped(&self) -> Result<u64, StoreError> {
        match self {
            Self::Memory(m) => Ok(m.lock().dropped),
            Self::Redis(r) => r.dropped().await,
        }
    }
}

/// The memory store's log: one shard, in this process, saved with the
/// store in `STATE_FILE`.
#[derive(Debug, Default)]
pub struct MemoryOutbox {
    log: Mutex<MemoryLog>,
}

/// What [`MemoryOutbox`] holds, and what a snapshot saves of it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLog {
    /// The endpoints (their URLs, credentials removed) and their cursors.
    pub endpoints: Vec<(String, StreamId)>,
    /// Waiting entries, oldest first.
    pub entries: VecDeque<(StreamId, Event)>,
    /// The id of the latest entry appended (kept when trimmed).
    pub last: StreamId,
    /// Dropped because the queue was full.
    pub dropped: u64,
    /// Entries kept at most.
    #[serde(skip)]
    pub max: usize,
}

impl MemoryOutbox {
    /// A log for `endpoints` holding at most `max` entries.
    pub fn new(endpoints: impl IntoIterator<Item = String>, max: usize) -> Self {
        Self {
            log: Mutex::new(MemoryLog {
                endpoints: endpoints
                    .into_iter()
                    .map(|e| (e, StreamId::default()))
                    .collect(),
                max,
                ..MemoryLog::default()
            }),
        }
    }

    /// The log; never held across `.await`.
    pub fn lock(&self) -> MutexGuard<'_, MemoryLog> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `events` that happened at `now`.
    pub fn append(&self, now: Millis, events: impl IntoIterator<Item = Event>) {
        let mut log = self.lock();
        if log.endpoints.is_empty() {
            return;
        }
        let ms = u64::try_from(now).unwrap_or(0);
        for event in events {
            let id = if ms > log.last.ms {
                StreamId { ms, seq: 0 }
            } else {
                StreamId {
                    ms: log.last.ms,
                    seq: log.last.seq + 1,
                }
            };
            log.last = id;
            log.entries.push_back((id, event));
            if log.entries.len() > log.max {
                log.entries.pop_front();
                log.dropped += 1;
            }
        }
    }

    /// Restores what a snapshot saved: the entries and cursors of the
    /// endpoints still configured (a new one starts after the saved
    /// entries; a removed one is forgotten).
    pub fn restore(&self, saved: MemoryLog) {
        let mut log = self.lock();
        let max = log.max;
        let endpoints = log
            .endpoints
            .iter()
            .map(|(url, _)| {
                let at = saved
                    .endpoints
                    .iter()
                    .find(|(u, _)| u == url)
                    .map_or(saved.last, |(_, at)| *at);
                (url.clone(), at)
            })
            .collect();
        *log = MemoryLog {
            endpoints,
            max,
            ..saved
        };
        while log.entries.len() > max {
            log.entries.pop_front();
            log.dropped += 1;
        }
        log.trim();
    }

    fn committed(&self, endpoint: &str) -> Cursor {
        let log = self.lock();
        Cursor(vec![log.cursor_of(endpoint)])
    }

    fn read(&self, from: &Cursor, max: usize) -> Vec<Entry> {
        let log = self.lock();
        let after = from.at(0);
        let start = log.entries.partition_point(|(id, _)| *id <= after);
        log.entries
            .iter()
            .skip(start)
            .take(max)
            .map(|(id, event)| Entry {
                shard: 0,
                id: *id,
                event: event.clone(),
            })
            .collect()
    }

    fn commit(&self, endpoint: &str, cursor: &Cursor) {
        let mut log = self.lock();
        let at = cursor.at(0);
        if let Some((_, mine)) = log.endpoints.iter_mut().find(|(u, _)| u == endpoint) {
            *mine = (*mine).max(at);
        }
        log.trim();
    }

    fn backlog(&self, endpoint: &str) -> Backlog {
        let log = self.lock();
        let after = log.cursor_of(endpoint);
        let start = log.entries.partition_point(|(id, _)| *id <= after);
        Backlog {
            events: (log.entries.len() - start) as u64,
            oldest_at: log.entries.get(start).map(|(_, e)| e.at),
        }
    }
}

impl MemoryLog {
    fn cursor_of(&self, endpoint: &str) -> StreamId {
        self.endpoints
            .iter()
            .find(|(u, _)| u == endpoint)
            .map_or(self.last, |(_, at)| *at)
    }

    /// Drops the entries every endpoint is done with.
    fn trim(&mut self) {
        let Some(done) = self.endpoints.iter().map(|(_, at)| *at).min() else {
            return;
        };
        while self.entries.front().is_some_and(|(id, _)| *id <= done) {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Kind;

    fn event(user: &str) -> Event {
        Event {
            kind: Kind::UserOnline,
            at: 1_000,
            user: user.to_owned(),
            module: Some("pms".into()),
            resource: None,
            reason: None,
            state: None,
            hidden: false,
        }
    }

    fn users(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.event.user.as_str()).collect()
    }

    #[test]
    fn a_full_queue_drops_its_oldest_events_and_counts_them() {
        let outbox = MemoryOutbox::new(["a".to_owned()], 3);
        outbox.append(1_000, ["1", "2", "3", "4", "5"].map(event));
        assert_eq!(users(&outbox.read(&Cursor::default(), 10)), ["3", "4", "5"]);
        assert_eq!(outbox.lock().dropped, 2);
    }

    #[test]
    fn each_endpoint_reads_from_its_cursor_and_what_all_are_past_is_trimmed() {
        let outbox = MemoryOutbox::new(["a".to_owned(), "b".to_owned()], 100);
        outbox.append(1_000, ["1", "2"].map(event));
        outbox.append(1_000, ["3"].map(event));
        let all = outbox.read(&outbox.committed("a"), 10);
        assert_eq!(users(&all), ["1", "2", "3"]);
        // Ids go up within a millisecond, and are the events' stable ids.
        assert!(all.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(all[1].event_id(), "evt_0_1000-1");
        let mut past_two = Cursor::default();
        past_two.advance(&all[1]);
        outbox.commit("a", &past_two);
        assert_eq!(users(&outbox.read(&outbox.committed("a"), 10)), ["3"]);
        assert_eq!(outbox.backlog("a").events, 1);
        assert_eq!(outbox.backlog("b").events, 3, "b has read nothing");
        assert_eq!(outbox.lock().entries.len(), 3, "b still needs them");
        outbox.commit("b", &past_two);
        assert_eq!(outbox.lock().entries.len(), 1, "both are past two");
    }

    #[test]
    fn a_restored_log_keeps_the_cursors_of_the_endpoints_still_configured() {
        let before = MemoryOutbox::new(["a".to_owned(), "gone".to_owned()], 100);
        before.append(1_000, ["1", "2"].map(event));
        let first = before.read(&Cursor::default(), 1);
        let mut past_one = Cursor::default();
        past_one.advance(&first[0]);
        before.commit("a", &past_one);
        let saved = before.lock().clone();

        let after = MemoryOutbox::new(["a".to_owned(), "new".to_owned()], 100);
        after.restore(saved);
        assert_eq!(users(&after.read(&after.committed("a"), 10)), ["2"]);
        assert_eq!(
            after.backlog("new").events,
            0,
            "a new endpoint starts after what was saved"
        );
        after.append(2_000, ["3"].map(event));
        assert_eq!(users(&after.read(&after.committed("new"), 10)), ["3"]);
    }
}
