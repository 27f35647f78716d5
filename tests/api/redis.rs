//! The service on `STORE=redis` over real HTTP: several instances agree, and
//! losing Redis is a 503 that heals by itself.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{SECRET, TestApp, assert_error, spawn_app_with};
use super::redis_server::{RedisServer, unique_prefix};

async fn instance(server: &RedisServer, prefix: &str) -> TestApp {
    spawn_app_with(&[
        "--jwt-secret",
        SECRET,
        "--store",
        "redis",
        "--redis-url",
        &server.url(),
        "--redis-key-prefix",
        prefix,
    ])
    .await
}

#[tokio::test]
async fn two_instances_on_one_redis_agree_on_everything() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("multi");
    let a = instance(&server, &prefix).await;
    let b = instance(&server, &prefix).await;

    a.beat_ok("1", json!({"module": "pms", "resource": "request:123"}))
        .await;
    b.beat_ok("2", json!({"module": "ih", "resource": "request:123"}))
        .await;
    let moved = b
        .beat_ok("1", json!({"module": "ih", "clientId": "tab2"}))
        .await;
    assert_eq!(moved["activeUsers"], json!(2), "B counts the user A saw");
    a.beat_ok("3", json!({"module": "pms", "clientId": "x"}))
        .await;

    let (ma, mb) = (a.modules().await, b.modules().await);
    for key in ["procurement", "innovation"] {
        assert_eq!(ma[key], mb[key], "{key}");
    }
    assert_eq!(
        ma["procurement"],
        json!({"totalUsers": 2, "activeNow": 2, "idleNow": 0, "today": 2})
    );
    assert_eq!(
        ma["innovation"],
        json!({"totalUsers": 2, "activeNow": 2, "idleNow": 0, "today": 2})
    );

    let admin = a.admin_token("root");
    let (_, sa) = a.get("/api/admin/sessions", &admin).await;
    let (_, sb) = b.get("/api/admin/sessions", &admin).await;
    assert_eq!(sa["sessions"], sb["sessions"]);
    assert_eq!(sa["sessions"].as_array().unwrap().len(), 4);

    let path = "/api/presence/resources/request:123";
    let (_, va) = a.get(path, &a.token("9")).await;
    let (_, vb) = b.get(path, &b.token("9")).await;
    assert_eq!(va["viewers"], vb["viewers"]);
    let viewers: Vec<&str> = va["viewers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["userId"].as_str().unwrap())
        .collect();
    assert_eq!(viewers, ["1", "2"]);

    // A state and a profile recorded on one instance are what the other
    // lists, in viewers and user status; a hidden user on neither.
    let named = a.token_with("2", &json!({"name": "Bea"}));
    let response = a
        .beat(
            &named,
            json!({"module": "ih", "resource": "request:123", "state": "idle"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let hidden = a.token_with("4", &json!({"presence_hidden": true}));
    a.beat(&hidden, json!({"module": "ih", "resource": "request:123"}))
        .await;
    let (_, vb) = b.get(path, &b.token("9")).await;
    assert_eq!(vb["count"], json!(2), "{vb}");
    assert_eq!(vb["viewers"][1]["state"], json!("idle"));
    assert_eq!(vb["viewers"][1]["profile"], json!({"name": "Bea"}));
    assert_eq!(b.modules().await["innovation"]["idleNow"], json!(1));
    let status = |app: &TestApp| {
        let request = app
            .client
            .post(app.url("/api/presence/users"))
            .bearer_auth(app.token("9"))
            .json(&json!({"userIds": [1, "2", "4"]}));
        async move {
            let mut body: Value = request.send().await.unwrap().json().await.unwrap();
            body.as_object_mut().unwrap().remove("timestamp");
            body
        }
    };
    let (ua, ub) = (status(&a).await, status(&b).await);
    assert_eq!(ua, ub);
    assert_eq!(ub["users"]["2"]["state"], json!("idle"), "{ub}");
    assert_eq!(ub["users"]["1"]["modules"], json!(["pms", "ih"]), "{ub}");
    assert_eq!(
        ub["users"]["4"],
        json!({"state": "offline", "modules": [], "lastSeen": null})
    );

    // A leave on one instance is seen by the other at once.
    assert_eq!(b.leave("1", "?all=true").await, StatusCode::NO_CONTENT);
    assert_eq!(a.counts("procurement").await[0], 1);
    assert_eq!(
        a.counts("innovation").await[0],
        2,
        "2, and 4, hidden but counted"
    );
}

#[tokio::test]
async fn concurrent_heartbeats_of_one_user_on_two_instances_leave_one_session() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("race");
    let a = instance(&server, &prefix).await;
    let b = instance(&server, &prefix).await;
    for round in 0..20 {
        let (ma, mb) = if round % 2 == 0 {
            ("pms", "ih")
        } else {
            ("ih", "pms")
        };
        let (ta, tb) = (a.token("racer"), b.token("racer"));
        let (ra, rb) = tokio::join!(
            a.beat(&ta, json!({"module": ma})),
            b.beat(&tb, json!({"module": mb}))
        );
        assert_eq!((ra.status(), rb.status()), (StatusCode::OK, StatusCode::OK));
        let m = a.modules().await;
        let active = m["procurement"]["activeNow"].as_u64().unwrap()
            + m["innovation"]["activeNow"].as_u64().unwrap();
        assert_eq!(
            active, 1,
            "one default session is in exactly one module: {m}"
        );
    }
}

#[tokio::test]
async fn losing_redis_is_503_within_a_second_and_service_resumes_by_itself() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let app = instance(&server, &unique_prefix("fault")).await;
    app.beat_ok("1", json!({"module": "pms"})).await;
    let (status, _) = app.get("/readyz", "").await;
    assert_eq!(status, StatusCode::OK);

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        let response = app.beat(&app.token("1"), json!({"module": "pms"})).await;
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "answered in {:?}",
            started.elapsed()
        );
        assert_error(
            response,
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
        )
        .await;
    }
    let started = Instant::now();
    let (status, body) = app.get("/readyz", "").await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("store_unavailable"))
    );
    let (status, _) = app.get("/api/stats/modules", &app.token("1")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = app.get("/healthz", "").await;
    assert_eq!(status, StatusCode::OK, "the process itself is alive");

    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = app.beat(&app.token("2"), json!({"module": "ih"})).await;
        if response.status() == StatusCode::OK {
            break;
        }
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "only 503 while reconnecting"
        );
        assert!(
            Instant::now() < deadline,
            "service did not resume within 10 s of Redis's return"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = app.get("/readyz", "").await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"status": "ready", "store": "redis"}))
    );
    // Redis restarted empty (no persistence in tests): the new heartbeat counts.
    let m: Value = app.modules().await;
    assert_eq!(m["innovation"]["activeNow"], json!(1));
}

