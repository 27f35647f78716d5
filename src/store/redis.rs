//! The Redis store: every instance behind a load balancer sees one truth.
//!
//! # Data model
//! Users are partitioned into `REDIS_SHARDS` shards by a hash of their id
//! ([`shard_of`]); every key of a shard lives under its hash tag, written
//! `{p}` below: `{REDIS_KEY_PREFIX}` with one shard (the layout from before
//! shards, so an existing deployment keeps its data), `{REDIS_KEY_PREFIX:n}`
//! for shard n of several. One shard's keys share a slot, so each script
//! runs on one node of a Redis Cluster, and the shards spread over its
//! masters.
//! - `{REDIS_KEY_PREFIX}:shards`: the shard count in use, recorded by the
//!   first instance; an instance configured with another refuses to start.
//! - `{p}:sess:<user>` hash: client id (`""` for the default session) to the
//!   session as JSON (module, startedAt, resourceSince, lastSeen, page,
//!   resource); the source of truth. Expires `SESSION_TTL` + 1 h after the
//!   user's last heartbeat, a backstop for when no instance sweeps.
//! - `{p}:time` sorted set: every session scored by its last heartbeat; the
//!   sweeper takes expired ones from its low end, the admin list pages from
//!   its high end.
//! - `{p}:pres:<code>` and `{p}:any` sorted sets: each user's latest live
//!   heartbeat in the module / anywhere. `activeNow` is `ZCOUNT (cutoff +inf`:
//!   exact at query time in O(log n), with no scan.
//! - `{p}:today:<code>:<date>` sets (expire after two days) and
//!   `{p}:total:<code>` sets: exact distinct users. Sets rather than
//!   HyperLogLog: HLL's ~0.8 % error could report `today < activeNow`, and
//!   the contract promises `activeNow <= today <= totalUsers`.
//! - `{p}:res:<resource>` sets: the sessions whose latest heartbeat named it.
//! - `{p}:awake:<code>` sorted sets: each user's latest live heartbeat of an
//!   active session in the module; `idleNow` is `activeNow` less its count.
//! - Per user, not per session: `{p}:seen` (sorted set, latest heartbeat,
//!   for user status), `{p}:prof` (hash, the latest token's profile JSON)
//!   and `{p}:hidden` (set, users whose latest token hid them).
//!
//! # One round trip, atomic
//! Each operation is one Lua script (`src/store/redis/*.lua`, sharing
//! `prelude.lua`), loaded once and called by its SHA (`EVALSHA`, reloaded
//! by the client on `NOSCRIPT`, on every master of a cluster). A script
//! runs atomically, so concurrent heartbeats of one user on two instances
//! can never leave a session counted in two modules.
//!
//! # Shards
//! A heartbeat or a leave is one script on its user's shard. A read asks
//! every shard at once and combines the answers: a user lives in exactly
//! one shard, so counts are exact sums, and viewer lists and session pages
//! exact merges. The `activeUsers` of a heartbeat's answer is its shard's
//! count plus the other shards' as last seen (exact with one shard). A
//! minute's sample is the sum of the shards' counts, recorded on shard 0;
//! its peak is the sum of the shards' peaks, exact with one shard and an
//! upper bound with several (the shards need not peak at the same instant).
//!
//! # One clock
//! In production the scripts read Redis's own clock (`TIME`), so instances
//! never disagree on whether a session is live, whatever their clock skew.
//! Tests pass the time of a `ManualClock` instead ([`TimeSource::Clock`]).
//! Local midnights are computed by the instance (Redis knows no time
//! zones): it sends yesterday's, today's and tomorrow's start, and the
//! script picks the day Redis's clock falls in, so an instance whose clock
//! is off by less than a day still files heartbeats under the right date.
//!
//! # Faults
//! The connection ([`conn`]) reconnects by itself (and follows Sentinel and
//! Cluster fail-overs), with connection and response timeouts of
//! `REDIS_TIMEOUT`, so with Redis gone requests answer 503
//! `store_unavailable` quickly and service resumes when Redis returns.

pub mod changes;
mod conn;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono_tz::Tz;
use futures_util::future::try_join_all;
use redis::{FromRedisValue, Script, ScriptInvocation, Value};
use serde::Deserialize;

