//! The deliverer of one endpoint ([`run`]): a task of its own that holds
//! the endpoint's claim in the outbox, reads what waits, and sends it in
//! order, in batches, retrying each until it is delivered or its retry
//! window ends. Nothing else waits on it: the stores only append to the
//! outbox.
//!
//! One loop, one step at a time:
//! 1. hold the claim (renewed every [`Settings::renew_every`]); a claim
//!    newly won starts from the committed cursor, one lost forgets the
//!    buffer (another instance delivers, from the cursor committed);
//! 2. read what follows the buffer into it ([`Queue::push`]);
//! 3. send the batch that is due ([`Queue::next`]), or sleep until one is;
//! 4. commit the cursor past what is done.
//!
//! A batch being retried holds back the next, and the claim is renewed
//! while an attempt or a backoff runs, so a slow receiver never lets the
//! claim lapse and another instance send the same batch beside it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::queue::{Filter, Next, Queue};
use super::send::{self, Message, Refused};
use super::status::{EndpointStatus, Failure};
use crate::clock::{Clock, Millis, duration_ms, rfc3339};
use crate::config::{WebhookEndpoint, WebhookSecret, Webhooks};
use crate::metrics::Metrics;
use crate::webhooks::outbox::{Cursor, Entry, Outbox};

/// How the deliverers run: the settings of `WEBHOOK_*`, and timings the
/// contract fixes (tests shorten them).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Signs every attempt.
    pub secret: WebhookSecret,
    /// The event types sent.
    pub(super) filter: Filter,
    /// `WEBHOOK_LEAVE_GRACE`.
    pub leave_grace: Duration,
    /// `WEBHOOK_RETRY_FOR`.
    pub retry_for: Duration,
    /// Names this process in the claims: random, per process.
    pub holder: String,
    /// Sends the batches (no redirects, `WEBHOOK_TIMEOUT` per attempt).
    pub(super) client: reqwest::Client,
    /// How long a batch waits to fill after its first event is due.
    pub(super) linger: Duration,
    /// The first backoff, doubled after each failure up to
    /// [`backoff_max`](Self::backoff_max).
    pub(super) backoff_first: Duration,
    /// The longest backoff.
    pub(super) backoff_max: Duration,
    /// How often the outbox is read when nothing is waiting.
    pub(super) poll: Duration,
    /// How long a claim lasts unless renewed.
    pub(super) claim_ttl: Duration,
    /// How often a held claim is renewed (and a claim held elsewhere
    /// tried again): well under [`claim_ttl`](Self::claim_ttl).
    pub(super) renew_every: Duration,
    /// How often the backlog is counted for the status and metrics.
    pub(super) report_every: Duration,
}

/// Entries held in a deliverer's buffer at most; more wait in the outbox.
const BUFFER: usize = 1_000;

impl Settings {
    /// The settings of `webhooks`, with the contract's timings and a
    /// random holder id.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (its TLS back end).
    pub fn new(webhooks: &Webhooks) -> Result<Self, reqwest::Error> {
        Ok(Self {
            secret: webhooks.secret.clone(),
            filter: Filter::new(webhooks.events.as_deref()),
            leave_grace: webhooks.leave_grace,
            retry_for: webhooks.retry_for,
            holder: format!("{:016x}", rand::random::<u64>()),
            client: send::client(webhooks.timeout)?,
            linger: Duration::from_secs(1),
            backoff_first: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            poll: Duration::from_millis(250),
            // A dead holder's batch is taken over within ttl + renew_every
            // (13 s), inside the contract's 30 s.
            claim_ttl: Duration::from_secs(10),
            renew_every: Duration::from_secs(3),
            report_every: Duration::from_secs(5),
        })
    }

