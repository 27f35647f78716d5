//! The HTTP API: one module per resource, each with its `router()`, merged
//! here with the OpenAPI document generated from their annotations.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::domain::Modules;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::metrics::Metrics;
use crate::store::StoreError;

mod admin;
pub(crate) mod dashboard;
pub mod demo;
mod health;
pub mod heartbeat;
mod history;
pub(crate) mod metrics;
pub mod modules;
pub(crate) mod presence;
pub(crate) mod presence_stream;
pub mod stream;

/// How long any store call may take before the request answers 503.
pub(crate) const STORE_DEADLINE: Duration = Duration::from_secs(1);

#[derive(OpenApi)]
#[openapi(
    info(
        title = "presence",
        description = "Who is using which part of the product, live. Every /api endpoint needs `Authorization: Bearer <JWT>`."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "stats", description = "Heartbeats and module counts"),
        (name = "presence", description = "Who is viewing a resource, and where users are"),
        (name = "admin", description = "Needs the admin role"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every route of the API, and the OpenAPI document describing them, with
/// the configured module codes as the heartbeat's `module` enum.
pub fn api(modules: &Modules) -> (Router<AppState>, OpenApiDoc) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(heartbeat::router())
        .merge(modules::router())
        .merge(presence::router())
        .merge(presence_stream::router())
        .merge(stream::router())
        .merge(admin::router())
        .merge(history::router())
        .merge(metrics::router())
        .merge(health::router())
        .split_for_parts();
    // Rendered once: the document cannot change while the process runs.
    let json = render_with_modules(&doc, modules);
    let router = router.route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(CONTENT_TYPE, "application/json")], json) }
        }),
    );
    (router, doc)
}

/// The document as JSON, its heartbeat `module` listing the codes that
/// this instance accepts, so generated clients and schema-driven tests
/// know them.
fn render_with_modules(doc: &OpenApiDoc, modules: &Modules) -> String {
    let mut json = match serde_json::to_value(doc) {
        Ok(json) => json,
        Err(e) => {
            tracing::error!(error = %e, "cannot render the OpenAPI document");
            return String::from("{}");
        }
    };
    if let Some(module) = json.pointer_mut("/components/schemas/HeartbeatRequest/properties/module")
    {
        let codes = modules
            .ids()
            .map(|id| serde_json::Value::from(modules.get(id).code.as_str()))
            .collect();
        module["enum"] = serde_json::Value::Array(codes);
    }
    json.to_string()
}

/// Echoes at most 64 characters of client input in an error message.
pub(crate) fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

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
