//! `GET /admin`: the admin dashboard, from files embedded in the binary.
//!
//! The page, its script and styles live in `dashboard/` as plain files (no
//! build step) and are compiled in, so the dashboard works with no internet
//! and no CDN. The page itself is public; every API call it makes needs an
//! admin token.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

use crate::http::state::AppState;

const PAGE: &str = include_str!("../../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../../dashboard/dashboard.js");
const STYLES: &str = include_str!("../../../dashboard/dashboard.css");
const CLIENT: &str = include_str!("../../../clients/js/presence-client.js");

/// The dashboard's routes.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/admin", get(|| asset("text/html; charset=utf-8", PAGE)))
        .route("/admin/", get(|| async { Redirect::permanent("/admin") }))
        .route(
            "/admin/dashboard.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/admin/dashboard.css",
            get(|| asset("text/css; charset=utf-8", STYLES)),
        )
        .route(
            "/admin/presence-client.js",
            get(|| asset("text/javascript; charset=utf-8", CLIENT)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}
