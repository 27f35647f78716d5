//! `GET /api/stats/modules`: the counts of every module.

use axum::Json;
use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::bodies::ModulesResponse;
use crate::http::deadline::within_deadline;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AuthUser;
use crate::http::state::AppState;
use crate::store::SessionStore;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(modules_get))
}

/// Per-module counts: present now (and of those, idle), today, ever.
#[utoipa::path(
    get,
    path = "/api/stats/modules",
    tag = "stats",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts per module", body = ModulesResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn modules_get(
    State(state): State<AppState>,
    AuthUser(_caller): AuthUser,
) -> Result<Json<ModulesResponse>, ApiError> {
    let counts =
        within_deadline(&state.metrics, "module_counts", state.store.module_counts()).await?;
    Ok(Json(ModulesResponse::new(&state.modules, &counts)))
}