use conn::Conn;
pub use conn::Topology;

use super::history::{History, MinuteBucket, ModuleMinute};
use super::watch::Watchers;
use super::{
    CountsAt, Cursor, Heartbeat, HeartbeatAck, Leave, MAX_LISTED_VIEWERS, ModuleCounts,
    ResourceViewers, SessionInfo, SessionObserver, SessionPage, SessionStore, StoreError,
    UserStatus, UsersStatus, Viewer,
};
use crate::clock::day::{day_bounds, local_date};
use crate::clock::{Clock, Millis, duration_ms};
use crate::domain::{Activity, ClientId, Modules, Page, Profile, ResourceId, UserId};

/// Connection and response timeout for Redis calls.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

/// How many expired sessions one sweep script removes.
const SWEEP_BATCH: i64 = 1000;

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("redis/prelude.lua"),
            "\n",
            include_str!(concat!("redis/", $file))
        ))
    };
}

/// What the Redis store needs to know.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where Redis is: `REDIS_URL`, `REDIS_SENTINELS` or
    /// `REDIS_CLUSTER_NODES`.
    pub topology: Topology,
    /// `REDIS_KEY_PREFIX`, without the braces of the hash tag.
    pub key_prefix: String,
    /// `REDIS_SHARDS`: how many partitions users are hashed into.
    pub shards: u16,
    /// The module registry.
    pub modules: Modules,
    /// How long a session lives without a heartbeat.
    pub session_ttl: Duration,
    /// Where "today" starts.
    pub timezone: Tz,
    /// The most sessions one user may hold.
    pub max_sessions_per_user: usize,
}

impl RedisConfig {
    pub(crate) fn from_args(args: &crate::config::ServeArgs, topology: &Topology) -> Self {
        Self {
            topology: topology.clone(),
            key_prefix: args.redis_key_prefix.clone(),
            shards: args.redis_shards,
            modules: args.modules.clone(),
            session_ttl: args.session_ttl,
            timezone: args.stats_timezone,
            max_sessions_per_user: usize::from(args.max_sessions_per_user),
        }
    }
}

/// Whose clock decides "now".
#[derive(Debug, Clone)]
pub enum TimeSource {
    /// Redis's `TIME`: one clock for every instance (production).
    Redis,
    /// The given clock (tests).
    Clock(Arc<dyn Clock>),
}

/// The day window sent to the scripts, valid for one local day.
#[derive(Debug, Default)]
struct DayWindow {
    from: Millis,
    until: Millis,
    text: Arc<str>,
}

struct Scripts {
    heartbeat: Script,
    leave: Script,
    counts: Script,
    viewers: Script,
    sessions: Script,
    sweep: Script,
    sample: Script,
    history: Script,
    live_sessions: Script,
    users: Script,
    layout: Script,
}

/// One partition of the users: the hash tag its keys live under.
#[derive(Debug)]
struct Shard {
    tag: String,
    time_key: String,
}

