//! The one error type of the HTTP API.
//!
//! Every failure a client can see is an [`ApiError`]; its status and `code`
//! are fixed per variant, and it renders as the contract's body
//! `{"success": false, "error": "...", "code": "..."}`. Details of 5xx
//! errors are logged, never sent.

use std::time::Duration;

use axum::Json;
use axum::extract::OriginalUri;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::limiter::RateLimited;
use crate::store::StoreError;

/// Everything that can go wrong in a request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400 `invalid_module`: missing, non-string or unknown module.
    #[error("{0}")]
    InvalidModule(String),
    /// 400 `invalid_body`: empty, malformed, not an object, bad field.
    #[error("{0}")]
    InvalidBody(String),
    /// 400 `invalid_query`: a bad query string or path parameter.
    #[error("{0}")]
    InvalidQuery(String),
    /// 401 `unauthorized`, with `WWW-Authenticate: Bearer`.
    #[error(transparent)]
    Unauthorized(#[from] AuthError),
    /// 403 `forbidden`: a valid token without the admin role.
    #[error("this endpoint needs the admin role")]
    Forbidden,
    /// 403 `forbidden`: `PRESENCE_VISIBILITY` does not let this caller
    /// read it; the message says why.
    #[error("{0}")]
    NotVisible(&'static str),
    /// 404 `not_found`.
    #[error("no such endpoint: {0}")]
    NotFound(String),
    /// 405 `method_not_allowed`.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// 408 `request_timeout`: the request was not received, or not
    /// answered, within `REQUEST_TIMEOUT`.
    #[error("the request took longer than {} ms", .0.as_millis())]
    RequestTimeout(Duration),
    /// 413 `payload_too_large`.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415 `unsupported_media_type`.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// 429 `rate_limited`, with `Retry-After`.
    #[error("too many requests for this user; retry in {} s", retry_after_secs(*.0))]
    RateLimited(Duration),
    /// 429 `too_many_streams`: an SSE stream limit is reached.
    #[error("{0}; close another stream first")]
    TooManyStreams(crate::http::sse::StreamRefused),
    /// 503 `overloaded`, with `Retry-After`: `MAX_CONCURRENT_REQUESTS` are
    /// already in flight.
    #[error("the service is at capacity; retry in a moment")]
    Overloaded,
    /// 503 `store_unavailable`.
    #[error("session store unavailable, retry shortly")]
    StoreUnavailable(#[source] StoreError),
    /// 500 `internal`; the detail is logged, not sent.
    #[error("internal error")]
    Internal(String),
}

/// The contract's error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Always false.
    pub success: bool,
    /// For humans.
    #[schema(example = "module must be one of: pms, ih")]
    pub error: String,
    /// For programs, snake_case.
    #[schema(example = "invalid_module")]
    pub code: &'static str,
}

impl ApiError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidModule(_) | Self::InvalidBody(_) | Self::InvalidQuery(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::NotVisible(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited(_) | Self::TooManyStreams(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded | Self::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The contract's `code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidModule(_) => "invalid_module",
            Self::InvalidBody(_) => "invalid_body",
            Self::InvalidQuery(_) => "invalid_query",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden | Self::NotVisible(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout(_) => "request_timeout",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::RateLimited(_) => "rate_limited",
            Self::TooManyStreams(_) => "too_many_streams",
            Self::Overloaded => "overloaded",
            Self::StoreUnavailable(_) => "store_unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

/// What went wrong behind a 500, for the log line of its request.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

/// Whole seconds to wait, rounded up and at least one.
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0).max(u64::from(wait.is_zero()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            success: false,
            error: self.to_string(),
            code: self.code(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized(_) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::RateLimited(wait) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(*wait)));
            }
            Self::Overloaded | Self::StoreUnavailable(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        // Logged with the request's id by the request log, never sent.
        if let Self::Internal(detail) = self {
            response.extensions_mut().insert(InternalDetail(detail));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::StoreUnavailable(e),
            StoreError::Backend(detail) => Self::Internal(detail),
        }
    }
}

impl From<RateLimited> for ApiError {
    fn from(RateLimited(wait): RateLimited) -> Self {
        Self::RateLimited(wait)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::InvalidQuery(e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::InvalidQuery(e.body_text())
    }
}

/// The router's fallback: a JSON 404 for any unknown path.
pub async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

/// A JSON 405 for a known path with another method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Client input as an error message echoes it: at most 64 characters.
pub(crate) fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_hide_their_detail() {
        use axum::body::to_bytes;
        let response = ApiError::Internal("db password is hunter2".into()).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = to_bytes(response.into_body(), 1024).await.expect("body");
        let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({"success": false, "error": "internal error", "code": "internal"})
        );
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1999)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
