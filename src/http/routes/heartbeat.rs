//! `POST` and `DELETE /api/stats/heartbeat`: record activity, end sessions.

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::clock::rfc3339;
use crate::domain::{
    Activity, ClientId, MAX_PAGE_LEN, MAX_RESOURCE_LEN, ModuleId, Page, ResourceId,
};
use crate::http::deadline::within_deadline;
use crate::http::edge::MAX_BODY_BYTES;
use crate::http::error::{ApiError, ErrorBody, truncate};
use crate::http::extract::{ApiQuery, AuthUser, LimitedUser, json_body};
use crate::http::state::AppState;
use crate::store::{Heartbeat, Leave, SessionStore};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(heartbeat_create, heartbeat_delete))
}

/// The heartbeat body, as documented; parsing goes through [`HeartbeatBody`].
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
struct HeartbeatRequest {
    /// A configured module code, e.g. `pms`.
    #[schema(example = "pms")]
    module: String,
    /// One browser tab or device: 1 to 64 of `[A-Za-z0-9_-]`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$", example = "tab-3f9c")]
    client_id: Option<String>,
    /// The route the user is on: 1 to 256 characters, no control characters.
    #[schema(
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,256}$",
        example = "/requests/123"
    )]
    page: Option<String>,
    /// What the user is viewing: 1 to 128 characters, no control characters.
    #[schema(
        pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,128}$",
        example = "request:123"
    )]
    resource: Option<String>,
    /// Whether the user is at the keyboard (default `active`).
    #[schema(example = "active")]
    state: Option<StateName>,
}

/// A session's activity state.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum StateName {
    /// Input lately and the tab visible.
    Active,
    /// No input for a while, or the tab hidden.
    Idle,
}

/// 200 to a heartbeat.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct HeartbeatResponse {
    /// Always true.
    success: bool,
    /// Distinct users active in any module after this heartbeat.
    active_users: u64,
    /// When it was recorded.
    #[schema(example = "2026-01-14T09:30:00.123Z")]
    timestamp: String,
    /// When to send the next heartbeat.
    next_heartbeat_ms: u64,
}

/// Records that the caller is active in a module.
#[utoipa::path(
    post,
    path = "/api/stats/heartbeat",
    tag = "stats",
    request_body = HeartbeatRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatResponse),
        (status = 400, description = "`invalid_module` or `invalid_body`", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 413, description = "Body over 4 KiB", body = ErrorBody),
        (status = 415, description = "Body is not application/json", body = ErrorBody),
        (status = 429, description = "Per-user rate limit; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn heartbeat_create(
    State(state): State<AppState>,
    caller: Result<LimitedUser, ApiError>,
    body: Result<HeartbeatBody, ApiError>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    // Both extractors' refusals are taken as values, so that every outcome
    // is counted here, labelled with the module only once the request was
    // accepted; the caller's refusal comes first, as the contract orders
    // them.
    let (module, answer) = match (caller, body) {
        (Err(e), _) | (_, Err(e)) => (None, Err(e)),
        (Ok(LimitedUser(caller)), Ok(HeartbeatBody(body))) => {
            (Some(body.module), record(&state, caller, body).await)
        }
    };
    let code = module.map_or("", |m| state.modules.get(m).code.as_str());
    let status = answer
        .as_ref()
        .map_or_else(ApiError::status, |_| StatusCode::OK);
    state.metrics.heartbeat(code, outcome(status));
    answer
}

/// The outcome label of a heartbeat's status.
fn outcome(status: StatusCode) -> &'static str {
    match status {
        StatusCode::OK => "ok",
        StatusCode::BAD_REQUEST
        | StatusCode::PAYLOAD_TOO_LARGE
        | StatusCode::UNSUPPORTED_MEDIA_TYPE => "invalid",
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => "unauthorized",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "store_unavailable",
        _ => "error",
    }
}

async fn record(
    state: &AppState,
    caller: Caller,
    body: ValidBody,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let beat = Heartbeat {
        user: caller.user,
        client: body.client,
        module: body.module,
        page: body.page,
        resource: body.resource,
        state: body.state,
        profile: caller.profile,
        hidden: caller.hidden,
    };
    let ack = within_deadline(&state.metrics, "heartbeat", state.store.heartbeat(beat)).await?;
    if ack.exact {
        state
            .metrics
            .see_active_users(ack.active_users, ack.at, state.timezone);
    }
    Ok(Json(HeartbeatResponse {
        success: true,
        active_users: ack.active_users,
        timestamp: rfc3339(ack.at),
        next_heartbeat_ms: next_heartbeat_ms(state),
    }))
}

