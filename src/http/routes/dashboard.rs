//! `GET /admin`: the admin dashboard, from files embedded in the binary.
//!
//! The page, its script and styles live in `dashboard/` as plain files (no
//! build step) and are compiled in, so the dashboard works with no internet
//! and no CDN. The page itself is public; every API call it makes needs an
//! admin token.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

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

/// The headers every response of a page for browsers carries: the
/// page's `policy`, no framing (clickjacking), no type sniffing, and no
/// referrer (the page's URL is nobody else's business).
pub(crate) fn with_page_headers(policy: &'static str, mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
    headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

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
        .layer(axum::middleware::map_response(|r: Response| async move {
            with_page_headers(POLICY, r)
        }))
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}
