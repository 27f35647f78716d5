//! The edge: what every request goes through before and after the router,
//! in one layer.
//!
//! In order, for each request:
//! - its id: a caller's `x-request-id` is kept when it is 1 to 64 of
//!   `[A-Za-z0-9_.-]`, anything else is replaced by a generated one
//!   ([`RequestIds`]), and the response carries it back;
//! - 431 to a request with more than [`MAX_HEADERS`] header fields, and the
//!   connection closed (hyper's own limit, 100, is the backstop: asking
//!   hyper for 64 instead cost 4 % of a heartbeat's instructions, filling a
//!   header array on every parse);
//! - 413 at once to a declared body over 4 KiB (16 KiB for user status,
//!   whose 100 ids may be long), before anyone waits for it;
//! - 503 `overloaded` once `MAX_CONCURRENT_REQUESTS` are in flight
//!   (`/healthz` is never shed: a busy instance is alive);
//! - 408 `request_timeout` when the answer is not ready within
//!   `REQUEST_TIMEOUT` (a slow body included);
//! - 500 `internal` when a handler panics, instead of a dropped connection;
//! - the answer counted by status class for the summary line, logged at
//!   `debug` in a span with method, path and id, and a 500 logged at `error`
//!   with its id and cause. When `debug` is off no span is built.
//!
//! These were six layers (three `from_fn` middlewares and three of
//! tower-http's); each boxed its future and cloned the service behind it on
//! every request. One hand-written layer does the same work with one
//! allocation for the future (`docs/benchmarks.md`, "Where the time goes").
//!
//! A stream holds its in-flight permit only until its response headers are
//! sent.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use tower::{Layer, Service};
use tracing::{Instrument as _, Level};

use crate::http::error::{ApiError, InternalDetail};
use crate::http::server::{Limits, MAX_HEADERS};
use crate::metrics::Metrics;

/// The largest body accepted: a heartbeat's, and every route's but one.
pub const MAX_BODY_BYTES: usize = 4096;
/// The largest user status body: 100 ids of up to 128 bytes, quoted.
pub(crate) const USERS_MAX_BODY_BYTES: usize = 16 * 1024;
/// The one route whose body may be larger than [`MAX_BODY_BYTES`].
const USERS_PATH: &str = "/api/presence/users";

/// The request id header, read from callers and set on every answer.
pub(crate) const REQUEST_ID: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-request-id");

const LIVENESS_PATH: &str = "/healthz";

/// The [`Layer`] that puts [`Edge`] around a service.
#[derive(Clone)]
pub(crate) struct EdgeLayer(Arc<Shared>);

struct Shared {
    metrics: Arc<Metrics>,
    limits: Arc<Limits>,
    ids: RequestIds,
}

impl EdgeLayer {
    /// The edge of these limits, counting into `metrics`.
    pub(crate) fn new(limits: Arc<Limits>, metrics: Arc<Metrics>) -> Self {
        Self(Arc::new(Shared {
            metrics,
            limits,
            ids: RequestIds::new(),
        }))
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            shared: self.0.clone(),
            inner,
        }
    }
}

/// The service of [`EdgeLayer`].
#[derive(Clone)]
pub(crate) struct Edge<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S> Service<Request> for Edge<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The clone that was driven to readiness serves this request.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move { Ok(shared.serve(inner, request).await) })
    }
}

