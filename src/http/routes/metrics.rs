//! `GET /metrics`, and the middleware that times requests and counts
//! heartbeat outcomes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::within_deadline;
use crate::domain::ModuleId;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AdminUser;
use crate::http::state::AppState;
use crate::metrics::{ModulePresent, Present, RouteHandles};
use crate::store::SessionStore;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics_get))
}

/// The module a heartbeat named, set on its response by the handler so the
/// outcome counter can label it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeartbeatModule(pub(crate) ModuleId);

/// Prometheus metrics in the OpenMetrics text format. Public unless
/// `METRICS_PUBLIC=false`, which asks for an admin token.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "With METRICS_PUBLIC=false: missing or invalid token", body = ErrorBody),
        (status = 403, description = "With METRICS_PUBLIC=false: not an admin", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn metrics_get(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    if !state.metrics_public {
        let (mut parts, _) = request.into_parts();
        AdminUser::from_request_parts(&mut parts, &state).await?;
    }
    let counts =
        within_deadline(&state.metrics, "module_counts", state.store.module_counts()).await?;
    let sessions =
        within_deadline(&state.metrics, "live_sessions", state.store.live_sessions()).await?;
    let modules: Vec<ModulePresent<'_>> = state
        .modules
        .ids()
        .map(|id| {
            let i = id.index();
            let c = counts.counts.get(i).copied().unwrap_or_default();
            ModulePresent {
                code: state.modules.get(id).code.as_str(),
                users: c.active_now,
                idle_users: c.idle_now,
                sessions: sessions.get(i).copied().unwrap_or(0),
            }
        })
        .collect();
    state
        .metrics
        .see_active_users(counts.users_anywhere, counts.at, state.timezone);
    let text = state.metrics.render(&Present {
        modules: &modules,
        users_anywhere: counts.users_anywhere,
        open_streams: state.live.open_streams(),
        requests_in_flight: state.limits.in_flight(),
        open_connections: state.limits.open_connections(),
        runtime_tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    });
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Times every routed request by route, method and status, and counts
/// heartbeat outcomes by module: a route layer, so each route (and method)
/// has its own [`Track`] and keeps the metric handles it has used.
#[derive(Debug, Clone)]
pub(crate) struct TrackLayer(pub(crate) AppState);

impl<S> Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            state: self.0.clone(),
            handles: Arc::default(),
            inner,
        }
    }
}

/// The service of [`TrackLayer`] around one route.
#[derive(Debug, Clone)]
pub(crate) struct Track<S> {
    state: AppState,
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
                state: self.state.clone(),
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
    state: AppState,
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
        let metrics = &self.state.metrics;
        let route = self.route.as_ref().map_or("", MatchedPath::as_str);
        let status = response.status();
        self.handles.observe(
            metrics,
            route,
            self.method.as_str(),
            status.as_u16(),
            self.started.elapsed(),
        );
        if self.method == Method::POST && route == HEARTBEAT_ROUTE {
            let module = response
                .extensions()
                .get::<HeartbeatModule>()
                .map_or("", |m| self.state.modules.get(m.0).code.as_str());
            self.handles.heartbeat(metrics, module, outcome(status));
        }
    }
}

/// The route whose outcomes `presence_heartbeats_total` counts.
const HEARTBEAT_ROUTE: &str = "/api/stats/heartbeat";

/// The outcome label of a heartbeat's status.
fn outcome(status: StatusCode) -> &'static str {
    match status {
        StatusCode::OK => "ok",
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => "invalid",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorized",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "store_unavailable",
        _ => "error",
    }
}