/// The interval less up to 10 % at random: reconnect bursts spread out,
/// and a client that follows it never beats later than the interval.
fn next_heartbeat_ms(state: &AppState) -> u64 {
    let interval = u64::try_from(state.heartbeat_interval.as_millis()).unwrap_or(u64::MAX);
    let jitter = rand::random_range(0..=interval / 10);
    interval - jitter
}

/// Which sessions a `DELETE` ends.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct LeaveQuery {
    /// End this tab's session (without it, the default session).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    client_id: Option<String>,
    /// `true` ends every session of the caller (logout).
    #[serde(default)]
    all: bool,
}

/// Ends the caller's session (or all of them) now.
#[utoipa::path(
    delete,
    path = "/api/stats/heartbeat",
    tag = "stats",
    params(LeaveQuery),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Ended, or there was nothing to end"),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    )
)]
async fn heartbeat_delete(
    State(state): State<AppState>,
    AuthUser(caller): AuthUser,
    ApiQuery(query): ApiQuery<LeaveQuery>,
) -> Result<StatusCode, ApiError> {
    // A bad clientId is refused even with `all=true`: it is still bad input.
    let client = query
        .client_id
        .map(|c| {
            ClientId::parse(&c).ok_or_else(|| {
                ApiError::InvalidQuery("clientId must be 1 to 64 of [A-Za-z0-9_-]".into())
            })
        })
        .transpose()?;
    let which = if query.all {
        Leave::All
    } else {
        Leave::Session(client)
    };
    within_deadline(
        &state.metrics,
        "leave",
        state.store.leave(&caller.user, which),
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A heartbeat body, parsed into valid values.
#[derive(Debug)]
struct ValidBody {
    module: ModuleId,
    client: Option<ClientId>,
    page: Option<Page>,
    resource: Option<ResourceId>,
    state: Activity,
}

/// The body extractor: 415, 413, `invalid_body` and `invalid_module` as the
/// contract orders them.
struct HeartbeatBody(ValidBody);

impl FromRequest<AppState> for HeartbeatBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_body(req, state, MAX_BODY_BYTES).await?;
        parse_body(&bytes, state).map(Self)
    }
}

fn parse_body(bytes: &[u8], state: &AppState) -> Result<ValidBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::InvalidBody(
            r#"body is empty; send {"module": "<code>"}"#.into(),
        ));
    }
    // Parsed as a map, not a struct: serde would take `["pms"]` for one.
    // Fields are read by hand so each mistake gets its own message and code;
    // unknown fields (a `userId` among them) are ignored.
    let mut body: Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidBody(format!("body must be a JSON object: {e}")))?;
    let module = match body.remove("module") {
        Some(Value::String(code)) => state.modules.by_code(&code).ok_or_else(|| {
            ApiError::InvalidModule(format!(
                "unknown module `{}`; expected one of: {}",
                truncate(&code),
                state.modules.codes()
            ))
        })?,
        Some(_) => {
            return Err(ApiError::InvalidModule("module must be a string".into()));
        }
        None => {
            return Err(ApiError::InvalidModule(format!(
                "module is required; expected one of: {}",
                state.modules.codes()
            )));
        }
    };
    Ok(ValidBody {
        module,
        client: optional(body.remove("clientId"), ClientId::parse, || {
            "clientId must be a string of 1 to 64 of [A-Za-z0-9_-]".to_owned()
        })?,
        page: optional(body.remove("page"), Page::parse, || {
            length_message("page", MAX_PAGE_LEN)
        })?,
        resource: optional(body.remove("resource"), ResourceId::parse, || {
            length_message("resource", MAX_RESOURCE_LEN)
        })?,
        state: optional(body.remove("state"), Activity::parse, || {
            r#"state must be "active" or "idle""#.to_owned()
        })?
        .unwrap_or_default(),
    })
}

fn length_message(field: &str, max: usize) -> String {
    format!("{field} must be a string of 1 to {max} characters, without control characters")
}

/// An optional string field: absent and `null` are `None`. The error
/// message is only built for a bad value, never on the heartbeat's happy path.
fn optional<T>(
    value: Option<Value>,
    parse: impl FnOnce(&str) -> Option<T>,
    message: impl FnOnce() -> String,
) -> Result<Option<T>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => parse(&s)
            .map(Some)
            .ok_or_else(|| ApiError::InvalidBody(message())),
        Some(_) => Err(ApiError::InvalidBody(message())),
    }
}
