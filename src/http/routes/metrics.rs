//! `GET /metrics`: the Prometheus metrics, with the gauges of what is
//! present read from the store at each scrape.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::deadline::within_deadline;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AdminUser;
use crate::http::state::AppState;
use crate::metrics::{ModulePresent, Present};
use crate::store::SessionStore;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics_get))
}

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
        open_streams: state.streams.open(),
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