#[tokio::test]
async fn the_service_starts_while_redis_is_down_and_serves_when_it_comes() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    server.stop();
    let app = instance(&server, &unique_prefix("late")).await;
    let (status, _) = app.get("/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    server.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.get("/readyz", "").await.0 != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "not ready within 10 s of Redis starting"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.beat_ok("1", json!({"module": "pms"})).await;
}

/// Runs one command on `server`, outside the service.
fn redis_cmd(server: &RedisServer, args: &[&str]) -> redis::Value {
    let client = redis::Client::open(server.url().as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).unwrap()
}

/// A session value the scripts cannot decode (a bad write, a bug, a hand
/// edit) is one user's loss: the scripts skip it and remove it, and every
/// other user, list and sweep goes on.
#[tokio::test]
async fn a_session_redis_cannot_decode_is_skipped_and_removed() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("poison");
    let app = instance(&server, &prefix).await;
    app.beat_ok("poison", json!({"module": "pms", "resource": "doc:1"}))
        .await;
    app.beat_ok("2", json!({"module": "ih", "resource": "doc:1"}))
        .await;
    let key = format!("{{{prefix}}}:sess:poison");
    redis_cmd(&server, &["HSET", &key, "", "{bad json"]);
    // Valid JSON of the wrong shape, with its place in the time index.
    redis_cmd(&server, &["HSET", &key, "tab-x", "[]"]);
    let time_key = format!("{{{prefix}}}:time");
    let now_ms = (app.now_s() * 1000).to_string();
    redis_cmd(&server, &["ZADD", &time_key, &now_ms, "tab-x\u{1f}poison"]);

    let admin = app.admin_token("root");
    let (status, sessions) = app.get("/api/admin/sessions", &admin).await;
    assert_eq!(status, StatusCode::OK, "{sessions}");
    let users: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["userId"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["2"], "{sessions}");
    let (status, viewers) = app
        .get("/api/presence/resources/doc:1", &app.token("9"))
        .await;
    assert_eq!(status, StatusCode::OK, "{viewers}");
    assert_eq!(viewers["viewers"][0]["userId"], json!("2"), "{viewers}");

    // The user's next beat starts afresh.
    app.beat_ok("poison", json!({"module": "ih"})).await;
    assert_eq!(app.counts("procurement").await[0], 0);
    assert_eq!(app.counts("innovation").await[0], 2);
    assert_eq!(
        app.leave("poison", "?all=true").await,
        StatusCode::NO_CONTENT
    );

    // Poison an expired session: the sweep goes on.
    app.beat_ok("3", json!({"module": "pms"})).await;
    redis_cmd(
        &server,
        &["HSET", &format!("{{{prefix}}}:sess:3"), "", "{bad json"],
    );
    app.clock.advance(Duration::from_secs(301));
    let swept = presence::store::SessionStore::sweep(&app.state.store).await;
    assert!(swept.is_ok(), "{swept:?}");
    assert_eq!(app.counts("procurement").await[0], 0);
    assert_eq!(app.counts("innovation").await[0], 0);
    let (status, _) = app.get("/api/admin/sessions", &admin).await;
    assert_eq!(status, StatusCode::OK);
}

