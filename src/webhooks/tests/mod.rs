//! The deliverer against a real receiver on 127.0.0.1 ([`receiver`]: the
//! layers below HTTP name no HTTP framework, tests included), a memory
//! outbox and a manual clock.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use chrono::{TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

mod receiver;

use receiver::{Received, Receiver};

use super::*;
use crate::clock::{ManualClock, Millis};
use crate::config::{WebhookEndpoint, WebhookSecret, Webhooks};
use crate::events::{Event, Kind, Reason};
use crate::metrics::Present;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

/// An event of `kind` by `user` at `at`, in module `pms` (a leave with
/// reason `left`).
pub(super) fn event(kind: Kind, user: &str, at: Millis) -> Event {
    Event {
        kind,
        at,
        user: user.into(),
        module: Some("pms".into()),
        resource: None,
        reason: kind.counterpart().map(|_| Reason::Left),
        state: None,
        hidden: false,
    }
}

/// A deliverer running against `url`.
struct Fixture {
    outbox: Arc<MemoryOutbox>,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
    status: Arc<EndpointStatus>,
    key: String,
    cancel: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn start(url: &str, tune: impl FnOnce(&mut Webhooks)) -> Fixture {
    let endpoint = WebhookEndpoint::parse(url).unwrap();
    let mut webhooks = Webhooks {
        endpoints: vec![endpoint.clone()],
        secret: WebhookSecret::parse(SECRET).unwrap(),
        events: None,
        leave_grace: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        retry_for: Duration::from_secs(60),
        queue_max: 1_000,
    };
    tune(&mut webhooks);
    let mut settings = Settings::new(&webhooks).unwrap();
    settings.poll = Duration::from_millis(10);
    settings.backoff_first = Duration::from_millis(20);
    settings.backoff_max = Duration::from_millis(80);
    let outbox = Arc::new(MemoryOutbox::new(
        [endpoint.key.clone()],
        webhooks.queue_max,
    ));
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 1, 14, 9, 30, 0).unwrap(),
    ));
    let metrics = Arc::new(Metrics::new());
    let status = EndpointStatus::detached(&endpoint);
    let cancel = CancellationToken::new();
    tokio::spawn(deliver::run(
        endpoint.clone(),
        Outbox::Memory(outbox.clone()),
        Arc::new(settings),
        clock.clone(),
        metrics.clone(),
        status.clone(),
        cancel.clone(),
    ));
    Fixture {
        outbox,
        clock,
        metrics,
        status,
        key: endpoint.key,
        cancel,
    }
}

impl Fixture {
    fn append(&self, events: &[(Kind, &str)]) {
        let at = self.clock.now_ms();
        self.outbox
            .append(at, events.iter().map(|&(kind, user)| event(kind, user, at)));
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    async fn waiting(&self) -> u64 {
        Outbox::Memory(self.outbox.clone())
            .backlog(&self.key)
            .await
            .unwrap()
            .events
    }

    fn metric(&self, name: &str) -> f64 {
        let text = self.metrics.render(&Present {
            modules: &[],
            users_anywhere: 0,
            open_streams: 0,
            requests_in_flight: 0,
            open_connections: 0,
            runtime_tasks: 0,
        });
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |v| v.parse().unwrap())
    }
}

/// Waits (in real time, up to 5 s) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never: {what}");
}

/// Lets the deliverer run a while (real time) to show nothing happens.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

fn ok(_: usize, _: &Received) -> (u16, String) {
    (200, String::new())
}

