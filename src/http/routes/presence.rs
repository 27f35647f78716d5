//! `GET /api/presence/resources/{resource}`: who is viewing one resource.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::within_deadline;
use crate::clock::rfc3339;
use crate::domain::ResourceId;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::ApiPath;
use crate::http::extract::AuthUser;
use crate::http::state::AppState;
use crate::store::SessionStore;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(resource_viewers_get))
}

/// One user viewing the resource.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ViewerBody {
    /// Who.
    user_id: String,
    /// Since when (earliest of the user's sessions on it).
    since: String,
    /// Latest heartbeat naming it.
    last_seen: String,
}

/// The live viewers of a resource.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ResourceViewersResponse {
    /// As requested.
    #[schema(example = "request:123")]
    resource: String,
    /// One entry per user, earliest `since` first.
    viewers: Vec<ViewerBody>,
    /// When the list was taken.
    timestamp: String,
}

/// Live sessions whose latest heartbeat named this resource.
#[utoipa::path(
    get,
    path = "/api/presence/resources/{resource}",
    tag = "presence",
    params(("resource" = String, Path, description = "1 to 128 characters, no control characters, e.g. `request:123`", pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,128}$")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Viewers, one per user", body = ResourceViewersResponse),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn resource_viewers_get(
    State(state): State<AppState>,
    AuthUser(_caller): AuthUser,
    ApiPath(resource): ApiPath<String>,
) -> Result<Json<ResourceViewersResponse>, ApiError> {
    let resource = ResourceId::parse(&resource)
        .ok_or_else(|| ApiError::InvalidQuery("resource must be 1 to 128 characters".into()))?;
    let found = within_deadline(
        &state.metrics,
        "resource_viewers",
        state.store.resource_viewers(&resource),
    )
    .await?;
    Ok(Json(ResourceViewersResponse {
        resource: resource.to_string(),
        viewers: found
            .viewers
            .into_iter()
            .map(|v| ViewerBody {
                user_id: v.user.to_string(),
                since: rfc3339(v.since),
                last_seen: rfc3339(v.last_seen),
            })
            .collect(),
        timestamp: rfc3339(found.at),
    }))
}