impl Shared {
    async fn serve<S>(&self, inner: S, mut request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        // Counted as the client sent them, before the id is added: a
        // request of exactly MAX_HEADERS fields is served.
        let too_many_headers = request.headers().len() > MAX_HEADERS;
        let id = self.ids.assign(&mut request);
        let debug = tracing::enabled!(Level::DEBUG);
        // `Span::none()` when nothing would record the span: nothing built.
        let span = if debug {
            tracing::debug_span!(
                "request",
                method = %request.method(),
                path = %request.uri().path(),
                request_id = id.to_str().unwrap_or("-"),
            )
        } else {
            tracing::Span::none()
        };
        let started = debug.then(Instant::now);
        let mut response = if too_many_headers {
            too_many_headers_response()
        } else {
            self.guard(inner, request).instrument(span.clone()).await
        };
        let status = response.status().as_u16();
        let _entered = span.enter();
        if let Some(InternalDetail(detail)) = response.extensions().get::<InternalDetail>() {
            let request_id = id.to_str().unwrap_or("-");
            tracing::error!(request_id, status, %detail, "internal error");
        } else if let Some(started) = started {
            let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            tracing::debug!(status, latency_us, "answered");
        }
        self.metrics.response(status);
        response.headers_mut().insert(REQUEST_ID, id);
        response
    }

    /// The limits: 413 for a declared oversize body, shedding, the request
    /// timeout, and a panic turned into a 500.
    async fn guard<S>(&self, mut inner: S, request: Request) -> Response
    where
        S: Service<Request, Response = Response, Error = Infallible>,
    {
        if request.uri().path() != LIVENESS_PATH {
            let limit = if request.uri().path() == USERS_PATH {
                USERS_MAX_BODY_BYTES
            } else {
                MAX_BODY_BYTES
            };
            if declared_length(&request).is_some_and(|n| n > limit) {
                return ApiError::PayloadTooLarge(limit).into_response();
            }
            let Some(_permit) = self.limits.admit() else {
                self.metrics.request_shed();
                return ApiError::Overloaded.into_response();
            };
            let timeout = self.limits.request_timeout;
            return match tokio::time::timeout(timeout, caught(inner.call(request))).await {
                Ok(response) => response,
                Err(_) => ApiError::RequestTimeout(timeout).into_response(),
            };
        }
        caught(inner.call(request)).await
    }
}

/// The answer of `call`, or a 500 if it panics.
async fn caught(call: impl Future<Output = Result<Response, Infallible>>) -> Response {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => ApiError::Internal("a handler panicked".into()).into_response(),
    }
}

/// 431 without a body, closing the connection, as hyper answers a head
/// over its own limits.
fn too_many_headers_response() -> Response {
    (
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        [(CONNECTION, HeaderValue::from_static("close"))],
    )
        .into_response()
}

