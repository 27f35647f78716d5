//! Who is where, by name: `GET /api/presence/resources/{resource}` (the
//! viewers of one resource) and `POST /api/presence/users` (the status of
//! up to 100 users). Both obey `PRESENCE_VISIBILITY` and count toward the
//! caller's rate limit, so nobody sweeps the resource or user space.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::clock::rfc3339;
use crate::domain::{Profile, ResourceId, UserId};
use crate::http::bodies::ResourceViewersResponse;
use crate::http::deadline::within_deadline;
use crate::http::edge::USERS_MAX_BODY_BYTES;
use crate::http::error::{ApiError, ErrorBody, truncate};
use crate::http::extract::{ApiPath, LimitedUser, json_body};
use crate::http::state::AppState;
use crate::http::visibility::may_read;
use crate::store::SessionStore;

/// The most ids one user status request may name.
const MAX_USER_IDS: usize = 100;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(resource_viewers_get))
        .routes(routes!(users_status))
        .layer(axum::extract::DefaultBodyLimit::max(USERS_MAX_BODY_BYTES))
}

/// Live sessions whose latest heartbeat named this resource, one entry per
/// visible user (hidden users are neither listed nor counted).
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
        (status = 403, description = "`forbidden` by `PRESENCE_VISIBILITY`", body = ErrorBody),
        (status = 429, description = "Per-user rate limit; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn resource_viewers_get(
    State(state): State<AppState>,
    LimitedUser(caller): LimitedUser,
    ApiPath(resource): ApiPath<String>,
) -> Result<Json<ResourceViewersResponse>, ApiError> {
    let resource = ResourceId::parse(&resource)
        .ok_or_else(|| ApiError::InvalidQuery("resource must be 1 to 128 characters".into()))?;
    may_read(state.visibility, &caller, Some(&resource))?;
    let found = within_deadline(
        &state.metrics,
        "resource_viewers",
        state.store.resource_viewers(&resource),
    )
    .await?;
    Ok(Json(ResourceViewersResponse::new(&resource, found)))
}

/// The users asked about, as documented; parsing goes through [`UserIds`].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct UsersRequest {
    /// 1 to 100 user ids, strings or integers (`7` and `"7"` are one user).
    #[schema(min_items = 1, max_items = 100, example = json!(["42", 7]))]
    user_ids: Vec<UserIdValue>,
}

/// A user id as a token's user claim holds it: a string of 1 to 128 bytes
/// without control characters, or an integer.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum UserIdValue {
    /// 1 to 128 bytes, no control characters.
    Text(String),
    /// A whole number.
    Number(i64),
}

/// One user's status.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct UserStatusBody {
    /// `active`, `idle` or `offline` (no live session, or hidden).
    #[schema(example = "active")]
    state: &'static str,
    /// Module codes of the user's live sessions, in registry order.
    #[schema(example = json!(["pms"]))]
    modules: Vec<String>,
    /// The user's latest heartbeat while the store remembers it; null if
    /// never seen (and for hidden users).
    last_seen: Option<String>,
    /// The `PROFILE_CLAIMS` of the user's latest token; absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>, example = json!({"name": "Ann Lee"}))]
    profile: Option<Value>,
}

/// The status of each distinct user asked about.
#[derive(Debug, Serialize, ToSchema)]
struct UsersResponse {
    /// Keyed by user id, in the order first asked.
    users: IndexMap<String, UserStatusBody>,
    /// When the status was taken.
    timestamp: String,
}

/// Where each of up to 100 users is now: state, modules, last heartbeat
/// and profile.
#[utoipa::path(
    post,
    path = "/api/presence/users",
    tag = "presence",
    request_body = UsersRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One entry per distinct id", body = UsersResponse),
        (status = 400, description = "`invalid_body`", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "`forbidden` by `PRESENCE_VISIBILITY`", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 429, description = "Per-user rate limit; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn users_status(
    State(state): State<AppState>,
    LimitedUser(caller): LimitedUser,
    UserIds(ids): UserIds,
) -> Result<Json<UsersResponse>, ApiError> {
    may_read(state.visibility, &caller, None)?;
    let found =
        within_deadline(&state.metrics, "user_status", state.store.user_status(&ids)).await?;
    let users = found
        .users
        .into_iter()
        .map(|(user, s)| {
            let body = UserStatusBody {
                state: s.state.map_or("offline", |a| a.as_str()),
                modules: s
                    .modules
                    .iter()
                    .map(|&m| state.modules.get(m).code.clone())
                    .collect(),
                last_seen: s.last_seen.map(rfc3339),
                profile: s.profile.as_ref().map(Profile::to_value),
            };
            (user.to_string(), body)
        })
        .collect();
    Ok(Json(UsersResponse {
        users,
        timestamp: rfc3339(found.at),
    }))
}

/// The ids of a user status body, distinct, in the order first given.
struct UserIds(Vec<UserId>);

impl FromRequest<AppState> for UserIds {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_body(req, state, USERS_MAX_BODY_BYTES).await?;
        parse_user_ids(&bytes).map(Self)
    }
}

fn parse_user_ids(bytes: &[u8]) -> Result<Vec<UserId>, ApiError> {
    let expected = || {
        ApiError::InvalidBody(format!(
            r#"expected {{"userIds": [...]}} with 1 to {MAX_USER_IDS} ids, each a string or an integer"#
        ))
    };
    let body: serde_json::Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|_| expected())?;
    let Some(Value::Array(items)) = body.get("userIds") else {
        return Err(expected());
    };
    if !(1..=MAX_USER_IDS).contains(&items.len()) {
        return Err(expected());
    }
    let mut seen = HashSet::with_capacity(items.len());
    let mut ids = Vec::with_capacity(items.len());
    for item in items {
        let id = match item {
            Value::String(s) => UserId::parse(s),
            Value::Number(n) if n.is_i64() || n.is_u64() => UserId::parse(&n.to_string()),
            _ => None,
        }
        .ok_or_else(|| {
            ApiError::InvalidBody(format!(
                "userIds: `{}` is not a user id (a string of 1 to 128 bytes without control characters, or an integer)",
                truncate(&item.to_string())
            ))
        })?;
        if seen.insert(id.clone()) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_one_to_a_hundred_strings_or_integers_deduplicated() {
        let ids = parse_user_ids(br#"{"userIds": ["42", 7, "7", 42]}"#).unwrap();
        let ids: Vec<&str> = ids.iter().map(UserId::as_str).collect();
        assert_eq!(ids, ["42", "7"]);
        let many: Vec<u32> = (0..100).collect();
        let body = serde_json::json!({ "userIds": many }).to_string();
        assert_eq!(parse_user_ids(body.as_bytes()).unwrap().len(), 100);
        let too_many: Vec<u32> = (0..101).collect();
        let body = serde_json::json!({ "userIds": too_many }).to_string();
        for bad in [
            body.as_str(),
            r#"{"userIds": []}"#,
            r#"{"userIds": "42"}"#,
            r#"{"userIds": [1.5]}"#,
            r#"{"userIds": [null]}"#,
            r#"{"userIds": [["42"]]}"#,
            r#"{"userIds": [""]}"#,
            r#"{"userIds": ["a\nb"]}"#,
            r#"{"ids": ["42"]}"#,
            r#"["42"]"#,
            "",
        ] {
            let err = parse_user_ids(bad.as_bytes()).unwrap_err();
            assert_eq!(err.code(), "invalid_body", "{bad}");
        }
    }
}
