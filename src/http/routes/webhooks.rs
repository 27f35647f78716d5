//! `GET /api/admin/webhooks`: each webhook endpoint as its deliverer sees
//! it (events waiting, the oldest one's age, the last delivery and the last
//! failure). URLs are shown without credentials; the secret never is.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::rfc3339;
use crate::http::deadline::within_deadline;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AdminUser;
use crate::http::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(webhooks_get))
}

/// One endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct EndpointBody {
    /// The URL, credentials removed.
    #[schema(example = "https://backend.example/hooks/presence")]
    url: String,
    /// Whether this instance delivers to it now (with several instances
    /// on one Redis, one does at a time).
    delivering: bool,
    /// Events waiting for it.
    events_waiting: u64,
    /// Age of the oldest waiting event, in seconds; null when none waits.
    oldest_event_age_seconds: Option<f64>,
    /// When this instance last delivered a batch to it.
    last_delivery_at: Option<String>,
    /// This instance's last failed attempt, if any.
    last_failure: Option<FailureBody>,
}

/// A failed delivery attempt.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct FailureBody {
    at: String,
    /// The answer's status, when there was an answer.
    status: Option<u16>,
    /// What went wrong, e.g. `HTTP 503` or `timed out`.
    error: String,
}

/// Every configured endpoint, in `WEBHOOK_URL` order (empty when webhooks
/// are off).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct WebhooksResponse {
    endpoints: Vec<EndpointBody>,
    timestamp: String,
}

/// The webhook endpoints and their delivery.
#[utoipa::path(
    get,
    path = "/api/admin/webhooks",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Each endpoint", body = WebhooksResponse),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn webhooks_get(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
) -> Result<Json<WebhooksResponse>, ApiError> {
    let now = state.clock.now_ms();
    let mut endpoints = Vec::new();
    if let Some(w) = &state.webhooks {
        for (endpoint, s) in w.settings.endpoints.iter().zip(w.board.snapshot()) {
            // Counted now, not as the deliverer last reported: a batch
            // being retried holds its deliverer for minutes.
            let backlog = within_deadline(
                &state.metrics,
                "webhook_backlog",
                w.outbox.backlog(&endpoint.key),
            )
            .await?;
            endpoints.push(EndpointBody {
                oldest_event_age_seconds: backlog
                    .oldest_at
                    .map(|at| (now - at).max(0) as f64 / 1000.0),
                url: s.url,
                delivering: s.delivering,
                events_waiting: backlog.events,
                last_delivery_at: s.last_delivery_at.map(rfc3339),
                last_failure: s.last_failure.map(|f| FailureBody {
                    at: rfc3339(f.at),
                    status: f.status,
                    error: f.error,
                }),
            });
        }
    }
    Ok(Json(WebhooksResponse {
        endpoints,
        timestamp: rfc3339(now),
    }))
}