    /// The wait after the `failures`-th failed attempt (1 for the
    /// first): the first backoff doubled each time up to the longest, then
    /// between half and all of it, at random, so many deliverers that
    /// failed together do not retry together.
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .backoff_first
            .saturating_mul(1_u32 << failures.saturating_sub(1).min(20));
        doubled
            .min(self.backoff_max)
            .mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// Delivers what `outbox` holds for `endpoint` until `cancel` fires; see
/// the module's page. Reports into `status` and `metrics`; `clock` decides
/// when events are due (the leave grace, a batch's linger) and stamps the
/// messages.
pub async fn run(
    endpoint: WebhookEndpoint,
    outbox: Outbox,
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    status: Arc<EndpointStatus>,
    cancel: CancellationToken,
) {
    let mut d = Deliverer {
        endpoint,
        outbox,
        settings,
        clock,
        metrics,
        status,
        cancel,
        claimed_at: None,
        started: Instant::now(),
        queue: None,
        committed: None,
        reported_at: None,
    };
    while !d.cancel.is_cancelled() {
        d.report().await;
        if d.hold().await == Claim::No {
            d.pause(d.settings.renew_every).await;
            continue;
        }
        d.fill().await;
        let now = d.clock.now_ms();
        let real = duration_ms(d.started.elapsed());
        let next = match &mut d.queue {
            Some(queue) => queue.next(now, real),
            None => Next::Idle,
        };
        match next {
            Next::Send(entries, slots) => {
                if d.deliver(&entries).await
                    && let Some(queue) = &mut d.queue
                {
                    queue.finish(slots);
                }
            }
            Next::Wait(ms) => {
                let wait = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                d.pause(wait.min(d.settings.poll)).await;
            }
            Next::Idle => d.pause(d.settings.poll).await,
        }
        d.commit().await;
    }
    d.status.set_delivering(false);
}

/// One endpoint's deliverer and what it holds between steps.
struct Deliverer {
    endpoint: WebhookEndpoint,
    outbox: Outbox,
    settings: Arc<Settings>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    status: Arc<EndpointStatus>,
    cancel: CancellationToken,
    /// When the claim was last taken or renewed; `None`: not held.
    claimed_at: Option<Instant>,
    /// The deliverer's own monotonic clock starts here (batch lingers).
    started: Instant,
    /// The buffer, while the claim is held.
    queue: Option<Queue>,
    /// What this deliverer last committed, so an unchanged cursor is not
    /// written again.
    committed: Option<Cursor>,
    /// When the backlog was last counted.
    reported_at: Option<Instant>,
}

/// Whether this process holds the claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claim {
    /// Held, and the buffer goes on.
    Kept,
    /// Newly won (or won back after it lapsed): the buffer starts again
    /// from the committed cursor.
    Won,
    /// Another holder has it, or the store cannot say.
    No,
}

/// How a batch ended.
enum Outcome {
    Delivered,
    Dropped,
    /// Cancelled, or the claim lost: neither sent nor done with.
    Abandoned,
}

