//! The module counts of `GET /api/stats/stream`: one publisher, many
//! listeners.
//!
//! A single task ([`run`]) takes the module counts once a second while
//! anyone is listening and publishes them on a `watch` channel. Every
//! stream reads that channel, so a thousand listeners cost one count query
//! a second, not a thousand; a slow listener only ever sees the latest
//! value (nothing queues up behind it) and never slows a heartbeat; and on
//! the Redis store, the query reads the shared counts, so a heartbeat on
//! one instance reaches the streams of every instance within a second.
//! Expiries change counts without any request, which is why the publisher
//! polls rather than waits for events.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::Event;
use futures_util::stream::{self, Stream, StreamExt as _};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_util::sync::CancellationToken;

use super::Streams;
use crate::clock::{First, every};
use crate::domain::Modules;
use crate::http::bodies::ModulesResponse;
use crate::http::deadline::STORE_DEADLINE;
use crate::store::{CountsAt, ModuleCounts, SessionStore, Store};

/// How often the publisher looks at the counts: changes are pushed at most
/// once per this period.
pub(crate) const PUBLISH_PERIOD: Duration = Duration::from_secs(1);

/// One publication: the counts, and the event's JSON.
#[derive(Debug, PartialEq, Eq)]
struct Publication {
    /// What changed, for listeners to compare with what they last sent.
    counts: Vec<ModuleCounts>,
    /// The same JSON as `GET /api/stats/modules`.
    json: String,
}

/// The latest publication, if any yet.
type Published = Option<Arc<Publication>>;

/// The publisher's side of the channel.
#[derive(Debug)]
pub(crate) struct Counts {
    sender: watch::Sender<Published>,
}

impl Counts {
    /// Nothing published, nobody listening.
    pub(crate) fn new() -> Self {
        Self {
            sender: watch::Sender::new(None),
        }
    }

    /// A listener of future publications: taken before a stream reads its
    /// first counts, so no change between the two is missed.
    pub(crate) fn subscribe(&self) -> Subscription {
        Subscription(self.sender.subscribe())
    }
}

/// One stream's place on the channel, from [`Counts::subscribe`].
#[derive(Debug)]
pub(crate) struct Subscription(watch::Receiver<Published>);

/// The events of one stream: `first` (the counts it read itself after
/// subscribing, as `first_json`), then every later publication whose
/// counts differ from what the stream last sent.
pub(crate) fn events(
    subscription: Subscription,
    first: CountsAt,
    first_json: String,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let mut last = first.counts;
    let changes = WatchStream::from_changes(subscription.0).filter_map(move |published| {
        let event = published.filter(|p| p.counts != last).map(|p| {
            last.clone_from(&p.counts);
            Ok(Event::default().event("modules").data(p.json.clone()))
        });
        std::future::ready(event)
    });
    stream::once(std::future::ready(Ok(Event::default()
        .event("modules")
        .data(first_json))))
    .chain(changes)
}

/// Publishes the counts of `store` to the listeners of `streams` once a
/// [`PUBLISH_PERIOD`] while anyone listens, until `cancel` fires.
///
/// Every tick publishes, changed or not: each stream compares with what it
/// last sent itself (streams start from their own reading of the store, so
/// the publisher cannot know what each has seen), and sends only changes.
pub async fn run(streams: Arc<Streams>, store: Store, modules: Modules, cancel: CancellationToken) {
    let sender = &streams.counts.sender;
    every(PUBLISH_PERIOD, First::Now, &cancel, || async {
        if sender.receiver_count() == 0 {
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
        match serde_json::to_string(&ModulesResponse::new(&modules, &counts)) {
            Ok(json) => {
                let publication = Publication {
                    counts: counts.counts,
                    json,
                };
                sender.send_replace(Some(Arc::new(publication)));
            }
            Err(e) => tracing::error!(error = %e, "cannot serialise counts"),
        }
    })
    .await;
}
