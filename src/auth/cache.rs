//! Tokens verified before, remembered by their exact bytes until they
//! expire: a browser sends the same token with every heartbeat for the
//! token's whole life, so its signature need not be checked every 45 s.
//!
//! What keeps this safe:
//! - only a byte-for-byte equal token is a hit: the map compares whole keys,
//!   a hash match alone is never enough, so a tampered token is a miss and
//!   gets the full check;
//! - only tokens that passed every check and carry `exp` are remembered;
//! - every hit is checked against the service's clock with the same rule as
//!   a fresh verification, so a remembered token stops working at exactly
//!   the same instant, and is then forgotten;
//! - the cache is bounded by the bytes it holds (`TOKEN_CACHE_MB`); past
//!   it, `quick_cache` evicts the least useful entries, and an evicted token
//!   is simply verified again.
//!
//! The keys, issuer, audience and claim names cannot change while the
//! process runs, so nothing else can invalidate an entry.

use quick_cache::Weighter;
use quick_cache::sync::Cache;

use super::verify::Caller;

/// What an entry costs besides its token, user id, profile and scope: the `Caller`, the
/// boxed key, and the cache's own bookkeeping (an estimate).
const ENTRY_OVERHEAD: u64 = 128;

/// A typical token and user id, to size the cache's tables.
const TYPICAL_ENTRY: u64 = 400;

/// Verified tokens and who they are.
pub(super) struct VerifiedTokens {
    cache: Cache<Box<str>, Caller, EntryBytes>,
}

/// Weighs an entry by the memory it holds.
#[derive(Debug, Clone)]
struct EntryBytes;

impl Weighter<Box<str>, Caller> for EntryBytes {
    fn weight(&self, token: &Box<str>, caller: &Caller) -> u64 {
        let profile = caller
            .profile
            .as_ref()
            .map_or(0, |p| p.as_json().len() + 16);
        (token.len() + caller.user.as_str().len() + profile + caller.scope.bytes()) as u64
            + ENTRY_OVERHEAD
    }
}

impl VerifiedTokens {
    /// A cache holding up to `capacity_bytes`; `None` for zero (no cache).
    pub(super) fn new(capacity_bytes: u64) -> Option<Self> {
        (capacity_bytes > 0).then(|| Self {
            cache: Cache::with_weighter(
                usize::try_from(capacity_bytes / TYPICAL_ENTRY)
                    .unwrap_or(usize::MAX)
                    .max(1),
                capacity_bytes,
                EntryBytes,
            ),
        })
    }

    /// The caller behind exactly `token`, if it was verified before. The
    /// caller must still check its expiry.
    pub(super) fn get(&self, token: &str) -> Option<Caller> {
        self.cache.get(token)
    }

    /// Forgets `token`.
    pub(super) fn forget(&self, token: &str) {
        self.cache.remove(token);
    }

    /// Remembers a token that passed every check, if it expires.
    pub(super) fn remember(&self, token: &str, caller: &Caller) {
        if caller.expires_at.is_some() {
            self.cache.insert(token.into(), caller.clone());
        }
    }

    /// Tokens remembered now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.cache.len()
    }

    /// Bytes they are weighed at.
    #[cfg(test)]
    pub(super) fn bytes(&self) -> u64 {
        self.cache.weight()
    }
}
