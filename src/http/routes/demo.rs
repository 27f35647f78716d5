//! The demo page, served in demo mode only (no key configured).
//!
//! `/demo/` shows the module picker of the onboarding page with live counts,
//! through the browser client (`/demo/presence-client.js`, the file in
//! `clients/js/`, embedded at build time, as are the page's own script and
//! styles, `/demo/demo.js` and `/demo/demo.css`). `/demo/token?user=NAME` mints a
//! token for any name so that two windows can be two users: that is why
//! these routes exist only when tokens are signed with a random demo key.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::response::Redirect;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::domain::UserId;
use crate::http::error::ApiError;
use crate::http::extract::ApiQuery;
use crate::http::pages::{asset, with_page_headers};
use crate::http::state::AppState;

const PAGE: &str = include_str!("../../../clients/js/demo/index.html");
const SCRIPT: &str = include_str!("../../../clients/js/demo/demo.js");
const STYLES: &str = include_str!("../../../clients/js/demo/demo.css");
const CLIENT: &str = include_str!("../../../clients/js/presence-client.js");

/// What the demo page may load and do: its own script, styles, token and
/// API calls, nothing else (it sets no style attributes).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The demo routes.
pub(super) fn router() -> Router<AppState> {
    let pages = Router::new()
        .route("/demo", get(|| async { Redirect::permanent("/demo/") }))
        .route(
            "/demo/",
            get(|| async { asset("text/html; charset=utf-8", PAGE) }),
        )
        .route(
            "/demo/demo.js",
            get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/demo/demo.css",
            get(|| async { asset("text/css; charset=utf-8", STYLES) }),
        )
        .route(
            "/demo/presence-client.js",
            get(|| async { asset("text/javascript; charset=utf-8", CLIENT) }),
        )
        .route("/demo/token", get(token));
    with_page_headers(pages, POLICY)
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    user: String,
}

#[derive(Debug, Serialize)]
struct TokenBody {
    token: String,
}

async fn token(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<TokenQuery>,
) -> Result<Json<TokenBody>, ApiError> {
    let demo = state
        .demo
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("/demo/token".into()))?;
    let user = UserId::parse(&query.user)
        .ok_or_else(|| ApiError::InvalidQuery("user must be 1 to 128 bytes".into()))?;
    let token = demo
        .mint(user.as_str(), state.clock.now_ms())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(TokenBody { token }))
}
