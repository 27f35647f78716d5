//! The state every handler shares: one cheap-to-clone [`AppState`].
//!
//! Keys and store live here rather than in globals, so a test builds
//! its own state over its own clock and mints tokens with its keys.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::auth::{DemoKeys, KeySource, Verifier};
use crate::clock::Clock;
use crate::config::{Config, ConfigError, Visibility};
use crate::domain::Modules;
use crate::http::server::Limits;
use crate::http::sse::Streams;
use crate::limiter::UserRateLimiter;
use crate::metrics::Metrics;
use crate::store::memory::snapshot::Snapshots;
use crate::store::{Store, TimeSource};
use crate::webhooks::Webhooking;

/// Shared by every request. One `Arc`: axum's extractors and middleware
/// clone the state for every request, and a clone of the fields one by one
/// (eight reference counts and a cancellation token's lock) showed up as 5 %
/// of the heartbeat path's CPU profile.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    /// Where sessions live.
    pub store: Store,
    /// With `STATE_FILE` (memory store only), where the store is saved.
    pub snapshots: Option<Snapshots>,
    /// Checks tokens.
    pub verifier: Arc<Verifier>,
    /// Per-user heartbeat limit.
    pub limiter: Arc<UserRateLimiter>,
    /// The module registry.
    pub modules: Modules,
    /// The cadence suggested to clients.
    pub heartbeat_interval: Duration,
    /// `SESSION_TTL`: when a presence stream looks again for an expiry.
    pub session_ttl: Duration,
    /// What the SSE streams share: their caps, the published counts, the
    /// presence streams' shared reads.
    pub streams: Arc<Streams>,
    /// Fired when the service shuts down, so open streams end and the
    /// drain is not held up by them.
    pub shutdown: CancellationToken,
    /// In demo mode, what the demo page needs to mint tokens.
    pub demo: Option<Arc<DemoKeys>>,
    /// The service's clock.
    pub clock: Arc<dyn Clock>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Where "today" starts, for the daily peak.
    pub timezone: chrono_tz::Tz,
    /// `METRICS_PUBLIC`.
    pub metrics_public: bool,
    /// `PRESENCE_VISIBILITY`: who may read viewers and user status.
    pub visibility: Visibility,
    /// Connection and request limits.
    pub limits: Arc<Limits>,
    /// With `WEBHOOK_URL`, the webhooks' outbox and status.
    pub webhooks: Option<Arc<Webhooking>>,
}

impl AppState {
    /// Builds the state, its keys, store and metrics for `config`. With
    /// `STORE=redis`, `redis_time` says whose clock decides liveness. With
    /// `STATE_FILE`, the memory store starts from the snapshot there.
    ///
    /// # Errors
    /// The configured key or store cannot be used.
    pub fn build(
        config: &Config,
        clock: Arc<dyn Clock>,
        redis_time: TimeSource,
    ) -> Result<Self, ConfigError> {
        let keys = KeySource::load(&config.args.jwt)?;
        if keys.is_weak() {
            tracing::warn!(
                "JWT_SECRET is shorter than 32 bytes: tokens signed with it can be brute-forced offline"
            );
        }
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(config, clock.clone(), redis_time, metrics.clone())?;
        // Before a snapshot is restored: the events waiting in it go back
        // into this outbox.
        let webhooks = config
            .webhooks
            .as_ref()
            .map(|settings| Arc::new(Webhooking::open(settings, &store)));
        let snapshots = match (&store, &config.args.state_file) {
            (Store::Memory(memory), Some(path)) => Some(Snapshots::open(
                memory.clone(),
                path.clone(),
                metrics.clone(),
            )),
            _ => None,
        };
        let verifier = Verifier::new(
            &keys,
            &config.args.jwt,
            clock.clone(),
            u64::from(config.args.token_cache_mb) << 20,
        )?;
        let demo = keys.is_demo().then(|| {
            Arc::new(DemoKeys {
                keys,
                jwt: config.args.jwt.clone(),
            })
        });
        Ok(Self(Arc::new(Shared {
            store,
            snapshots,
            verifier: Arc::new(verifier),
            limiter: Arc::new(UserRateLimiter::new(config.args.rate_limit)),
            modules: config.args.modules.clone(),
            heartbeat_interval: config.heartbeat_interval,
            session_ttl: config.args.session_ttl,
            streams: Arc::new(Streams::new(
                usize::from(config.args.max_streams_per_user),
                usize::try_from(config.args.max_streams).unwrap_or(usize::MAX),
            )),
            shutdown: CancellationToken::new(),
            demo,
            clock,
            metrics,
            timezone: config.args.stats_timezone,
            metrics_public: config.args.metrics_public,
            visibility: config.args.presence_visibility,
            limits: Arc::new(Limits::from_args(&config.args)),
            webhooks,
        })))
    }
}
