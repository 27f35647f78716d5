//! GET /api/stats/stream: Server-Sent Events of the module counts.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::helpers::{SECRET, TestApp, assert_error, build_state, spawn_app, spawn_app_with};
use super::redis_server::{RedisServer, unique_prefix};

/// One SSE event or comment, as a client sees it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Sse {
    Event { name: String, data: Value },
    Comment(String),
}

pub(super) fn parse_block(block: &str) -> Sse {
    let mut name = String::new();
    let mut data = String::new();
    for line in block.lines() {
        if let Some(comment) = line.strip_prefix(':') {
            return Sse::Comment(comment.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim());
        }
    }
    Sse::Event {
        name,
        data: serde_json::from_str(&data).unwrap(),
    }
}

/// An open stream over HTTP, read block by block.
pub(super) struct Listener {
    bytes:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buffer: String,
}

impl Listener {
    async fn open(app: &TestApp, token: &str) -> Self {
        Self::open_at(app, &format!("/api/stats/stream?access_token={token}")).await
    }

    /// An open stream at `path` (with its query), which must answer 200.
    pub(super) async fn open_at(app: &TestApp, path: &str) -> Self {
        let response = app
            .client
            .get(app.url(path))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        Self::from_response(response)
    }

    /// The stream of `response`, which must be a 200 event stream.
    pub(super) fn from_response(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            bytes: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event or comment, waiting at most `within`.
    pub(super) async fn next(&mut self, within: Duration) -> Option<Sse> {
        tokio::time::timeout(within, async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block: String = self.buffer.drain(..end + 2).collect();
                    return parse_block(&block);
                }
                let chunk = self.bytes.next().await.expect("stream open").unwrap();
                self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        })
        .await
        .ok()
    }

    /// The next `modules` event's data.
    async fn counts(&mut self, within: Duration) -> Value {
        loop {
            match self.next(within).await.expect("an event in time") {
                Sse::Event { name, data } if name == "modules" => return data,
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn the_first_event_is_the_counts_and_changes_follow_within_two_seconds() {
    let app = spawn_app().await;
    app.beat_ok("A", json!({"module": "pms"})).await;
    let mut listener = Listener::open(&app, &app.token("watcher")).await;
    let first = listener.counts(Duration::from_secs(2)).await;
    assert_eq!(
        first["procurement"],
        json!({"totalUsers": 1, "activeNow": 1, "idleNow": 0, "today": 1})
    );
    assert_eq!(
        first,
        {
            let mut m = app.modules().await;
            m["timestamp"] = first["timestamp"].clone();
            m
        },
        "the same JSON as GET /api/stats/modules"
    );

    app.beat_ok("B", json!({"module": "ih"})).await;
    let next = listener.counts(Duration::from_secs(2)).await;
    assert_eq!(next["innovation"]["activeNow"], json!(1));
    // A's move is the next change.
    app.beat_ok("A", json!({"module": "ih"})).await;
    let next = listener.counts(Duration::from_secs(2)).await;
    assert_eq!(
        (
            next["procurement"]["activeNow"].clone(),
            next["innovation"]["activeNow"].clone()
        ),
        (json!(0), json!(2))
    );
    // Expiry is a change with no request behind it.
    app.clock.advance(Duration::from_secs(300));
    let next = listener.counts(Duration::from_secs(2)).await;
    assert_eq!(next["innovation"]["activeNow"], json!(0));
}

#[tokio::test]
async fn a_heartbeat_that_changes_no_count_sends_no_event() {
    let app = spawn_app().await;
    app.beat_ok("A", json!({"module": "pms"})).await;
    let mut listener = Listener::open(&app, &app.token("watcher")).await;
    listener.counts(Duration::from_secs(2)).await;
    app.beat_ok("A", json!({"module": "pms", "page": "/other"}))
        .await;
    assert_eq!(
        listener.next(Duration::from_millis(2500)).await,
        None,
        "nothing changed"
    );
}

#[tokio::test]
async fn the_token_comes_from_the_header_or_access_token_and_is_required() {
    let app = spawn_app().await;
    let response = app.request(Method::GET, "/api/stats/stream", None).await;
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = app
        .request(Method::GET, "/api/stats/stream?access_token=nope", None)
        .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let response = app
        .request(Method::GET, "/api/stats/stream", Some(&app.token("1")))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn streams_per_user_are_capped_and_freed_when_a_client_leaves() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--max-streams-per-user", "2"]).await;
    let token = app.token("tabby");
    let first = Listener::open(&app, &token).await;
    let _second = Listener::open(&app, &token).await;
    let response = app
        .request(
            reqwest::Method::GET,
            &format!("/api/stats/stream?access_token={token}"),
            None,
        )
        .await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
    let _other_user = Listener::open(&app, &app.token("other")).await;
    drop(first);
    // The server notices the closed connection at its next write at the latest.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while app.state.streams.open() > 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the closed stream was released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _third = Listener::open(&app, &token).await;
}

#[tokio::test]
async fn streams_are_capped_in_total() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--max-streams", "2"]).await;
    let _a = Listener::open(&app, &app.token("a")).await;
    let _b = Listener::open(&app, &app.token("b")).await;
    let response = app
        .request(
            reqwest::Method::GET,
            "/api/stats/stream",
            Some(&app.token("c")),
        )
        .await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_streams").await;
}

/// In-process, on paused time: the publisher and the keep-alive run on
/// tokio's clock, so a minute passes in no time.
#[tokio::test(start_paused = true)]
async fn changes_are_coalesced_to_one_event_a_second_with_keep_alives_between() {
    let (state, _clock, _) = build_state(&["--jwt-secret", SECRET]);
    let cancel = CancellationToken::new();
    let publisher = tokio::spawn(presence::http::sse::counts::run(
        state.streams.clone(),
        state.store.clone(),
        state.modules.clone(),
        cancel.clone(),
    ));
    let router = presence::app(state.clone(), &[]);
    let token = super::helpers::sign(&json!({"sub": "w", "exp": 4_000_000_000_u64}));
    let request = Request::get(format!("/api/stats/stream?access_token={token}"))
        .body(Body::empty())
        .unwrap();
    let mut body = router.clone().oneshot(request).await.unwrap().into_body();
    // A reader stamps each block with the (paused) time it arrives.
    let (tx, mut blocks) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
            let _ = tx.send((tokio::time::Instant::now(), parse_block(&text)));
        }
    });
    let (_, first) = blocks.recv().await.unwrap();
    assert!(matches!(first, Sse::Event { ref name, .. } if name == "modules"));

    // Ten changes within half a second.
    let started = tokio::time::Instant::now();
    for i in 0..10 {
        let token =
            super::helpers::sign(&json!({"sub": format!("u{i}"), "exp": 4_000_000_000_u64}));
        let beat = Request::post("/api/stats/heartbeat")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"module":"pms"}"#))
            .unwrap();
        assert_eq!(router.clone().oneshot(beat).await.unwrap().status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(40)).await;
    let mut events = Vec::new();
    let mut comments = 0;
    while let Ok((at, block)) = blocks.try_recv() {
        match block {
            Sse::Event { data, .. } => {
                events.push((at - started, data["procurement"]["activeNow"].clone()))
            }
            Sse::Comment(text) => {
                assert_eq!(text, "keep-alive");
                comments += 1;
            }
        }
    }
    assert_eq!(
        events.last().unwrap().1,
        json!(10),
        "the final count arrives: {events:?}"
    );
    assert!(
        events.len() <= 2,
        "ten changes in 0.5 s make at most two events: {events:?}"
    );
    assert!(
        events
            .windows(2)
            .all(|w| w[1].0 - w[0].0 >= Duration::from_secs(1)),
        "at most one a second: {events:?}"
    );
    assert!(
        events
            .iter()
            .all(|(at, _)| *at <= Duration::from_millis(1600)),
        "each within a second and a bit: {events:?}"
    );
    assert!(
        (2..=3).contains(&comments),
        "a keep-alive every 15 s: {comments} in 40 s"
    );

    // Shutdown ends the stream, so draining is not held up by it.
    state.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), reader)
        .await
        .expect("the stream ended")
        .unwrap();
    cancel.cancel();
    publisher.await.unwrap();
}

