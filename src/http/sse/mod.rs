//! Server-Sent Events: everything the two streams share, and what feeds
//! each.
//!
//! - this file: [`Streams`], what every stream of the instance shares, and
//!   [`answer`], how every stream answers (its place under the caps held
//!   while it is open, the end at shutdown or when its token expires, a
//!   keep-alive comment every [`KEEP_ALIVE`]).
//! - [`caps`]: `STREAMS_PER_USER` and `MAX_STREAMS`.
//! - [`counts`]: the module counts published to `GET /api/stats/stream`.
//! - [`feed`]: the viewers sent by `GET /api/presence/stream`.
//!
//! Nothing here takes the whole application state: each part is given
//! what it reads.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{Stream, StreamExt as _};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Millis};

pub(crate) mod caps;
pub mod counts;
pub(crate) mod feed;

pub(crate) use caps::StreamGuard;
pub use caps::StreamRefused;

/// Keep-alive comment period.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The longest a stream stays open.
pub(crate) const MAX_STREAM_LIFETIME: Duration = Duration::from_secs(3600);

/// What the streams of one instance share.
#[derive(Debug)]
pub struct Streams {
    /// The stream caps.
    pub(crate) caps: Arc<caps::StreamCaps>,
    /// The module counts' channel.
    pub(crate) counts: counts::Counts,
    /// The presence streams' latest read of each resource.
    pub(crate) reads: Arc<feed::SharedReads>,
}

impl Streams {
    /// No streams yet; at most `per_user` per user and `total` in all.
    pub fn new(per_user: usize, total: usize) -> Self {
        Self {
            caps: Arc::new(caps::StreamCaps::new(per_user, total)),
            counts: counts::Counts::new(),
            reads: Arc::default(),
        }
    }

    /// Streams open now.
    pub fn open(&self) -> usize {
        self.caps.open()
    }
}

/// `events` as every stream answers: holding `guard`, its place under the
/// stream caps, for as long as it is open (dropped when the client goes);
/// ending when `shutdown` fires and after `lifetime`; a keep-alive comment
/// every [`KEEP_ALIVE`].
pub(crate) fn answer<S>(
    events: S,
    guard: StreamGuard,
    shutdown: &CancellationToken,
    lifetime: Duration,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<S>>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let events = events
        .map(move |event| {
            let _open = &guard;
            event
        })
        .take_until(shutdown.clone().cancelled_owned())
        .take_until(tokio::time::sleep(lifetime));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

/// How long a stream may stay open: until its token expires (`expires_at`
/// on `clock`), and at most [`MAX_STREAM_LIFETIME`] (EventSource reconnects
/// by itself, with a fresh token from the client), so a stream never
/// outlives its credentials and a client that stops reading cannot hold
/// its place for ever.
pub(crate) fn lifetime(clock: &dyn Clock, expires_at: Option<Millis>) -> Duration {
    let until_expiry = expires_at.map_or(MAX_STREAM_LIFETIME, |exp| {
        let left = exp.saturating_sub(clock.now_ms());
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    });
    until_expiry.min(MAX_STREAM_LIFETIME)
}
