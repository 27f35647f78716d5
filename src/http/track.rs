//! The route metrics: every routed request timed by route, method and
//! status into `presence_http_request_duration_seconds`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use tower::{Layer, Service};

use crate::metrics::{Metrics, RouteHandles};

/// Times every routed request by route (its [`MatchedPath`], never the
/// raw URI), method and status: a route layer, so each route (and method)
/// has its own [`Track`] and keeps the metric handles it has used.
#[derive(Debug, Clone)]
pub(crate) struct TrackLayer(pub(crate) Arc<Metrics>);

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            metrics: self.0.clone(),
            handles: Arc::default(),
            inner,
        }
    }
}

/// The service of [`TrackLayer`] around one route.
#[derive(Debug, Clone)]
pub(crate) struct Track<S> {
    metrics: Arc<Metrics>,
    handles: Arc<RouteHandles>,
    inner: S,
}

impl<S> Service<Request> for Track<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = request.method().clone();
        TrackFuture {
            inner: self.inner.call(request),
            pending: Some(Pending {
                metrics: self.metrics.clone(),
                handles: self.handles.clone(),
                route,
                method,
                started: Instant::now(),
            }),
        }
    }
}

pin_project_lite::pin_project! {
    /// A route's answer, observed when it is ready.
    pub(crate) struct TrackFuture<F> {
        #[pin]
        inner: F,
        pending: Option<Pending>,
    }
}

/// What is recorded when the answer is ready.
struct Pending {
    metrics: Arc<Metrics>,
    handles: Arc<RouteHandles>,
    route: Option<MatchedPath>,
    method: Method,
    started: Instant,
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(response)) = this.inner.poll(cx) else {
            return Poll::Pending;
        };
        if let Some(p) = this.pending.take() {
            p.record(&response);
        }
        Poll::Ready(Ok(response))
    }
}

impl Pending {
    fn record(self, response: &Response) {
        let route = self.route.as_ref().map_or("", MatchedPath::as_str);
        self.handles.observe(
            &self.metrics,
            route,
            self.method.as_str(),
            response.status().as_u16(),
            self.started.elapsed(),
        );
    }
}
