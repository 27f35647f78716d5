//! The OpenAPI document: its header and security scheme here, each path
//! from its route's annotations (merged in `routes::api`), and the
//! configured module codes filled in when it is rendered.

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::domain::Modules;

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
pub(crate) struct ApiDoc;

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

/// `GET /openapi.json`, serving `doc` rendered once: the document cannot
/// change while the process runs.
pub(crate) fn route<S>(doc: &OpenApiDoc, modules: &Modules) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let json = render_with_modules(doc, modules);
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(CONTENT_TYPE, "application/json")], json) }
        }),
    )
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
