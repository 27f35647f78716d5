//! The webhook outbox on Redis: the events the session scripts wrote
//! (`events.lua`) read back for delivery, each endpoint's cursor, and the
//! claim that lets one instance at a time deliver to an endpoint.
//!
//! # Keys
//! Per shard, under its hash tag `{p}`, so one shard's outbox is one slot
//! of a cluster:
//! - `{p}:events` stream: the shard's events, each entry one field `e`
//!   holding the JSON of an [`Event`]; kept to `WEBHOOK_QUEUE_MAX` entries
//!   by the scripts that append (the oldest trimmed), and trimmed here to
//!   what every configured endpoint is done with.
//! - `{p}:events:dropped`: how many entries the bound trimmed.
//! - `{p}:wh:<endpoint>`: the endpoint's cursor in this shard, the last
//!   entry id it is done with (absent: none yet, `0-0`). Only moves
//!   forward.
//!
//! And under shard 0's tag, `{p0}:whclaim:<endpoint>`: the holder
//! delivering to the endpoint, expiring unless renewed.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{Script, Value};

use super::RedisStore;
use super::decode::{malformed, store_error};
use crate::clock::Millis;
use crate::events::Event;
use crate::store::StoreError;
use crate::webhooks::{Backlog, Cursor, Entry, StreamId};

/// How many entries a backlog count reads at most on either side of a
/// cursor; past that it is an upper bound.
const BACKLOG_EXACT: usize = 10_000;

/// Takes the claim when free, renews it when ours. KEYS[1] the claim,
/// ARGV[1] the holder, ARGV[2] its time to live in ms.
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v and v ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Compares stream ids `ms-seq` as numbers (`0-0` for what is not one).
const IDS: &str = r"
local function id_of(s)
  local ms, seq = string.match(s or '', '^(%d+)-(%d+)$')
  return tonumber(ms) or 0, tonumber(seq) or 0
end
local function id_below(a, b)
  local am, as = id_of(a)
  local bm, bs = id_of(b)
  return am < bm or (am == bm and as < bs)
end
";

/// Moves an endpoint's cursor forward, then trims the stream to what
/// every configured endpoint is done with. KEYS[1] the stream, KEYS[2] the
/// endpoint's cursor, KEYS[3..] every configured endpoint's cursor;
/// ARGV[1] the new cursor. Returns how many entries were trimmed.
const COMMIT: &str = r"
local cur = redis.call('GET', KEYS[2])
if not cur or id_below(cur, ARGV[1]) then redis.call('SET', KEYS[2], ARGV[1]) end
if #KEYS < 3 then return 0 end
local min = nil
for i = 3, #KEYS do
  local c = redis.call('GET', KEYS[i]) or '0-0'
  if not min or id_below(c, min) then min = c end
end
local ms, seq = id_of(min)
if ms == 0 and seq == 0 then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', ms, seq + 1))
";

/// What waits after an endpoint's cursor: {count, the oldest's JSON or
/// ""}. KEYS[1] the stream, KEYS[2] the cursor; ARGV[1] how many entries
/// to count at most on either side. Exact unless both sides hold more.
const BACKLOG: &str = r"
local cursor = redis.call('GET', KEYS[2]) or '0-0'
local n = redis.call('XLEN', KEYS[1])
if n == 0 then return { 0, '' } end
local after = redis.call('XRANGE', KEYS[1], '(' .. cursor, '+', 'COUNT', 1)
if #after == 0 then return { 0, '' } end
local oldest = after[1]
local count = n
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if first[1][1] ~= oldest[1] then
  local limit = tonumber(ARGV[1])
  count = #redis.call('XRANGE', KEYS[1], oldest[1], '+', 'COUNT', limit)
  if count >= limit then
    count = n - #redis.call('XRANGE', KEYS[1], '-', cursor, 'COUNT', limit)
  end
end
local e = ''
for i = 1, #oldest[2], 2 do
  if oldest[2][i] == 'e' then e = oldest[2][i + 1] end
end
return { count, e }
";

/// The Redis store's outbox: a handle on the store's connection and
/// shards, for the endpoints configured. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RedisOutbox {
    store: RedisStore,
    /// Every configured endpoint's key: the trim keeps what any still needs.
    endpoints: Arc<[String]>,
    scripts: Arc<OutboxScripts>,
}

struct OutboxScripts {
    claim: Script,
    commit: Script,
    backlog: Script,
}

impl std::fmt::Debug for OutboxScripts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxScripts")
    }
}

impl RedisStore {
    /// The outbox of this store's events, delivered to `endpoints` (their
    /// keys, as the deliverers name them in every call): an entry is
    /// trimmed once each of them committed past it.
    pub fn outbox(&self, endpoints: impl IntoIterator<Item = String>) -> RedisOutbox {
        RedisOutbox {
            store: self.clone(),
            endpoints: endpoints.into_iter().collect(),
            scripts: Arc::new(OutboxScripts {
                claim: Script::new(CLAIM),
                commit: Script::new(&format!("{IDS}{COMMIT}")),
                backlog: Script::new(BACKLOG),
            }),
        }
    }
}

impl RedisOutbox {
    fn tag(&self, shard: usize) -> &str {
        &self.store.shards[shard].tag
    }

    fn stream_key(&self, shard: usize) -> String {
        format!("{}:events", self.tag(shard))
    }

    fn cursor_key(&self, shard: usize, endpoint: &str) -> String {
        format!("{}:wh:{endpoint}", self.tag(shard))
    }

