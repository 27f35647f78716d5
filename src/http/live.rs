//! Live counts for the SSE stream: one publisher, many listeners.
//!
//! A single task ([`run`]) takes the module counts once a second while
//! anyone is listening and publishes them on a `watch` channel when they
//! differ from the last published ones. Every stream reads that channel, so
//! a thousand listeners cost one count query a second, not a thousand; a
//! slow listener only ever sees the latest value (nothing queues up behind
//! it) and never slows a heartbeat; and on the Redis store, the query reads
//! the shared counts, so a heartbeat on one instance reaches the streams of
//! every instance within a second. Expiries change counts without any
//! request, which is why the publisher polls rather than waits for events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::{First, every};
use crate::domain::{Modules, UserId};
use crate::http::routes::STORE_DEADLINE;
use crate::http::routes::modules::ModulesResponse;
use crate::http::routes::presence_stream::SharedReads;
use crate::store::{ModuleCounts, SessionStore, Store};

/// How often the publisher looks at the counts: changes are pushed at most
/// once per this period.
pub(crate) const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// One publication: the counts, and the event's JSON.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Publication {
    /// What changed, for listeners to compare with what they last sent.
    pub counts: Vec<ModuleCounts>,
    /// The same JSON as `GET /api/stats/modules`.
    pub json: String,
}

/// The latest publication, if any yet.
pub(crate) type Published = Option<Arc<Publication>>;

/// The publisher's side of the channel, and the stream limits.
#[derive(Debug)]
pub struct Live {
    sender: watch::Sender<Published>,
    limits: StreamLimits,
    /// The presence streams' latest read of each resource, shared.
    pub(crate) presence_reads: SharedReads,
}

impl Live {
    /// No listeners yet; at most `per_user` streams per user and `total`
    /// in all.
    pub fn new(per_user: usize, total: usize) -> Self {
        Self {
            sender: watch::Sender::new(None),
            limits: StreamLimits {
                per_user,
                total,
                open: Mutex::new(HashMap::new()),
            },
            presence_reads: SharedReads::default(),
        }
    }

    /// A receiver of future publications.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Published> {
        self.sender.subscribe()
    }

    /// Admits one more stream for `user`, or says which limit is reached.
    ///
    /// # Errors
    /// [`StreamRefused`] when the user or the instance has too many.
    pub(crate) fn admit(self: &Arc<Self>, user: &UserId) -> Result<StreamGuard, StreamRefused> {
        self.limits.admit(user)?;
        tracing::debug!(user = %user, "stream opened");
        Ok(StreamGuard {
            live: Arc::clone(self),
            user: user.clone(),
        })
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.limits.lock().values().sum()
    }
}

/// Which stream limit was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// The user has `STREAMS_PER_USER` open already.
    #[error("too many open streams for this user")]
    PerUser,
    /// The instance has `MAX_STREAMS` open already.
    #[error("too many open streams on this instance")]
    Total,
}

#[derive(Debug)]
struct StreamLimits {
    per_user: usize,
    total: usize,
    open: Mutex<HashMap<UserId, usize>>,
}

impl StreamLimits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<UserId, usize>> {
        // The map is a plain counter; a panic elsewhere cannot corrupt it.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn admit(&self, user: &UserId) -> Result<(), StreamRefused> {
        let mut open = self.lock();
        if open.values().sum::<usize>() >= self.total {
            return Err(StreamRefused::Total);
        }
        let mine = open.entry(user.clone()).or_default();
        if *mine >= self.per_user {
            return Err(StreamRefused::PerUser);
        }
        *mine += 1;
        Ok(())
    }

    fn release(&self, user: &UserId) {
        let mut open = self.lock();
        if let Some(n) = open.get_mut(user) {
            *n -= 1;
            if *n == 0 {
                open.remove(user);
            }
        }
    }
}

/// Held by an open stream; releases its place when the stream ends.
#[derive(Debug)]
pub(crate) struct StreamGuard {
    live: Arc<Live>,
    user: UserId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.live.limits.release(&self.user);
        tracing::debug!(user = %self.user, "stream closed");
    }
}

/// Publishes the counts of `store` to `live`'s listeners once a
/// [`PUBLISH_PERIOD`] while anyone listens, until `cancel` fires.
///
/// Every tick publishes, changed or not: each stream compares with what it
/// last sent itself (streams start from their own reading of the store, so
/// the publisher cannot know what each has seen), and sends only changes.
pub async fn run(live: Arc<Live>, store: Store, modules: Modules, cancel: CancellationToken) {
    every(PUBLISH_PERIOD, First::Now, &cancel, || async {
        if live.sender.receiver_count() == 0 {
            return;
        }
        let counts = match tokio::time::timeout(STORE_DEADLINE, store.module_counts()).await {
            Ok(Ok(counts)) => counts,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "live counts unavailable");
                return;
            }
            Err(_) => return,
        };
        let body = ModulesResponse::new(&modules, &counts);
        match serde_json::to_string(&body) {
            Ok(json) => {
                let publication = Publication {
                    counts: counts.counts,
                    json,
                };
                live.sender.send_replace(Some(Arc::new(publication)));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise counts"),
        }
    })
    .await;
}
