//! The presence feed behind `GET /api/presence/stream`: one task per
//! stream that sends the viewers of its resources as they change.
//!
//! Each stream registers in the store's [`Watchers`](crate::store::watch::Watchers)
//! under its resources before its first reads, then its task ([`Feed::run`])
//! waits for the marks that the store's change points (or, on Redis, any
//! instance's scripts) leave in its inbox, and re-reads only the marked
//! resources. Per resource it sends at most one event per [`COALESCE`], and
//! only when what a viewer sees differs from what it last sent (who, their
//! state, since when, their profile, the count: not the `lastSeen` that
//! every heartbeat moves), so a heartbeat by a hidden user or one that
//! changes nothing visible sends nothing. The streams of one resource share
//! their reads ([`SharedReads`]).
//!
//! Expiries happen without any request: the task also wakes when the
//! earliest listed viewer's TTL passes, looking at the service's clock at
//! least once a second (so a test that moves the clock is seen at once),
//! and re-reads that resource.
//!
//! What the task has to send waits in an [`Outbox`] that holds, per
//! resource, only the latest read not yet sent, and the response pulls
//! from it: a reader that falls behind gets each resource's latest state
//! when it catches up, never a backlog (issue 27: a queue of 64 whole
//! documents per stream let 40 streams that never read grow the process
//! by hundreds of MB). What one stream holds is thus at most one document
//! per resource, and those are the reads its resource's other streams
//! share ([`SharedReads`]), not copies; besides them, only the event being
//! written, which hyper buffers up to its write buffer's cap (about
//! 400 KiB) while the client does not read, until the write watchdog
//! closes the connection.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::stream::Stream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::clock::{Clock, Millis, duration_ms};
use crate::domain::{Activity, Profile, ResourceId, UserId};
use crate::http::bodies::ResourceViewersResponse;
use crate::http::deadline::within_deadline;
use crate::http::error::ApiError;
use crate::metrics::Metrics;
use crate::store::watch::Inbox;
use crate::store::{ResourceViewers, SessionStore, Store, Ttl};

/// The most resources one stream may ask for.
pub(crate) const MAX_RESOURCES: usize = 20;
/// At most one event per resource per this long.
const COALESCE: Duration = Duration::from_millis(250);
/// How often, at most, the task looks at the clock for an expiry.
const EXPIRY_CHECK: Duration = Duration::from_secs(1);
/// When to look again for the expiry a read showed: at it, or, when it has
/// already passed (the store still listed the viewer: its clock is behind
/// ours, or the read was shared from before the expiry), after
/// [`EXPIRY_CHECK`], so the stream does not re-read every [`COALESCE`].
fn recheck_at(expires: Option<Millis>, now: Millis) -> Option<Millis> {
    expires.map(|at| {
        if at > now {
            at
        } else {
            now + duration_ms(EXPIRY_CHECK)
        }
    })
}

const _: () = assert!(
    MAX_RESOURCES <= crate::store::watch::MAX_WATCHED,
    "a stream's resources must fit an inbox's bits"
);

/// How long after a failed read the task tries that resource again.
const RETRY: Duration = Duration::from_secs(1);

/// What a feed reads from: the store, the clock its expiries are on, the
/// metrics its store calls count into, and the reads it shares.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub metrics: Arc<Metrics>,
    /// `SESSION_TTL`: when a listed viewer expires.
    pub session_ttl: Duration,
    pub reads: Arc<SharedReads>,
}

