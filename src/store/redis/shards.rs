//! Users partitioned into shards: which shard a user lives in, the keys a
//! shard's data lives under, the shard count recorded in Redis, and asking
//! every shard at once and combining their answers.
//!
//! A user lives in exactly one shard, so the shards' counts add up and
//! their pages merge exactly (see the store's `# Shards`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::future::try_join_all;
use redis::{FromRedisValue, Script, Value};

use super::decode::{malformed, ms, next_int, parse_history, store_error, text};
use super::{RedisConfig, RedisStore};
use crate::clock::Millis;
use crate::domain::{Modules, UserId};
use crate::store::StoreError;
use crate::store::history::{History, MinuteBucket, ModuleMinute};

/// One partition of the users: the hash tag its keys live under.
#[derive(Debug)]
pub(super) struct Shard {
    pub(super) tag: String,
    pub(super) time_key: String,
}

/// `{REDIS_KEY_PREFIX}`, where the shard count is recorded, and the
/// configured shards. With one shard its tag is that base tag: the layout
/// from before shards, so an existing deployment keeps its data.
pub(super) fn layout(config: &RedisConfig) -> (String, Arc<[Shard]>) {
    let base_tag = format!("{{{}}}", config.key_prefix);
    let shards: Arc<[Shard]> = (0..config.shards.max(1))
        .map(|n| {
            let tag = if config.shards <= 1 {
                base_tag.clone()
            } else {
                format!("{{{}:{n}}}", config.key_prefix)
            };
            Shard {
                time_key: format!("{tag}:time"),
                tag,
            }
        })
        .collect();
    (base_tag, shards)
}

/// The shard of a user id among `shards`: FNV-1a over its bytes, a hash
/// fixed forever (every instance, every version must agree).
fn shard_of(user: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is below `shards`, a usize.
    #[allow(clippy::cast_possible_truncation, reason = "below shards")]
    let shard = (hash % shards as u64) as usize;
    shard
}

impl RedisStore {
    /// Runs `script` on every shard at once (with `args` after the
    /// prelude's), the replies in shard order.
    pub(super) async fn on_every_shard<T: FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<Vec<T>, StoreError> {
        try_join_all((0..self.shards.len()).map(|shard| async move {
            let mut inv = self.invocation(script, shard);
            for arg in args {
                inv.arg(*arg);
            }
            self.call::<T>(&inv).await
        }))
        .await
    }

    /// The shard a user lives in.
    pub(super) fn shard_of(&self, user: &UserId) -> usize {
        shard_of(user.as_str(), self.shards.len())
    }

    /// The shard count recorded in Redis for this key prefix, recording the
    /// configured one when there is none yet (1 when data from before shards
    /// is there): at start-up, and again when Redis lost it.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn recorded_shards(&self) -> Result<u16, StoreError> {
        let mut conn = self.conn.clone();
        let recorded: i64 = self
            .scripts
            .layout
            .key(format!("{}:shards", self.base_tag))
            .key(format!("{}:time", self.base_tag))
            .key(format!("{}:day", self.base_tag))
            .arg(self.shards.len())
            .invoke_async(&mut conn)
            .await
            .map_err(store_error)?;
        u16::try_from(recorded).map_err(|_| malformed("shard count"))
    }

    /// Refuses every call until Redis is known to hold as many shards as
    /// configured, and while it records another count: users would be
    /// looked for in the wrong shards. Read once here; read again by
    /// [`verify_layout`](Self::verify_layout). Start-up exits on a mismatch.
    pub(super) async fn check_layout(&self) -> Result<(), StoreError> {
        if self.layout_seen.load(Ordering::Relaxed) == 0 {
            return self.verify_layout().await;
        }
        self.layout_refusal()
    }

    /// The refusal while the count Redis recorded, when last read, is not
    /// ours: an outage to the clients (503 `store_unavailable`).
    pub(super) fn layout_refusal(&self) -> Result<(), StoreError> {
        match self.layout_seen.load(Ordering::Relaxed) {
            0 => Ok(()),
            seen if usize::try_from(seen - 1).ok() == Some(self.shards.len()) => Ok(()),
            seen => Err(StoreError::Unavailable(format!(
                "REDIS_SHARDS {}",
                self.shard_mismatch(u16::try_from(seen - 1).unwrap_or(u16::MAX))
            ))),
        }
    }

    /// Reads the shard count recorded in Redis again (recording ours when
    /// Redis lost it), remembers it, and says so when it changed: an error
    /// naming `REDIS_SHARDS` and both counts when it is not ours, once per
    /// change, and when it is ours again.
    ///
    /// # Errors
    /// Redis cannot be reached, or records another count.
    pub(super) async fn verify_layout(&self) -> Result<(), StoreError> {
        let recorded = self.recorded_shards().await?;
        let before = self
            .layout_seen
            .swap(u32::from(recorded) + 1, Ordering::Relaxed);
        let ours = usize::from(recorded) == self.shards.len();
        // The first read is start-up's to report (it exits on a mismatch).
        if before != 0 && before != u32::from(recorded) + 1 {
            if ours {
                tracing::info!(
                    shards = recorded,
                    "REDIS_SHARDS: Redis records {recorded} shard(s) again, as configured; serving"
                );
            } else {
                tracing::error!(
                    configured = self.shards.len(),
                    recorded,
                    "REDIS_SHARDS: {}; another instance with REDIS_SHARDS={recorded} recorded its \
                     count (after Redis lost its data?), so this one answers 503 until the two \
                     agree",
                    self.shard_mismatch(recorded)
                );
            }
        }
        self.layout_refusal()
    }

    /// What is wrong when Redis holds `recorded` shards.
    pub fn shard_mismatch(&self, recorded: u16) -> String {
        format!(
            "is {}, but Redis holds this deployment's data (REDIS_KEY_PREFIX {}) in {recorded} \
             shard(s), as recorded in {}:shards; set REDIS_SHARDS={recorded}, or use a new \
             REDIS_KEY_PREFIX to start over with another count",
            self.shards.len(),
            self.config.key_prefix,
            self.base_tag
        )
    }

    /// How many shards this store is configured with.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

