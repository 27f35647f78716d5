//! Prometheus metrics (`GET /metrics`), with the `prometheus-client` crate.
//!
//! Counters and histograms are updated as things happen (heartbeats, ended
//! sessions, HTTP requests, store calls); gauges that describe the present
//! (active users and sessions per module, module shares, open streams) are
//! read from the store at scrape time, so they are exact then. On several
//! instances each reports what it handled; the gauges agree, the counters
//! add up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::Duration;

use chrono_tz::Tz;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::clock::Millis;
use crate::clock::day::day_bounds;
use crate::store::{SessionObserver, StoreError};

/// `module` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModuleLabel {
    /// The module code, e.g. `pms`.
    module: String,
}

/// Labels of `presence_heartbeats_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeartbeatLabels {
    /// The module code, or empty when the request named none.
    module: String,
    /// `ok`, `invalid`, `unauthorized`, `rate_limited`, `store_unavailable`
    /// or `error`.
    outcome: String,
}

/// Labels of `presence_session_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    /// The module code.
    module: String,
    /// `leave` (ended, moved away) or `expired`.
    ended: String,
}

/// Labels of `presence_http_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    /// The matched route (`/api/presence/resources/{resource}`), never the
    /// raw path, so the label set stays bounded.
    route: String,
    /// The request method.
    method: String,
    /// The status code.
    status: u16,
}

/// Labels of `presence_store_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    /// The store operation.
    op: &'static str,
}

/// `outcome` label of `presence_webhook_deliveries_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    /// `delivered`, `failed` (one attempt) or `dropped` (a batch given up).
    outcome: &'static str,
}

/// `endpoint` label of the webhook queue gauges.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    /// The URL without credentials.
    endpoint: String,
}

