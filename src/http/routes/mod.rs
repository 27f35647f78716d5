//! The HTTP API: one leaf module per endpoint group, each with its
//! `router()`, merged here with the OpenAPI document generated from their
//! annotations. A route module imports nothing from a sibling: what several
//! share lives in `http/` beside this folder (`tests/api/layers.rs`).

use axum::Router;
use utoipa::OpenApi as _;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa_axum::router::OpenApiRouter;

use crate::domain::Modules;
use crate::http::openapi::{self, ApiDoc};
use crate::http::state::AppState;

mod admin;
mod dashboard;
mod demo;
mod health;
mod heartbeat;
mod history;
mod metrics;
mod modules;
mod presence;
mod presence_stream;
mod stream;
mod webhooks;

/// Every route of the API, with `GET /openapi.json` listing the configured
/// module codes as the heartbeat's `module` enum, and the document itself.
pub fn api(modules: &Modules) -> (Router<AppState>, OpenApiDoc) {
    let (router, doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(heartbeat::router())
        .merge(modules::router())
        .merge(presence::router())
        .merge(presence_stream::router())
        .merge(stream::router())
        .merge(admin::router())
        .merge(webhooks::router())
        .merge(history::router())
        .merge(metrics::router())
        .merge(health::router())
        .split_for_parts();
    let router = router.merge(openapi::route(&doc, modules));
    (router, doc)
}

/// The pages for browsers: the admin dashboard, and in demo mode the demo
/// page and its token minting.
pub fn pages(demo: bool) -> Router<AppState> {
    let pages = dashboard::router();
    if demo {
        pages.merge(demo::router())
    } else {
        pages
    }
}
