//! GET /api/presence/stream: the viewers of up to 20 resources, live, on
//! both stores and across two instances on one Redis.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::helpers::{
    SECRET, TestApp, assert_error, spawn_app, spawn_app_on, spawn_app_with, start_time,
};
use super::redis_server::{RedisServer, cli, shared_cluster, unique_prefix};
use super::stream::{Listener, Sse};
use presence::clock::ManualClock;

/// The TTL these tests run with.
const TTL: Duration = Duration::from_secs(30);
/// Nothing is expected: how long a test waits to be sure.
const QUIET: Duration = Duration::from_millis(700);

fn stream_path(app: &TestApp, resources: &str, user: &str) -> String {
    format!(
        "/api/presence/stream?resources={resources}&access_token={}",
        app.token(user)
    )
}

/// The next `presence` event's data, within `within`, or `None`.
async fn presence(stream: &mut Listener, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match stream.next(left).await? {
            Sse::Event { name, data } if name == "presence" => return Some(data),
            _ => {}
        }
    }
}

/// The next event, which must come within `within`, is for `resource`.
async fn expect(stream: &mut Listener, within: Duration, resource: &str) -> Value {
    let data = presence(stream, within)
        .await
        .unwrap_or_else(|| panic!("an event for {resource} within {within:?}"));
    assert_eq!(data["resource"], json!(resource), "{data}");
    data
}

/// GETs `path` without a bearer header, as an `EventSource` does.
async fn request(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).send().await.unwrap()
}