/// Every metric of the service.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    heartbeats: Family<HeartbeatLabels, Counter>,
    session_seconds: Family<SessionLabels, Histogram>,
    http_seconds: Family<HttpLabels, Histogram>,
    store_seconds: Family<StoreLabels, Histogram>,
    active_users: Family<ModuleLabel, Gauge>,
    idle_users: Family<ModuleLabel, Gauge>,
    active_sessions: Family<ModuleLabel, Gauge>,
    module_share: Family<ModuleLabel, Gauge<f64, AtomicU64>>,
    users_anywhere: Gauge,
    peak_since_start: Gauge,
    peak_today: Gauge,
    /// The local day the daily peak is for: its start, and the next day's.
    peak_day: Mutex<(Millis, Millis)>,
    open_streams: Gauge,
    requests_shed: Counter,
    requests_in_flight: Gauge,
    open_connections: Gauge,
    runtime_tasks: Gauge,
    snapshot_saved_at: Gauge<f64, AtomicU64>,
    store_up: Gauge,
    /// Whether the last store call met an outage (logged on each change).
    store_down: AtomicBool,
    /// For the summary log line: answers per status class, and heartbeats
    /// recorded, since the last summary.
    responses: [AtomicU64; 5],
    heartbeats_ok: AtomicU64,
    /// `heartbeats`' handles by (module, outcome), as [`RouteHandles`]
    /// keeps a route's.
    heartbeat_handles: RwLock<Vec<((String, &'static str), Counter)>>,
    webhook_deliveries: Family<OutcomeLabel, Counter>,
    webhook_queue: Family<EndpointLabel, Gauge>,
    webhook_oldest: Family<EndpointLabel, Gauge<f64, AtomicU64>>,
    webhook_seconds: Histogram,
    webhook_events_dropped: Counter,
    /// The outbox's count of events dropped when last read (`None`: not
    /// yet, so drops from before this process started are not counted),
    /// and when a warning about them was last logged.
    webhook_dropped_seen: Mutex<(Option<u64>, Option<std::time::Instant>)>,
}

fn latency_family<L: Clone + std::hash::Hash + Eq>() -> Family<L, Histogram> {
    // 0.1 ms to about 3.3 s.
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 16)))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric under the `presence_` prefix.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("presence"),
            heartbeats: Family::default(),
            // One second to about a day.
            session_seconds: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 17))
            }),
            http_seconds: latency_family(),
            store_seconds: latency_family(),
            active_users: Family::default(),
            idle_users: Family::default(),
            active_sessions: Family::default(),
            module_share: Family::default(),
            users_anywhere: Gauge::default(),
            peak_since_start: Gauge::default(),
            peak_today: Gauge::default(),
            peak_day: Mutex::new((Millis::MIN, Millis::MIN)),
            open_streams: Gauge::default(),
            requests_shed: Counter::default(),
            requests_in_flight: Gauge::default(),
            open_connections: Gauge::default(),
            runtime_tasks: Gauge::default(),
            snapshot_saved_at: Gauge::default(),
            store_up: Gauge::default(),
            store_down: AtomicBool::new(false),
            responses: Default::default(),
            heartbeats_ok: AtomicU64::new(0),
            heartbeat_handles: RwLock::default(),
            webhook_deliveries: Family::default(),
            webhook_queue: Family::default(),
            webhook_oldest: Family::default(),
            // 1 ms to about 65 s.
            webhook_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 17)),
            webhook_events_dropped: Counter::default(),
            webhook_dropped_seen: Mutex::new((None, None)),
        };
        m.store_up.set(1);
        let r = &mut m.registry;
        r.register(
            "heartbeats",
            "Heartbeats received, by module and outcome",
            m.heartbeats.clone(),
        );
        r.register_with_unit(
            "session_duration",
            "Length of ended sessions, by module and how they ended",
            Unit::Seconds,
            m.session_seconds.clone(),
        );
        r.register_with_unit(
            "http_request_duration",
            "HTTP request duration by route and status",
            Unit::Seconds,
            m.http_seconds.clone(),
        );
        r.register_with_unit(
            "store_duration",
            "Session store call duration by operation",
            Unit::Seconds,
            m.store_seconds.clone(),
        );
        r.register(
            "active_users",
            "Distinct users with a live session, per module",
            m.active_users.clone(),
        );
        r.register(
            "idle_users",
            "Distinct users present in a module all of whose live sessions there are idle",
            m.idle_users.clone(),
        );
        r.register(
            "active_sessions",
            "Live sessions, per module",
            m.active_sessions.clone(),
        );
        r.register(
            "module_share",
            "Each module's share of the users active now (module preference)",
            m.module_share.clone(),
        );
        r.register(
            "active_users_anywhere",
            "Distinct users active in any module",
            m.users_anywhere.clone(),
        );
        r.register(
            "peak_concurrent_users",
            "Most users active at once (any module) since this instance started",
            m.peak_since_start.clone(),
        );
        r.register(
            "peak_concurrent_users_today",
            "Most users active at once (any module) today, in STATS_TIMEZONE",
            m.peak_today.clone(),
        );
        r.register(
            "open_streams",
            "Open SSE streams on this instance",
            m.open_streams.clone(),
        );
        r.register(
            "requests_shed",
            "Requests answered 503 overloaded because MAX_CONCURRENT_REQUESTS were in flight",
            m.requests_shed.clone(),
        );
        r.register(
            "requests_in_flight",
            "Requests being handled on this instance",
            m.requests_in_flight.clone(),
        );
        r.register(
            "open_connections",
            "Open HTTP connections on this instance",
            m.open_connections.clone(),
        );
        r.register(
            "runtime_alive_tasks",
            "Tasks alive in this instance's async runtime",
            m.runtime_tasks.clone(),
        );
        r.register_with_unit(
            "snapshot_last_success_timestamp",
            "When the last STATE_FILE snapshot was saved (0: none yet)",
            Unit::Seconds,
            m.snapshot_saved_at.clone(),
        );
        r.register(
            "store_up",
            "1 while the session store answers, 0 during an outage",
            m.store_up.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook batches delivered, attempts failed, and batches dropped after WEBHOOK_RETRY_FOR",
            m.webhook_deliveries.clone(),
        );
        r.register(
            "webhook_queue_events",
            "Events waiting for delivery, per webhook endpoint",
            m.webhook_queue.clone(),
        );
        r.register_with_unit(
            "webhook_oldest_event",
            "Age of the oldest event waiting for a webhook endpoint (0: none)",
            Unit::Seconds,
            m.webhook_oldest.clone(),
        );
        r.register_with_unit(
            "webhook_delivery",
            "Webhook delivery attempt duration",
            Unit::Seconds,
            m.webhook_seconds.clone(),
        );
        r.register(
            "webhook_events_dropped",
            "Events dropped because a webhook queue was full (WEBHOOK_QUEUE_MAX)",
            m.webhook_events_dropped.clone(),
        );
        m
    }

    /// Counts one webhook batch `delivered` or `dropped`, or one attempt
    /// `failed`.
    pub(crate) fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Observes one webhook delivery attempt.
    pub(crate) fn webhook_attempt(&self, took: Duration) {
        self.webhook_seconds.observe(took.as_secs_f64());
    }

    /// Sets the queue gauges of the webhook `endpoint` (its URL without
    /// credentials): `events` waiting, the oldest `oldest_age` old.
    pub(crate) fn webhook_backlog(
        &self,
        endpoint: &str,
        events: u64,
        oldest_age: Option<Duration>,
    ) {
        let label = EndpointLabel {
            endpoint: endpoint.to_owned(),
        };
        self.webhook_queue
            .get_or_create(&label)
            .set(i64::try_from(events).unwrap_or(i64::MAX));
        self.webhook_oldest
            .get_or_create(&label)
            .set(oldest_age.map_or(0.0, |age| age.as_secs_f64()));
    }

    /// Takes the outbox's count of events dropped from full queues: what
    /// it grew by since the last reading is counted, and warned about at
    /// most once a minute.
    pub(crate) fn webhook_events_dropped(&self, total: u64) {
        let mut seen = self
            .webhook_dropped_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (before, warned_at) = &mut *seen;
        let grew = before.map_or(0, |b| total.saturating_sub(b));
        *before = Some(before.map_or(total, |b| b.max(total)));
        if grew == 0 {
            return;
        }
        self.webhook_events_dropped.inc_by(grew);
        if warned_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            *warned_at = Some(std::time::Instant::now());
            tracing::warn!(
                dropped = grew,
                total,
                "webhook queue full: its oldest events were dropped; raise WEBHOOK_QUEUE_MAX or check the receiver"
            );
        }
    }

    /// Records a snapshot saved at `at`.
    pub(crate) fn snapshot_saved(&self, at: Millis) {
        #[allow(
            clippy::cast_precision_loss,
            reason = "ms timestamps are far below 2^52"
        )]
        let seconds = at as f64 / 1000.0;
        self.snapshot_saved_at.set(seconds);
    }

    /// Counts one heartbeat answered with `outcome` for `module` (empty
    /// when the body named none), and the successes for the summary line.
    pub(crate) fn heartbeat(&self, module: &str, outcome: &'static str) {
        if outcome == "ok" {
            self.heartbeats_ok.fetch_add(1, Ordering::Relaxed);
        }
        let counter = cached(
            &self.heartbeat_handles,
            |(m, o)| m == module && *o == outcome,
            || {
                let labels = HeartbeatLabels {
                    module: module.to_owned(),
                    outcome: outcome.to_owned(),
                };
                let counter = self.heartbeats.get_or_create(&labels).clone();
                ((labels.module, outcome), counter)
            },
        );
        counter.inc();
    }

    /// Raises the peaks to `active` users seen at `at`.
    /// Called after each heartbeat and at each scrape (which also brings in
    /// peaks that other instances caused, and starts a new day's peak
    /// without waiting for a heartbeat).
    pub(crate) fn see_active_users(&self, active: u64, at: Millis, timezone: Tz) {
        let active = i64::try_from(active).unwrap_or(i64::MAX);
        self.peak_since_start
            .inner()
            .fetch_max(active, Ordering::Relaxed);
        let mut day = self
            .peak_day
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, next) = *day;
        if at < start {
            return; // a late call from yesterday must not undo today
        }
        if at >= next {
            // A new local day: its bounds are computed once, not per call.
            *day = day_bounds(timezone, at);
            self.peak_today.set(0);
        }
        self.peak_today.inner().fetch_max(active, Ordering::Relaxed);
    }

    /// Sets the gauges that describe now, then renders the text format.
    pub(crate) fn render(&self, now: &Present<'_>) -> String {
        let total: u64 = now.modules.iter().map(|m| m.users).sum();
        for m in now.modules {
            let label = ModuleLabel {
                module: m.code.to_owned(),
            };
            for (family, value) in [
                (&self.active_users, m.users),
                (&self.idle_users, m.idle_users),
                (&self.active_sessions, m.sessions),
            ] {
                family
                    .get_or_create(&label)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
            self.module_share
                .get_or_create(&label)
                .set(module_share(m.users, total));
        }
        self.users_anywhere
            .set(i64::try_from(now.users_anywhere).unwrap_or(i64::MAX));
        for (gauge, value) in [
            (&self.open_streams, now.open_streams),
            (&self.requests_in_flight, now.requests_in_flight),
            (&self.open_connections, now.open_connections),
            (&self.runtime_tasks, now.runtime_tasks),
        ] {
            gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }

    /// The latency histogram of one HTTP route (the matched route, never the
    /// raw path, so the label set stays bounded), method and status, to keep
    /// and observe into.
    pub(crate) fn http_histogram(&self, route: &str, method: &str, status: u16) -> Histogram {
        self.http_seconds
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .clone()
    }

    /// Counts a request answered 503 `overloaded`.
    pub(crate) fn request_shed(&self) {
        self.requests_shed.inc();
    }

    /// Observes one store call and its outcome. An outage is logged once
    /// when it starts and once when the store answers again, however many
    /// requests (readiness probes included) meet it in between.
    pub(crate) fn store_call(&self, op: &'static str, took: Duration, error: Option<&StoreError>) {
        self.store_seconds
            .get_or_create(&StoreLabels { op })
            .observe(took.as_secs_f64());
        match error {
            Some(e @ StoreError::Unavailable(_)) => {
                if !self.store_down.swap(true, Ordering::Relaxed) {
                    self.store_up.set(0);
                    tracing::warn!(error = %e, "session store unavailable; answering 503 until it returns");
                }
            }
            Some(StoreError::Backend(_)) => {}
            None => {
                if self.store_down.swap(false, Ordering::Relaxed) {
                    self.store_up.set(1);
                    tracing::info!("session store reachable again");
                }
            }
        }
    }

    /// Counts one answered request by its status, for the summary line.
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered per status class (1xx to 5xx) and successful
    /// heartbeats since the last call, which starts the next count.
    pub(crate) fn take_summary(&self) -> ([u64; 5], u64) {
        let responses = self
            .responses
            .each_ref()
            .map(|n| n.swap(0, Ordering::Relaxed));
        (responses, self.heartbeats_ok.swap(0, Ordering::Relaxed))
    }
}

/// The metric handles one route has used, kept with the route so that a
/// request observes into a handle found in a short list instead of
/// building, hashing and looking up its labels (two allocations and a
/// `SipHash` each) in the registry's families.
#[derive(Debug, Default)]
pub(crate) struct RouteHandles {
    /// By (method, status).
    latency: RwLock<Vec<((String, u16), Histogram)>>,
}

/// The most handles of either kind one route keeps; past it (a route
/// answering with every status code) requests go to the families directly.
const MAX_ROUTE_HANDLES: usize = 64;

impl RouteHandles {
    /// Observes one request of this route.
    pub(crate) fn observe(
        &self,
        metrics: &Metrics,
        route: &str,
        method: &str,
        status: u16,
        took: Duration,
    ) {
        cached(
            &self.latency,
            |(m, s)| m == method && *s == status,
            || {
                (
                    (method.to_owned(), status),
                    metrics.http_histogram(route, method, status),
                )
            },
        )
        .observe(took.as_secs_f64());
    }
}

/// The handle under the key that `matches` in `cache`, made by `make` and
/// kept (up to [`MAX_ROUTE_HANDLES`]) when none does.
fn cached<K, M: Clone>(
    cache: &RwLock<Vec<(K, M)>>,
    matches: impl Fn(&K) -> bool,
    make: impl FnOnce() -> (K, M),
) -> M {
    let found = cache
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(key, _)| matches(key))
        .map(|(_, handle)| handle.clone());
    if let Some(handle) = found {
        return handle;
    }
    let (key, handle) = make();
    let mut cache = cache.write().unwrap_or_else(PoisonError::into_inner);
    if cache.len() < MAX_ROUTE_HANDLES && !cache.iter().any(|(k, _)| matches(k)) {
        cache.push((key, handle.clone()));
    }
    handle
}