/// Starts the feed of `resources`: the first event of each, read now, then
/// every change, until the returned stream is dropped.
///
/// # Errors
/// A first read that fails (the store's error, or its deadline).
pub(crate) async fn start(
    sources: Sources,
    resources: Vec<ResourceId>,
) -> Result<impl Stream<Item = Result<Event, Infallible>> + Send + 'static, ApiError> {
    // Registered before the first reads, so no change between them is
    // missed.
    let inbox = Arc::new(Inbox::default());
    let registration = sources.store.watchers().watch(&resources, &inbox);
    let outbox = Arc::new(Outbox::new(resources.len()));
    let mut feed = Feed::new(sources, resources, inbox);
    for i in 0..feed.resources.len() {
        let read = feed.read(i).await?;
        feed.sent(i, &read, Instant::now());
        outbox.offer(i, read);
    }
    let stop = CancellationToken::new();
    let task_outbox = Arc::clone(&outbox);
    let task_stop = stop.clone();
    tokio::spawn(async move {
        let _registered = registration;
        feed.run(&task_outbox, &task_stop).await;
    });
    // The task stops when the response (and with it this guard) is dropped.
    let reader = (outbox, stop.drop_guard());
    Ok(futures_util::stream::unfold(
        reader,
        |reader: (Arc<Outbox>, DropGuard)| async move {
            let read = reader.0.next().await;
            let event = Event::default().event("presence").data(read.json.as_str());
            Some((Ok(event), reader))
        },
    ))
}

/// What a stream has still to send, per resource only the latest read:
/// a read replaces the one its resource has waiting.
#[derive(Debug)]
pub(crate) struct Outbox {
    waiting: Mutex<Waiting>,
    ready: Notify,
}

#[derive(Debug)]
struct Waiting {
    /// Per resource, the read to send next, if any.
    reads: Vec<Option<Arc<Read>>>,
    /// The resources with a read waiting, the longest waiting first.
    order: VecDeque<usize>,
}

