//! `GET /api/stats/stream`: the module counts as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream, StreamExt as _};
use serde::Deserialize;
use tokio_stream::wrappers::WatchStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::modules::ModulesResponse;
use super::within_deadline;
use crate::auth::Caller;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::StreamUser;
use crate::http::live::StreamGuard;
use crate::http::state::AppState;
use crate::store::SessionStore;

/// Keep-alive comment period.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
        .live
        .admit(&caller.user)
        .map_err(ApiError::TooManyStreams)?;
    // Subscribe before reading the counts, so no change between the two is
    // missed.
    let updates = WatchStream::from_changes(state.live.subscribe());
    let counts =
        within_deadline(&state.metrics, "module_counts", state.store.module_counts()).await?;
    let first = serde_json::to_string(&ModulesResponse::new(&state.modules, &counts))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut last = counts.counts;
    let changes = updates.filter_map(move |published| {
        let event = published.filter(|p| p.counts != last).map(|p| {
            last.clone_from(&p.counts);
            Ok(Event::default().event("modules").data(p.json.clone()))
        });
        std::future::ready(event)
    });
    let events = stream::once(std::future::ready(Ok(Event::default()
        .event("modules")
        .data(first))))
    .chain(changes);
    Ok(answer(&state, &caller, guard, events))
}

/// `events` as every stream answers: holding `guard`, its place under the
/// stream caps, for as long as it is open (dropped when the client goes);
/// ending at shutdown and at the end of its [`lifetime`]; a keep-alive
/// comment every [`KEEP_ALIVE`].
pub(super) fn answer<S>(
    state: &AppState,
    caller: &Caller,
    guard: StreamGuard,
    events: S,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<S>>
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    let events = events
        .map(move |event| {
            let _open = &guard;
            event
        })
        .take_until(state.shutdown.clone().cancelled_owned())
        .take_until(tokio::time::sleep(lifetime(state, caller)));
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}

/// How long a stream may stay open: until its token expires, and at most
/// [`MAX_STREAM_LIFETIME`] (EventSource reconnects by itself, with a fresh
/// token from the client), so a stream never outlives its credentials and a
/// client that stops reading cannot hold its place for ever.
pub(super) fn lifetime(state: &AppState, caller: &Caller) -> Duration {
    let until_expiry = caller.expires_at.map_or(MAX_STREAM_LIFETIME, |exp| {
        let left = exp.saturating_sub(state.clock.now_ms());
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    });
    until_expiry.min(MAX_STREAM_LIFETIME)
}

/// The longest a stream stays open.
pub(crate) const MAX_STREAM_LIFETIME: Duration = Duration::from_secs(3600);