/// A page of the session list, rows as the scripts gave them: one shard's,
/// or the shards' merged ([`ShardPage::merge`]).
pub(super) struct ShardPage {
    pub(super) at: Millis,
    pub(super) more: bool,
    /// Member, score, session JSON ("" if gone).
    pub(super) rows: Vec<(String, Millis, String)>,
}

impl ShardPage {
    fn parse(flat: Vec<Value>) -> Result<Self, StoreError> {
        let mut it = flat.into_iter();
        let at = next_int(&mut it, "empty page")?;
        let more = next_int(&mut it, "empty page")? == 1;
        let mut rows = Vec::new();
        while let (Some(member), Some(score), Some(raw)) = (it.next(), it.next(), it.next()) {
            let score: Millis = text(score)?
                .parse::<f64>()
                .map(ms)
                .map_err(|_| malformed("score"))?;
            rows.push((text(member)?, score, text(raw)?));
        }
        Ok(Self { at, more, rows })
    }

    /// The global page of `limit` rows from every shard's page after one
    /// cursor.
    pub(super) fn merge(replies: Vec<Vec<Value>>, limit: usize) -> Result<Self, StoreError> {
        // Each shard's page continues after the same cursor in the same
        // order (newest first, ties in reverse bytewise member order), so
        // the first `limit` rows of their merge are the global page.
        let mut at = 0;
        let mut more = false;
        let mut rows = Vec::new();
        for flat in replies {
            let page = Self::parse(flat)?;
            at = at.max(page.at);
            more |= page.more;
            rows.extend(page.rows);
        }
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        more |= rows.len() > limit;
        rows.truncate(limit);
        Ok(Self { at, more, rows })
    }
}

/// Every shard's minutes of history as one: the minutes of one start
/// summed ([`add_minute`]).
pub(super) fn merge_history(
    replies: Vec<Vec<Value>>,
    modules: &Modules,
) -> Result<History, StoreError> {
    let mut at = 0;
    let mut merged: BTreeMap<Millis, MinuteBucket> = BTreeMap::new();
    for flat in replies {
        let (shard_at, buckets) = parse_history(flat, modules)?;
        at = at.max(shard_at);
        for bucket in buckets {
            match merged.get_mut(&bucket.start) {
                Some(sum) => {
                    for (sum, shard) in sum.modules.iter_mut().zip(&bucket.modules) {
                        add_minute(sum, shard);
                    }
                }
                None => {
                    merged.insert(bucket.start, bucket);
                }
            }
        }
    }
    let mut buckets: Vec<MinuteBucket> = merged.into_values().collect();
    for bucket in &mut buckets {
        for minute in &mut bucket.modules {
            if let Some(sample) = minute.sample.filter(|s| *s > minute.peak) {
                minute.peak = sample;
                minute.peak_at = minute.peak_at.or(Some(bucket.start));
            }
        }
    }
    Ok(History {
        minutes: buckets,
        at,
    })
}

/// Adds one shard's minute to the sum of the others'. Counts add up (a
/// session lives in one shard); the peak is the sum of the shards' peaks
/// reached when the last of them was, at least the sample.
fn add_minute(sum: &mut ModuleMinute, shard: &ModuleMinute) {
    sum.sample = match (sum.sample, shard.sample) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        (a, b) => a.or(b),
    };
    sum.peak = sum.peak.saturating_add(shard.peak);
    sum.peak_at = sum.peak_at.max(shard.peak_at);
    sum.started = sum.started.saturating_add(shard.started);
    sum.ended = sum.ended.saturating_add(shard.ended);
    sum.ended_ms = sum.ended_ms.saturating_add(shard.ended_ms);
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn one_shard_holds_everyone() {
        assert_eq!(shard_of("anyone", 1), 0);
    }

    // The hash is part of the data layout: changing it would lose users.
    #[test]
    fn the_shard_hash_never_changes() {
        let shards: Vec<usize> = ["1", "2", "42", "alice", "bob"]
            .iter()
            .map(|u| shard_of(u, 3))
            .collect();
        assert_eq!(shards, FIXED);
    }

    const FIXED: [usize; 5] = [1, 1, 1, 2, 0];
}
