//! Limits a client cannot get around, each crossed over a real socket: the
//! size of a request head and its number of fields, slow heads (slow-loris)
//! and idle connections, slow bodies, requests in flight, and connections.
//! Body size, field lengths, sessions per user and streams have their tests
//! beside their endpoints.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::helpers::{SECRET, TestApp, assert_error, spawn_app, spawn_app_with};

/// A raw HTTP/1.1 connection, for what a well-behaved client never sends.
struct Raw(TcpStream);

/// A response read off a [`Raw`] connection.
#[derive(Debug)]
struct RawResponse {
    status: u16,
    body: Value,
}

impl Raw {
    async fn connect(app: &TestApp) -> Self {
        let addr = app.base.trim_start_matches("http://");
        Self(TcpStream::connect(addr).await.unwrap())
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).await.unwrap();
    }

    /// Sends the head of a heartbeat that announces `length` body bytes.
    async fn start_heartbeat(&mut self, token: &str, length: usize) {
        let head = format!(
            "POST /api/stats/heartbeat HTTP/1.1\r\nhost: test\r\n\
             authorization: Bearer {token}\r\ncontent-type: application/json\r\n\
             content-length: {length}\r\n\r\n"
        );
        self.send(head.as_bytes()).await;
    }

    /// Reads one response; `None` if the server closed the connection
    /// without answering. Waits at most 10 s.
    async fn response(&mut self) -> Option<RawResponse> {
        let mut buf = Vec::new();
        let read = async {
            let mut chunk = [0u8; 4096];
            loop {
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + length {
                        let body = &buf[end + 4..end + 4 + length];
                        let status = head.split(' ').nth(1)?.parse().ok()?;
                        return Some(RawResponse {
                            status,
                            body: serde_json::from_slice(body).unwrap_or(Value::Null),
                        });
                    }
                }
                match self.0.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server neither answered nor closed within 10 s")
    }

    /// Whether the server has closed the connection, waiting up to 10 s.
    async fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.0.read(&mut byte)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn a_request_head_over_16_kib_is_431() {
    let app = spawn_app().await;
    let token = app.token("1");
    let response = app
        .client
        .get(app.url("/api/stats/modules"))
        .bearer_auth(&token)
        .header("x-padding", "x".repeat(17 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    // Just under the limit is served.
    let response = app
        .client
        .get(app.url("/api/stats/modules"))
        .bearer_auth(&token)
        .header("x-padding", "x".repeat(15 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn more_than_64_header_fields_is_431() {
    let app = spawn_app().await;
    let mut request = app
        .client
        .get(app.url("/api/stats/modules"))
        .bearer_auth(app.token("1"));
    for i in 0..70 {
        request = request.header(format!("x-field-{i}"), "1");
    }
    let response = request.send().await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(response.headers()["connection"], "close");
}

/// A GET of the module counts over a raw connection whose head has
/// exactly `fields` header fields, `host` and `authorization` among them.
async fn get_with_fields(app: &TestApp, fields: usize) -> Option<RawResponse> {
    let mut head = format!(
        "GET /api/stats/modules HTTP/1.1\r\nhost: test\r\nauthorization: Bearer {}\r\n",
        app.token("1")
    );
    for i in 2..fields {
        head.push_str(&format!("x-field-{i}: 1\r\n"));
    }
    head.push_str("\r\n");
    let mut raw = Raw::connect(app).await;
    raw.send(head.as_bytes()).await;
    raw.response().await
}

#[tokio::test]
async fn exactly_64_header_fields_are_served_and_65_are_431() {
    let app = spawn_app().await;
    let served = get_with_fields(&app, 64).await.expect("an answer");
    assert_eq!(served.status, 200, "64 fields: {served:?}");
    let refused = get_with_fields(&app, 65).await.expect("an answer");
    assert_eq!(refused.status, 431, "65 fields: {refused:?}");
}

#[tokio::test]
async fn a_head_that_trickles_in_is_cut_off() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--header-read-timeout", "300ms"]).await;
    let mut slow = Raw::connect(&app).await;
    slow.send(b"GET /api/stats/modules HTTP/1.1\r\nhost: test\r\n")
        .await;
    // A header line every 100 ms: never idle, never done. The limit is on
    // the whole head, so the server must hang up while this goes on.
    let started = Instant::now();
    let cut_off = loop {
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
        if slow.0.write_all(b"x-slow: 1\r\n").await.is_err() {
            break true;
        }
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(100), slow.0.read(&mut byte)).await {
            Err(_) => {}         // still open: keep trickling
            Ok(_) => break true, // closed, or answered before closing
        }
    };
    assert!(
        cut_off,
        "a head still arriving 5 s after HEADER_READ_TIMEOUT (300 ms) is cut off"
    );
    // Everyone else is still served.
    assert_eq!(app.counts("procurement").await, [0, 0, 0]);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--header-read-timeout", "300ms"]).await;
    let mut conn = Raw::connect(&app).await;
    conn.send(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await;
    assert_eq!(conn.response().await.unwrap().status, 200);
    assert!(
        conn.closed_by_server().await,
        "a connection idle for HEADER_READ_TIMEOUT after a response is closed"
    );
}

#[tokio::test]
async fn a_body_that_trickles_in_gets_408() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--request-timeout", "300ms"]).await;
    let mut slow = Raw::connect(&app).await;
    slow.start_heartbeat(&app.token("1"), 16).await;
    slow.send(b"{\"module\"").await;
    let response = slow.response().await.expect("an answer, not a hang-up");
    assert_eq!(response.status, 408, "{response:?}");
    assert_eq!(response.body["code"], "request_timeout", "{response:?}");
    assert_eq!(app.counts("procurement").await, [0, 0, 0]);
}

#[tokio::test]
async fn past_max_concurrent_requests_the_service_sheds_with_503() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--max-concurrent-requests", "2"]).await;
    let body = br#"{"module":"pms"}"#;
    // Two heartbeats whose bodies have not arrived yet are in flight.
    let mut held = Vec::new();
    for user in ["a", "b"] {
        let mut conn = Raw::connect(&app).await;
        conn.start_heartbeat(&app.token(user), body.len()).await;
        held.push(conn);
    }
    let shed = wait_for_shedding(&app).await;
    // Liveness is never shed.
    let health = app.request(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        shed.headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("1")
    );
    assert_error(shed, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;

    // The held requests were not harmed: they finish, then there is room.
    for conn in &mut held {
        conn.send(body).await;
        assert_eq!(conn.response().await.unwrap().status, 200);
    }
    assert_eq!(app.counts("procurement").await[0], 2);
    let metrics = app.request(reqwest::Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("presence_requests_shed_total ") && !l.ends_with(" 0")),
        "shed requests are counted"
    );
}

/// Polls until a request is shed: the held requests reach the handler a
/// moment after their heads are written.
async fn wait_for_shedding(app: &TestApp) -> reqwest::Response {
    let token = app.token("observer");
    for _ in 0..100 {
        let response = app
            .request(reqwest::Method::GET, "/api/stats/modules", Some(&token))
            .await;
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            return response;
        }
        assert_eq!(response.status(), StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no request was shed with MAX_CONCURRENT_REQUESTS in flight");
}

#[tokio::test]
async fn past_max_connections_new_ones_wait_until_one_closes() {
    let app = spawn_app_with(&["--jwt-secret", SECRET, "--max-connections", "1"]).await;
    let mut first = Raw::connect(&app).await;
    first
        .send(b"GET /healthz HTTP/1.1\r\nhost: test\r\n\r\n")
        .await;
    assert_eq!(first.response().await.unwrap().status, 200);

    let waiting = tokio::time::timeout(
        Duration::from_millis(500),
        app.request(reqwest::Method::GET, "/healthz", None),
    )
    .await;
    assert!(waiting.is_err(), "a second connection is not served yet");

    drop(first);
    let response = app.request(reqwest::Method::GET, "/healthz", None).await;
    assert_eq!(response.status(), StatusCode::OK);
}

/// A client that pipelines requests for a large file and never reads the
/// answers: the server's writes block. Such a connection must not be held
/// past `REQUEST_TIMEOUT` (here 1 s), or a handful of them take every
/// connection for good.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    let app = spawn_app_with(&[
        "--jwt-secret",
        SECRET,
        "--max-connections",
        "4",
        "--request-timeout",
        "1s",
        "--header-read-timeout",
        "1s",
    ])
    .await;
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().unwrap();
    let requests = "GET /admin/dashboard.js HTTP/1.1\r\nhost: test\r\n\r\n".repeat(100);
    let mut stuck = Vec::new();
    for _ in 0..4 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(2048).unwrap();
        let mut conn = socket.connect(addr).await.unwrap();
        conn.write_all(requests.as_bytes()).await.unwrap();
        stuck.push(conn); // and never read
    }
    // Every connection is taken, so a probe waits until they are closed.
    let started = Instant::now();
    let probe = tokio::time::timeout(
        Duration::from_secs(8),
        app.request(reqwest::Method::GET, "/healthz", None),
    )
    .await
    .expect("the connections that stopped reading were closed, so /healthz answered");
    assert_eq!(probe.status(), StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "the probe had to wait for the cut: {:?}",
        started.elapsed()
    );
    // The server closed them: reading now drains what was sent, then ends.
    for mut conn in stuck {
        let mut sink = vec![0u8; 1 << 16];
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match conn.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(drained.is_ok(), "the stuck connection was closed");
    }
}

/// A head that announces a body over 4 KiB is answered 413 at once, without
/// waiting for a body that is not coming (which took `REQUEST_TIMEOUT` and
/// a 408 before).
#[tokio::test]
async fn a_declared_body_over_4_kib_is_413_at_once() {
    let app = spawn_app().await;
    let mut conn = Raw::connect(&app).await;
    conn.start_heartbeat(&app.token("1"), 4097).await;
    let response = tokio::time::timeout(Duration::from_secs(2), conn.response())
        .await
        .expect("answered at once, not after REQUEST_TIMEOUT (10 s)")
        .expect("an answer, not a hang-up");
    assert_eq!(response.status, 413, "{response:?}");
    assert_eq!(response.body["code"], "payload_too_large", "{response:?}");

    // Exactly 4 KiB is still a body like any other.
    let mut body = br#"{"module":"pms","padding":""#.to_vec();
    body.resize(4096 - 2, b'x');
    body.extend_from_slice(b"\"}");
    let mut conn = Raw::connect(&app).await;
    conn.start_heartbeat(&app.token("1"), body.len()).await;
    conn.send(&body).await;
    assert_eq!(conn.response().await.unwrap().status, 200);
}
