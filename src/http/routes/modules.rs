//! `GET /api/stats/modules`: the counts of every module.

use axum::Json;
use axum::extract::State;
use indexmap::IndexMap;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::within_deadline;
use crate::clock::rfc3339;
use crate::domain::Modules;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AuthUser;
use crate::http::state::AppState;
use crate::store::{CountsAt, ModuleCounts, SessionStore};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(modules_get))
}

/// The counts of one module.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ModuleCountsBody {
    /// Distinct users ever seen in the module.
    pub total_users: u64,
    /// Distinct users with a live session in the module now, active or idle.
    pub active_now: u64,
    /// Of `activeNow`, the users all of whose live sessions in the module
    /// are idle.
    pub idle_now: u64,
    /// Distinct users seen since 00:00 in `STATS_TIMEZONE`.
    pub today: u64,
}

impl From<ModuleCounts> for ModuleCountsBody {
    fn from(c: ModuleCounts) -> Self {
        Self {
            total_users: c.total_users,
            active_now: c.active_now,
            idle_now: c.idle_now,
            today: c.today,
        }
    }
}

/// One key per configured module (its stats key), in registry order, then
/// `timestamp`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "procurement": {"totalUsers": 2, "activeNow": 1, "idleNow": 0, "today": 1},
    "innovation": {"totalUsers": 1, "activeNow": 1, "idleNow": 1, "today": 1},
    "timestamp": "2026-01-14T09:30:00.123Z"
}))]
pub(crate) struct ModulesResponse {
    /// Counts per stats key.
    #[serde(flatten)]
    pub modules: IndexMap<String, ModuleCountsBody>,
    /// When the counts were taken.
    pub timestamp: String,
}

impl ModulesResponse {
    /// Labels counts with the registry's stats keys.
    pub(crate) fn new(registry: &Modules, counts: &CountsAt) -> Self {
        let modules = registry
            .ids()
            .zip(&counts.counts)
            .map(|(id, counts)| (registry.get(id).stats_key.clone(), (*counts).into()))
            .collect();
        Self {
            modules,
            timestamp: rfc3339(counts.at),
        }
    }
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
