//! The Redis store: every instance behind a load balancer sees one truth.
//!
//! # Data model
//! Users are partitioned into `REDIS_SHARDS` shards by a hash of their id
//! ([`shards`]); every key of a shard lives under its hash tag, written
//! `{p}` below: `{REDIS_KEY_PREFIX}` with one shard (the layout from before
//! shards, so an existing deployment keeps its data), `{REDIS_KEY_PREFIX:n}`
//! for shard n of several. One shard's keys share a slot, so each script
//! runs on one node of a Redis Cluster, and the shards spread over its
//! masters.
//! - `{REDIS_KEY_PREFIX}:shards`: the shard count in use, recorded by the
//!   first instance; an instance configured with another refuses to start.
//!   Running instances read it again at every sweep and whenever a shard
//!   is found without its day (its data lost), recording it again if
//!   missing; one that finds another count refuses every call (503) until
//!   it matches again.
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
//!   for user status), `{p}:prof` (hash, the latest token's profile JSON,
//!   served with the current `PROFILE_CLAIMS` only) and `{p}:proftime`
//!   (sorted set, when each kept profile was last written: the sweeper
//!   removes a profile `PROFILE_KEEP` after the user's last session)
//!   and `{p}:hidden` (set, users whose latest token hid them).
//! - With webhooks on, `{p}:events` (stream): the shard's presence events,
//!   appended by the script that makes the change; see `outbox.rs` for it
//!   and the keys beside it.
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
//!
//! # Layout
//! - this file: [`RedisStore`], a handle whose clones share one
//!   connection, and what it is made from ([`RedisConfig`], [`TimeSource`]).
//! - `session_store.rs`: the [`SessionStore`](super::SessionStore)
//!   operations, each a script on one shard or on all of them.
//! - `shards.rs`: which shard a user lives in, the shard count recorded in
//!   Redis, asking every shard and merging their answers.
//! - `scripts.rs`: the Lua scripts (`*.lua` beside this file) and calling
//!   one with the prelude's arguments.
//! - `decode.rs`: the scripts' replies read into the store's types, Redis
//!   errors into [`StoreError`](super::StoreError).
//! - `conn.rs`: the connection to a single server, a Sentinel set or a
//!   cluster.
//! - [`changes`]: the change feed that wakes the presence streams.
//! - `outbox.rs`: [`RedisOutbox`], the webhook events the scripts wrote
//!   (`events.lua`, shared by the scripts that change sessions), read back
//!   for delivery, with each endpoint's cursor and claim.

pub mod changes;
mod conn;
mod decode;
mod outbox;
mod scripts;
mod session_store;
mod shards;

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono_tz::Tz;

use conn::Conn;
pub use conn::Topology;
pub use outbox::RedisOutbox;
use scripts::{DayWindow, Scripts};
use shards::Shard;

use super::SessionObserver;
use super::watch::Watchers;
use crate::clock::Clock;
use crate::config::ProfileClaims;
use crate::domain::Modules;

/// Connection and response timeout for Redis calls.
pub(crate) const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

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
    /// Presence events kept at most in each shard's stream
    /// (`WEBHOOK_QUEUE_MAX`); 0: webhooks are off and the scripts write no
    /// events.
    pub events_max: usize,
    /// `PROFILE_CLAIMS`: a profile is served with only these, whatever
    /// the instance that wrote it kept (another version, a restart with
    /// other settings).
    pub profile_claims: ProfileClaims,
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
            events_max: 0,
            profile_claims: args.jwt.profile_claims.clone(),
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
    /// The shard count Redis recorded when last read, plus one; 0 before
    /// the first read. Calls are refused while it differs from ours.
    layout_seen: Arc<AtomicU32>,
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
        let (base_tag, shards) = shards::layout(&config);
        let codes = config
            .modules
            .ids()
            .map(|id| config.modules.get(id).code.clone())
            .collect::<Vec<_>>()
            .join(",");
        Ok(Self {
            conn,
            scripts: Arc::new(Scripts::load()),
            anywhere: shards.iter().map(|_| AtomicU64::new(0)).collect(),
            shards,
            base_tag,
            layout_seen: Arc::default(),
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
}
