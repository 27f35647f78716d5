//! Logs for operators: set-up, the per-request line (at `debug` only), and
//! a summary line a minute.
//!
//! At the default level (`info`) the log is not an access log: start-up,
//! configuration warnings, errors, store outages and recoveries, and at most
//! one summary line a minute ([`summarise`]). Every request gets a line at
//! `debug` (`RUST_LOG=presence=debug`), and a 500 gets one at `error` with
//! its request id and what went wrong; at the default level no request span
//! is built at all.
//!
//! Logs go to stderr (stdout is kept for what the binary prints on purpose:
//! the demo token, `presence token`), in colour only on a terminal and never
//! with `NO_COLOR` set. A request's line records its method, path and id,
//! never its query string or headers, so a token sent as `?access_token=` or
//! `Authorization` cannot reach a log line.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestId, RequestId};
use tracing::{Instrument as _, Level};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::http::error::InternalDetail;
use crate::metrics::Metrics;
use crate::store::{SessionStore as _, Store};

/// How often the summary line is written (when anything happened).
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

/// Installs the global subscriber. `RUST_LOG` sets levels (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    // A second call (tests spawning several apps) keeps the first subscriber.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Middleware on every request: counts its answer for the summary, logs it
/// at `debug` in a span with its method, path and id, and logs a 500 at
/// `error` with the same fields and the cause. When `debug` is off this is
/// a counter and a branch: no span, no formatting.
pub(crate) async fn log_request(
    State(metrics): State<Arc<Metrics>>,
    request: Request,
    next: Next,
) -> Response {
    if !tracing::enabled!(Level::DEBUG) {
        let response = next.run(request).await;
        metrics.response(response.status().as_u16());
        if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
            tracing::error!(
                request_id = request_id_of(&response),
                status = response.status().as_u16(),
                %detail,
                "internal error"
            );
        }
        return response;
    }
    let span = tracing::debug_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = request_id(&request),
    );
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    metrics.response(status);
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let _entered = span.enter();
    match response.extensions().get::<InternalDetail>() {
        Some(InternalDetail(detail)) => {
            tracing::error!(status, latency_us, %detail, "internal error")
        }
        None => tracing::debug!(status, latency_us, "answered"),
    }
    response
}

fn request_id(request: &Request) -> &str {
    request
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .unwrap_or("-")
}

fn request_id_of(response: &Response) -> &str {
    response
        .headers()
        .get(&crate::REQUEST_ID)
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-")
}

/// Writes one `info` line every [`SUMMARY_PERIOD`] in which anything was
/// answered: requests by status class, heartbeats recorded, and the live
/// sessions now; until `cancel` fires.
pub async fn summarise(metrics: Arc<Metrics>, store: Store, cancel: CancellationToken) {
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + SUMMARY_PERIOD, SUMMARY_PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let ([_, ok, redirect, client, server], heartbeats) = metrics.take_summary();
        let requests = ok + redirect + client + server;
        if requests == 0 {
            continue;
        }
        let live = match tokio::time::timeout(Duration::from_secs(1), store.live_sessions()).await {
            Ok(Ok(per_module)) => per_module.iter().sum::<u64>().to_string(),
            _ => "unknown (store unavailable)".to_owned(),
        };
        tracing::info!(
            requests,
            ok,
            client_errors = client,
            server_errors = server,
            heartbeats,
            live_sessions = %live,
            "summary of the last minute"
        );
    }
}

/// Makes request ids: a random per-process prefix and a counter, e.g.
/// `3f9c2a71b04d5e88-1a2b`. Unique across instances in practice, and cheap:
/// a random UUID per request cost a `getrandom` system call each, which
/// measured at about 60 % of a `/healthz` request's time.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    prefix: u64,
    next: Arc<AtomicU64>,
}

impl RequestIds {
    /// A generator with a fresh random prefix.
    pub(crate) fn new() -> Self {
        Self {
            prefix: rand::random(),
            next: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _request: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:016x}-{n:x}", self.prefix);
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}