/// A user's session hash gone (evicted under a `volatile-*` policy, or
/// deleted by hand) must not leave the user counted where they were.
#[tokio::test]
async fn a_lost_session_hash_does_not_leave_the_user_counted_twice() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("evicted");
    let app = instance(&server, &prefix).await;
    app.beat_ok("1", json!({"module": "pms"})).await;
    redis_cmd(&server, &["DEL", &format!("{{{prefix}}}:sess:1")]);
    app.beat_ok("1", json!({"module": "ih"})).await;
    assert_eq!(app.counts("procurement").await[0], 0);
    assert_eq!(app.counts("innovation").await[0], 1);
    let metrics = app
        .request(reqwest::Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("presence_active_sessions{module=\"pms\"} 0")),
        "{metrics}"
    );
}

/// A full Redis (`maxmemory` reached under `noeviction`) refuses writes:
/// that is an outage to wait out, 503 with `Retry-After`, not a 500.
#[tokio::test]
async fn a_full_redis_is_503_until_it_has_room() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let app = instance(&server, &unique_prefix("full")).await;
    app.beat_ok("1", json!({"module": "pms"})).await;
    redis_cmd(&server, &["CONFIG", "SET", "maxmemory", "1"]);
    let response = app.beat(&app.token("2"), json!({"module": "pms"})).await;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    )
    .await;
    redis_cmd(&server, &["CONFIG", "SET", "maxmemory", "0"]);
    app.beat_ok("2", json!({"module": "pms"})).await;
}

/// A heartbeat of `user` answers 503 `store_unavailable`.
async fn assert_beat_unavailable(app: &super::helpers::TestApp, user: &str) {
    let response = app.beat(&app.token(user), json!({"module": "pms"})).await;
    assert_error(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
    )
    .await;
}

