//! `GET /api/stats/stream`: the module counts as Server-Sent Events.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use futures_util::stream::Stream;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::bodies::ModulesResponse;
use crate::http::deadline::within_deadline;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::StreamUser;
use crate::http::sse::{self, counts};
use crate::http::state::AppState;
use crate::store::SessionStore;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_get))
}

/// The token, for clients that cannot set headers (EventSource).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// The JWT, when no `Authorization` header is sent.
    #[allow(dead_code, reason = "read by StreamUser from the raw query")]
    access_token: Option<String>,
}

/// One event of the stream, as an `EventSource` delivers it.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "documents the wire format; events are built by axum's Event"
)]
struct StreamEvent {
    /// Always `modules`.
    #[schema(pattern = "^modules$", example = "modules")]
    event: String,
    /// The JSON of `GET /api/stats/modules`, on one line.
    data: String,
}

/// `text/event-stream`: one `modules` event on connect, then one whenever a
/// count changes (at most one a second), and a comment every 15 s.
#[utoipa::path(
    get,
    path = "/api/stats/stream",
    tag = "stats",
    params(StreamQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "An event stream of `modules` events, each the JSON of GET /api/stats/modules", content_type = "text/event-stream", body = StreamEvent),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many open streams (`too_many_streams`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn stream_get(
    State(state): State<AppState>,
    StreamUser(caller): StreamUser,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let guard = state
        .streams
        .caps
        .admit(&caller.user)
        .map_err(ApiError::TooManyStreams)?;
    // Subscribed before the counts are read, so no change between the two
    // is missed.
    let subscription = state.streams.counts.subscribe();
    let counts =
        within_deadline(&state.metrics, "module_counts", state.store.module_counts()).await?;
    let json = serde_json::to_string(&ModulesResponse::new(&state.modules, &counts))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let events = counts::events(subscription, counts, json);
    let lifetime = sse::lifetime(state.clock.as_ref(), caller.expires_at);
    Ok(sse::answer(events, guard, &state.shutdown, lifetime))
}