#[tokio::test]
async fn a_batch_is_signed_so_that_a_standard_webhooks_receiver_verifies_it() {
    let receiver = Receiver::start(ok).await;
    let f = start(&receiver.url(), |_| {});
    f.append(&[(Kind::UserOnline, "42"), (Kind::ModuleEnter, "42")]);
    settle().await;
    assert!(receiver.got().is_empty(), "sent before its linger");
    f.advance(Duration::from_secs(1));
    eventually("a delivery", || receiver.got().len() == 1).await;
    let r = &receiver.got()[0];
    assert_eq!(r.header("content-type"), "application/json");
    let id = r.header("webhook-id");
    let timestamp = r.header("webhook-timestamp");
    // The wall clock, which the receiver checks against its own.
    let sent_at: i64 = timestamp.parse().unwrap();
    assert!(
        (sent_at - chrono::Utc::now().timestamp()).abs() <= 5,
        "{timestamp}"
    );
    // Computed here as a receiver would, from the secret's text.
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", r.body).as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(r.header("webhook-signature"), format!("v1,{expected}"));
    let body = r.json();
    assert_eq!(body["type"], "presence.events");
    assert_eq!(body["timestamp"], "2026-01-14T09:30:01.000Z");
    let events = body["data"]["events"].as_array().unwrap();
    assert_eq!(id, format!("msg_{}", events[0]["id"].as_str().unwrap()));
    assert!(events[0]["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(
        r.events(),
        [
            ("user.online".to_owned(), "42".to_owned()),
            ("module.enter".to_owned(), "42".to_owned())
        ]
    );
    assert_eq!(events[0]["at"], "2026-01-14T09:30:00.000Z");
    eventually("a delivery recorded", || {
        f.status.get().last_delivery_at.is_some()
    })
    .await;
    assert_eq!(f.waiting().await, 0);
    assert!(
        (f.metric("presence_webhook_deliveries_total{outcome=\"delivered\"}") - 1.0).abs() < 1e-9
    );
}

#[tokio::test]
async fn batches_hold_at_most_100_events_and_keep_their_order() {
    let receiver = Receiver::start(ok).await;
    let f = start(&receiver.url(), |_| {});
    let users: Vec<String> = (0..250).map(|i| i.to_string()).collect();
    let events: Vec<(Kind, &str)> = users
        .iter()
        .map(|u| (Kind::UserState, u.as_str()))
        .collect();
    f.append(&events);
    // Full batches go at once; the rest after its linger.
    eventually("two full batches", || receiver.got().len() == 2).await;
    settle().await;
    assert_eq!(receiver.got().len(), 2);
    f.advance(Duration::from_secs(1));
    eventually("the last batch", || receiver.got().len() == 3).await;
    let got = receiver.got();
    let sizes: Vec<usize> = got.iter().map(|r| r.events().len()).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let order: Vec<String> = got
        .iter()
        .flat_map(|r| r.events())
        .map(|(_, u)| u)
        .collect();
    assert_eq!(order, users);
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    eventually("all committed", || f.outbox.lock().entries.is_empty()).await;
}

#[tokio::test]
async fn a_leave_and_a_return_within_the_grace_send_nothing() {
    let receiver = Receiver::start(ok).await;
    let f = start(&receiver.url(), |_| {});
    f.append(&[(Kind::ModuleLeave, "42"), (Kind::UserOffline, "42")]);
    settle().await;
    f.advance(Duration::from_secs(2));
    f.append(&[
        (Kind::UserOnline, "42"),
        (Kind::ModuleEnter, "42"),
        (Kind::UserState, "7"),
    ]);
    settle().await;
    f.advance(Duration::from_secs(10));
    eventually("the marker", || !receiver.got().is_empty()).await;
    settle().await;
    let got = receiver.got();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].events(), [("user.state".to_owned(), "7".to_owned())]);
    assert_eq!(f.waiting().await, 0);
}

#[tokio::test]
async fn a_leave_goes_once_the_grace_is_over() {
    let receiver = Receiver::start(ok).await;
    let f = start(&receiver.url(), |_| {});
    f.append(&[(Kind::ResourceLeave, "42"), (Kind::UserState, "7")]);
    f.advance(Duration::from_secs(4));
    settle().await;
    assert!(
        receiver.got().is_empty(),
        "the leave (and what follows) is held"
    );
    f.advance(Duration::from_secs(2));
    eventually("the leave", || !receiver.got().is_empty()).await;
    assert_eq!(
        receiver.got()[0].events(),
        [
            ("resource.leave".to_owned(), "42".to_owned()),
            ("user.state".to_owned(), "7".to_owned())
        ]
    );
}

