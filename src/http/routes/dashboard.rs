//! `GET /admin`: the admin dashboard, from files embedded in the binary.
//!
//! The page, its script and styles live in `dashboard/` as plain files (no
//! build step) and are compiled in, so the dashboard works with no internet
//! and no CDN. The page itself is public; every API call it makes needs an
//! admin token.

use axum::Router;
use axum::response::Redirect;
use axum::routing::get;

use crate::http::pages::{asset, with_page_headers};
use crate::http::state::AppState;

const PAGE: &str = include_str!("../../../dashboard/index.html");
const SCRIPT: &str = include_str!("../../../dashboard/dashboard.js");
const STYLES: &str = include_str!("../../../dashboard/dashboard.css");
const CLIENT: &str = include_str!("../../../clients/js/presence-client.js");

/// What the dashboard may load and do: its own script, styles and API
/// calls, nothing else. Style attributes are allowed because the charts
/// colour their swatches and bars with them (set from code, never from
/// data); `<style>` elements and every script must come from the origin.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     style-src-attr 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes.
pub(super) fn router() -> Router<AppState> {
    let pages = Router::new()
        .route(
            "/admin",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route("/admin/", get(|| async { Redirect::permanent("/admin") }))
        .route(
            "/admin/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/admin/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", STYLES) }),
        )
        .route(
            "/admin/presence-client.js",
            get(|| async { asset("text/javascript; charset=utf-8", CLIENT) }),
        );
    with_page_headers(pages, POLICY)
}