impl Outbox {
    fn new(resources: usize) -> Self {
        Self {
            waiting: Mutex::new(Waiting {
                reads: vec![None; resources],
                order: VecDeque::with_capacity(resources),
            }),
            ready: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiting> {
        // Every change under the lock is a single assignment or push, so a
        // panic elsewhere leaves it whole. Never held across `.await`.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resource `i`'s next read to send, replacing any still waiting.
    fn offer(&self, i: usize, read: Arc<Read>) {
        {
            let mut waiting = self.lock();
            if waiting.reads[i].replace(read).is_none() {
                waiting.order.push_back(i);
            }
        }
        self.ready.notify_one();
    }

    /// The read that has waited longest, when one is waiting.
    fn take(&self) -> Option<Arc<Read>> {
        let mut waiting = self.lock();
        let i = waiting.order.pop_front()?;
        waiting.reads[i].take()
    }

    /// The next read to send, waiting for one.
    async fn next(&self) -> Arc<Read> {
        loop {
            if let Some(read) = self.take() {
                return read;
            }
            // `notify_one` keeps a permit when nobody waits, so an offer
            // between `take` and here is not missed.
            self.ready.notified().await;
        }
    }

    /// The reads waiting, and the bytes of their documents.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let waiting = self.lock();
        let reads = waiting.reads.iter().flatten();
        (reads.clone().count(), reads.map(|r| r.json.len()).sum())
    }
}

/// What a viewer of the stream can tell apart: everything in the event but
/// `lastSeen` and the timestamp.
type Seen = (u64, Vec<(UserId, Activity, Millis, Option<Profile>)>);

/// One read of a resource's viewers, ready to send: shared by every stream
/// of the resource that needs a read no older than it.
#[derive(Debug)]
pub(crate) struct Read {
    /// When the read began: it shows every change made before.
    started: Instant,
    seen: Seen,
    /// The event's data: the JSON of the viewers GET.
    json: String,
    /// When its earliest listed viewer expires, on the service's clock.
    expires: Option<Millis>,
}

impl Read {
    fn new(resource: &ResourceId, found: ResourceViewers, ttl: Ttl, started: Instant) -> Self {
        let listed = found
            .viewers
            .iter()
            .map(|v| (v.user.clone(), v.state, v.since, v.profile.clone()))
            .collect();
        let seen = (found.count, listed);
        let expires = found
            .viewers
            .iter()
            .map(|v| ttl.expires_at(v.last_seen))
            .min();
        let body = ResourceViewersResponse::new(resource, found);
        // A struct of strings and numbers always serialises.
        let json = serde_json::to_string(&body).unwrap_or_default();
        Self {
            started,
            seen,
            json,
            expires,
        }
    }
}

/// The latest read of each watched resource, so that the streams of one
/// resource, marked by the same change, read it once between them.
#[derive(Debug, Default)]
pub(crate) struct SharedReads {
    latest: Mutex<HashMap<ResourceId, Arc<Read>>>,
}

/// Reads kept before the old ones are pruned.
const SHARED_READS_KEPT: usize = 4096;

impl SharedReads {
    fn lock(&self) -> MutexGuard<'_, HashMap<ResourceId, Arc<Read>>> {
        // A cache: a panic elsewhere leaves at worst an old read, which the
        // `started` check refuses. Never held across `.await`.
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest read of `resource` if it began at or after `after`.
    fn fresh(&self, resource: &ResourceId, after: Instant) -> Option<Arc<Read>> {
        self.lock()
            .get(resource)
            .filter(|r| r.started >= after)
            .cloned()
    }

    fn keep(&self, resource: &ResourceId, read: &Arc<Read>) {
        let mut latest = self.lock();
        if latest.len() >= SHARED_READS_KEPT {
            let old = Instant::now().checked_sub(Duration::from_secs(1));
            latest.retain(|_, r| old.is_some_and(|old| r.started > old));
        }
        match latest.get(resource) {
            Some(kept) if kept.started >= read.started => {}
            _ => {
                latest.insert(resource.clone(), Arc::clone(read));
            }
        }
    }
}

/// One resource of a stream.
struct Watched {
    /// What its last event showed.
    last: Option<Seen>,
    /// Not read again before this (the coalescing window, or a retry).
    not_before: Instant,
    /// The latest mark not yet read: a read must begin after it.
    marked: Instant,
    /// When its earliest listed viewer expires, on the service's clock.
    expires: Option<Millis>,
}

/// The state of one stream's task.
struct Feed {
    sources: Sources,
    resources: Vec<ResourceId>,
    watched: Vec<Watched>,
    inbox: Arc<Inbox>,
    ttl: Ttl,
}

impl Feed {
    fn new(sources: Sources, resources: Vec<ResourceId>, inbox: Arc<Inbox>) -> Self {
        let now = Instant::now();
        let watched = resources
            .iter()
            .map(|_| Watched {
                last: None,
                not_before: now,
                marked: now,
                expires: None,
            })
            .collect();
        let ttl = Ttl::from(sources.session_ttl);
        Self {
            sources,
            resources,
            watched,
            inbox,
            ttl,
        }
    }

    /// Resource `i` as of now, from a read shared with its other streams
    /// when one began after the latest change this stream heard of.
    ///
    /// # Errors
    /// The store's, or a timeout.
    async fn read(&self, i: usize) -> Result<Arc<Read>, ApiError> {
        let resource = &self.resources[i];
        let shared = &self.sources.reads;
        if let Some(read) = shared.fresh(resource, self.watched[i].marked) {
            return Ok(read);
        }
        let started = Instant::now();
        let found = within_deadline(
            &self.sources.metrics,
            "resource_viewers",
            self.sources.store.resource_viewers(resource),
        )
        .await?;
        let read = Arc::new(Read::new(resource, found, self.ttl, started));
        shared.keep(resource, &read);
        Ok(read)
    }

    /// Notes that `read` of resource `i` is what the stream shows next.
    fn sent(&mut self, i: usize, read: &Read, now: Instant) {
        let w = &mut self.watched[i];
        w.last = Some(read.seen.clone());
        w.not_before = now + COALESCE;
        w.expires = recheck_at(read.expires, self.sources.clock.now_ms());
    }

    /// Offers changes to `outbox` until `stop` (the client went).
    async fn run(&mut self, outbox: &Outbox, stop: &CancellationToken) {
        let mut pending: u32 = 0;
        loop {
            let now = Instant::now();
            let due = (0..self.resources.len())
                .filter(|&i| pending & (1 << i) != 0)
                .map(|i| self.watched[i].not_before)
                .min();
            let next_expiry = self.watched.iter().filter_map(|w| w.expires).min();
            let expiry_wait = next_expiry.map(|at| {
                let left = at.saturating_sub(self.sources.clock.now_ms()).max(0);
                Duration::from_millis(u64::try_from(left).unwrap_or(0)).min(EXPIRY_CHECK)
            });
            let marked = tokio::select! {
                () = stop.cancelled() => return,
                bits = self.inbox.changed() => bits,
                () = tokio::time::sleep_until(due.unwrap_or(now)), if due.is_some() => 0,
                () = tokio::time::sleep(expiry_wait.unwrap_or_default()), if expiry_wait.is_some() => {
                    self.expired()
                }
            };
            let now = Instant::now();
            for (i, w) in self.watched.iter_mut().enumerate() {
                if marked & (1 << i) != 0 {
                    w.marked = now;
                }
            }
            pending |= marked;
            for i in 0..self.resources.len() {
                let bit = 1 << i;
                if pending & bit == 0 || self.watched[i].not_before > now {
                    continue;
                }
                pending &= !bit;
                let Ok(read) = self.read(i).await else {
                    // Try again shortly: the change is still unseen.
                    pending |= bit;
                    self.watched[i].not_before = now + RETRY;
                    continue;
                };
                if self.watched[i].last.as_ref() == Some(&read.seen) {
                    // Nothing a viewer can see changed; reads of this
                    // resource are spaced like events.
                    self.watched[i].not_before = now + COALESCE;
                    self.watched[i].expires = recheck_at(read.expires, self.sources.clock.now_ms());
                    continue;
                }
                self.sent(i, &read, now);
                outbox.offer(i, read);
            }
        }
    }

    /// The resources whose earliest viewer's TTL has passed, as bits; their
    /// expiry is forgotten until they are read again.
    fn expired(&mut self) -> u32 {
        let now = self.sources.clock.now_ms();
        let mut bits = 0;
        for (i, w) in self.watched.iter_mut().enumerate() {
            if w.expires.is_some_and(|at| at <= now) {
                w.expires = None;
                bits |= 1 << i;
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::response::IntoResponse as _;
    use axum::response::sse::{Event, Sse};
    use chrono::{TimeZone as _, Utc};
    use futures_util::stream::{Stream, StreamExt as _};

    use super::{MAX_RESOURCES, Outbox, Read, SharedReads, Sources, start};
    use crate::clock::ManualClock;
    use crate::domain::{Modules, ResourceId, UserId};
    use crate::metrics::Metrics;
    use crate::store::memory::{MemoryConfig, MemoryStore};
    use crate::store::{Heartbeat, NoObserver, ResourceViewers, SessionStore as _, Store, Ttl};

    fn sources() -> (Sources, Modules) {
        let clock = Arc::new(ManualClock::new(
            Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        ));
        let modules = Modules::default();
        let store = Store::Memory(MemoryStore::new(
            &MemoryConfig {
                modules: modules.clone(),
                session_ttl: Duration::from_secs(30),
                timezone: chrono_tz::UTC,
                max_sessions_per_user: 16,
                profile_claims: crate::config::ProfileClaims::parse("name,picture")
                    .expect("claims"),
            },
            clock.clone(),
            Arc::new(NoObserver),
        ));
        let sources = Sources {
            store,
            clock,
            metrics: Arc::new(Metrics::new()),
            session_ttl: Duration::from_secs(30),
            reads: Arc::new(SharedReads::default()),
        };
        (sources, modules)
    }

    /// The `data` of every event the stream's body has ready now (each
    /// within `gap` of the one before), and whether the body is still open.
    async fn ready(
        events: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
        gap: Duration,
    ) -> (Vec<serde_json::Value>, bool) {
        let mut body = Sse::new(events)
            .into_response()
            .into_body()
            .into_data_stream();
        let mut out = Vec::new();
        loop {
            match tokio::time::timeout(gap, body.next()).await {
                Err(_) => return (out, true),
                Ok(None) => return (out, false),
                Ok(Some(chunk)) => {
                    let chunk = chunk.unwrap();
                    let text = std::str::from_utf8(&chunk).unwrap();
                    for line in text.lines() {
                        if let Some(data) = line.strip_prefix("data: ") {
                            out.push(serde_json::from_str(data).unwrap());
                        }
                    }
                }
            }
        }
    }

    #[tokio::test]
    async fn a_stream_that_is_not_read_keeps_only_the_latest_document_of_each_resource() {
        let (sources, modules) = sources();
        let store = sources.store.clone();
        let resources: Vec<ResourceId> = (0..MAX_RESOURCES)
            .map(|i| ResourceId::parse(&format!("r{i}")).unwrap())
            .collect();
        let events = start(sources, resources.clone()).await.unwrap();
        // Five rounds of changes to every resource, each past the coalescing
        // window: a hundred events' worth, none read.
        let rounds = 5;
        for round in 0..rounds {
            for resource in &resources {
                let beat = Heartbeat {
                    resource: Some(resource.clone()),
                    ..Heartbeat::new(
                        UserId::parse(&format!("{}-{round}", resource.as_str())).unwrap(),
                        modules.by_code("pms").unwrap(),
                    )
                };
                store.heartbeat(beat).await.unwrap();
            }
            tokio::time::sleep(super::COALESCE + Duration::from_millis(100)).await;
        }
        let (got, open) = ready(events, Duration::from_millis(300)).await;
        let counts: Vec<_> = got
            .iter()
            .map(|d| format!("{}={}", d["resource"].as_str().unwrap(), d["count"]))
            .collect();
        assert!(open, "the stream is still open; it sent {counts:?}");
        assert_eq!(
            got.len(),
            MAX_RESOURCES,
            "one document per resource: {counts:?}"
        );
        for (doc, resource) in got.iter().zip(&resources) {
            assert_eq!(doc["resource"], resource.as_str(), "{counts:?}");
            assert_eq!(doc["count"], rounds, "the latest state: {counts:?}");
        }
    }

    /// A read of `resource` with `count` viewers and a document padded to
    /// about `bytes`.
    fn read(resource: &str, count: u64, bytes: usize) -> Arc<Read> {
        let resource = ResourceId::parse(resource).unwrap();
        let found = ResourceViewers::ordered(Vec::new(), count, 0);
        let mut read = Read::new(
            &resource,
            found,
            Ttl::from(Duration::from_secs(30)),
            tokio::time::Instant::now(),
        );
        read.json.push_str(&" ".repeat(bytes));
        Arc::new(read)
    }

    #[test]
    fn an_outbox_holds_one_read_per_resource_whatever_is_offered() {
        let outbox = Outbox::new(MAX_RESOURCES);
        // A thousand changes of 20 resources, 100 KiB each, none taken.
        for n in 0..1000 {
            for i in 0..MAX_RESOURCES {
                outbox.offer(i, read(&format!("r{i}"), n, 100 * 1024));
            }
        }
        let (reads, bytes) = outbox.held();
        assert_eq!(reads, MAX_RESOURCES);
        assert!(bytes < MAX_RESOURCES * 101 * 1024, "{bytes} bytes held");
        // Taken in the order first offered, each the latest.
        for i in 0..MAX_RESOURCES {
            let next = outbox.take().unwrap();
            assert!(
                next.json.contains(&format!("\"r{i}\"")),
                "{}",
                &next.json[..60]
            );
            assert_eq!(next.seen.0, 999);
        }
        assert!(outbox.take().is_none());
        assert_eq!(outbox.held(), (0, 0));
    }
}
