//! A session's time to live, and the one rule that says when a session has
//! expired, so that no caller writes the arithmetic out by hand.

use std::time::Duration;

use crate::clock::{Millis, duration_ms};

/// How long a session lives after its last heartbeat (`SESSION_TTL`).
///
/// The rule: a session last seen at `last_seen` is live while
/// `now - last_seen < ttl`. It expires at `last_seen + ttl`
/// ([`Ttl::expires_at`]); at `now`, every session whose
/// `last_seen <= now - ttl` ([`Ttl::cutoff`]) has expired, one whose
/// `last_seen` is after it has not ([`Ttl::is_expired`]). The boundary
/// belongs to expiry, so a session is never counted at the instant it
/// expires.
///
/// The Redis store applies the same rule in its Lua scripts, which cannot
/// call this: `CUTOFF` in `src/store/redis/prelude.lua` mirrors
/// [`Ttl::cutoff`] (and its `ls + TTL`, [`Ttl::expires_at`]). Change
/// them together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(Millis);

/// How long a user's profile is kept past their last session: user status
/// shows an offline user's profile for this long, then it is neither served
/// nor kept (a user who is gone takes their name and picture with them).
pub const PROFILE_KEEP: Duration = Duration::from_secs(PROFILE_KEEP_S as u64);
const PROFILE_KEEP_S: Millis = 24 * 3600;

impl Ttl {
    /// The latest `last_seen` whose user's profile is gone at `now`: one
    /// [`PROFILE_KEEP`] after their last session expired. Mirrored by
    /// `PROFILE_CUTOFF` in `src/store/redis/prelude.lua`.
    pub const fn profile_cutoff(self, now: Millis) -> Millis {
        self.cutoff(now) - PROFILE_KEEP_S * 1000
    }

    /// When a session last seen at `last_seen` expires.
    pub const fn expires_at(self, last_seen: Millis) -> Millis {
        last_seen + self.0
    }

    /// The latest `last_seen` that has expired at `now`: a session last
    /// seen at or before it has expired.
    pub const fn cutoff(self, now: Millis) -> Millis {
        now - self.0
    }

    /// Whether a session last seen at `last_seen` has expired at `now`.
    pub const fn is_expired(self, last_seen: Millis, now: Millis) -> bool {
        last_seen <= self.cutoff(now)
    }
}

impl From<Duration> for Ttl {
    fn from(ttl: Duration) -> Self {
        Self(duration_ms(ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Ttl = Ttl(60_000);

    #[test]
    fn a_session_expires_exactly_one_ttl_after_its_last_heartbeat() {
        assert_eq!(TTL.expires_at(1_000), 61_000);
        assert!(!TTL.is_expired(1_000, 60_999), "live just before");
        assert!(TTL.is_expired(1_000, 61_000), "expired at the instant");
        assert!(TTL.is_expired(1_000, 61_001), "and after");
    }

    #[test]
    fn the_cutoff_is_the_latest_last_seen_that_has_expired() {
        let now = 100_000;
        let cutoff = TTL.cutoff(now);
        assert_eq!(cutoff, 40_000);
        assert!(TTL.is_expired(cutoff, now));
        assert!(!TTL.is_expired(cutoff + 1, now));
        assert_eq!(TTL.expires_at(cutoff), now, "the two agree");
    }

    #[test]
    fn a_duration_becomes_whole_milliseconds() {
        assert_eq!(Ttl::from(Duration::from_secs(300)), Ttl(300_000));
        assert_eq!(Ttl::from(Duration::from_micros(1_500)), Ttl(1));
    }
}
