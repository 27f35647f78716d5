//! POST and DELETE /api/stats/heartbeat, and GET /api/stats/modules, over HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::helpers::{SECRET, assert_error, spawn_app, spawn_app_with};

#[tokio::test]
async fn heartbeat_returns_active_users_timestamp_and_next_beat() {
    let app = spawn_app().await;
    let body = app.beat_ok("42", json!({"module": "pms"})).await;
    assert_eq!(body["success"], json!(true));
    assert_eq!(body["activeUsers"], json!(1));
    assert_eq!(body["timestamp"], json!("2026-01-14T09:30:00.000Z"));
    let next = body["nextHeartbeatMs"].as_u64().unwrap();
    assert!(
        (40_500..=45_000).contains(&next),
        "45 s less up to 10 %: {next}"
    );
}

#[tokio::test]
async fn a_short_ttl_alone_suggests_a_third_of_it_as_the_cadence() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--session-ttl", "30s"]).await;
    let body = app.beat_ok("42", json!({"module": "pms"})).await;
    let next = body["nextHeartbeatMs"].as_u64().unwrap();
    assert!(
        (9_000..=10_000).contains(&next),
        "10 s less up to 10 %: {next}"
    );
}

#[tokio::test]
async fn next_heartbeat_follows_the_configured_interval() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--heartbeat-interval", "10s"]).await;
    let body = app.beat_ok("42", json!({"module": "pms"})).await;
    let next = body["nextHeartbeatMs"].as_u64().unwrap();
    assert!((9_000..=10_000).contains(&next), "{next}");
}

#[tokio::test]
async fn the_original_scenario_over_http() {
    let app = spawn_app().await;
    app.beat_ok("A", json!({"module": "pms"})).await;
    app.beat_ok("B", json!({"module": "ih"})).await;
    assert_eq!(app.counts("procurement").await, [1, 1, 1]);
    assert_eq!(app.counts("innovation").await, [1, 1, 1]);
    let moved = app.beat_ok("A", json!({"module": "ih"})).await;
    assert_eq!(moved["activeUsers"], json!(2));
    assert_eq!(app.counts("procurement").await[0], 0);
    assert_eq!(app.counts("innovation").await[0], 2);

    app.clock.advance(Duration::from_secs(300));
    assert_eq!(
        app.counts("innovation").await,
        [0, 2, 2],
        "expired, still today"
    );
}