#[tokio::test]
async fn a_heartbeat_on_one_instance_reaches_streams_on_another() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let prefix = unique_prefix("stream");
    let args = |p: &str| {
        vec![
            "--jwt-secret".to_owned(),
            SECRET.to_owned(),
            "--store".into(),
            "redis".into(),
            "--redis-url".into(),
            server.url(),
            "--redis-key-prefix".into(),
            p.to_owned(),
        ]
    };
    let a_args = args(&prefix);
    let a = spawn_app_with(&a_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let b = spawn_app_with(&a_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let mut on_b = Listener::open(&b, &b.token("watcher")).await;
    assert_eq!(
        on_b.counts(Duration::from_secs(2)).await["procurement"]["activeNow"],
        json!(0)
    );
    a.beat_ok("1", json!({"module": "pms"})).await;
    assert_eq!(
        on_b.counts(Duration::from_secs(2)).await["procurement"]["activeNow"],
        json!(1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_ends_when_its_token_expires() {
    let (state, clock, _) = build_state(&["--jwt-secret", SECRET]);
    let router = presence::app(state.clone(), &[]);
    let now_s = presence::clock::Clock::now_ms(&*clock) / 1000;
    // Expires in 90 s, plus the 30 s leeway.
    let token = super::helpers::sign(&json!({"sub": "w", "exp": now_s + 90}));
    let request = Request::get(format!("/api/stats/stream?access_token={token}"))
        .body(Body::empty())
        .unwrap();
    let mut body = router.oneshot(request).await.unwrap().into_body();
    let started = tokio::time::Instant::now();
    while let Some(frame) = body.frame().await {
        frame.unwrap();
    }
    assert_eq!(started.elapsed().as_secs(), 120, "ended at exp + leeway");
    drop(body); // as hyper does with a finished body
    assert_eq!(state.streams.open(), 0, "and released its place");
}

/// A stream whose client reads is never cut off for being quiet: the
/// guard against clients that stop reading (no write progress for
/// `REQUEST_TIMEOUT`) looks at writes that block, not at silence.
#[tokio::test]
async fn a_quiet_stream_outlives_the_request_timeout() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--request-timeout", "1s"]).await;
    let mut listener = Listener::open(&app, &app.token("watcher")).await;
    listener.counts(Duration::from_secs(2)).await;
    // Three times the timeout without a byte to send.
    assert_eq!(listener.next(Duration::from_secs(3)).await, None);
    app.beat_ok("A", json!({"module": "pms"})).await;
    let next = listener.counts(Duration::from_secs(3)).await;
    assert_eq!(next["procurement"]["activeNow"], json!(1));
}