async fn beat(app: &TestApp, token: &str, body: Value) {
    let response = app.beat(token, body).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// Every kind of change made on `writer` reaches a stream on `reader`
/// within `bound`, and nothing else sends.
async fn every_change_reaches_the_stream(writer: &TestApp, reader: &TestApp, bound: Duration) {
    let path = stream_path(reader, "request%3A1,request:2", "watcher");
    let mut stream = Listener::open_at(reader, &path).await;
    let first = expect(&mut stream, bound, "request:1").await;
    assert_eq!(first["count"], json!(0));
    assert_eq!(first["viewers"], json!([]));
    assert!(first["timestamp"].is_string());
    assert_eq!(
        expect(&mut stream, bound, "request:2").await["count"],
        json!(0)
    );

    // A join, with the viewer's name.
    let ann = writer.token_with("ann", &json!({"name": "Ann"}));
    beat(
        writer,
        &ann,
        json!({"module": "pms", "resource": "request:1"}),
    )
    .await;
    let joined = expect(&mut stream, bound, "request:1").await;
    assert_eq!(joined["count"], json!(1));
    assert_eq!(joined["viewers"][0]["userId"], json!("ann"));
    assert_eq!(joined["viewers"][0]["state"], json!("active"));
    assert_eq!(joined["viewers"][0]["profile"], json!({"name": "Ann"}));
    // The same JSON as the GET, but for the time it was taken.
    let (_, mut got) = reader
        .get("/api/presence/resources/request:1", &reader.token("w"))
        .await;
    got["timestamp"] = joined["timestamp"].clone();
    assert_eq!(got, joined);

    // A heartbeat that changes nothing a viewer sees sends nothing.
    beat(
        writer,
        &ann,
        json!({"module": "pms", "resource": "request:1"}),
    )
    .await;
    assert_eq!(presence(&mut stream, QUIET).await, None);

    // A state change.
    let idle = json!({"module": "pms", "resource": "request:1", "state": "idle"});
    beat(writer, &ann, idle.clone()).await;
    let data = expect(&mut stream, bound, "request:1").await;
    assert_eq!(data["viewers"][0]["state"], json!("idle"));

    // A profile change.
    let renamed = writer.token_with("ann", &json!({"name": "Ann Lee"}));
    beat(writer, &renamed, idle).await;
    let data = expect(&mut stream, bound, "request:1").await;
    assert_eq!(data["viewers"][0]["profile"], json!({"name": "Ann Lee"}));

    // A resource not subscribed never sends; nor does a hidden user.
    beat(
        writer,
        &writer.token("bob"),
        json!({"module": "pms", "resource": "request:9"}),
    )
    .await;
    let hidden = writer.token_with("hal", &json!({"presence_hidden": true}));
    beat(
        writer,
        &hidden,
        json!({"module": "pms", "resource": "request:1"}),
    )
    .await;
    assert_eq!(presence(&mut stream, QUIET).await, None);

    // A move: both resources say so.
    beat(
        writer,
        &renamed,
        json!({"module": "pms", "resource": "request:2"}),
    )
    .await;
    let mut moved = [
        presence(&mut stream, bound)
            .await
            .expect("one event of the move"),
        presence(&mut stream, bound)
            .await
            .expect("the other event of the move"),
    ];
    moved.sort_by_key(|d| d["resource"].to_string());
    assert_eq!(moved[0]["resource"], json!("request:1"));
    assert_eq!(moved[0]["count"], json!(0));
    assert_eq!(moved[1]["resource"], json!("request:2"));
    assert_eq!(moved[1]["viewers"][0]["userId"], json!("ann"));

    // A DELETE.
    assert_eq!(writer.leave("ann", "").await, StatusCode::NO_CONTENT);
    assert_eq!(
        expect(&mut stream, bound, "request:2").await["count"],
        json!(0)
    );

    // An expiry, within 5 s after the TTL passes: the clock moves, nobody
    // sleeps through the TTL.
    beat(
        writer,
        &writer.token("cy"),
        json!({"module": "pms", "resource": "request:1"}),
    )
    .await;
    assert_eq!(
        expect(&mut stream, bound, "request:1").await["count"],
        json!(1)
    );
    writer.clock.advance(TTL + Duration::from_secs(1));
    if !Arc::ptr_eq(&writer.clock, &reader.clock) {
        reader.clock.advance(TTL + Duration::from_secs(1));
    }
    let started = Instant::now();
    let data = expect(&mut stream, Duration::from_secs(5), "request:1").await;
    assert_eq!(data["count"], json!(0));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn every_change_reaches_a_stream_on_the_memory_store_within_a_second() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--session-ttl", "30s"]).await;
    every_change_reaches_the_stream(&app, &app, Duration::from_secs(1)).await;
}

/// Two instances on one Redis and one clock.
async fn two_instances(server: &RedisServer) -> (TestApp, TestApp) {
    let prefix = unique_prefix("pstream");
    let url = server.url();
    let args = [
        "--jwt-secret",
        SECRET,
        "--session-ttl",
        "30s",
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--redis-key-prefix",
        &prefix,
    ];
    let clock = Arc::new(ManualClock::new(start_time()));
    let a = spawn_app_on(&args, clock.clone()).await;
    let b = spawn_app_on(&args, clock).await;
    (a, b)
}

#[tokio::test]
async fn every_change_on_one_instance_reaches_a_stream_on_another_within_three_seconds() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server).await;
    every_change_reaches_the_stream(&a, &b, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn every_change_reaches_a_stream_on_the_same_redis_instance() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, _b) = two_instances(&server).await;
    every_change_reaches_the_stream(&a, &a, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn changes_are_coalesced_to_one_event_per_resource_per_250_ms() {
    let app = spawn_app_with(&["--jwt-secret", SECRET]).await;
    let mut stream = Listener::open_at(&app, &stream_path(&app, "r", "watcher")).await;
    expect(&mut stream, Duration::from_secs(1), "r").await;
    let beats = async {
        for n in 0..12 {
            beat(
                &app,
                &app.token(&format!("u{n}")),
                json!({"module": "pms", "resource": "r"}),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let listen = async {
        let mut at = Vec::new();
        let mut last = json!(null);
        while let Some(data) = presence(&mut stream, Duration::from_secs(1)).await {
            at.push(Instant::now());
            last = data;
        }
        (at, last)
    };
    let ((), (at, last)) = tokio::join!(beats, listen);
    assert_eq!(last["count"], json!(12), "the last event shows everyone");
    assert!(at.len() >= 2 && at.len() < 12, "{} events", at.len());
    for pair in at.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(230), "{gap:?} between events");
    }
}

#[tokio::test]
async fn a_bad_resource_list_is_400_invalid_query() {
    let app = spawn_app().await;
    let token = app.token("w");
    let many = (0..21)
        .map(|n| format!("r{n}"))
        .collect::<Vec<_>>()
        .join(",");
    for query in [
        "",
        "resources=",
        "resources=a,,b",
        "resources=%00",
        // Not UTF-8: refused as the viewers GET refuses it, never decoded
        // to U+FFFD (which would merge distinct ids).
        "resources=%FF",
        "resources=a,%C3%28",
        "resources=%E2%82",
        &format!("resources={many}"),
    ] {
        let response = request(
            &app,
            &format!("/api/presence/stream?{query}&access_token={token}"),
        )
        .await;
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_query").await;
    }
    // Twenty is fine; a comma inside an id is percent-encoded.
    let twenty = (0..20)
        .map(|n| format!("r{n}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut stream = Listener::open_at(&app, &stream_path(&app, &twenty, "w")).await;
    for n in 0..20 {
        expect(&mut stream, Duration::from_secs(1), &format!("r{n}")).await;
    }
    // (Another user: the twenty spent this one's burst of reads.)
    let mut stream = Listener::open_at(&app, &stream_path(&app, "a%2Cb", "w2")).await;
    expect(&mut stream, Duration::from_secs(1), "a,b").await;
    let response = request(&app, "/api/presence/stream?resources=a").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn visibility_rules_apply_to_the_whole_stream() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--presence-visibility", "scoped"]).await;
    let scoped = app.token_with("s", &json!({"presence_scope": ["request:*"]}));
    let path = |resources: &str, token: &str| {
        format!("/api/presence/stream?resources={resources}&access_token={token}")
    };
    let refused = request(&app, &path("request:1,doc:1", &scoped)).await;
    assert_error(refused, StatusCode::FORBIDDEN, "forbidden").await;
    let mut ok = Listener::open_at(&app, &path("request:1,request:2", &scoped)).await;
    expect(&mut ok, Duration::from_secs(1), "request:1").await;
    let mut admin = Listener::open_at(&app, &path("doc:1", &app.admin_token("root"))).await;
    expect(&mut admin, Duration::from_secs(1), "doc:1").await;

    let admins = spawn_app_with(&["--jwt-secret", SECRET, "--presence-visibility", "admins"]).await;
    let refused = request(&admins, &path("request:1", &admins.token("u"))).await;
    assert_error(refused, StatusCode::FORBIDDEN, "forbidden").await;
}

#[tokio::test]
async fn presence_streams_count_toward_the_stream_caps() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--max-streams-per-user", "2"]).await;
    let modules = Listener::open_at(
        &app,
        &format!("/api/stats/stream?access_token={}", app.token("u")),
    )
    .await;
    let one = Listener::open_at(&app, &stream_path(&app, "r", "u")).await;
    let third = request(&app, &stream_path(&app, "r", "u")).await;
    assert_error(third, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
    drop(one);
    drop(modules);
    // The places are freed when the clients go.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let again = request(&app, &stream_path(&app, "r", "u")).await;
        if again.status() == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "a place is freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_change_missed_while_the_subscription_was_down_is_read_when_it_returns() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, b) = two_instances(&server).await;
    let mut stream = Listener::open_at(&b, &stream_path(&b, "r", "w")).await;
    expect(&mut stream, Duration::from_secs(3), "r").await;
    // B's pub/sub connection drops; the change is published while it is
    // away, and read when it subscribes again.
    cli(server.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    beat(
        &a,
        &a.token("ann"),
        json!({"module": "pms", "resource": "r"}),
    )
    .await;
    let data = expect(&mut stream, Duration::from_secs(3), "r").await;
    assert_eq!(data["count"], json!(1));
}

#[tokio::test]
async fn changes_reach_streams_on_another_instance_on_a_sharded_cluster() {
    let Some(cluster) = shared_cluster() else {
        return;
    };
    let seeds = cluster.seed_list();
    let prefix = unique_prefix("pstream-cluster");
    let args = [
        "--jwt-secret",
        SECRET,
        "--store",
        "redis",
        "--redis-cluster-nodes",
        &seeds,
        "--redis-shards",
        "3",
        "--redis-key-prefix",
        &prefix,
    ];
    let clock = Arc::new(ManualClock::new(start_time()));
    let a = spawn_app_on(&args, clock.clone()).await;
    let b = spawn_app_on(&args, clock).await;
    let mut stream = Listener::open_at(&b, &stream_path(&b, "r", "w")).await;
    expect(&mut stream, Duration::from_secs(3), "r").await;
    // Users on every shard.
    for user in ["u1", "u2", "u3", "u4", "u5", "u6"] {
        beat(
            &a,
            &a.token(user),
            json!({"module": "pms", "resource": "r"}),
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let data = expect(&mut stream, left, "r").await;
        if data["count"] == json!(6) {
            break;
        }
    }
}

/// The ids `r0` to `r{n-1}`, comma-separated.
fn ids(n: usize) -> String {
    (0..n)
        .map(|i| format!("r{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test]
async fn streams_that_open_and_close_cannot_sweep_past_the_rate_limit() {
    // The default RATE_LIMIT: a burst of 20 reads, then one per 2 s.
    let app = spawn_app_with(&["--jwt-secret", SECRET]).await;
    let path = stream_path(&app, &ids(20), "sweeper");
    let mut opened = 0;
    let mut refused = None;
    // Open, read the 20 documents sent on connect, close, repeat.
    for _ in 0..50 {
        let response = request(&app, &path).await;
        if response.status() != StatusCode::OK {
            refused = Some(response);
            break;
        }
        opened += 1;
        let mut stream = Listener::from_response(response);
        for i in 0..20 {
            expect(&mut stream, Duration::from_secs(1), &format!("r{i}")).await;
        }
    }
    let refused = refused.unwrap_or_else(|| panic!("{opened} streams of 20 opened, none refused"));
    assert_eq!(opened, 1, "a burst of 20 covers one stream of 20");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=40).contains(&retry), "Retry-After: {retry}");
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // The GET draws on the same budget; another user has their own.
    let (status, _) = app
        .get("/api/presence/resources/r0", &app.token("sweeper"))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let mut other = Listener::open_at(&app, &stream_path(&app, &ids(20), "other")).await;
    expect(&mut other, Duration::from_secs(1), "r0").await;
}

#[tokio::test]
async fn a_stream_costs_one_read_per_resource_of_the_budget_it_shares_with_the_get() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--rate-limit", "4,1h"]).await;
    // Two resources cost two, a GET one: three of four spent.
    let two = Listener::open_at(&app, &stream_path(&app, "a,b", "u")).await;
    let (status, _) = app.get("/api/presence/resources/c", &app.token("u")).await;
    assert_eq!(status, StatusCode::OK);
    // Two more do not fit the one left, and take nothing from it.
    let refused = request(&app, &stream_path(&app, "c,d", "u")).await;
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let one = Listener::open_at(&app, &stream_path(&app, "c", "u")).await;
    let refused = request(&app, &stream_path(&app, "d", "u")).await;
    assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // A list the burst can never cover is a bad list, not a wait.
    let too_many = request(&app, &stream_path(&app, &ids(5), "v")).await;
    assert_error(too_many, StatusCode::BAD_REQUEST, "invalid_query").await;
    drop((two, one));
}
