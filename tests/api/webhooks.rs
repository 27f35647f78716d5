//! Webhooks through real HTTP: the service on a port, a receiver on
//! another that verifies every signature itself (contract section 9).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{SECRET, TestApp, spawn_app_with};
use super::receiver::{self, Receiver};

/// Long enough for a batch (out 1 s after its first event is due) and a
/// retry or two.
const WAIT: Duration = Duration::from_secs(15);

async fn app_for(hook: &Receiver, extra: &[&str]) -> TestApp {
    let url = hook.url();
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--webhook-url",
        &url,
        "--webhook-secret",
        receiver::SECRET,
    ];
    args.extend_from_slice(extra);
    spawn_app_with(&args).await
}

fn has(events: &[Value], user: &str, kind: &str) -> bool {
    events
        .iter()
        .any(|e| e["userId"] == user && e["type"] == kind)
}

/// Waits for `marker`'s `user.online`: a later event, so everything before
/// it that was going to be sent has been.
async fn settle(app: &TestApp, hook: &Receiver, marker: &str) -> Vec<Value> {
    app.beat_ok(marker, json!({"module": "ih"})).await;
    tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, marker, "user.online")))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_join_and_a_leave_arrive_signed_with_their_fields() {
    let hook = Receiver::start();
    let app = app_for(&hook, &["--webhook-leave-grace", "0s"]).await;
    app.beat_ok(
        "42",
        json!({"module": "pms", "resource": "request:123", "clientId": "tab-1"}),
    )
    .await;
    let events =
        tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, "42", "resource.occupied")));
    let join = events
        .iter()
        .find(|e| e["type"] == "resource.join")
        .unwrap();
    assert_eq!(join["userId"], "42");
    assert_eq!(join["module"], "pms");
    assert_eq!(join["resource"], "request:123");
    assert!(join["id"].as_str().unwrap().starts_with("evt_"), "{join}");
    assert!(join["at"].as_str().unwrap().ends_with('Z'), "{join}");
    assert!(join.get("reason").is_none() && join.get("hidden").is_none());
    assert_eq!(
        app.leave("42", "?clientId=tab-1").await,
        StatusCode::NO_CONTENT
    );
    tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, "42", "user.offline")));
    assert_eq!(
        hook.kinds_of("42"),
        [
            "user.online pms",
            "module.enter pms",
            "resource.join request:123",
            "resource.occupied request:123",
            "resource.leave request:123 left",
            "resource.vacated request:123",
            "module.leave pms left",
            "user.offline left",
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_tab_and_closing_one_of_two_send_nothing() {
    let hook = Receiver::start();
    let app = app_for(&hook, &["--webhook-leave-grace", "0s"]).await;
    app.beat_ok("ann", json!({"module": "pms", "clientId": "a"}))
        .await;
    app.beat_ok("ann", json!({"module": "pms", "clientId": "b"}))
        .await;
    assert_eq!(
        app.leave("ann", "?clientId=b").await,
        StatusCode::NO_CONTENT
    );
    settle(&app, &hook, "marker").await;
    assert_eq!(
        hook.kinds_of("ann"),
        ["user.online pms", "module.enter pms"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_within_the_grace_sends_nothing() {
    let hook = Receiver::start();
    let app = app_for(&hook, &["--webhook-leave-grace", "5s"]).await;
    app.beat_ok("ann", json!({"module": "pms", "resource": "request:1"}))
        .await;
    tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, "ann", "resource.occupied")));
    // The page's pagehide DELETE, then the new page's first heartbeat.
    assert_eq!(app.leave("ann", "").await, StatusCode::NO_CONTENT);
    app.clock.advance(Duration::from_secs(1));
    app.beat_ok("ann", json!({"module": "pms", "resource": "request:1"}))
        .await;
    // Past the grace, on the service's clock.
    app.clock.advance(Duration::from_secs(6));
    settle(&app, &hook, "marker").await;
    assert_eq!(
        hook.kinds_of("ann"),
        [
            "user.online pms",
            "module.enter pms",
            "resource.join request:1",
            "resource.occupied request:1"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leave_past_the_grace_is_sent_after_it() {
    let hook = Receiver::start();
    let app = app_for(&hook, &["--webhook-leave-grace", "5s"]).await;
    app.beat_ok("ann", json!({"module": "pms"})).await;
    tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, "ann", "module.enter")));
    assert_eq!(app.leave("ann", "").await, StatusCode::NO_CONTENT);
    // Two batch lingers of real time, none of the grace on the service's
    // clock: the leave is held (and so is anything behind it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !has(&hook.events(), "ann", "user.offline"),
        "held for the grace"
    );
    app.clock.advance(Duration::from_secs(6));
    tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, "ann", "user.offline")));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiry_is_sent_with_reason_expired() {
    let hook = Receiver::start();
    let app = app_for(&hook, &["--webhook-leave-grace", "0s"]).await;
    app.beat_ok("ann", json!({"module": "pms"})).await;
    app.clock.advance(Duration::from_secs(301));
    presence::store::SessionStore::sweep(&app.state.store)
        .await
        .unwrap();
    let events =
        tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, "ann", "user.offline")));
    let offline = events.iter().find(|e| e["type"] == "user.offline").unwrap();
    assert_eq!(offline["reason"], "expired");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_answering_503_for_a_while_gets_every_event_once() {
    let hook = Receiver::start();
    hook.answer(503);
    let app = app_for(&hook, &["--webhook-leave-grace", "0s"]).await;
    for user in ["a", "b", "c"] {
        app.beat_ok(user, json!({"module": "pms"})).await;
    }
    tokio::task::block_in_place(|| {
        let start = std::time::Instant::now();
        while hook.attempts() < 2 {
            assert!(start.elapsed() < WAIT, "no retry");
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert!(hook.events().is_empty());
    app.beat_ok("d", json!({"module": "pms"})).await;
    hook.answer(200);
    let events =
        tokio::task::block_in_place(|| hook.wait_for(WAIT, |e| has(e, "d", "module.enter")));
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 8, "{events:#?}");
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 8, "every event once");
    for user in ["a", "b", "c", "d"] {
        assert_eq!(hook.kinds_of(user), ["user.online pms", "module.enter pms"]);
    }
}

/// Beats through curl against a binary at `addr`.
fn curl_beat(addr: &str, secret: &str, user: &str, module: &str) {
    let reply = super::binary::curl(
        &super::binary::token_for(secret, user),
        &[
            "-X",
            "POST",
            &format!("http://{addr}/api/stats/heartbeat"),
            "-H",
            "Content-Type: application/json",
            "-d",
            &format!(r#"{{"module":"{module}"}}"#),
        ],
    );
    assert!(reply.contains(r#""success":true"#), "{reply}");
}

fn wait_for_attempts(hook: &Receiver, n: usize) {
    let start = std::time::Instant::now();
    while hook.attempts() < n {
        assert!(start.elapsed() < WAIT, "no delivery attempt");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every event once: ids unique.
fn assert_once(events: &[Value]) {
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "a duplicate among {events:#?}");
}

#[test]
fn events_waiting_at_a_sigterm_are_sent_after_a_restart_on_the_same_state_file() {
    use super::binary::{start_serving, terminate, wait_with_timeout};
    let hook = Receiver::start();
    hook.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let url = hook.url();
    let vars = [
        ("JWT_SECRET", "hook-secret"),
        ("STATE_FILE", "state.json"),
        ("WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_SECRET", receiver::SECRET),
    ];
    let (mut first, addr, logs) = start_serving(&dir, &vars);
    std::thread::spawn(move || for _ in logs {});
    curl_beat(&addr, "hook-secret", "ann", "pms");
    curl_beat(&addr, "hook-secret", "bob", "ih");
    wait_for_attempts(&hook, 1);
    terminate(&first);
    assert_eq!(
        wait_with_timeout(&mut first, Duration::from_secs(15)).code(),
        Some(0)
    );
    assert!(
        hook.events().is_empty(),
        "the receiver accepted nothing yet"
    );

    hook.answer(200);
    let (mut second, _, logs) = start_serving(&dir, &vars);
    std::thread::spawn(move || for _ in logs {});
    let events = hook.wait_for(WAIT, |e| {
        has(e, "ann", "module.enter") && has(e, "bob", "module.enter")
    });
    assert_once(&events);
    assert_eq!(
        hook.kinds_of("ann"),
        ["user.online pms", "module.enter pms"]
    );
    assert_eq!(hook.kinds_of("bob"), ["user.online ih", "module.enter ih"]);
    terminate(&second);
    wait_with_timeout(&mut second, Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_on_one_redis_send_each_event_once() {
    let Some(server) = super::redis_server::RedisServer::start() else {
        return;
    };
    let hook = Receiver::start();
    let prefix = super::redis_server::unique_prefix("hooks");
    let redis_url = server.url();
    let extra = [
        "--store",
        "redis",
        "--redis-url",
        &redis_url,
        "--redis-key-prefix",
        &prefix,
        "--webhook-leave-grace",
        "0s",
    ];
    let a = app_for(&hook, &extra).await;
    let b = app_for(&hook, &extra).await;
    for i in 0..20 {
        let app = if i % 2 == 0 { &a } else { &b };
        app.beat_ok(&format!("u{i}"), json!({"module": "pms"}))
            .await;
    }
    for i in 0..10 {
        let app = if i % 2 == 0 { &b } else { &a };
        assert_eq!(
            app.leave(&format!("u{i}"), "").await,
            StatusCode::NO_CONTENT
        );
    }
    let events = tokio::task::block_in_place(|| {
        hook.wait_for(WAIT, |e| {
            (0..20).all(|i| has(e, &format!("u{i}"), "module.enter"))
                && (0..10).all(|i| has(e, &format!("u{i}"), "user.offline"))
        })
    });
    assert_once(&events);
    assert_eq!(events.len(), 20 * 2 + 10 * 2, "{events:#?}");
}

#[test]
fn an_instance_killed_while_its_receiver_is_down_loses_nothing() {
    use super::binary::{start_serving, terminate, wait_with_timeout};
    let Some(server) = super::redis_server::RedisServer::start() else {
        return;
    };
    let hook = Receiver::start();
    hook.answer(503);
    let dir = tempfile::tempdir().unwrap();
    let (url, redis_url) = (hook.url(), server.url());
    let vars = [
        ("JWT_SECRET", "hook-secret"),
        ("STORE", "redis"),
        ("REDIS_URL", redis_url.as_str()),
        ("WEBHOOK_URL", url.as_str()),
        ("WEBHOOK_SECRET", receiver::SECRET),
    ];
    let (mut doomed, addr, logs) = start_serving(&dir, &vars);
    std::thread::spawn(move || for _ in logs {});
    for user in ["ann", "bob", "cat"] {
        curl_beat(&addr, "hook-secret", user, "pms");
    }
    wait_for_attempts(&hook, 1);
    doomed.kill().unwrap();
    doomed.wait().unwrap();

    hook.answer(200);
    let started = std::time::Instant::now();
    let (mut heir, _, logs) = start_serving(&dir, &vars);
    std::thread::spawn(move || for _ in logs {});
    let events = hook.wait_for(Duration::from_secs(40), |e| {
        ["ann", "bob", "cat"]
            .iter()
            .all(|u| has(e, u, "module.enter"))
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "sent by another instance within 30 s: {:?}",
        started.elapsed()
    );
    assert_once(&events);
    terminate(&heir);
    wait_with_timeout(&mut heir, Duration::from_secs(15));
}

#[test]
fn a_bad_webhook_setting_stops_start_up_naming_the_variable() {
    let url = ("WEBHOOK_URL", "http://127.0.0.1:9/hook");
    let secret = ("WEBHOOK_SECRET", receiver::SECRET);
    for (vars, variable) in [
        (
            vec![("WEBHOOK_URL", "ftp://127.0.0.1/hook"), secret],
            "WEBHOOK_URL",
        ),
        (vec![url], "WEBHOOK_SECRET"),
        (vec![secret], "WEBHOOK_URL"),
        (vec![url, ("WEBHOOK_SECRET", "hunter2")], "WEBHOOK_SECRET"),
        (
            vec![url, ("WEBHOOK_SECRET", "whsec_c2hvcnQ=")],
            "WEBHOOK_SECRET",
        ),
        (
            vec![url, secret, ("WEBHOOK_EVENTS", "user.online,user.sneeze")],
            "WEBHOOK_EVENTS",
        ),
        (
            vec![url, secret, ("WEBHOOK_LEAVE_GRACE", "soon")],
            "WEBHOOK_LEAVE_GRACE",
        ),
        (
            vec![url, secret, ("WEBHOOK_TIMEOUT", "0s")],
            "WEBHOOK_TIMEOUT",
        ),
        (
            vec![url, secret, ("WEBHOOK_QUEUE_MAX", "many")],
            "WEBHOOK_QUEUE_MAX",
        ),
    ] {
        let output = super::binary::run_with_env(&vars, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{vars:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(variable) || stderr.contains(variable),
            "{variable} named: {stderr}"
        );
        assert!(
            !stderr.contains("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            "the secret is never printed: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_endpoint_shows_the_backlog_and_failures_never_credentials() {
    let hook = Receiver::start();
    hook.answer(503);
    let with_credentials = hook.url().replace("http://", "http://ops:pa55word@");
    let app = spawn_app_with(&[
        "--jwt-secret",
        SECRET,
        "--webhook-url",
        &with_credentials,
        "--webhook-secret",
        receiver::SECRET,
    ])
    .await;
    app.beat_ok("ann", json!({"module": "pms"})).await;
    let admin = app.admin_token("root");
    let start = std::time::Instant::now();
    let body = loop {
        let (status, body) = app.get("/api/admin/webhooks", &admin).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["endpoints"][0]["lastFailure"].is_object() {
            break body;
        }
        assert!(start.elapsed() < WAIT, "no failure shown: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let endpoint = &body["endpoints"][0];
    assert_eq!(endpoint["lastFailure"]["status"], 503, "{body}");
    assert!(endpoint["eventsWaiting"].as_u64().unwrap() >= 2, "{body}");
    let text = body.to_string();
    assert!(
        !text.contains("pa55word") && !text.contains("MfKQ9r8"),
        "{text}"
    );
    assert!(
        endpoint["url"].as_str().unwrap().ends_with("/hook"),
        "{body}"
    );
    let (status, _) = app.get("/api/admin/webhooks", &app.token("ann")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}