/// A module's share of the users active now: its active users over the
/// sum of every module's, 0 when nobody is active. The same figure is
/// `presence_module_share` here and `distribution` in the history.
pub(crate) fn module_share(users: u64, total: u64) -> f64 {
    #[allow(clippy::cast_precision_loss, reason = "user counts are far below 2^52")]
    if total == 0 {
        0.0
    } else {
        users as f64 / total as f64
    }
}

/// One module's present-tense gauges.
#[derive(Debug)]
pub(crate) struct ModulePresent<'a> {
    /// The module code.
    pub code: &'a str,
    /// Distinct users with a live session there (active or idle).
    pub users: u64,
    /// Of those, the users all of whose sessions there are idle.
    pub idle_users: u64,
    /// Live sessions there.
    pub sessions: u64,
}

/// What the present-tense gauges are set from at scrape time.
#[derive(Debug)]
pub(crate) struct Present<'a> {
    /// Per module, in registry order.
    pub modules: &'a [ModulePresent<'a>],
    /// Distinct users active anywhere.
    pub users_anywhere: u64,
    /// Open SSE streams.
    pub open_streams: usize,
    /// Requests being handled.
    pub requests_in_flight: usize,
    /// Open HTTP connections.
    pub open_connections: usize,
    /// Tasks alive in the async runtime.
    pub runtime_tasks: usize,
}

impl SessionObserver for Metrics {
    fn sessions_ended(&self, module: &str, expired: bool, seconds: &[f64]) {
        let histogram = self.session_seconds.get_or_create(&SessionLabels {
            module: module.to_owned(),
            ended: if expired { "expired" } else { "leave" }.to_owned(),
        });
        for &s in seconds {
            histogram.observe(s);
        }
    }
}