/// The request's `Content-Length`, if it has one (hyper has already
/// refused a malformed one).
fn declared_length(request: &Request) -> Option<usize> {
    request
        .headers()
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Makes request ids: a random per-process prefix and a counter, e.g.
/// `3f9c2a71b04d5e88-1a2b`. Unique across instances in practice, and cheap:
/// a random UUID per request cost a `getrandom` system call each, which
/// measured at about 60 % of a `/healthz` request's time.
struct RequestIds {
    prefix: u64,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            prefix: rand::random(),
            next: AtomicU64::new(0),
        }
    }

    /// The request's id: the caller's when usable, else a new one, which
    /// replaces whatever the caller sent so a client cannot forge or bloat
    /// log lines through it.
    fn assign(&self, request: &mut Request) -> HeaderValue {
        if let Some(id) = request.headers().get(&REQUEST_ID).filter(|id| usable(id)) {
            return id.clone();
        }
        let id = self.make();
        request.headers_mut().insert(REQUEST_ID, id.clone());
        id
    }

    fn make(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut text = [0_u8; 33];
        let prefix = hex(self.prefix, 16, &mut text);
        text[prefix] = b'-';
        // Without leading zeros, at least one digit.
        let digits = (16 - n.leading_zeros() as usize / 4).max(1);
        let end = prefix + 1 + hex(n, digits, &mut text[prefix + 1..]);
        HeaderValue::from_bytes(&text[..end]).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// Writes the last `digits` hex digits of `value`, lowercase; returns
/// `digits`.
fn hex(value: u64, digits: usize, out: &mut [u8]) -> usize {
    for (i, slot) in out[..digits].iter_mut().enumerate() {
        *slot = digit(value >> (4 * (digits - 1 - i)));
    }
    digits
}

fn digit(nibble: u64) -> u8 {
    b"0123456789abcdef"[usize::try_from(nibble & 0xf).unwrap_or(0)]
}

/// Whether a caller's request id may be kept: 1 to 64 of `[A-Za-z0-9_.-]`.
fn usable(id: &HeaderValue) -> bool {
    (1..=64).contains(&id.len())
        && id
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use tower::ServiceExt as _;

    use super::*;
    use crate::config::Cli;

    /// An edge with `args` as the settings around `handler`.
    fn edge<S>(args: &[&str], handler: S) -> Edge<S> {
        let argv = [&["presence"], args].concat();
        let limits = Limits::from_args(&Cli::try_parse_from(argv).unwrap().serve);
        Edge {
            shared: Arc::new(Shared {
                metrics: Arc::new(Metrics::new()),
                limits: Arc::new(limits),
                ids: RequestIds::new(),
            }),
            inner: handler,
        }
    }

    fn get(id: Option<&str>) -> Request {
        let mut request = Request::builder().uri("/api/stats/modules");
        if let Some(id) = id {
            request = request.header(REQUEST_ID, id);
        }
        request.body(axum::body::Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_is_a_500_with_its_request_id() {
        let handler = tower::service_fn(|_: Request| async {
            if true {
                panic!("boom");
            }
            Ok::<Response, Infallible>(Response::default())
        });
        let response = edge(&[], handler)
            .oneshot(get(Some("trace-1")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[REQUEST_ID], "trace-1");
    }

    #[tokio::test(start_paused = true)]
    async fn a_handler_past_the_request_timeout_is_a_408() {
        let handler = tower::service_fn(|_: Request| async {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
            Ok::<Response, Infallible>(Response::default())
        });
        let response = edge(&["--request-timeout", "2s"], handler)
            .oneshot(get(None))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn the_handler_sees_the_id_the_answer_carries() {
        let handler = tower::service_fn(|request: Request| async move {
            let seen = request.headers()[REQUEST_ID].clone();
            Ok::<Response, Infallible>(Response::new(axum::body::Body::from(
                seen.as_bytes().to_vec(),
            )))
        });
        for sent in [None, Some("has space"), Some("kept.id-1")] {
            let response = edge(&[], handler).oneshot(get(sent)).await.unwrap();
            let answered = response.headers()[REQUEST_ID].clone();
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            assert_eq!(body, answered.as_bytes(), "{sent:?}");
            match sent {
                Some("kept.id-1") => assert_eq!(answered, "kept.id-1"),
                _ => assert_eq!(answered.len(), 18, "{answered:?}"),
            }
        }
    }

    #[test]
    fn generated_ids_are_the_prefix_and_a_hex_counter() {
        let ids = RequestIds {
            prefix: 0x3f9c_2a71_b04d_5e88,
            next: AtomicU64::new(0),
        };
        assert_eq!(ids.make(), "3f9c2a71b04d5e88-0");
        ids.next.store(0x1a2b, Ordering::Relaxed);
        assert_eq!(ids.make(), "3f9c2a71b04d5e88-1a2b");
        ids.next.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(ids.make(), "3f9c2a71b04d5e88-ffffffffffffffff");
        assert_eq!(
            RequestIds {
                prefix: 1,
                next: AtomicU64::new(16),
            }
            .make(),
            "0000000000000001-10"
        );
    }

    #[test]
    fn only_short_plain_ids_are_kept() {
        for (id, kept) in [
            ("abc-123_X.y", true),
            ("", false),
            ("has space", false),
            ("ünïcode", false),
            (&"x".repeat(64), true),
            (&"x".repeat(65), false),
        ] {
            let value = HeaderValue::from_bytes(id.as_bytes()).unwrap();
            assert_eq!(usable(&value), kept, "{id:?}");
        }
    }
}