#[tokio::test]
async fn modules_lists_every_module_in_registry_order_then_timestamp() {
    let app = spawn_app_with(&[
        "--jwt-secret",
        SECRET,
        "--modules",
        "ih:innovation,pms:procurement,x:extra",
    ])
    .await;
    let response = app
        .request(
            reqwest::Method::GET,
            "/api/stats/modules",
            Some(&app.token("1")),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    let keys: Vec<usize> = [
        "\"innovation\"",
        "\"procurement\"",
        "\"extra\"",
        "\"timestamp\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "order: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body["extra"],
        json!({"totalUsers": 0, "activeNow": 0, "idleNow": 0, "today": 0})
    );
}

#[tokio::test]
async fn user_id_in_the_body_is_ignored() {
    let app = spawn_app().await;
    app.beat_ok(
        "A",
        json!({"module": "pms", "userId": "someone-else", "extra": [1, 2]}),
    )
    .await;
    let (_, sessions) = app
        .get("/api/admin/sessions", &app.admin_token("admin"))
        .await;
    assert_eq!(sessions["sessions"][0]["userId"], json!("A"));
}

#[tokio::test]
async fn invalid_module_is_400_invalid_module() {
    let app = spawn_app().await;
    let token = app.token("1");
    for body in [
        json!({}),
        json!({"module": 1}),
        json!({"module": null}),
        json!({"module": "hr"}),
        json!({"module": "procurement"}),
    ] {
        let b = assert_error(
            app.beat(&token, body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_module",
        )
        .await;
        assert!(
            b["error"].as_str().unwrap().contains("module"),
            "{body}: {b}"
        );
    }
}

#[tokio::test]
async fn invalid_body_is_400_invalid_body() {
    let app = spawn_app().await;
    let token = app.token("1");
    let long = |n: usize| "x".repeat(n);
    for body in [
        json!([1, 2]),
        json!(["pms", null, null, null]),
        json!(["pms", "tab1", "/p", "r:1"]),
        json!("pms"),
        json!(null),
        json!({"module": "pms", "clientId": "has space"}),
        json!({"module": "pms", "clientId": long(65)}),
        json!({"module": "pms", "clientId": 7}),
        json!({"module": "pms", "page": ""}),
        json!({"module": "pms", "page": long(257)}),
        json!({"module": "pms", "resource": long(129)}),
        json!({"module": "pms", "resource": {"id": 1}}),
        json!({"module": "pms", "page": "/a\u{0}b"}),
        json!({"module": "pms", "resource": "request:1\n"}),
    ] {
        assert_error(
            app.beat(&token, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_body",
        )
        .await;
    }
    for raw in ["", "   ", "{", "{\"module\": \"pms\",}", "nul"] {
        let response = app
            .client
            .post(app.url("/api/stats/heartbeat"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
}

#[tokio::test]
async fn limits_on_field_lengths_accept_the_maximum() {
    let app = spawn_app().await;
    let body = json!({"module": "pms", "clientId": "c".repeat(64), "page": "p".repeat(256), "resource": "r".repeat(128)});
    assert_eq!(
        app.beat(&app.token("1"), body).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app
            .client
            .post(app.url("/api/stats/heartbeat"))
            .bearer_auth(app.token("1"))
            .body(r#"{"module":"pms"}"#);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        assert_error(
            request.send().await.unwrap(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
    let ok = app
        .client
        .post(app.url("/api/stats/heartbeat"))
        .bearer_auth(app.token("1"))
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"module":"pms"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_body_over_4_kib_is_413() {
    let app = spawn_app().await;
    let body = json!({"module": "pms", "padding": "x".repeat(4096)});
    assert_error(
        app.beat(&app.token("1"), body).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    )
    .await;
    // Without a Content-Length, streamed: the limit still holds.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"{\"module\":\"pms\",\"p\":\"".to_vec()),
        Ok(vec![b'x'; 5000]),
        Ok(b"\"}".to_vec()),
    ];
    let response = app
        .client
        .post(app.url("/api/stats/heartbeat"))
        .bearer_auth(app.token("1"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn the_rate_limit_answers_429_with_retry_after() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--rate-limit", "3,1h"]).await;
    let token = app.token("flood");
    for _ in 0..3 {
        assert_eq!(
            app.beat(&token, json!({"module": "pms"})).await.status(),
            StatusCode::OK
        );
    }
    let response = app.beat(&token, json!({"module": "pms"})).await;
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&retry), "one token an hour: {retry}");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // Invalid heartbeats count too, and other users are not affected.
    assert_eq!(
        app.beat(&token, json!({})).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        app.beat(&app.token("calm"), json!({"module": "pms"}))
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn delete_ends_one_session_or_all() {
    let app = spawn_app().await;
    app.beat_ok("A", json!({"module": "pms", "clientId": "t1"}))
        .await;
    app.beat_ok("A", json!({"module": "ih", "clientId": "t2"}))
        .await;
    app.beat_ok("A", json!({"module": "ih"})).await;
    assert_eq!(app.leave("A", "?clientId=t1").await, StatusCode::NO_CONTENT);
    assert_eq!(
        app.counts("procurement").await[0],
        0,
        "ended at once, no TTL wait"
    );
    assert_eq!(app.counts("innovation").await[0], 1);
    assert_eq!(
        app.leave("A", "").await,
        StatusCode::NO_CONTENT,
        "the default session"
    );
    assert_eq!(app.counts("innovation").await[0], 1, "t2 is still there");
    assert_eq!(app.leave("A", "?all=true").await, StatusCode::NO_CONTENT);
    assert_eq!(app.counts("innovation").await[0], 0);
    assert_eq!(
        app.leave("A", "?all=true").await,
        StatusCode::NO_CONTENT,
        "204 when nothing existed"
    );
    // The last: a bad clientId is bad input even when `all` makes it unused.
    for query in [
        "clientId=bad%20id",
        "all=maybe",
        "all=true&clientId=bad%20id",
    ] {
        let response = app
            .request(
                reqwest::Method::DELETE,
                &format!("/api/stats/heartbeat?{query}"),
                Some(&app.token("A")),
            )
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
}

#[tokio::test]
async fn resource_viewers_over_http() {
    let app = spawn_app().await;
    app.beat_ok("7", json!({"module": "pms", "resource": "request:123"}))
        .await;
    app.clock.advance(Duration::from_secs(1));
    app.beat_ok(
        "8",
        json!({"module": "pms", "resource": "request:123", "clientId": "x"}),
    )
    .await;
    let (status, body) = app
        .get("/api/presence/resources/request:123", &app.token("9"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["resource"], json!("request:123"));
    assert_eq!(body["count"], json!(2));
    assert_eq!(
        body["viewers"][0],
        json!({"userId": "7", "state": "active", "since": "2026-01-14T09:30:00.000Z", "lastSeen": "2026-01-14T09:30:00.000Z"})
    );
    assert_eq!(body["viewers"][1]["userId"], json!("8"));
    assert_eq!(body["timestamp"], json!("2026-01-14T09:30:01.000Z"));
    let (_, empty) = app
        .get("/api/presence/resources/request%3A404", &app.token("9"))
        .await;
    assert_eq!(empty["viewers"], json!([]));
    let response = app
        .request(
            reqwest::Method::GET,
            "/api/presence/resources/a%00b",
            Some(&app.token("9")),
        )
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    let long = format!("/api/presence/resources/{}", "r".repeat(129));
    let response = app
        .request(reqwest::Method::GET, &long, Some(&app.token("9")))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
}
