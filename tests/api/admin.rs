//! The admin API over HTTP: sessions, history, metrics.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{assert_error, spawn_app, spawn_app_with};

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
            {"userId": "2", "clientId": null, "module": "ih", "page": null, "resource": null, "state": "active",
             "startedAt": "2026-01-14T09:30:05.000Z", "lastSeen": "2026-01-14T09:30:05.000Z"},
            {"userId": "1", "clientId": "tab-a", "module": "pms", "page": "/requests", "resource": "request:1", "state": "active",
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
            .request(
                reqwest::Method::GET,
                &format!("/api/admin/sessions?{query}"),
                Some(&admin),
            )
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    let (status, _) = app.get("/api/admin/sessions?limit=1000", &admin).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_cursor_the_endpoint_did_not_issue_is_400() {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let app = spawn_app().await;
    let admin = app.admin_token("root");
    for n in 0..3 {
        app.beat_ok(&n.to_string(), json!({"module": "pms"})).await;
    }
    let (_, first) = app.get("/api/admin/sessions?limit=1", &admin).await;
    let issued = first["nextCursor"].as_str().unwrap().to_owned();
    let (status, _) = app
        .get(
            &format!("/api/admin/sessions?limit=1&cursor={issued}"),
            &admin,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "an issued cursor pages on");
    let now = first["sessions"][0]["lastSeen"]
        .as_str()
        .unwrap()
        .to_owned();
    let now_ms = chrono::DateTime::parse_from_rfc3339(&now)
        .unwrap()
        .timestamp_millis();
    for forged in [
        // Another spelling of a plausible position.
        format!("[{now_ms}, \"1\", null]"),
        format!("[{now_ms}.0,\"1\",null]"),
        format!("[{now_ms},\"1\",null,1]"),
        format!("[{now_ms},\"1\"]"),
        format!("[{now_ms},\"\\u0031\",null]"),
        // Positions no session can have.
        "[-1,\"1\",null]".to_owned(),
        format!("[{},\"1\",null]", i64::MAX),
        format!("[{},\"1\",null]", now_ms + 86_400_000),
    ] {
        let cursor = URL_SAFE_NO_PAD.encode(&forged);
        let response = app
            .request(
                reqwest::Method::GET,
                &format!("/api/admin/sessions?cursor={cursor}"),
                Some(&admin),
            )
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
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
            .request(
                reqwest::Method::GET,
                &format!("/api/admin/history?window={bad}"),
                Some(&admin),
            )
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    // A long bad value is not echoed back whole.
    let response = app
        .request(
            reqwest::Method::GET,
            &format!("/api/admin/history?window={}", "9".repeat(4000)),
            Some(&admin),
        )
        .await;
    let body = assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    assert!(body["error"].as_str().unwrap().len() < 200, "{body}");
    let (status, _) = app.get("/api/admin/history", &app.token("user")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// The scraped samples, by metric name with labels, e.g.
/// `presence_active_users{module="pms"}`.
pub(super) async fn scrape(
    app: &super::helpers::TestApp,
    token: Option<&str>,
) -> (StatusCode, std::collections::HashMap<String, f64>) {
    let mut request = app.client.get(app.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    if status != StatusCode::OK {
        return (status, Default::default());
    }
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = response.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let mut samples = std::collections::HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_) => continue,
        };
        samples.insert(key, value);
    }
    (status, samples)
}

#[tokio::test]
async fn metrics_after_heartbeats_leaves_and_expiries() {
    metrics_scenario(&spawn_app().await).await;
}

#[tokio::test]
async fn metrics_after_heartbeats_leaves_and_expiries_on_redis() {
    let Some(server) = super::redis_server::RedisServer::start() else {
        return;
    };
    let prefix = super::redis_server::unique_prefix("metrics");
    let app = spawn_app_with(&[
        "--jwt-secret",
        super::helpers::SECRET,
        "--store",
        "redis",
        "--redis-url",
        &server.url(),
        "--redis-key-prefix",
        &prefix,
    ])
    .await;
    metrics_scenario(&app).await;
}

async fn metrics_scenario(app: &super::helpers::TestApp) {
    app.beat_ok("1", json!({"module": "pms"})).await;
    app.beat_ok("2", json!({"module": "pms", "clientId": "a"}))
        .await;
    app.beat_ok("2", json!({"module": "pms", "clientId": "b"}))
        .await;
    app.beat_ok("3", json!({"module": "ih"})).await;
    assert_eq!(
        app.beat(&app.token("4"), json!({"module": "hr"}))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.beat("not-a-token", json!({"module": "pms"}))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    app.clock.advance(Duration::from_secs(30));
    assert_eq!(app.leave("3", "").await, StatusCode::NO_CONTENT); // 30 s in ih, left
    app.clock.advance(Duration::from_secs(300)); // everyone else expires
    presence::store::SessionStore::sweep(&app.state.store)
        .await
        .unwrap();
    app.beat_ok("5", json!({"module": "ih"})).await;

    let (status, m) = scrape(app, None).await;
    assert_eq!(status, StatusCode::OK);
    let get = |k: &str| {
        m.get(k)
            .copied()
            .unwrap_or_else(|| panic!("{k} missing from {m:?}"))
    };
    assert_eq!(
        get(r#"presence_heartbeats_total{module="pms",outcome="ok"}"#),
        3.0
    );
    assert_eq!(
        get(r#"presence_heartbeats_total{module="ih",outcome="ok"}"#),
        2.0
    );
    assert_eq!(
        get(r#"presence_heartbeats_total{module="",outcome="invalid"}"#),
        1.0
    );
    assert_eq!(
        get(r#"presence_heartbeats_total{module="",outcome="unauthorized"}"#),
        1.0
    );
    assert_eq!(get(r#"presence_active_users{module="pms"}"#), 0.0);
    assert_eq!(get(r#"presence_active_users{module="ih"}"#), 1.0);
    assert_eq!(get(r#"presence_active_sessions{module="ih"}"#), 1.0);
    assert_eq!(get(r#"presence_module_share{module="ih"}"#), 1.0);
    assert_eq!(get("presence_active_users_anywhere"), 1.0);
    assert_eq!(get("presence_peak_concurrent_users"), 3.0);
    assert_eq!(get("presence_peak_concurrent_users_today"), 3.0);
    assert_eq!(
        get(r#"presence_session_duration_seconds_count{ended="leave",module="ih"}"#),
        1.0
    );
    assert_eq!(
        get(r#"presence_session_duration_seconds_sum{ended="leave",module="ih"}"#),
        30.0
    );
    assert_eq!(
        get(r#"presence_session_duration_seconds_count{ended="expired",module="pms"}"#),
        3.0
    );
    assert_eq!(get("presence_open_streams"), 0.0);
    assert!(
        get(
            r#"presence_http_request_duration_seconds_count{method="POST",route="/api/stats/heartbeat",status="200"}"#
        ) >= 5.0
    );
}

#[tokio::test]
async fn metrics_can_be_kept_for_admins() {
    let app = spawn_app_with(&[
        "--jwt-secret",
        super::helpers::SECRET,
        "--metrics-public",
        "false",
    ])
    .await;
    assert_eq!(scrape(&app, None).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        scrape(&app, Some(&app.token("1"))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        scrape(&app, Some(&app.admin_token("1"))).await.0,
        StatusCode::OK
    );
}
