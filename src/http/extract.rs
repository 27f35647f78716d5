//! Every extractor a handler names in its arguments: who the caller is
//! ([`AuthUser`], [`AdminUser`], [`LimitedUser`], [`StreamUser`]), and
//! query and path parameters whose rejection is the contract's error body
//! ([`ApiQuery`], [`ApiPath`]), and the JSON bodies that body extractors
//! parse ([`json_body`]).

use axum::body::Bytes;
use axum::extract::{FromRequest as _, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;

use crate::auth::{AuthError, Caller};
use crate::http::error::ApiError;
use crate::http::state::AppState;

/// The bearer token of a request, from the `Authorization` header.
fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let header = parts.headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = header
        .to_str()
        .map_err(|_| AuthError::Invalid("Authorization header is not ASCII"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Invalid(
        "expected `Authorization: Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Invalid(
            "expected `Authorization: Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

/// A handler argument that requires a valid token; yields the caller.
#[derive(Debug, Clone)]
pub(crate) struct AuthUser(pub Caller);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = bearer(parts).and_then(|token| state.verifier.verify(token));
        caller.map(Self).map_err(|e| refused(state, e))
    }
}

/// A refused token: its cause at `debug` (the client gets it in the body),
/// and in demo mode a bad signature says why it is likely.
fn refused(state: &AppState, e: AuthError) -> ApiError {
    tracing::debug!(cause = %e, "token refused");
    match e {
        AuthError::Invalid("bad signature") if state.demo.is_some() => {
            ApiError::Unauthorized(AuthError::Invalid(
                "bad signature; in demo mode the key changes at every start, \
                 so use a token printed (or minted at /demo/token) by this run",
            ))
        }
        e => ApiError::Unauthorized(e),
    }
}

/// A handler argument that requires a valid token with the admin role.
#[derive(Debug, Clone)]
pub(crate) struct AdminUser(pub Caller);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AuthUser(caller) = AuthUser::from_request_parts(parts, state).await?;
        if caller.admin {
            Ok(Self(caller))
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// A caller within their per-user rate limit: heartbeats, and (issue 14)
/// reads of who is where.
#[derive(Debug, Clone)]
pub(crate) struct LimitedUser(pub Caller);

impl FromRequestParts<AppState> for LimitedUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let AuthUser(caller) = AuthUser::from_request_parts(parts, state).await?;
        state.limiter.check(&caller.user)?;
        Ok(Self(caller))
    }
}

/// The caller of a stream: `Authorization: Bearer`, or `?access_token=`
/// (an `EventSource` cannot set headers).
#[derive(Debug, Clone)]
pub(crate) struct StreamUser(pub Caller);

impl FromRequestParts<AppState> for StreamUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if parts.headers.contains_key(AUTHORIZATION) {
            let AuthUser(caller) = AuthUser::from_request_parts(parts, state).await?;
            return Ok(Self(caller));
        }
        let token = parts
            .uri
            .query()
            .into_iter()
            .flat_map(url_pairs)
            .find_map(|(k, v)| (k == "access_token").then_some(v))
            .ok_or(AuthError::Missing)
            .map_err(|e| refused(state, e))?;
        let caller = state
            .verifier
            .verify(&token)
            .map_err(|e| refused(state, e))?;
        Ok(Self(caller))
    }
}

/// `application/x-www-form-urlencoded` pairs of a query string.
fn url_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
}

/// `Query<T>` whose rejection is an [`ApiError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct ApiQuery<T>(pub T);

/// `Path<T>` whose rejection is an [`ApiError`].
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct ApiPath<T>(pub T);

/// The bytes of a JSON body of at most `limit` bytes (the route's
/// `DefaultBodyLimit`): 415 when it is not sent as JSON, 413 when larger.
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`], [`ApiError::PayloadTooLarge`], or
/// [`ApiError::InvalidBody`] when it cannot be read.
pub(crate) async fn json_body(
    req: Request,
    state: &AppState,
    limit: usize,
) -> Result<Bytes, ApiError> {
    if !is_json(req.headers().get(CONTENT_TYPE)) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::InvalidBody(format!("cannot read body: {}", e.body_text()))
        }
    })
}

fn is_json(content_type: Option<&axum::http::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case("application/json")
}
