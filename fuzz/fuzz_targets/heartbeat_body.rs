//! Any bytes as the body of `POST /api/stats/heartbeat`, with a valid token
//! and `Content-Type: application/json`, through the whole router.
//!
//! Beyond "no panic, no 5xx, contract error bodies", the reply must be the
//! one the contract gives for that body, worked out here independently:
//! 413 over 4 KiB; 400 `invalid_body` unless the body is a JSON object;
//! 400 `invalid_module` unless `module` is a configured code; 400
//! `invalid_body` for a bad `clientId`, `page` or `resource`; else 200.

#![no_main]

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::Request;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use libfuzzer_sys::fuzz_target;
use presence_fuzz::{App, is_client_id, is_text};
use serde_json::Value;

static APP: LazyLock<App> = LazyLock::new(|| App::new(&[]));

fuzz_target!(|data: &[u8]| {
    let app = &*APP;
    let request = Request::post("/api/stats/heartbeat")
        .header(AUTHORIZATION, &app.user_bearer)
        .header(CONTENT_TYPE, "application/json")
        .body(Body::from(data.to_vec()))
        .expect("request");
    let reply = app.send(request);
    match expected(data) {
        Ok(()) => {
            assert_eq!(
                reply.status,
                200,
                "{:?}",
                String::from_utf8_lossy(&reply.body)
            );
            let body = reply.json();
            assert_eq!(body["success"], Value::Bool(true), "{body}");
            assert!(
                body["activeUsers"].as_u64().is_some_and(|n| n >= 1),
                "{body}"
            );
            let next = body["nextHeartbeatMs"].as_u64().expect("nextHeartbeatMs");
            assert!((40_500..=45_000).contains(&next), "{body}");
            assert_eq!(body["timestamp"], "2026-01-14T09:30:00.000Z", "{body}");
        }
        Err(code) => {
            assert_ne!(reply.status, 200, "accepted a body the contract refuses");
            assert_eq!(
                reply.code(),
                code,
                "{:?}",
                String::from_utf8_lossy(&reply.body)
            );
        }
    }
});

/// The contract's answer to `data`: `Ok` or the error code.
fn expected(data: &[u8]) -> Result<(), &'static str> {
    if data.len() > presence::http::edge::MAX_BODY_BYTES {
        return Err("payload_too_large");
    }
    let Ok(Value::Object(mut body)) = serde_json::from_slice::<Value>(data) else {
        return Err("invalid_body");
    };
    match body.remove("module") {
        Some(Value::String(code)) if code == "pms" || code == "ih" => {}
        _ => return Err("invalid_module"),
    }
    let rules: [(&str, fn(&str) -> bool); 3] = [
        ("clientId", is_client_id),
        ("page", |s| is_text(s, 256)),
        ("resource", |s| is_text(s, 128)),
    ];
    for (field, valid) in rules {
        match body.remove(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if valid(&s) => {}
            Some(_) => return Err("invalid_body"),
        }
    }
    Ok(())
}
