//! `GET /metrics`, and the middleware that times requests and counts
//! heartbeat outcomes.

use std::time::Instant;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::within_deadline;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AdminUser;
use crate::http::state::AppState;
use crate::metrics::{ModulePresent, Present};
use crate::store::SessionStore;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics_get))
}

/// The module a heartbeat named, set on its response by the handler so the
/// outcome counter can label it.
#[derive(Debug, Clone)]
pub(crate) struct HeartbeatModule(pub(crate) String);

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

/// Times every routed request by route and status, and counts heartbeat
/// outcomes by module.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(String::new, |p| p.as_str().to_owned());
    let method = request.method().clone();
    let heartbeat = method == Method::POST && route == "/api/stats/heartbeat";
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    state
        .metrics
        .http_request(route, method.as_str(), status.as_u16(), started.elapsed());
    if heartbeat {
        let module = response
            .extensions()
            .get::<HeartbeatModule>()
            .map_or("", |m| m.0.as_str());
        state.metrics.heartbeat(module, outcome(status));
    }
    response
}

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