/// Sessions in Redis. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    scripts: Arc<Scripts>,
    shards: Arc<[Shard]>,
    /// `{REDIS_KEY_PREFIX}`: where the shard count is recorded.
    base_tag: String,
    /// Each shard's users active anywhere, as its latest answer said: the
    /// other shards' part of a heartbeat's `activeUsers`.
    anywhere: Arc<[AtomicU64]>,
    /// Set once Redis is known to hold as many shards as configured.
    layout_checked: Arc<tokio::sync::OnceCell<()>>,
    codes: String,
    config: Arc<RedisConfig>,
    time: TimeSource,
    /// The instance's clock: only for choosing the local day window.
    clock: Arc<dyn Clock>,
    day_window: Arc<Mutex<DayWindow>>,
    observer: Arc<dyn SessionObserver>,
    /// This instance's presence streams, fed by [`changes::run`].
    watchers: Arc<Watchers>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("tag", &self.base_tag)
            .field("shards", &self.shards.len())
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `config.topology`. Does not wait for Redis: the first
    /// calls connect, so the service starts (and `/readyz` says 503) while
    /// Redis is still down.
    ///
    /// # Errors
    /// An address cannot be parsed.
    pub fn new(
        config: RedisConfig,
        clock: Arc<dyn Clock>,
        time: TimeSource,
        observer: Arc<dyn SessionObserver>,
    ) -> Result<Self, redis::RedisError> {
        let conn = Conn::new(&config.topology)?;
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
        let codes = config
            .modules
            .ids()
            .map(|id| config.modules.get(id).code.clone())
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            conn,
            scripts: Arc::new(Scripts {
                heartbeat: script!("heartbeat.lua"),
                leave: script!("leave.lua"),
                counts: script!("counts.lua"),
                viewers: script!("viewers.lua"),
                sessions: script!("sessions.lua"),
                sweep: script!("sweep.lua"),
                sample: script!("sample.lua"),
                history: script!("history.lua"),
                live_sessions: script!("live_sessions.lua"),
                users: script!("users.lua"),
                layout: Script::new(include_str!("redis/layout.lua")),
            }),
            anywhere: shards.iter().map(|_| AtomicU64::new(0)).collect(),
            shards,
            base_tag,
            layout_checked: Arc::default(),
            codes,
            config: Arc::new(config),
            time,
            clock,
            day_window: Arc::default(),
            observer,
            watchers: Arc::default(),
        })
    }

    /// The registry of this instance's presence streams.
    pub fn watchers(&self) -> &Arc<Watchers> {
        &self.watchers
    }

    /// Calls a script whose reply is two integers followed by the sessions
    /// it ended (code, length ms, expired), tells the observer of those, and
    /// returns the two integers.
    async fn call_ending(&self, inv: &ScriptInvocation<'_>) -> Result<(i64, Millis), StoreError> {
        let flat: Vec<Value> = self.call(inv).await?;
        self.ending(flat)
    }

    /// Reads a reply of two integers followed by ended sessions; see
    /// [`call_ending`](Self::call_ending).
    fn ending(&self, flat: Vec<Value>) -> Result<(i64, Millis), StoreError> {
        let mut it = flat.into_iter();
        let (Some(first), Some(at)) = (it.next(), it.next()) else {
            return Err(malformed("short reply"));
        };
        while let (Some(code), Some(length), Some(expired)) = (it.next(), it.next(), it.next()) {
            #[allow(
                clippy::cast_precision_loss,
                reason = "session lengths are far below 2^52 ms"
            )]
            let seconds = int(&length)? as f64 / 1000.0;
            self.observer
                .sessions_ended(&text(code)?, int(&expired)? == 1, &[seconds]);
        }
        Ok((int(&first)?, int(&at)?))
    }

    /// Yesterday's, today's and tomorrow's local start as the instance's
    /// clock sees them, as `start:date,...`. Computed once a day, not on
    /// every call: every heartbeat sends it.
    fn day_window(&self) -> Arc<str> {
        let now = self.clock.now_ms();
        let mut cached = self
            .day_window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !(cached.from..cached.until).contains(&now) {
            let tz = self.config.timezone;
            let (today, tomorrow) = day_bounds(tz, now);
            let (yesterday, _) = day_bounds(tz, today - 1);
            let text = [yesterday, today, tomorrow]
                .iter()
                .map(|start| format!("{start}:{}", local_date(tz, *start)))
                .collect::<Vec<_>>()
                .join(",");
            *cached = DayWindow {
                from: today,
                until: tomorrow,
                text: text.into(),
            };
        }
        Arc::clone(&cached.text)
    }

    /// Prepares `script` on `shard` with the prelude's arguments.
    fn invocation<'a>(&self, script: &'a Script, shard: usize) -> ScriptInvocation<'a> {
        let now = match &self.time {
            TimeSource::Redis => String::new(),
            TimeSource::Clock(clock) => clock.now_ms().to_string(),
        };
        let shard = &self.shards[shard];
        let mut inv = script.key(&shard.time_key);
        inv.arg(&shard.tag)
            .arg(duration_ms(self.config.session_ttl))
            .arg(now)
            .arg(&*self.day_window())
            .arg(&self.codes);
        inv
    }

    /// Warns when Redis may evict keys: the store needs them all (an
    /// evicted session hash or presence set leaves counts wrong until the
    /// TTL, an evicted `total` set loses users for good), so Redis must run
    /// with `maxmemory-policy noeviction`, which answers writes with an
    /// error (a 503 here) when memory is full instead. Tolerates `CONFIG`
    /// being disabled or renamed, as managed services do (logged at info),
    /// and Redis being down (a warning, as any outage).
    pub async fn check_eviction_policy(&self) {
        let mut conn = self.conn.clone();
        let reply = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async::<std::collections::HashMap<String, String>>(&mut conn)
            .await;
        match reply {
            Ok(config) => match config.get("maxmemory-policy") {
                Some(policy) if policy == "noeviction" => {}
                Some(policy) => tracing::warn!(
                    policy = %policy,
                    "Redis runs with maxmemory-policy {policy}, which may evict the store's keys and \
                     leave counts wrong; run it with maxmemory-policy noeviction"
                ),
                None => tracing::info!(
                    "Redis did not say its maxmemory-policy; make sure it is noeviction"
                ),
            },
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() => {
                tracing::warn!(error = %e, "cannot reach Redis to check its maxmemory-policy");
            }
            Err(e) => tracing::info!(
                error = %e,
                "cannot read Redis's maxmemory-policy (CONFIG disabled?); make sure it is noeviction"
            ),
        }
    }

    async fn call<T: FromRedisValue>(&self, inv: &ScriptInvocation<'_>) -> Result<T, StoreError> {
        self.check_layout().await?;
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(store_error)
    }

    /// Runs `script` on every shard at once (with `args` after the
    /// prelude's), the replies in shard order.
    async fn on_every_shard<T: FromRedisValue>(
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
    fn shard_of(&self, user: &UserId) -> usize {
        shard_of(user.as_str(), self.shards.len())
    }

    /// The shard count recorded in Redis for this key prefix, recording the
    /// configured one when there is none yet (1 when data from before shards
    /// is there).
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
    /// configured: with another count, users would be looked for in the
    /// wrong shards. Checked once; start-up exits on a mismatch.
    async fn check_layout(&self) -> Result<(), StoreError> {
        if self.layout_checked.initialized() {
            return Ok(());
        }
        self.layout_checked
            .get_or_try_init(|| async {
                let recorded = self.recorded_shards().await?;
                if usize::from(recorded) == self.shards.len() {
                    Ok(())
                } else {
                    Err(StoreError::Backend(self.shard_mismatch(recorded)))
                }
            })
            .await
            .map(|_| ())
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

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as map_err(store_error)"
)]
fn store_error(e: redis::RedisError) -> StoreError {
    // A full Redis (`maxmemory` reached under `noeviction`, which it must
    // run with) refuses writes with OOM: an outage to wait out, not a bug.
    let full = e.code() == Some("OOM");
    // A fail-over under way: a demoted master, a cluster without a master
    // for a slot yet, a replica still loading.
    let failing_over = matches!(
        e.code(),
        Some("READONLY" | "MASTERDOWN" | "LOADING" | "CLUSTERDOWN" | "TRYAGAIN")
    ) || e.is_cluster_error();
    if full
        || failing_over
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
    {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

fn field(client: Option<&ClientId>) -> &str {
    client.map_or("", ClientId::as_str)
}

/// A session as the scripts store it.
#[derive(Deserialize)]
struct Packed {
    m: String,
    st: f64,
    ls: f64,
    p: String,
    r: String,
    /// 1 when idle; absent when active (and in values written before).
    #[serde(default)]
    i: Option<f64>,
}

/// A session's state as the scripts store it: `i` is 1 when idle.
fn activity(idle: bool) -> Activity {
    if idle {
        Activity::Idle
    } else {
        Activity::Active
    }
}

/// A profile as the scripts return it: JSON text, `""` for none. What does
/// not pass [`Profile::from_json`] (a hand edit) is no profile.
fn profile(v: Value) -> Result<Option<Profile>, StoreError> {
    let text = text(v)?;
    Ok(if text.is_empty() {
        None
    } else {
        Profile::from_json(&text)
    })
}

/// Lua numbers are doubles; ours are whole milliseconds.
#[allow(clippy::cast_possible_truncation, reason = "whole ms, far below 2^53")]
fn ms(x: f64) -> Millis {
    x as Millis
}

fn malformed(what: &str) -> StoreError {
    StoreError::Backend(format!("unexpected reply from Redis: {what}"))
}

fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => Err(malformed("expected an integer")),
    }
}

