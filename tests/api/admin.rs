//! GET /api/admin/sessions over HTTP.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn sessions_list_every_field_newest_first() {
    let app = spawn_app().await;
    app.beat_ok(
        "1",
        json!({"module": "pms", "clientId": "tab-a", "page": "/requests", "resource": "request:1"}),
    )
    .await;
    app.clock.advance(Duration::from_secs(5));
    app.beat_ok("2", json!({"module": "ih"})).await;
    let (status, body) = app
        .get("/api/admin/sessions", &app.admin_token("root"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["sessions"],
        json!([
            {"userId": "2", "clientId": null, "module": "ih", "page": null, "resource": null,
             "startedAt": "2026-01-14T09:30:05.000Z", "lastSeen": "2026-01-14T09:30:05.000Z"},
            {"userId": "1", "clientId": "tab-a", "module": "pms", "page": "/requests", "resource": "request:1",
             "startedAt": "2026-01-14T09:30:00.000Z", "lastSeen": "2026-01-14T09:30:00.000Z"},
        ])
    );
    assert_eq!(body["nextCursor"], Value::Null);
    assert_eq!(body["timestamp"], json!("2026-01-14T09:30:05.000Z"));
}

#[tokio::test]
async fn sessions_page_with_next_cursor_until_null() {
    let app = spawn_app().await;
    for i in 0..5 {
        app.beat_ok(&format!("u{i}"), json!({"module": "pms"}))
            .await;
        app.clock.advance(Duration::from_secs(1));
    }
    let admin = app.admin_token("root");
    let (_, first) = app.get("/api/admin/sessions?limit=2", &admin).await;
    let users = |page: &Value| -> Vec<String> {
        page["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["userId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(users(&first), ["u4", "u3"]);
    let cursor = first["nextCursor"].as_str().unwrap();
    let (_, second) = app
        .get(
            &format!("/api/admin/sessions?limit=2&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(users(&second), ["u2", "u1"]);
    let cursor = second["nextCursor"].as_str().unwrap();
    let (_, last) = app
        .get(
            &format!("/api/admin/sessions?limit=2&cursor={cursor}"),
            &admin,
        )
        .await;
    assert_eq!(users(&last), ["u0"]);
    assert_eq!(last["nextCursor"], Value::Null);
}

#[tokio::test]
async fn expired_sessions_are_not_listed_even_before_the_sweep() {
    let app = spawn_app().await;
    app.beat_ok("old", json!({"module": "pms"})).await;
    app.clock.advance(Duration::from_secs(200));
    app.beat_ok("new", json!({"module": "pms"})).await;
    app.clock.advance(Duration::from_secs(100));
    let (_, body) = app
        .get("/api/admin/sessions", &app.admin_token("root"))
        .await;
    assert_eq!(body["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(body["sessions"][0]["userId"], json!("new"));
}

#[tokio::test]
async fn bad_paging_is_400_invalid_query() {
    let app = spawn_app().await;
    let admin = app.admin_token("root");
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=ten",
        "cursor=nope",
        "cursor=",
    ] {
        let response = app
            .client
            .get(app.url(&format!("/api/admin/sessions?{query}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    let (status, _) = app.get("/api/admin/sessions?limit=1000", &admin).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn history_reports_samples_peak_average_and_distribution() {
    let app = spawn_app().await;
    app.beat_ok("1", json!({"module": "pms"})).await;
    app.beat_ok("2", json!({"module": "pms"})).await;
    app.beat_ok("3", json!({"module": "ih"})).await;
    // The sampler's first tick is a minute away; take this minute's now.
    presence::store::SessionStore::record_sample(&app.state.store)
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(90));
    assert_eq!(app.leave("1", "").await, StatusCode::NO_CONTENT);
    let admin = app.admin_token("root");
    let (status, body) = app.get("/api/admin/history?window=1h", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["window"], json!("1h"));
    let pms = &body["modules"]["procurement"];
    assert_eq!(
        pms["samples"],
        json!([{"at": "2026-01-14T09:30:00.000Z", "activeNow": 2}])
    );
    assert_eq!(
        pms["peakConcurrent"],
        json!({"value": 2, "at": "2026-01-14T09:30:00.000Z"})
    );
    assert_eq!(pms["averageSessionSeconds"], json!(90.0));
    assert_eq!(pms["sessionsStarted"], json!(2));
    let ih = &body["modules"]["innovation"];
    assert_eq!(
        ih["averageSessionSeconds"],
        Value::Null,
        "nobody left innovation"
    );
    assert_eq!(
        body["distribution"],
        json!({"procurement": 0.5, "innovation": 0.5})
    );
    assert_eq!(body["timestamp"], json!("2026-01-14T09:31:30.000Z"));

    app.clock.advance(Duration::from_secs(600));
    let (_, later) = app.get("/api/admin/history?window=5m", &admin).await;
    assert_eq!(
        later["modules"]["procurement"]["samples"],
        json!([]),
        "the sample is outside 5 minutes"
    );
    assert_eq!(
        later["distribution"],
        json!({"procurement": 0.0, "innovation": 0.0}),
        "all 0 when nobody is active"
    );

    for bad in ["0m", "59s", "25h", "soon", ""] {
        let response = app
            .client
            .get(app.url(&format!("/api/admin/history?window={bad}")))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    let (status, _) = app.get("/api/admin/history", &app.token("user")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