/// The shard count recorded in Redis is checked by a running instance, not
/// only at its start: after Redis lost its data (a `FLUSHALL`, a restart
/// without persistence) the instance records its count again, and one that
/// finds another count recorded refuses every call with 503 until the
/// record matches again.
#[tokio::test]
async fn a_running_instance_that_finds_another_shard_count_refuses_writes() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("reshard");
    let app = instance(&server, &prefix).await;
    app.beat_ok("1", json!({"module": "pms"})).await;
    let record = format!("{{{prefix}}}:shards");
    let store = &app.state.store;

    // Data lost, and another instance with 2 shards recorded its count in
    // the meantime: the next heartbeat notices.
    redis_cmd(&server, &["FLUSHALL"]);
    redis_cmd(&server, &["SET", &record, "2"]);
    assert_beat_unavailable(&app, "2").await;
    let (status, _) = app.get("/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "/readyz");

    // The record put right: the periodic check (in the sweep) lets it serve.
    redis_cmd(&server, &["SET", &record, "1"]);
    let swept = presence::store::SessionStore::sweep(store).await;
    assert!(swept.is_ok(), "{swept:?}");
    app.beat_ok("2", json!({"module": "pms"})).await;

    // Changed without a loss of data: the sweep's check finds it.
    redis_cmd(&server, &["SET", &record, "3"]);
    let swept = presence::store::SessionStore::sweep(store).await;
    assert!(
        matches!(swept, Err(presence::store::StoreError::Unavailable(_))),
        "{swept:?}"
    );
    assert_beat_unavailable(&app, "2").await;

    // Lost again, record and all: the sweep records this instance's count.
    redis_cmd(&server, &["FLUSHALL"]);
    let swept = presence::store::SessionStore::sweep(store).await;
    assert!(swept.is_ok(), "{swept:?}");
    assert_eq!(
        redis_cmd(&server, &["GET", &record]),
        redis::Value::BulkString(b"1".to_vec())
    );
    app.beat_ok("2", json!({"module": "pms"})).await;
}

/// Values in Redis that the scripts did not write (a hand edit, another
/// program under the same prefix) are checked like session values: a key
/// of the wrong type is an outage (503, logged), never a 500 for everyone;
/// numbers that cannot be true are ignored, never shown.
#[tokio::test]
async fn garbage_in_redis_values_is_503_or_ignored_never_a_500() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("garbage");
    let app = instance(&server, &prefix).await;
    let admin = app.admin_token("root");
    app.beat_ok("1", json!({"module": "pms"})).await;
    let now_ms = app.now_s() * 1000;
    let hist = format!("{{{prefix}}}:hist:{}", now_ms - now_ms % 60_000);

    // A string where this minute's history hash belongs.
    redis_cmd(&server, &["DEL", &hist]);
    redis_cmd(&server, &["SET", &hist, "garbage"]);
    assert_beat_unavailable(&app, "2").await;
    let (status, body) = app.get("/api/admin/history?window=1h", &admin).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    redis_cmd(&server, &["DEL", &hist]);

    // History fields that are not counts, and a peak at in year 10000.
    redis_cmd(
        &server,
        &[
            "HSET",
            &hist,
            "pms:st",
            "lots",
            "pms:p",
            "many",
            "pms:pa",
            "253402300800000",
            "pms:e",
            "-1",
        ],
    );
    app.beat_ok("3", json!({"module": "pms"})).await;
    let (status, body) = app.get("/api/admin/history?window=1h", &admin).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("10000-") && !text.contains("+10000"),
        "{body}"
    );

    // A presence score of +inf, and lastSeen scores of 0 and year 10000.
    redis_cmd(
        &server,
        &["ZADD", &format!("{{{prefix}}}:pres:pms"), "+inf", "ghost"],
    );
    redis_cmd(
        &server,
        &["ZADD", &format!("{{{prefix}}}:any"), "+inf", "ghost"],
    );
    let seen = format!("{{{prefix}}}:seen");
    redis_cmd(
        &server,
        &["ZADD", &seen, "0", "old", "253402300800000", "future"],
    );
    let [active_now, today, _] = app.counts("procurement").await;
    assert!(
        active_now <= today,
        "activeNow {active_now} > today {today}"
    );
    assert_eq!(active_now, 2, "users 1 and 3");
    let response = app
        .client
        .post(app.url("/api/presence/users"))
        .bearer_auth(app.token("9"))
        .json(&json!({"userIds": ["old", "future"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["users"]["old"]["lastSeen"], Value::Null, "{body}");
    assert_eq!(body["users"]["future"]["lastSeen"], Value::Null, "{body}");
}