    fn shards(&self) -> std::ops::Range<usize> {
        0..self.store.shards.len()
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.store.check_layout().await?;
        let mut conn = self.store.conn.clone();
        cmd.query_async(&mut conn).await.map_err(store_error)
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.store.check_layout().await?;
        let mut conn = self.store.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(store_error)
    }

    /// Takes or renews, for `holder`, the right to deliver to `endpoint`
    /// for `ttl`; false while another holder has it.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn claim(
        &self,
        endpoint: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut inv = self
            .scripts
            .claim
            .key(format!("{}:whclaim:{endpoint}", self.tag(0)));
        inv.arg(holder).arg(ttl_ms);
        Ok(self.run::<i64>(&inv).await? == 1)
    }

    /// The committed cursor of `endpoint`, one position per shard.
    ///
    /// # Errors
    /// Redis cannot be reached, or holds a cursor that is no stream id.
    pub async fn committed(&self, endpoint: &str) -> Result<Cursor, StoreError> {
        let ids = try_join_all(self.shards().map(|shard| async move {
            let at: Option<String> = self
                .query(redis::cmd("GET").arg(self.cursor_key(shard, endpoint)))
                .await?;
            at.map_or(Ok(StreamId::default()), |at| {
                StreamId::parse(&at).ok_or_else(|| malformed("a webhook cursor"))
            })
        }))
        .await?;
        Ok(Cursor(ids))
    }

    /// Up to `max` entries after `from`, oldest first by [`StreamId`]
    /// across shards. An entry whose event cannot be read is skipped with
    /// a warning.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn read(&self, from: &Cursor, max: usize) -> Result<Vec<Entry>, StoreError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let replies = try_join_all(self.shards().map(|shard| async move {
            let after = from.at(shard);
            let start = if after == StreamId::default() {
                "-".to_owned()
            } else {
                format!("({after}")
            };
            let rows: Vec<(String, Vec<Value>)> = self
                .query(
                    redis::cmd("XRANGE")
                        .arg(self.stream_key(shard))
                        .arg(start)
                        .arg("+")
                        .arg("COUNT")
                        .arg(max),
                )
                .await?;
            Ok::<_, StoreError>((shard, rows))
        }))
        .await?;
        let mut entries: Vec<Entry> = replies
            .into_iter()
            .flat_map(|(shard, rows)| {
                rows.into_iter()
                    .filter_map(move |(id, fields)| entry(shard, &id, &fields))
            })
            .collect();
        entries.sort_by_key(|e| (e.id, e.shard));
        entries.truncate(max);
        Ok(entries)
    }

    /// `endpoint` is done with everything up to `cursor`: each shard's
    /// position moves forward (never back), and each stream is trimmed to
    /// what every configured endpoint is done with.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn commit(&self, endpoint: &str, cursor: &Cursor) -> Result<(), StoreError> {
        try_join_all(self.shards().map(|shard| async move {
            let mut inv = self.scripts.commit.key(self.stream_key(shard));
            inv.key(self.cursor_key(shard, endpoint));
            for other in self.endpoints.iter() {
                inv.key(self.cursor_key(shard, other));
            }
            inv.arg(cursor.at(shard).to_string());
            self.run::<i64>(&inv).await
        }))
        .await?;
        Ok(())
    }

    /// What waits for `endpoint`: the entries after its committed cursor
    /// (exact unless over [`BACKLOG_EXACT`] entries lie on both sides of it
    /// in a shard, then an upper bound) and when the oldest happened.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn backlog(&self, endpoint: &str) -> Result<Backlog, StoreError> {
        let replies = try_join_all(self.shards().map(|shard| async move {
            let mut inv = self.scripts.backlog.key(self.stream_key(shard));
            inv.key(self.cursor_key(shard, endpoint)).arg(BACKLOG_EXACT);
            self.run::<(u64, String)>(&inv).await
        }))
        .await?;
        let mut backlog = Backlog::default();
        for (count, oldest) in replies {
            backlog.events += count;
            if let Some(at) = event_at(&oldest) {
                backlog.oldest_at = Some(backlog.oldest_at.map_or(at, |o: Millis| o.min(at)));
            }
        }
        Ok(backlog)
    }

    /// Events dropped because a shard's stream was full, since the log
    /// began.
    ///
    /// # Errors
    /// Redis cannot be reached.
    pub async fn dropped(&self) -> Result<u64, StoreError> {
        let counts = try_join_all(self.shards().map(|shard| async move {
            self.query::<Option<u64>>(
                redis::cmd("GET").arg(format!("{}:events:dropped", self.tag(shard))),
            )
            .await
        }))
        .await?;
        Ok(counts.into_iter().flatten().sum())
    }
}

/// One stream entry as an [`Entry`]; `None`, with a warning, when its id or
/// event cannot be read (a hand edit, a bug): it must not stop delivery.
fn entry(shard: usize, id: &str, fields: &[Value]) -> Option<Entry> {
    let event = fields
        .chunks_exact(2)
        .find(|pair| matches!(&pair[0], Value::BulkString(name) if name == b"e"))
        .and_then(|pair| match &pair[1] {
            Value::BulkString(json) => serde_json::from_slice::<Event>(json).ok(),
            _ => None,
        });
    match (StreamId::parse(id), event) {
        (Some(id), Some(event)) => Some(Entry { shard, id, event }),
        _ => {
            tracing::warn!(shard, id, "skipping a webhook event that cannot be read");
            None
        }
    }
}

/// The `at` of an event's JSON, if it is one.
fn event_at(json: &str) -> Option<Millis> {
    serde_json::from_str::<Event>(json).ok().map(|e| e.at)
}
