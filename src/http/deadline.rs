//! Every store call a request makes goes through [`within_deadline`]: a
//! slow store answers 503 instead of hanging the request, and the call is
//! timed and counted by operation.

use std::future::Future;
use std::time::Duration;

use crate::http::error::ApiError;
use crate::metrics::Metrics;
use crate::store::StoreError;

/// How long any store call may take before the request answers 503.
pub(crate) const STORE_DEADLINE: Duration = Duration::from_secs(1);

/// Runs a store call, turning a slow store into 503 instead of a hung
/// request.
///
/// # Errors
/// The store's own error, or [`ApiError::StoreUnavailable`] past
/// [`STORE_DEADLINE`].
pub(crate) async fn within_deadline<T>(
    metrics: &Metrics,
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, ApiError> {
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(STORE_DEADLINE, call)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "no answer within {STORE_DEADLINE:?}"
            )))
        });
    metrics.store_call(op, started.elapsed(), result.as_ref().err());
    result.map_err(ApiError::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_store_that_never_answers_is_503_after_the_deadline() {
        let started = tokio::time::Instant::now();
        let err = within_deadline(
            &Metrics::new(),
            "test",
            std::future::pending::<Result<(), StoreError>>(),
        )
        .await
        .expect_err("a hung store must not hang the request");
        assert_eq!(err.code(), "store_unavailable");
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(started.elapsed(), STORE_DEADLINE);
    }
}
