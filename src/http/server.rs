//! The HTTP/1.1 server: the router on hyper, with the limits that keep one
//! client from holding the service.
//!
//! `axum::serve` sets no header timeout and no connection limit, so a client
//! could open connections and trickle bytes forever (slow-loris). Here:
//! - at most [`Limits::max_connections`] connections are served at once;
//!   past it the listener is not polled and new ones wait in the backlog;
//! - a connection whose writes make no progress for
//!   [`Limits::request_timeout`] is closed, whatever it was doing: a client
//!   that stops reading (a small receive window, many pipelined requests)
//!   would otherwise hold it past every other timeout;
//! - a request head must arrive within [`Limits::header_read_timeout`],
//!   counted from when the connection opens or its previous response ends, and
//!   be at most [`MAX_HEADER_BYTES`] (hyper answers 431 past it, and past 100
//!   fields);
//! - the edge ([`crate::http::edge`]) answers 431 past [`MAX_HEADERS`]
//!   fields, 413 at once to a request that
//!   declares a body over the limit, 503 `overloaded` once
//!   `MAX_CONCURRENT_REQUESTS` are in flight, and 408 `request_timeout` to a
//!   request that takes longer than [`Limits::request_timeout`] (a slow body
//!   included).
//!
//! TLS and HTTP/2 are a reverse proxy's job; this serves plain HTTP/1.1.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use crate::config::{ConfigError, ServeArgs};

/// The largest request head (request line and headers) accepted.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The most header fields a request may have.
pub(crate) const MAX_HEADERS: usize = 64;

/// What one client may take of the server.
#[derive(Debug)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to receive a request head.
    pub header_read_timeout: Duration,
    /// Time to receive and answer a request.
    pub request_timeout: Duration,
    /// Open connections; one permit each.
    connections: Arc<Semaphore>,
    /// Requests in flight; one permit each.
    in_flight: Semaphore,
    max_concurrent_requests: usize,
}

impl Limits {
    /// The limits of the `serve` settings.
    pub(crate) fn from_args(args: &ServeArgs) -> Self {
        let max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
        let max_concurrent_requests =
            usize::try_from(args.max_concurrent_requests).unwrap_or(usize::MAX);
        Self {
            max_connections,
            connections: Arc::new(Semaphore::new(max_connections)),
            header_read_timeout: args.header_read_timeout,
            request_timeout: args.request_timeout,
            in_flight: Semaphore::new(max_concurrent_requests),
            max_concurrent_requests,
        }
    }

    /// Connections open now.
    pub(crate) fn open_connections(&self) -> usize {
        self.max_connections - self.connections.available_permits()
    }

    /// Requests being handled now.
    pub(crate) fn in_flight(&self) -> usize {
        self.max_concurrent_requests - self.in_flight.available_permits()
    }