impl Deliverer {
    /// Whether this process holds the claim, renewing it when due. A claim
    /// newly won (or renewed after it lapsed) starts from the committed
    /// cursor.
    async fn hold(&mut self) -> Claim {
        let s = &self.settings;
        if self
            .claimed_at
            .is_some_and(|at| at.elapsed() < s.renew_every)
        {
            return Claim::Kept;
        }
        let asked_at = Instant::now();
        let key = &self.endpoint.key;
        match self.outbox.claim(key, &s.holder, s.claim_ttl).await {
            Ok(true) => {
                let lapsed = self.claimed_at.is_none_or(|at| at.elapsed() >= s.claim_ttl);
                let mut claim = Claim::Kept;
                if lapsed || self.queue.is_none() {
                    claim = Claim::Won;
                    match self.outbox.committed(key).await {
                        Ok(from) => {
                            self.committed = Some(from.clone());
                            let grace = duration_ms(s.leave_grace);
                            let linger = duration_ms(s.linger);
                            self.queue = Some(Queue::new(from, s.filter, grace, linger));
                        }
                        Err(e) => {
                            tracing::debug!(endpoint = %self.endpoint.display, error = %e, "webhook cursor unreadable; will retry");
                            self.let_go();
                            return Claim::No;
                        }
                    }
                }
                self.claimed_at = Some(asked_at);
                self.status.set_delivering(true);
                claim
            }
            Ok(false) => {
                self.let_go();
                Claim::No
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.display, error = %e, "webhook claim not renewed; will retry");
                // Keep going only while the last claim surely still holds.
                let holds = self
                    .claimed_at
                    .is_some_and(|at| at.elapsed() + s.renew_every < s.claim_ttl);
                if holds {
                    Claim::Kept
                } else {
                    self.let_go();
                    Claim::No
                }
            }
        }
    }

    /// Forgets the buffer: another holder goes on from the committed
    /// cursor.
    fn let_go(&mut self) {
        self.claimed_at = None;
        self.queue = None;
        self.committed = None;
        self.status.set_delivering(false);
    }

    /// Reads what follows the buffer, up to its bound.
    async fn fill(&mut self) {
        let Some(queue) = &mut self.queue else {
            return;
        };
        let room = BUFFER.saturating_sub(queue.len());
        if room == 0 {
            return;
        }
        match self.outbox.read(queue.read_cursor(), room).await {
            Ok(entries) => queue.push(entries, self.clock.now_ms()),
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.display, error = %e, "webhook outbox unreadable; will retry");
            }
        }
    }

    /// Commits the cursor past what is done, when it moved.
    async fn commit(&mut self) {
        let Some(queue) = &self.queue else {
            return;
        };
        let done = queue.done_cursor();
        if self.committed.as_ref() == Some(done) {
            return;
        }
        let done = done.clone();
        match self.outbox.commit(&self.endpoint.key, &done).await {
            Ok(()) => self.committed = Some(done),
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.display, error = %e, "webhook cursor not committed; will retry");
            }
        }
    }

    /// Sends one batch until it is delivered or its retry window ends;
    /// whether it is done with (delivered or dropped).
    async fn deliver(&mut self, entries: &[Entry]) -> bool {
        let Some(first) = entries.first() else {
            return true;
        };
        let events: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| e.event.to_json(&e.event_id()))
            .collect();
        let body = serde_json::json!({
            "type": "presence.events",
            "timestamp": rfc3339(self.clock.now_ms()),
            "data": { "events": events },
        });
        let message = Message {
            id: format!("msg_{}", first.event_id()),
            body: Bytes::from(body.to_string()),
        };
        match self.retry(&message, entries.len()).await {
            Outcome::Delivered => true,
            Outcome::Dropped => {
                self.metrics.webhook_delivery("dropped");
                true
            }
            Outcome::Abandoned => false,
        }
    }

    /// The attempts of one message.
    async fn retry(&mut self, message: &Message, events: usize) -> Outcome {
        let started = Instant::now();
        let mut failures = 0_u32;
        loop {
            let attempt = send::attempt(
                self.settings.client.clone(),
                self.endpoint.url.clone(),
                self.settings.secret.clone(),
                message.clone(),
                // The receiver checks it against its own wall clock.
                chrono::Utc::now().timestamp(),
            );
            let attempt_started = Instant::now();
            let Some(answer) = self.while_held(attempt).await else {
                return Outcome::Abandoned;
            };
            self.metrics.webhook_attempt(attempt_started.elapsed());
            let Err(refused) = answer else {
                self.metrics.webhook_delivery("delivered");
                self.status.delivered(self.clock.now_ms());
                if failures > 0 {
                    tracing::info!(endpoint = %self.endpoint.display, failures, "webhook delivered again");
                }
                return Outcome::Delivered;
            };
            failures += 1;
            self.failed(&refused, failures);
            let elapsed = started.elapsed();
            if elapsed >= self.settings.retry_for {
                tracing::warn!(
                    endpoint = %self.endpoint.display,
                    events,
                    failures,
                    id = %message.id,
                    "webhook batch dropped: not delivered within WEBHOOK_RETRY_FOR"
                );
                return Outcome::Dropped;
            }
            let wait = self
                .settings
                .backoff(failures)
                .min(self.settings.retry_for - elapsed);
            if self.while_held(tokio::time::sleep(wait)).await.is_none() {
                return Outcome::Abandoned;
            }
        }
    }

    /// Records a failed attempt: its metric, the status, and a log line
    /// for the first failure of a batch (the rest at debug).
    fn failed(&self, refused: &Refused, failures: u32) {
        self.metrics.webhook_delivery("failed");
        self.status.failed(Failure {
            at: self.clock.now_ms(),
            status: refused.status,
            error: refused.error.clone(),
        });
        if failures == 1 {
            tracing::warn!(endpoint = %self.endpoint.display, error = %refused.error, "webhook delivery failed; retrying with backoff");
        } else {
            tracing::debug!(endpoint = %self.endpoint.display, error = %refused.error, failures, "webhook delivery failed again");
        }
    }

    /// Runs `work` while renewing the claim (and counting the backlog);
    /// `None` when cancelled or the claim is lost, or lapsed, first (then
    /// `work` is dropped: the buffer it came from is gone).
    async fn while_held<F: Future>(&mut self, work: F) -> Option<F::Output> {
        tokio::pin!(work);
        loop {
            let renew_in = self.claimed_at.map_or(Duration::ZERO, |at| {
                self.settings.renew_every.saturating_sub(at.elapsed())
            });
            tokio::select! {
                out = &mut work => return Some(out),
                () = self.cancel.cancelled() => return None,
                () = tokio::time::sleep(renew_in) => {
                    if self.hold().await != Claim::Kept {
                        return None;
                    }
                    self.report().await;
                }
            }
        }
    }

    /// Sleeps for `wait`, or until cancelled.
    async fn pause(&self, wait: Duration) {
        tokio::select! {
            () = self.cancel.cancelled() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }

    /// Counts the backlog for the metrics, every
    /// [`Settings::report_every`], and the events dropped from full queues.
    async fn report(&mut self) {
        if self
            .reported_at
            .is_some_and(|at| at.elapsed() < self.settings.report_every)
        {
            return;
        }
        self.reported_at = Some(Instant::now());
        match self.outbox.backlog(&self.endpoint.key).await {
            Ok(backlog) => {
                let now = self.clock.now_ms();
                let age = backlog.oldest_at.map(|at| age_of(at, now));
                self.metrics
                    .webhook_backlog(&self.endpoint.display, backlog.events, age);
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint.display, error = %e, "webhook backlog unreadable")
            }
        }
        if let Ok(dropped) = self.outbox.dropped().await {
            self.metrics.webhook_events_dropped(dropped);
        }
    }
}

/// How long ago `at` was at `now` (zero for the future).
fn age_of(at: Millis, now: Millis) -> Duration {
    Duration::from_millis(u64::try_from(now - at).unwrap_or(0))
}
