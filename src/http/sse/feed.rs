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
//! Events reach the response through a bounded queue ([`QUEUE`]); a reader
//! that lets it fill is dropped rather than buffered without bound.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::stream::{Stream, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

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
/// Events waiting for a slow reader before it is dropped: room for the
/// first event of every resource and then some.
const QUEUE: usize = 64;
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
    let (sender, receiver) = mpsc::channel(QUEUE);
    let mut feed = Feed::new(sources, resources, inbox);
    for i in 0..feed.resources.len() {
        let read = feed.read(i).await?;
        let event = feed.event(i, &read, Instant::now());
        // The queue has room for every first event.
        let _ = sender.try_send(event);
    }
    tokio::spawn(async move {
        let _registered = registration;
        feed.run(&sender).await;
    });
    // The stream ends when the task drops a slow reader's sender.
    Ok(ReceiverStream::new(receiver).map(Ok))
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

    /// The event for resource `i` from `read`, noting what it shows.
    fn event(&mut self, i: usize, read: &Read, now: Instant) -> Event {
        let w = &mut self.watched[i];
        w.last = Some(read.seen.clone());
        w.not_before = now + COALESCE;
        w.expires = recheck_at(read.expires, self.sources.clock.now_ms());
        Event::default().event("presence").data(read.json.as_str())
    }

    /// Sends changes until the client goes, or lets the queue fill.
    async fn run(&mut self, sender: &mpsc::Sender<Event>) {
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
                () = sender.closed() => return,
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
                let event = self.event(i, &read, now);
                if sender.try_send(event).is_err() {
                    // Full (a reader that does not read) or closed: either
                    // way this stream ends here.
                    tracing::debug!("presence stream dropped: its reader fell behind");
                    return;
                }
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
