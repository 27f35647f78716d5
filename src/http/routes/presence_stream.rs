//! `GET /api/presence/stream?resources=a,b`: the viewers of up to 20
//! resources as Server-Sent Events, on one connection per page. The feed
//! itself is [`crate::http::sse::feed`]; this file checks the request.

use std::convert::Infallible;

use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, Sse};
use futures_util::stream::Stream;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::ResourceId;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::StreamUser;
use crate::http::sse;
use crate::http::sse::feed::{self, MAX_RESOURCES};
use crate::http::state::AppState;
use crate::http::visibility::may_read;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(presence_stream_get))
}

/// One event of the stream, as an `EventSource` delivers it.
#[derive(Debug, ToSchema)]
#[allow(
    dead_code,
    reason = "documents the wire format; events are built by axum's Event"
)]
struct PresenceEvent {
    /// Always `presence`.
    #[schema(pattern = "^presence$", example = "presence")]
    event: String,
    /// The JSON of `GET /api/presence/resources/{resource}`, on one line.
    data: String,
}

/// `text/event-stream`: one `presence` event per resource on connect, the
/// same JSON as the viewers GET; then one for a resource whenever its
/// viewers, a viewer's state or a profile change (at most one per resource
/// per 250 ms); a comment every 15 s. Counts toward the stream limits and
/// ends when the token expires. Opening it costs one request of the
/// per-user rate limit per resource, like that many GETs; the events on
/// changes cost nothing.
#[utoipa::path(
    get,
    path = "/api/presence/stream",
    tag = "presence",
    params(
        ("resources" = String, Query, description = "1 to 20 resource ids, comma-separated, each percent-encoded", example = "request:1,request:2", pattern = "^[^,\\u0000-\\u001F\\u007F-\\u009F]{1,128}(,[^,\\u0000-\\u001F\\u007F-\\u009F]{1,128}){0,19}$"),
        ("access_token" = Option<String>, Query, description = "The JWT, when no `Authorization` header is sent"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "An event stream of `presence` events, each the JSON of GET /api/presence/resources/{resource}", content_type = "text/event-stream", body = PresenceEvent),
        (status = 400, description = "`invalid_query`: no list, more than 20 (or than the burst of `RATE_LIMIT`), or a bad id", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "`forbidden` by `PRESENCE_VISIBILITY` (any resource out of scope refuses the whole stream)", body = ErrorBody),
        (status = 429, description = "Too many open streams (`too_many_streams`), or `rate_limited` with `Retry-After`: the resources, one read each of the per-user rate limit, do not fit what is left of it", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn presence_stream_get(
    State(state): State<AppState>,
    StreamUser(caller): StreamUser,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resources = parse_resources(query.as_deref().unwrap_or(""))?;
    let burst = state.limiter.burst();
    if resources.len() > usize::try_from(burst).unwrap_or(usize::MAX) {
        // No wait would ever let it open: a bad list under this limit.
        return Err(ApiError::InvalidQuery(format!(
            "resources: at most {burst} ids, the burst of RATE_LIMIT"
        )));
    }
    for resource in &resources {
        may_read(state.visibility, &caller, Some(resource))?;
    }
    let guard = state
        .streams
        .caps
        .admit(&caller.user)
        .map_err(ApiError::TooManyStreams)?;
    // The documents sent on connect are reads like the viewers GET, one
    // per resource, from the same budget (issue 27: streams opened and
    // closed in a loop read 17,000 resources a second). Taken after the
    // checks above, so a refused stream, which reads nothing, costs
    // nothing. Re-reads on changes are pushed by writers, not asked for,
    // and are not counted.
    let count = u32::try_from(resources.len()).unwrap_or(u32::MAX);
    state.limiter.check_n(&caller.user, count)?;
    let sources = feed::Sources {
        store: state.store.clone(),
        clock: state.clock.clone(),
        metrics: state.metrics.clone(),
        session_ttl: state.session_ttl,
        reads: state.streams.reads.clone(),
    };
    let events = feed::start(sources, resources).await?;
    let lifetime = sse::lifetime(state.clock.as_ref(), caller.expires_at);
    Ok(sse::answer(events, guard, &state.shutdown, lifetime))
}

/// The `resources` of a raw query string: split on literal commas, each
/// part percent-decoded and checked, duplicates dropped.
///
/// # Errors
/// 400 `invalid_query` for a missing or empty list, a bad id, or more than
/// [`MAX_RESOURCES`].
fn parse_resources(query: &str) -> Result<Vec<ResourceId>, ApiError> {
    let bad = |why: &str| ApiError::InvalidQuery(format!("resources: {why}"));
    let raw = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("resources="))
        .ok_or_else(|| bad("1 to 20 comma-separated resource ids are required"))?;
    let mut out: Vec<ResourceId> = Vec::new();
    for part in raw.split(',') {
        let decoded =
            form_decode(part).ok_or_else(|| bad("each id must be UTF-8 once percent-decoded"))?;
        let id = ResourceId::parse(&decoded)
            .ok_or_else(|| bad("each id must be 1 to 128 characters, no control characters"))?;
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if out.len() > MAX_RESOURCES {
        return Err(bad("at most 20 resource ids"));
    }
    Ok(out)
}

/// A form-encoded value decoded as a query's values are (`+` is a space,
/// `%XX` a byte, a `%` without two hex digits itself), or `None` when the
/// bytes are not UTF-8. Strict where `serde_urlencoded` is lossy: it turns
/// invalid bytes into U+FFFD, which would merge distinct bad ids into one
/// and accept what the viewers GET refuses.
fn form_decode(part: &str) -> Option<String> {
    let hex = |b: u8| {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let byte = match bytes[i] {
            b'+' => b' ',
            b'%' => match (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    i += 2;
                    high << 4 | low
                }
                _ => b'%',
            },
            other => other,
        };
        out.push(byte);
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_decoded_as_form_values_and_must_be_utf8() {
        assert_eq!(form_decode("a%2Cb+c").as_deref(), Some("a,b c"));
        assert_eq!(form_decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(form_decode("100%").as_deref(), Some("100%"));
        assert_eq!(form_decode("%zz%4").as_deref(), Some("%zz%4"));
        for bad in ["%FF", "%C3%28", "%E2%82", "a%80"] {
            assert_eq!(form_decode(bad), None, "{bad}");
            assert_eq!(
                parse_resources(&format!("resources={bad}"))
                    .unwrap_err()
                    .code(),
                "invalid_query"
            );
        }
    }
}
