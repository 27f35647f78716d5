//! The per-user rate limit (`RATE_LIMIT`): a token bucket per user.

use std::hash::{BuildHasher, RandomState};
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimit;
use crate::domain::UserId;

/// A user is over their limit; the next request is allowed after the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limited for {0:?}")]
pub struct RateLimited(pub Duration);

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
    /// The bucket's size.
    burst: NonZeroU32,
    /// How long an empty bucket takes to fill.
    refill: Duration,
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
            burst,
            refill: quota.burst_size_replenished_in(),
        }
    }

    /// Takes one request from `user`'s bucket.
    ///
    /// # Errors
    /// [`RateLimited`] with the wait until the next one is allowed.
    pub fn check(&self, user: &UserId) -> Result<(), RateLimited> {
        let key = self.hasher.hash_one(user.as_str());
        self.limiter.check_key(&key).map_err(|not_until| {
            RateLimited(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Takes `n` requests from `user`'s bucket at once, or none: a
    /// presence stream reads `n` resources when it opens, and costs what
    /// `n` GETs of them would.
    ///
    /// # Errors
    /// [`RateLimited`] with the wait until all `n` are allowed; when `n`
    /// is over the burst (no wait makes room: callers refuse that first,
    /// see [`Self::burst`]), the wait for a full bucket.
    pub fn check_n(&self, user: &UserId, n: u32) -> Result<(), RateLimited> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let key = self.hasher.hash_one(user.as_str());
        match self.limiter.check_key_n(&key, n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(RateLimited(
                not_until.wait_time_from(DefaultClock::default().now()),
            )),
            Err(_) => Err(RateLimited(self.refill)),
        }
    }

    /// The most requests a full bucket allows at once.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Forgets users whose bucket is full again, so the limiter's memory
    /// follows the active users, not every user ever seen.
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
