//! What the pages for browsers (the dashboard, the demo) share: their
//! embedded assets answered uncached, and the security headers of every
//! response under them.

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::response::{IntoResponse, Response};

/// An embedded file: `body` as `content_type`, revalidated on every load so
/// a new binary's page is never mixed with an old script.
pub(crate) fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}

/// `router` with the headers every response of a page for browsers
/// carries: the page's `policy`, no framing (clickjacking), no type
/// sniffing, and no referrer (the page's URL is nobody else's business).
pub(crate) fn with_page_headers<S>(router: Router<S>, policy: &'static str) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(axum::middleware::map_response(
        move |mut response: Response| async move {
            let headers = response.headers_mut();
            headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(policy));
            headers.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
            response
        },
    ))
}
