//! The state every handler shares: one cheap-to-clone [`AppState`].
//!
//! Keys and store live here rather than in globals, so a test builds
//! its own state over its own clock and mints tokens with its keys.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, RateLimit};
use crate::domain::{Modules, UserId};
use crate::error::ApiError;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::routes::demo::DemoKeys;
use crate::server::Limits;
use crate::snapshot::Snapshots;
use crate::store::Store;
use crate::store::TimeSource;

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
    /// Live counts for the SSE streams, and their limits.
    pub live: Arc<Live>,
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
    /// Connection and request limits.
    pub limits: Arc<Limits>,
}

impl AppState {
    /// Builds the state, its store and its metrics for `config`. With
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
        let metrics = Arc::new(Metrics::new());
        let store = Store::open(&config.args, clock.clone(), redis_time, metrics.clone())?;
        let snapshots = match (&store, &config.args.state_file) {
            (Store::Memory(memory), Some(path)) => Some(Snapshots::open(
                memory.clone(),
                path.clone(),
                metrics.clone(),
            )),
            _ => None,
        };
        Self::new(config, store, snapshots, clock, metrics)
    }

    /// Builds the state for `config` over `store` (and its `snapshots`).
    ///
    /// # Errors
    /// The configured key cannot be used.
    pub fn new(
        config: &Config,
        store: Store,
        snapshots: Option<Snapshots>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let verifier = Verifier::new(
            &config.keys,
            &config.args.jwt,
            clock.clone(),
            u64::from(config.args.token_cache_mb) << 20,
        )?;
        let demo = config.keys.is_demo().then(|| {
            Arc::new(DemoKeys {
                keys: config.keys.clone(),
                jwt: config.args.jwt.clone(),
            })
        });
        Ok(Self(Arc::new(Shared {
            store,
            snapshots,
            verifier: Arc::new(verifier),
            limiter: Arc::new(UserRateLimiter::new(config.args.rate_limit)),
            modules: config.args.modules.clone(),
            heartbeat_interval: config.args.heartbeat_interval,
            live: Arc::new(Live::new(
                usize::from(config.args.max_streams_per_user),
                usize::try_from(config.args.max_streams).unwrap_or(usize::MAX),
            )),
            shutdown: CancellationToken::new(),
            demo,
            clock,
            metrics,
            timezone: config.args.stats_timezone,
            metrics_public: config.args.metrics_public,
            limits: Arc::new(Limits::from_args(&config.args)),
        })))
    }
}

/// A token bucket per user (GCRA, from `governor`).
///
/// It runs on the monotonic clock rather than the service's [`Clock`]:
/// rate limiting is about real request spacing, and moving the test clock by
/// hours must not refill buckets.
///
/// Buckets are keyed by a 64-bit keyed hash of the user id, not the id: an
/// entry is 16 bytes instead of an id allocation of its own, which matters
/// when every live user holds one (a user beating every 45 s is never idle
/// long enough to be forgotten between sweeps). Two users share a bucket
/// only if their hashes collide: about one chance in 2^25 among a million
/// users, and the key is secret, so collisions cannot be aimed.
pub struct UserRateLimiter {
    limiter: DefaultKeyedRateLimiter<u64>,
    hasher: RandomState,
}

impl std::fmt::Debug for UserRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRateLimiter")
            .field("tracked_users", &self.limiter.len())
            .finish()
    }
}

impl UserRateLimiter {
    /// A limiter allowing `limit.burst` at once, then one per `limit.period`.
    pub fn new(limit: RateLimit) -> Self {
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(limit.period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
            hasher: RandomState::new(),
        }
    }

    /// Takes one request from `user`'s bucket.
    ///
    /// # Errors
    /// [`ApiError::RateLimited`] with the wait until the next one is allowed.
    pub fn check(&self, user: &UserId) -> Result<(), ApiError> {
        let key = self.hasher.hash_one(user.as_str());
        self.limiter.check_key(&key).map_err(|not_until| {
            ApiError::RateLimited(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Forgets users whose bucket is full again, so the limiter's memory
    /// follows the active users, not every user ever seen.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
