//! `GET /api/admin/sessions`: every live session, newest first, paged.

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::{Millis, rfc3339};
use crate::domain::{ClientId, UserId};
use crate::http::deadline::within_deadline;
use crate::http::error::{ApiError, ErrorBody};
use crate::http::extract::AdminUser;
use crate::http::extract::ApiQuery;
use crate::http::state::AppState;
use crate::store::{Cursor, SessionStore};

/// Page size when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// The largest page.
const MAX_LIMIT: usize = 1000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(sessions_list))
}

/// Paging.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct SessionsQuery {
    /// Sessions per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// One live session.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionBody {
    user_id: String,
    /// Null for the user's default session.
    client_id: Option<String>,
    /// The module code, e.g. `pms`.
    module: String,
    page: Option<String>,
    resource: Option<String>,
    /// `active` or `idle`: the state of the session's latest heartbeat.
    #[schema(example = "active")]
    state: &'static str,
    /// When the session started in this module.
    started_at: String,
    last_seen: String,
}

/// One page of sessions.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct SessionsResponse {
    /// Newest `lastSeen` first.
    sessions: Vec<SessionBody>,
    /// Pass as `cursor` for the next page; null on the last page.
    next_cursor: Option<String>,
    timestamp: String,
}

/// Every live session, newest `lastSeen` first.
#[utoipa::path(
    get,
    path = "/api/admin/sessions",
    tag = "admin",
    params(SessionsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of live sessions", body = SessionsResponse),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn sessions_list(
    State(state): State<AppState>,
    AdminUser(_admin): AdminUser,
    ApiQuery(query): ApiQuery<SessionsQuery>,
) -> Result<Json<SessionsResponse>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let now = state.clock.now_ms();
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| decode_cursor(c, now))
        .transpose()?;
    let page = within_deadline(
        &state.metrics,
        "sessions",
        state.store.sessions(limit, cursor),
    )
    .await?;
    Ok(Json(SessionsResponse {
        sessions: page
            .sessions
            .into_iter()
            .map(|s| SessionBody {
                user_id: s.user.to_string(),
                client_id: s.client.map(|c| c.to_string()),
                module: state.modules.get(s.module).code.clone(),
                page: s.page.map(|p| p.to_string()),
                resource: s.resource.map(|r| r.to_string()),
                state: s.state.as_str(),
                started_at: rfc3339(s.started_at),
                last_seen: rfc3339(s.last_seen),
            })
            .collect(),
        next_cursor: page.next.as_ref().map(encode_cursor),
        timestamp: rfc3339(page.at),
    }))
}

/// A cursor is opaque to clients: base64url of `[lastSeen, userId, clientId]`.
/// Not signed, so any instance on the same Redis pages on from another's
/// cursor; [`decode_cursor`] checks its shape strictly instead
/// (`docs/design.md`, "Admin cursor").
fn encode_cursor(c: &Cursor) -> String {
    let raw = serde_json::json!([
        c.last_seen,
        c.user.as_str(),
        c.client.as_ref().map(ClientId::as_str)
    ]);
    URL_SAFE_NO_PAD.encode(raw.to_string())
}

/// How far past this instance's `now` a cursor's `lastSeen` may be: with
/// several instances, or Redis's clock deciding liveness, the clock that
/// wrote it may be ahead. An hour is far past any synchronised skew and
/// still refuses positions no session can have.
const CURSOR_SKEW_MS: Millis = 3_600_000;

/// The position in a cursor this endpoint issued, read at `now`.
///
/// # Errors
/// 400 `invalid_query` for anything [`encode_cursor`] would not have
/// written: another spelling of the same JSON (spaces, `1.0`, escapes,
/// more or fewer fields), an invalid id, or a `lastSeen` before the epoch
/// or more than an hour past `now`.
fn decode_cursor(s: &str, now: Millis) -> Result<Cursor, ApiError> {
    let bad = || ApiError::InvalidQuery("cursor is not a nextCursor from this endpoint".into());
    let bytes = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
    let (last_seen, user, client): (Millis, String, Option<String>) =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if !(0..=now.saturating_add(CURSOR_SKEW_MS)).contains(&last_seen) {
        return Err(bad());
    }
    let cursor = Cursor {
        last_seen,
        user: UserId::parse(&user).ok_or_else(bad)?,
        client: client
            .map(|c| ClientId::parse(&c).ok_or_else(bad))
            .transpose()?,
    };
    if encode_cursor(&cursor) != s {
        return Err(bad());
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips() {
        let cursor = Cursor {
            last_seen: 1_768_383_000_123,
            user: UserId::parse("42").unwrap(),
            client: ClientId::parse("tab-1"),
        };
        let now = 1_768_383_000_123;
        assert_eq!(decode_cursor(&encode_cursor(&cursor), now).unwrap(), cursor);
        // An hour of skew between clocks is allowed, not more.
        assert!(decode_cursor(&encode_cursor(&cursor), now - 3_600_000).is_ok());
        assert!(decode_cursor(&encode_cursor(&cursor), now - 3_600_001).is_err());
    }

    #[test]
    fn foreign_cursors_are_invalid_queries() {
        for bad in [
            "",
            "!!",
            "bm90IGpzb24",
            &URL_SAFE_NO_PAD.encode("[1, \"\", null]"),
            &URL_SAFE_NO_PAD.encode("[1, \"42\", null]"),
            &URL_SAFE_NO_PAD.encode("[1,\"42\",null,null]"),
            &URL_SAFE_NO_PAD.encode("[-1,\"42\",null]"),
        ] {
            assert_eq!(
                decode_cursor(bad, 1_768_383_000_123).unwrap_err().code(),
                "invalid_query",
                "{bad}"
            );
        }
    }
}