    /// A permit for one more request in flight, or `None` when
    /// `MAX_CONCURRENT_REQUESTS` are.
    pub(crate) fn admit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.in_flight.try_acquire().ok()
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops
/// accepting and gives open connections up to `drain` to finish; those
/// still open then are closed, so nothing is handled after this returns.
pub(crate) async fn run(
    listener: TcpListener,
    router: Router,
    limits: &Limits,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEADER_BYTES);
    let graceful = GracefulShutdown::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = limits.connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    pause_after_accept_error(&e).await;
                    continue;
                }
            },
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let watch = Arc::new(WriteWatch::new());
        let connection = http.serve_connection(
            Watched {
                io: TokioIo::new(stream),
                watch: watch.clone(),
            },
            TowerToHyperService::new(router.clone()),
        );
        let connection = graceful.watch(connection);
        let stall_limit = limits.request_timeout;
        tasks.spawn(async move {
            tokio::select! {
                ended = connection => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }
                () = watch.stalled_for(stall_limit) => {
                    // Dropping the connection closes it.
                    tracing::debug!(timeout = ?stall_limit, "closing a connection whose client took no byte for REQUEST_TIMEOUT");
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, draining in-flight requests");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?drain, "connections still open after the drain timeout; closing");
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// A connection's IO, noting when a write cannot proceed (the client's
/// receive window and our send buffer are full) and when one does again.
struct Watched<I> {
    io: I,
    watch: Arc<WriteWatch>,
}

/// When a connection's writes last stopped making progress.
struct WriteWatch {
    opened: tokio::time::Instant,
    /// Milliseconds from `opened` to when writes blocked, or
    /// [`WriteWatch::FLOWING`] while they make progress.
    blocked_since: AtomicU64,
    /// Woken when writes go from flowing to blocked, so a connection whose
    /// writes flow (or that has nothing to write, as a quiet stream) costs
    /// no timer.
    blocked: Notify,
}

impl WriteWatch {
    const FLOWING: u64 = u64::MAX;

    fn new() -> Self {
        Self {
            opened: tokio::time::Instant::now(),
            blocked_since: AtomicU64::new(Self::FLOWING),
            blocked: Notify::new(),
        }
    }

    /// A write or flush could not proceed.
    fn blocked(&self) {
        let now = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(Self::FLOWING - 1);
        if self
            .blocked_since
            .compare_exchange(Self::FLOWING, now, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.blocked.notify_one();
        }
    }

    /// Bytes went out, or nothing is left to send.
    fn flowing(&self) {
        self.blocked_since.store(Self::FLOWING, Ordering::Release);
    }

    /// Completes once writes have been blocked for `limit` without a byte
    /// going out; never while they flow or while nothing is being written.
    async fn stalled_for(&self, limit: Duration) {
        loop {
            let since = self.blocked_since.load(Ordering::Acquire);
            if since == Self::FLOWING {
                self.blocked.notified().await;
                continue;
            }
            tokio::time::sleep_until(self.opened + Duration::from_millis(since) + limit).await;
            if self.blocked_since.load(Ordering::Acquire) == since {
                return;
            }
        }
    }

    /// Notes what a write, flush or shutdown returned.
    fn note<T>(
        &self,
        poll: Poll<io::Result<T>>,
        progress: impl Fn(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        match &poll {
            Poll::Pending => self.blocked(),
            Poll::Ready(Ok(done)) if progress(done) => self.flowing(),
            Poll::Ready(_) => {}
        }
        poll
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch.note(poll, |n| *n > 0)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch.note(poll, |n| *n > 0)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch.note(poll, |()| true)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.watch.note(poll, |()| true)
    }
}

/// Descriptors kept for everything but client connections: the listener,
/// the runtime's own, standard streams and the log, Redis, the snapshot
/// and its directory, with room to spare.
const RESERVED_FILES: u64 = 64;

/// The fewest connections the open-file limit must leave room for. Below
/// it a few idle clients hold every connection, `/healthz` included, so
/// the service refuses to start instead of limping: a file limit under
/// [`RESERVED_FILES`] + 64 (128) is a configuration error, unless
/// `MAX_CONNECTIONS` itself asks for fewer.
pub const MIN_CONNECTIONS: u32 = 64;

/// Fits the connection cap to the open-file limit, so that connections can
/// never take every descriptor (then `accept` fails in a loop, and Redis,
/// the snapshot and the probes fail with it). First raises the soft limit
/// as far as `max_connections` needs and the hard limit allows; then, if
/// `max_connections` plus [`RESERVED_FILES`] still does not fit, returns a
/// lower cap and says so in one warning. Call at start-up, before any
/// connection is served.
///
/// # Errors
/// When the limit leaves fewer than [`MIN_CONNECTIONS`] connections (or
/// fewer than `max_connections`, when that is lower): one line naming
/// `MAX_CONNECTIONS` and the limit, and how to raise it.
pub fn fit_to_file_limit(max_connections: u32) -> Result<u32, ConfigError> {
    let wanted = u64::from(max_connections) + RESERVED_FILES;
    let before = rlimit::Resource::NOFILE.get().map(|(soft, _)| soft);
    let limit = match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot raise the open-file limit; keeping it as it is");
            match before {
                Ok(soft) => soft,
                Err(_) => return Ok(max_connections),
            }
        }
    };
    if let Ok(before) = before
        && limit > before
    {
        tracing::info!(open_files = limit, was = before, "open-file limit raised");
    }
    if wanted <= limit {
        return Ok(max_connections);
    }
    let room = limit.saturating_sub(RESERVED_FILES);
    let least = MIN_CONNECTIONS.min(max_connections);
    if room < u64::from(least) {
        let needed = u64::from(least) + RESERVED_FILES;
        return Err(ConfigError::new(
            "MAX_CONNECTIONS",
            format!(
                "the open-file limit is {limit}, which leaves {room} connections after the \
                 {RESERVED_FILES} descriptors kept for the listener, Redis, the snapshot and \
                 the logs; at least {least} are needed: raise the limit to {needed} \
                 or more (ulimit -n, ulimit -Hn for the hard limit, systemd LimitNOFILE=, \
                 docker --ulimit nofile=)"
            ),
        ));
    }
    let cap = u32::try_from(room).unwrap_or(max_connections);
    tracing::warn!(
        open_files = limit,
        max_connections = cap,
        configured = max_connections,
        "MAX_CONNECTIONS lowered to fit the open-file limit, keeping {RESERVED_FILES} descriptors for Redis, \
         the snapshot and the logs; raise the hard limit (ulimit -Hn, systemd LimitNOFILE) to serve more"
    );
    Ok(cap)
}

/// After a failed `accept`: per-connection errors are the peer's and are
/// skipped; anything else (out of file descriptors, say) is logged and
/// waited out for a second rather than spun on.
async fn pause_after_accept_error(e: &io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
