//! A webhook receiver on 127.0.0.1 for the tests: it checks every
//! delivery's Standard Webhooks signature itself (its own HMAC, not the
//! service's code), records the events, and answers what the test says.
//! It runs on a thread with its own runtime, so it outlives a test's
//! runtime and serves binaries as well as in-process apps.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

/// A secret in the Standard Webhooks form: `whsec_` and base64 of 32 bytes.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwMfKQ9r8GKYo=";

#[derive(Default)]
struct Seen {
    /// Every event received, in arrival order (duplicates included).
    events: Vec<Value>,
    /// Every delivery's `webhook-id`.
    deliveries: Vec<String>,
}

struct Inner {
    key: Vec<u8>,
    seen: Mutex<Seen>,
    /// The status to answer; 200 unless a test says otherwise.
    status: AtomicU16,
    attempts: AtomicUsize,
    bad_signatures: AtomicUsize,
}

/// A running receiver.
pub struct Receiver {
    addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1, verifying with [`SECRET`].
    pub fn start() -> Self {
        let key = STANDARD
            .decode(SECRET.strip_prefix("whsec_").unwrap())
            .unwrap();
        let inner = Arc::new(Inner {
            key,
            seen: Mutex::default(),
            status: AtomicU16::new(200),
            attempts: AtomicUsize::new(0),
            bad_signatures: AtomicUsize::new(0),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(inner.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app).await.unwrap();
            });
        });
        Self { addr, inner }
    }

    /// The URL to configure as `WEBHOOK_URL`.
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Answers `status` from now on.
    pub fn answer(&self, status: u16) {
        self.inner.status.store(status, Ordering::SeqCst);
    }

    /// Deliveries attempted so far, answered whatever they were answered.
    pub fn attempts(&self) -> usize {
        self.inner.attempts.load(Ordering::SeqCst)
    }

    /// Every event accepted (answered 2xx), in arrival order.
    pub fn events(&self) -> Vec<Value> {
        assert_eq!(
            self.inner.bad_signatures.load(Ordering::SeqCst),
            0,
            "a delivery had a signature that does not verify"
        );
        self.inner.seen.lock().unwrap().events.clone()
    }

    /// The accepted events of `user`, as `type` plus the resource or
    /// module they name and their reason, like the store's event suite.
    pub fn kinds_of(&self, user: &str) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| e["userId"] == user)
            .map(describe)
            .collect()
    }

    /// Waits up to `limit` for `done` to hold of the accepted events.
    pub fn wait_for(&self, limit: Duration, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(
                start.elapsed() < limit,
                "not within {limit:?}; received {events:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `type` and what it names: `resource.leave request:1 left`.
pub fn describe(e: &Value) -> String {
    let mut out = e["type"].as_str().unwrap().to_owned();
    if let Some(on) = e["resource"].as_str().or(e["module"].as_str()) {
        out = format!("{out} {on}");
    }
    if let Some(reason) = e["reason"].as_str() {
        out = format!("{out} {reason}");
    }
    out
}

async fn receive(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    inner.attempts.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signatures) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&inner.key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (t - chrono::Utc::now().timestamp()).abs() < 300);
    if !fresh || !signatures.split(' ').any(|s| s == expected) {
        inner.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    let status = StatusCode::from_u16(inner.status.load(Ordering::SeqCst)).unwrap();
    if !status.is_success() {
        return status;
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], "presence.events");
    let mut seen = inner.seen.lock().unwrap();
    seen.deliveries.push(id);
    seen.events
        .extend(body["data"]["events"].as_array().unwrap().iter().cloned());
    status
}