#[tokio::test]
async fn filtered_events_are_skipped_and_committed() {
    let receiver = Receiver::start(ok).await;
    let f = start(&receiver.url(), |w| {
        w.events = Some(vec![Kind::UserOnline]);
    });
    f.append(&[
        (Kind::UserState, "1"),
        (Kind::UserOnline, "2"),
        (Kind::UserState, "3"),
    ]);
    f.advance(Duration::from_secs(1));
    eventually("a delivery", || !receiver.got().is_empty()).await;
    assert_eq!(
        receiver.got()[0].events(),
        [("user.online".to_owned(), "2".to_owned())]
    );
    eventually("all committed", || f.outbox.lock().entries.is_empty()).await;
}

#[tokio::test]
async fn a_batch_refused_twice_is_retried_with_the_same_id_and_body_and_delivered_once() {
    let receiver = Receiver::start(|n, _| (if n < 2 { 503 } else { 200 }, String::new())).await;
    let f = start(&receiver.url(), |_| {});
    f.append(&[(Kind::UserOnline, "1"), (Kind::UserOnline, "2")]);
    f.advance(Duration::from_secs(1));
    eventually("three attempts", || receiver.got().len() == 3).await;
    eventually("a delivery recorded", || {
        f.status.get().last_delivery_at.is_some()
    })
    .await;
    settle().await;
    let got = receiver.got();
    assert_eq!(got.len(), 3, "delivered once");
    for r in &got[1..] {
        assert_eq!(r.header("webhook-id"), got[0].header("webhook-id"));
        assert_eq!(r.body, got[0].body);
    }
    let failure = f.status.get().last_failure.unwrap();
    assert_eq!(
        (failure.status, failure.error.as_str()),
        (Some(503), "HTTP 503 Service Unavailable")
    );
    assert!((f.metric("presence_webhook_deliveries_total{outcome=\"failed\"}") - 2.0).abs() < 1e-9);
    assert!(
        (f.metric("presence_webhook_deliveries_total{outcome=\"delivered\"}") - 1.0).abs() < 1e-9
    );
    assert_eq!(f.waiting().await, 0);
}

#[tokio::test]
async fn a_batch_still_refused_after_the_retry_window_is_dropped_and_the_next_goes() {
    let receiver = Receiver::start(|_, r| {
        (
            if r.body.contains("doomed") { 500 } else { 200 },
            String::new(),
        )
    })
    .await;
    let f = start(&receiver.url(), |w| {
        w.retry_for = Duration::from_millis(300)
    });
    f.append(&[(Kind::UserOnline, "doomed")]);
    f.advance(Duration::from_secs(1));
    eventually("a dropped batch", || {
        f.metric("presence_webhook_deliveries_total{outcome=\"dropped\"}") >= 1.0
    })
    .await;
    let attempts = receiver.got().len();
    assert!(attempts >= 2, "{attempts} attempts");
    f.append(&[(Kind::UserOnline, "fine")]);
    f.advance(Duration::from_secs(1));
    eventually("the next batch", || {
        receiver.got().iter().any(|r| r.body.contains("fine"))
    })
    .await;
    assert_eq!(receiver.got().len(), attempts + 1);
    assert_eq!(f.waiting().await, 0);
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let elsewhere = Receiver::start(ok).await;
    let location = format!("location: {}\r\n", elsewhere.url());
    let receiver = Receiver::start(move |_, _| (302, location.clone())).await;
    let f = start(&receiver.url(), |w| {
        w.retry_for = Duration::from_millis(100)
    });
    f.append(&[(Kind::UserOnline, "1")]);
    f.advance(Duration::from_secs(1));
    eventually("a failure", || f.status.get().last_failure.is_some()).await;
    assert_eq!(f.status.get().last_failure.unwrap().status, Some(302));
    settle().await;
    assert!(elsewhere.got().is_empty());
}

#[tokio::test]
async fn a_refused_connection_is_a_failure_without_a_status() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://user:pa55@{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let f = start(&url, |_| {});
    f.append(&[(Kind::UserOnline, "1")]);
    f.advance(Duration::from_secs(1));
    eventually("a failure", || f.status.get().last_failure.is_some()).await;
    let status = f.status.get();
    let failure = status.last_failure.unwrap();
    assert_eq!(failure.status, None);
    assert!(
        failure.error.starts_with("cannot connect"),
        "{}",
        failure.error
    );
    assert!(!failure.error.contains("pa55") && !status.url.contains("pa55"));
    assert!(status.delivering && status.last_delivery_at.is_none());
}