fn text(v: Value) -> Result<String, StoreError> {
    redis::from_redis_value(v).map_err(|_| malformed("expected a string"))
}

/// One shard's page of the session list, rows as the script gave them.
struct ShardPage {
    at: Millis,
    more: bool,
    /// Member, score, session JSON ("" if gone).
    rows: Vec<(String, Millis, String)>,
}

impl ShardPage {
    fn parse(flat: Vec<Value>) -> Result<Self, StoreError> {
        let mut it = flat.into_iter();
        let at = int(&it.next().ok_or_else(|| malformed("empty page"))?)?;
        let more = int(&it.next().ok_or_else(|| malformed("empty page"))?)? == 1;
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
}

/// One shard's minutes of history, by minute start.
fn parse_history(
    flat: Vec<Value>,
    modules: &Modules,
) -> Result<(Millis, Vec<MinuteBucket>), StoreError> {
    let mut it = flat.into_iter();
    let at = int(&it.next().ok_or_else(|| malformed("empty history"))?)?;
    let mut buckets = Vec::new();
    while let (Some(start), Some(fields)) = (it.next(), it.next()) {
        let mut bucket = MinuteBucket {
            start: int(&start)?,
            modules: vec![ModuleMinute::default(); modules.len()],
        };
        for _ in 0..int(&fields)? / 2 {
            let (Some(name), Some(value)) = (it.next(), it.next()) else {
                return Err(malformed("history fields"));
            };
            let (name, value) = (text(name)?, text(value)?);
            let Some((code, field)) = name.rsplit_once(':') else {
                continue;
            };
            let Some(id) = modules.by_code(code) else {
                continue; // a module no longer in the registry
            };
            let n: u64 = value.parse().map_err(|_| malformed("history value"))?;
            let minute = &mut bucket.modules[id.index()];
            match field {
                "s" => minute.sample = Some(n),
                "p" => minute.peak = n,
                "pa" => minute.peak_at = Millis::try_from(n).ok(),
                "st" => minute.started = n,
                "e" => minute.ended = n,
                "ems" => minute.ended_ms = n,
                _ => {}
            }
        }
        buckets.push(bucket);
    }
    Ok((at, buckets))
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

impl SessionStore for RedisStore {
    async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatAck, StoreError> {
        let shard = self.shard_of(&beat.user);
        let mut inv = self.invocation(&self.scripts.heartbeat, shard);
        let module = &self.config.modules.get(beat.module).code;
        inv.arg(beat.user.as_str())
            .arg(field(beat.client.as_ref()))
            .arg(module)
            .arg(beat.page.as_ref().map_or("", Page::as_str))
            .arg(beat.resource.as_ref().map_or("", ResourceId::as_str))
            .arg(self.config.max_sessions_per_user)
            .arg(if beat.state.is_idle() { "1" } else { "0" })
            .arg(beat.profile.as_ref().map_or("", Profile::as_json))
            .arg(if beat.hidden { "1" } else { "0" });
        let (active, at) = self.call_ending(&inv).await?;
        let active = u64::try_from(active).unwrap_or(0);
        self.anywhere[shard].store(active, Ordering::Relaxed);
        // With shards, the others' part is as last seen: exact enough for
        // a client's display, not for metrics.
        let exact = self.shards.len() == 1;
        let active_users = if exact {
            active
        } else {
            self.anywhere
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .sum()
        };
        Ok(HeartbeatAck {
            active_users,
            exact,
            at,
        })
    }

    async fn leave(&self, user: &UserId, which: Leave) -> Result<usize, StoreError> {
        let mut inv = self.invocation(&self.scripts.leave, self.shard_of(user));
        inv.arg(user.as_str());
        match &which {
            Leave::All => inv.arg("all").arg(""),
            Leave::Session(client) => inv.arg("one").arg(field(client.as_ref())),
        };
        let (ended, _at) = self.call_ending(&inv).await?;
        Ok(usize::try_from(ended).unwrap_or(0))
    }

    async fn module_counts(&self) -> Result<CountsAt, StoreError> {
        let replies: Vec<Vec<u64>> = self.on_every_shard(&self.scripts.counts, &[]).await?;
        let mut total = CountsAt {
            counts: vec![ModuleCounts::default(); self.config.modules.len()],
            users_anywhere: 0,
            at: 0,
        };
        for (shard, flat) in replies.iter().enumerate() {
            let [at, users_anywhere, rest @ ..] = flat.as_slice() else {
                return Err(malformed("short counts"));
            };
            if rest.len() != 4 * total.counts.len() {
                return Err(malformed("counts for another module registry"));
            }
            for (sum, c) in total.counts.iter_mut().zip(rest.chunks_exact(4)) {
                sum.active_now += c[0];
                sum.idle_now += c[1];
                sum.today += c[2];
                sum.total_users += c[3];
            }
            self.anywhere[shard].store(*users_anywhere, Ordering::Relaxed);
            total.users_anywhere += users_anywhere;
            total.at = total.at.max(Millis::try_from(*at).unwrap_or_default());
        }
        Ok(total)
    }

    async fn resource_viewers(&self, resource: &ResourceId) -> Result<ResourceViewers, StoreError> {
        // Each shard counts its visible viewers and lists its first
        // MAX_LISTED_VIEWERS; the global first ones are among those.
        let limit = MAX_LISTED_VIEWERS.to_string();
        let replies: Vec<Vec<Value>> = self
            .on_every_shard(&self.scripts.viewers, &[resource.as_str(), &limit])
            .await?;
        let mut viewers = Vec::new();
        let mut at = 0;
        let mut count = 0;
        for flat in replies {
            let mut it = flat.into_iter();
            at = int(&it.next().ok_or_else(|| malformed("empty viewers"))?)?.max(at);
            count += int(&it.next().ok_or_else(|| malformed("no viewer count"))?)?;
            while let (Some(user), Some(since), Some(last), Some(idle), Some(prof)) =
                (it.next(), it.next(), it.next(), it.next(), it.next())
            {
                // An id today's rules refuse (stored before they did) is
                // skipped, not a 500 for everyone who looks at the resource.
                let Some(user) = UserId::parse(&text(user)?) else {
                    continue;
                };
                viewers.push(Viewer {
                    user,
                    since: int(&since)?,
                    last_seen: int(&last)?,
                    state: activity(int(&idle)? == 1),
                    profile: profile(prof)?,
                });
            }
        }
        Ok(ResourceViewers::ordered(
            viewers,
            u64::try_from(count).unwrap_or(0),
            at,
        ))
    }

    async fn user_status(&self, users: &[UserId]) -> Result<UsersStatus, StoreError> {
        // One script per shard holding any of them, the shards at once.
        let mut by_shard: Vec<Vec<&UserId>> = vec![Vec::new(); self.shards.len()];
        for user in users {
            by_shard[self.shard_of(user)].push(user);
        }
        let replies = try_join_all(
            by_shard
                .iter()
                .enumerate()
                .filter(|(_, u)| !u.is_empty())
                .map(|(shard, users)| async move {
                    let mut inv = self.invocation(&self.scripts.users, shard);
                    for user in users {
                        inv.arg(user.as_str());
                    }
                    self.call::<Vec<Value>>(&inv)
                        .await
                        .map(|flat| (users, flat))
                }),
        )
        .await?;
        let mut at = 0;
        let mut found = std::collections::HashMap::with_capacity(users.len());
        for (shard_users, flat) in replies {
            let mut it = flat.into_iter();
            at = int(&it.next().ok_or_else(|| malformed("empty user status"))?)?.max(at);
            for user in shard_users {
                let (Some(state), Some(modules), Some(seen), Some(prof)) =
                    (it.next(), it.next(), it.next(), it.next())
                else {
                    return Err(malformed("short user status"));
                };
                let status = UserStatus {
                    state: Activity::parse(&text(state)?),
                    modules: {
                        let mut ids: Vec<_> = text(modules)?
                            .split(',')
                            .filter_map(|code| self.config.modules.by_code(code))
                            .collect();
                        ids.sort_unstable();
                        ids
                    },
                    last_seen: text(seen)?.parse().ok(),
                    profile: profile(prof)?,
                };
                found.insert(*user, status);
            }
        }
        if at == 0 {
            at = self.clock.now_ms(); // nobody asked for: no shard asked
        }
        let out = users
            .iter()
            .map(|user| (user.clone(), found.get(user).cloned().unwrap_or_default()))
            .collect();
        Ok(UsersStatus { users: out, at })
    }

    async fn sessions(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<SessionPage, StoreError> {
        let (score, member) = match &cursor {
            Some(c) => (
                c.last_seen.to_string(),
                format!("{}\u{1f}{}", field(c.client.as_ref()), c.user),
            ),
            None => (String::new(), String::new()),
        };
        let limit_arg = limit.to_string();
        let replies: Vec<Vec<Value>> = self
            .on_every_shard(&self.scripts.sessions, &[&limit_arg, &score, &member])
            .await?;
        // Each shard's page continues after the same cursor in the same
        // order (newest first, ties in reverse bytewise member order), so
        // the first `limit` rows of their merge are the global page.
        let mut at = 0;
        let mut more = false;
        let mut rows = Vec::new();
        for flat in replies {
            let page = ShardPage::parse(flat)?;
            at = at.max(page.at);
            more |= page.more;
            rows.extend(page.rows);
        }
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        more |= rows.len() > limit;
        rows.truncate(limit);
        let mut sessions = Vec::new();
        let mut last_row = None;
        for (member, score, raw) in rows {
            let (client, user) = member
                .split_once('\u{1f}')
                .ok_or_else(|| malformed("session member"))?;
            // What cannot be listed is skipped, never a 500 for the whole
            // list: an id today's rules refuse (stored before they did), a
            // session the script found undecodable (and removed), one of a
            // module no longer in the registry.
            let Some(user) = UserId::parse(user) else {
                continue;
            };
            let client = ClientId::parse(client);
            last_row = Some(Cursor {
                last_seen: score,
                user: user.clone(),
                client: client.clone(),
            });
            if raw.is_empty() {
                continue; // its hash expired before the sweeper took it: skip
            }
            let Ok(packed) = serde_json::from_str::<Packed>(&raw) else {
                continue;
            };
            let Some(module) = self.config.modules.by_code(&packed.m) else {
                continue;
            };
            sessions.push(SessionInfo {
                user,
                client,
                module,
                page: Page::parse(&packed.p),
                resource: ResourceId::parse(&packed.r),
                state: activity(packed.i == Some(1.0)),
                started_at: ms(packed.st),
                last_seen: ms(packed.ls),
            });
        }
        // The cursor is the last row read, listed or not.
        let next = if more { last_row } else { None };
        Ok(SessionPage { sessions, next, at })
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        let batch = SWEEP_BATCH.to_string();
        let mut total = 0;
        loop {
            let replies: Vec<Vec<Value>> =
                self.on_every_shard(&self.scripts.sweep, &[&batch]).await?;
            let mut full = false;
            for flat in replies {
                let (removed, _at) = self.ending(flat)?;
                total += usize::try_from(removed).unwrap_or(0);
                full |= removed >= SWEEP_BATCH;
            }
            if !full {
                return Ok(total);
            }
        }
    }

    async fn live_sessions(&self) -> Result<Vec<u64>, StoreError> {
        let replies: Vec<Vec<u64>> = self
            .on_every_shard(&self.scripts.live_sessions, &[])
            .await?;
        let mut total = vec![0; self.config.modules.len()];
        for counts in replies {
            for (sum, n) in total.iter_mut().zip(counts) {
                *sum += n;
            }
        }
        Ok(total)
    }

    async fn record_sample(&self) -> Result<(), StoreError> {
        let mut inv = self.invocation(&self.scripts.sample, 0);
        if self.shards.len() > 1 {
            let counts = self.module_counts().await?;
            let given = counts
                .counts
                .iter()
                .map(|c| c.active_now.to_string())
                .collect::<Vec<_>>()
                .join(",");
            inv.arg(given);
        }
        let _: Vec<Value> = self.call(&inv).await?;
        Ok(())
    }

    async fn history(&self, minutes: i64) -> Result<History, StoreError> {
        let replies: Vec<Vec<Value>> = self
            .on_every_shard(&self.scripts.history, &[&minutes.to_string()])
            .await?;
        let mut at = 0;
        let mut merged: BTreeMap<Millis, MinuteBucket> = BTreeMap::new();
        for flat in replies {
            let (shard_at, buckets) = parse_history(flat, &self.config.modules)?;
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

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(drop)
            .map_err(store_error)
    }
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
