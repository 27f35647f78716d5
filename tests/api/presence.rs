//! Presence you can see (contract section 6) over HTTP: activity state,
//! profiles from tokens, who may see whom, the viewers of a resource, user
//! status, and the snapshot that keeps them.

use std::sync::Arc;
use std::time::Duration;

use presence::clock::ManualClock;
use presence::store::SessionStore as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{
    SECRET, TestApp, assert_error, spawn_app, spawn_app_on, spawn_app_with, start_time,
};

/// POSTs user status for `ids` with `token`.
async fn users(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/api/presence/users"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn users_ok(app: &TestApp, ids: &Value) -> Value {
    let response = users(app, &app.token("asker"), &json!({ "userIds": ids })).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test]
async fn the_heartbeat_state_is_active_or_idle_and_idle_now_counts_it() {
    let app = spawn_app().await;
    app.beat_ok("1", json!({"module": "pms", "state": "idle"}))
        .await;
    app.beat_ok("2", json!({"module": "pms"})).await;
    let modules = app.modules().await;
    assert_eq!(modules["procurement"]["activeNow"], json!(2));
    assert_eq!(modules["procurement"]["idleNow"], json!(1));
    assert_eq!(modules["innovation"]["idleNow"], json!(0));
    for bad in [json!("away"), json!("IDLE"), json!(1), json!(["idle"])] {
        let response = app
            .beat(&app.token("1"), json!({"module": "pms", "state": bad}))
            .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let (_, sessions) = app
        .get("/api/admin/sessions", &app.admin_token("root"))
        .await;
    let states: Vec<(&str, &str)> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["userId"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("2", "active"), ("1", "idle")]);
    let (_, metrics) = super::admin::scrape(&app, None).await;
    assert_eq!(
        metrics.get(r#"presence_idle_users{module="pms"}"#),
        Some(&1.0)
    );
    assert_eq!(
        metrics.get(r#"presence_idle_users{module="ih"}"#),
        Some(&0.0)
    );
}

#[tokio::test]
async fn viewers_show_names_and_state_and_never_a_hidden_user() {
    let app = spawn_app().await;
    let long = "x".repeat(257);
    let ann = app.token_with(
        "7",
        &json!({"name": "Ann Lee", "picture": long, "email": "ann@example.com"}),
    );
    let response = app
        .beat(
            &ann,
            json!({"module": "pms", "resource": "request:1", "state": "idle"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.clock.advance(Duration::from_secs(1));
    let bob = app.token_with("8", &json!({"name": 42, "picture": "https://x/b.png"}));
    app.beat(&bob, json!({"module": "pms", "resource": "request:1"}))
        .await;
    let hal = app.token_with("9", &json!({"name": "Hal", "presence_hidden": true}));
    app.beat(&hal, json!({"module": "pms", "resource": "request:1"}))
        .await;
    let (status, body) = app
        .get("/api/presence/resources/request:1", &app.token("asker"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["count"], json!(2), "{body}");
    assert_eq!(
        body["viewers"],
        json!([
            {"userId": "7", "state": "idle", "since": "2026-01-14T09:30:00.000Z",
             "lastSeen": "2026-01-14T09:30:00.000Z", "profile": {"name": "Ann Lee"}},
            {"userId": "8", "state": "active", "since": "2026-01-14T09:30:01.000Z",
             "lastSeen": "2026-01-14T09:30:01.000Z", "profile": {"picture": "https://x/b.png"}},
        ]),
        "a claim over 256 bytes, a non-string claim and claims not in PROFILE_CLAIMS are left out"
    );
    assert_eq!(
        app.counts("procurement").await[0],
        3,
        "the hidden user still counts"
    );
    let (_, sessions) = app
        .get("/api/admin/sessions", &app.admin_token("root"))
        .await;
    assert_eq!(
        sessions["sessions"].as_array().unwrap().len(),
        3,
        "admins see all"
    );
    let (_, as_admin) = app
        .get(
            "/api/presence/resources/request:1",
            &app.admin_token("root"),
        )
        .await;
    assert_eq!(
        as_admin["count"],
        json!(2),
        "hidden from admins' viewers too"
    );
    let status = users_ok(&app, &json!(["9", 7])).await;
    assert_eq!(
        status["users"]["9"],
        json!({"state": "offline", "modules": [], "lastSeen": null}),
        "a hidden user reads as never seen"
    );
    assert_eq!(status["users"]["7"]["profile"], json!({"name": "Ann Lee"}));
}

#[tokio::test]
async fn without_profile_claims_nobody_has_a_profile() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--profile-claims", "none"]).await;
    let ann = app.token_with("7", &json!({"name": "Ann"}));
    app.beat(&ann, json!({"module": "pms", "resource": "r"}))
        .await;
    let (_, body) = app.get("/api/presence/resources/r", &app.token("a")).await;
    assert!(body["viewers"][0].get("profile").is_none(), "{body}");
}

#[tokio::test]
async fn user_status_answers_one_entry_per_distinct_id() {
    let app = spawn_app().await;
    let ann = app.token_with("42", &json!({"name": "Ann"}));
    app.beat(&ann, json!({"module": "ih", "clientId": "a"}))
        .await;
    app.beat(
        &ann,
        json!({"module": "pms", "clientId": "b", "state": "idle"}),
    )
    .await;
    let body = users_ok(&app, &json!(["42", 7, 42, "7", "nobody"])).await;
    let keys: Vec<&String> = body["users"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["42", "7", "nobody"],
        "one key per distinct id, as asked"
    );
    assert_eq!(
        body["users"]["42"],
        json!({"state": "active", "modules": ["pms", "ih"],
               "lastSeen": "2026-01-14T09:30:00.000Z", "profile": {"name": "Ann"}})
    );
    assert_eq!(
        body["users"]["7"],
        json!({"state": "offline", "modules": [], "lastSeen": null})
    );
    assert_eq!(body["timestamp"], json!("2026-01-14T09:30:00.000Z"));
    app.clock.advance(Duration::from_secs(301));
    let body = users_ok(&app, &json!([42])).await;
    assert_eq!(body["users"]["42"]["state"], json!("offline"));
    assert_eq!(
        body["users"]["42"]["lastSeen"],
        json!("2026-01-14T09:30:00.000Z"),
        "kept after the sessions expire"
    );

    // 100 ids of 120 bytes (about 12 KiB) are fine; more ids, or other
    // values, are invalid; over 16 KiB is too large; not JSON is 415.
    let long: Vec<String> = (0..100).map(|i| format!("{i:0>120}")).collect();
    let response = users(&app, &app.token("a"), &json!({ "userIds": long })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let many: Vec<u32> = (0..101).collect();
    for bad in [
        json!({ "userIds": many }),
        json!({"userIds": []}),
        json!({"userIds": [1.5]}),
        json!({"userIds": [true]}),
        json!({"userIds": [{"id": 1}]}),
        json!({"userIds": ["a\u{1b}b"]}),
        json!({"userIds": "42"}),
        json!(["42"]),
    ] {
        let response = users(&app, &app.token("a"), &bad).await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_body").await;
    }
    let huge = json!({"userIds": [ "x".repeat(17 * 1024) ]});
    let response = users(&app, &app.token("a"), &huge).await;
    assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let response = app
        .client
        .post(app.url("/api/presence/users"))
        .bearer_auth(app.token("a"))
        .body(r#"{"userIds": ["1"]}"#)
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let response = users(&app, "bad", &json!({"userIds": ["1"]})).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn scoped_visibility_needs_a_matching_scope_claim() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--presence-visibility", "scoped"]).await;
    app.beat_ok("1", json!({"module": "pms", "resource": "request:1"}))
        .await;
    let scoped = app.token_with("2", &json!({"presence_scope": ["request:*", "doc:7"]}));
    let one = app.token_with("3", &json!({"presence_scope": "request:1"}));
    let broken = app.token_with("4", &json!({"presence_scope": ["request:*", 5]}));
    let admin = app.admin_token("root");
    for (token, path, allowed) in [
        (&scoped, "/api/presence/resources/request:1", true),
        (&scoped, "/api/presence/resources/doc:7", true),
        (&scoped, "/api/presence/resources/doc:70", false),
        (
            &scoped,
            "/api/presence/resources/contract:secret-merger-acme",
            false,
        ),
        (&one, "/api/presence/resources/request:1", true),
        (&one, "/api/presence/resources/request:12", false),
        (&broken, "/api/presence/resources/request:1", false),
        (&app.token("5"), "/api/presence/resources/request:1", false),
        (
            &admin,
            "/api/presence/resources/contract:secret-merger-acme",
            true,
        ),
    ] {
        let response = app.request(reqwest::Method::GET, path, Some(token)).await;
        if allowed {
            assert_eq!(response.status(), StatusCode::OK, "{path}");
        } else {
            assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
        }
    }
    // User status names modules, never resources: any user may ask.
    let response = users(&app, &app.token("5"), &json!({"userIds": ["1"]})).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn admins_visibility_refuses_everyone_else() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--presence-visibility", "admins"]).await;
    let user = app.token("1");
    let response = app
        .request(
            reqwest::Method::GET,
            "/api/presence/resources/r",
            Some(&user),
        )
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = users(&app, &user, &json!({"userIds": ["1"]})).await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let admin = app.admin_token("root");
    let (status, _) = app.get("/api/presence/resources/r", &admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        users(&app, &admin, &json!({"userIds": ["1"]}))
            .await
            .status(),
        StatusCode::OK
    );
    // Module stats stay open to every user.
    let (status, _) = app.get("/api/stats/modules", &user).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn reads_of_viewers_and_user_status_count_toward_the_rate_limit() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--rate-limit", "3,1h"]).await;
    let token = app.token("prober");
    for i in 0..2 {
        let (status, _) = app
            .get(&format!("/api/presence/resources/request:{i}"), &token)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        users(&app, &token, &json!({"userIds": ["1"]}))
            .await
            .status(),
        StatusCode::OK
    );
    let response = app
        .request(
            reqwest::Method::GET,
            "/api/presence/resources/request:3",
            Some(&token),
        )
        .await;
    assert!(response.headers().contains_key("retry-after"));
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let response = users(&app, &token, &json!({"userIds": ["1"]})).await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let (status, _) = app
        .get("/api/presence/resources/request:3", &app.token("other"))
        .await;
    assert_eq!(status, StatusCode::OK, "per user");
    let (status, _) = app.get("/api/stats/modules", &token).await;
    assert_eq!(status, StatusCode::OK, "module stats are not limited");
}

#[tokio::test]
async fn user_status_in_process_through_the_router() {
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let app = spawn_app().await;
    app.beat_ok("1", json!({"module": "ih", "state": "idle"}))
        .await;
    let router = presence::app(app.state.clone(), &[]);
    let request = axum::http::Request::post("/api/presence/users")
        .header("authorization", format!("Bearer {}", app.token("asker")))
        .header("content-type", "application/json")
        .body(Body::from(r#"{"userIds":[1,"2"]}"#))
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), axum::http::StatusCode::OK);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(
        body["users"],
        json!({
            "1": {"state": "idle", "modules": ["ih"], "lastSeen": "2026-01-14T09:30:00.000Z"},
            "2": {"state": "offline", "modules": [], "lastSeen": null},
        })
    );
}

/// An instance on the shared Redis under `prefix`, with `PROFILE_CLAIMS`
/// set to `claims`, on `clock`.
async fn redis_instance(
    url: &str,
    prefix: &str,
    claims: &str,
    clock: &Arc<ManualClock>,
) -> TestApp {
    spawn_app_on(
        &[
            "--jwt-secret",
            SECRET,
            "--store",
            "redis",
            "--redis-url",
            url,
            "--redis-key-prefix",
            prefix,
            "--profile-claims",
            claims,
        ],
        clock.clone(),
    )
    .await
}

/// The profile of user 7 in the viewers of `r` and in user status.
async fn profile_of_7(app: &TestApp) -> (Value, Value) {
    let (_, viewers) = app.get("/api/presence/resources/r", &app.token("a")).await;
    let status = users_ok(app, &json!(["7"])).await;
    (
        viewers["viewers"][0]["profile"].clone(),
        status["users"]["7"]["profile"].clone(),
    )
}

/// Redis keeps profiles across restarts of the service: what it serves
/// follows the `PROFILE_CLAIMS` of the instance that serves it, and a
/// profile goes a bounded time after the user's last session.
#[tokio::test]
async fn on_redis_a_claim_dropped_from_profile_claims_is_not_served_and_profiles_expire() {
    let Some(url) = super::redis_server::shared_url() else {
        return;
    };
    let prefix = super::redis_server::unique_prefix("claims");
    let clock = Arc::new(ManualClock::new(start_time()));
    let before = redis_instance(&url, &prefix, "name,email", &clock).await;
    let ann = before.token_with("7", &json!({"name": "Ann", "email": "ann@example.com"}));
    let beat = before
        .beat(&ann, json!({"module": "pms", "resource": "r"}))
        .await;
    assert_eq!(beat.status(), StatusCode::OK);
    let both = json!({"email": "ann@example.com", "name": "Ann"});
    assert_eq!(profile_of_7(&before).await, (both.clone(), both));
    before.stop().await;

    let name_only = redis_instance(&url, &prefix, "name", &clock).await;
    let name = json!({"name": "Ann"});
    assert_eq!(
        profile_of_7(&name_only).await,
        (name.clone(), name.clone()),
        "the email is no longer a profile claim"
    );
    name_only.stop().await;
    let none = redis_instance(&url, &prefix, "none", &clock).await;
    assert_eq!(profile_of_7(&none).await, (Value::Null, Value::Null));
    none.stop().await;

    // Offline, the profile stays a while, then goes, and the sweeper
    // removes it from Redis.
    let app = redis_instance(&url, &prefix, "name,email", &clock).await;
    clock.advance(Duration::from_secs(3600));
    let status = users_ok(&app, &json!(["7"])).await;
    assert_eq!(status["users"]["7"]["state"], json!("offline"));
    assert!(status["users"]["7"]["profile"].is_object(), "{status}");
    clock.advance(Duration::from_secs(24 * 3600));
    let status = users_ok(&app, &json!(["7"])).await;
    assert_eq!(status["users"]["7"]["profile"], Value::Null, "{status}");
    app.state.store.sweep().await.unwrap();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let kept: u64 = redis::cmd("HLEN")
        .arg(format!("{{{prefix}}}:prof"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(kept, 0, "the sweeper removed the profile");
}

/// Profile values are shown without control, zero-width or bidi
/// override/isolate characters: a name cannot reorder what follows it on a
/// dashboard, hide text, or break a line.
#[tokio::test]
async fn profile_values_are_served_without_control_zero_width_or_bidi_characters() {
    let app = spawn_app().await;
    let token = app.token_with(
        "7",
        &json!({"name": "Ann\u{202e}exe.gpj\u{202c} \u{200b}Lee\n", "picture": "\u{2066}\u{200f}\u{feff}"}),
    );
    let beat = app
        .beat(&token, json!({"module": "pms", "resource": "r"}))
        .await;
    assert_eq!(beat.status(), StatusCode::OK);
    let expected = json!({"name": "Annexe.gpj Lee"});
    let (_, viewers) = app.get("/api/presence/resources/r", &app.token("a")).await;
    assert_eq!(viewers["viewers"][0]["profile"], expected, "{viewers}");
    let status = users_ok(&app, &json!(["7"])).await;
    assert_eq!(
        status["users"]["7"]["profile"], expected,
        "a value left empty is left out"
    );
}
