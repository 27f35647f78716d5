//! The benchmark's ceiling: a bare axum endpoint on the same runtime and
//! HTTP stack as the service, doing only what any heartbeat endpoint must.
//!
//! `POST /parse` parses the JSON body; `POST /verify` also verifies the
//! HS256 token with the `jsonwebtoken` crate, as the service does;
//! `GET /modules` verifies the token and answers a fixed counts document
//! the size of the service's, the ceiling of `GET /api/stats/modules`.
//!
//! cargo run --release --example bare -- 127.0.0.1:8090 <JWT_SECRET>

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// The service's allocator, so the ceiling differs from it only in work.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Keys {
    key: DecodingKey,
    validation: Validation,
}

async fn parse(body: Bytes) -> StatusCode {
    match serde_json::from_slice::<Map<String, Value>>(&body) {
        Ok(_) => StatusCode::OK,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

async fn verify(State(keys): State<Arc<Keys>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if jsonwebtoken::decode::<Map<String, Value>>(token, &keys.key, &keys.validation).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    parse(body).await
}

const MODULES: &str = r#"{"procurement":{"totalUsers":10000,"activeNow":5000,"today":10000},"innovation":{"totalUsers":10000,"activeNow":5000,"today":10000},"timestamp":"2026-01-14T09:30:00.123Z"}"#;

async fn modules(State(keys): State<Arc<Keys>>, headers: HeaderMap) -> (StatusCode, &'static str) {
    match verify(State(keys), headers, Bytes::from_static(b"{}")).await {
        StatusCode::OK => (StatusCode::OK, MODULES),
        status => (status, ""),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let secret = args.next().unwrap_or_default();
    let keys = Arc::new(Keys {
        key: DecodingKey::from_secret(secret.as_bytes()).map_err(std::io::Error::other)?,
        validation: Validation::new(Algorithm::HS256),
    });
    let app = Router::new()
        .route("/parse", post(parse))
        .route("/verify", post(verify))
        .route("/modules", get(modules))
        .with_state(keys);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
