//! `/healthz` (the process answers) and `/readyz` (the store answers).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::deadline::within_deadline;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::state::AppState;
use crate::store::SessionStore;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Health and readiness.
#[derive(Debug, Serialize, ToSchema)]
struct Health {
    /// `ok` or `ready`.
    status: &'static str,
    /// The store backend, on `/readyz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    store: Option<&'static str>,
}

/// Liveness: the process is serving.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        store: None,
    })
}

/// Readiness: the store answers within a second.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Store unreachable", body = ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    within_deadline(&state.metrics, "ping", state.store.ping()).await?;
    Ok(Json(Health {
        status: "ready",
        store: Some(state.store.kind()),
    }))
}
