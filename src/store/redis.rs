//! The Redis store: every instance behind a load balancer sees one truth.
//!
//! # Data model
//! All keys live under one hash tag, `{REDIS_KEY_PREFIX}`, so the scripts
//! also run on Redis Cluster.
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
//! by the client on `NOSCRIPT`). A script runs atomically, so concurrent
//! heartbeats of one user on two instances can never leave a session
//! counted in two modules.
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
//! The connection is a `redis::aio::ConnectionManager`: multiplexed,
//! reconnecting by itself with back-off, with connection and response
//! timeouts of `REDIS_TIMEOUT`, so with Redis gone requests answer 503
//! `store_unavailable` quickly and service resumes when Redis returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono_tz::Tz;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, Script, ScriptInvocation, Value};
use serde::Deserialize;

use super::history::{History, MinuteBucket, ModuleMinute};
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
    /// `REDIS_URL`.
    pub url: String,
    /// `REDIS_KEY_PREFIX`, without the braces of the hash tag.
    pub key_prefix: String,
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
    pub(crate) fn from_args(args: &crate::config::ServeArgs) -> Self {
        Self {
            url: args.redis_url.clone(),
            key_prefix: args.redis_key_prefix.clone(),
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
}

/// Sessions in Redis. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    scripts: Arc<Scripts>,
    tag: String,
    time_key: String,
    codes: String,
    config: Arc<RedisConfig>,
    time: TimeSource,
    /// The instance's clock: only for choosing the local day window.
    clock: Arc<dyn Clock>,
    day_window: Arc<Mutex<DayWindow>>,
    observer: Arc<dyn SessionObserver>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("tag", &self.tag)
            .field("time", &self.time)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// A store on `config.url`. Does not wait for Redis: the first calls
    /// connect, so the service starts (and `/readyz` says 503) while Redis
    /// is still down.
    ///
    /// # Errors
    /// The URL cannot be parsed.
    pub fn new(
        config: RedisConfig,
        clock: Arc<dyn Clock>,
        time: TimeSource,
        observer: Arc<dyn SessionObserver>,
    ) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config)?;
        let tag = format!("{{{}}}", config.key_prefix);
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
            }),
            time_key: format!("{tag}:time"),
            tag,
            codes,
            config: Arc::new(config),
            time,
            clock,
            day_window: Arc::default(),
            observer,
        })
    }

    /// Calls a script whose reply is two integers followed by the sessions
    /// it ended (code, length ms, expired), tells the observer of those, and
    /// returns the two integers.
    async fn call_ending(&self, inv: &ScriptInvocation<'_>) -> Result<(i64, Millis), StoreError> {
        let flat: Vec<Value> = self.call(inv).await?;
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

    /// Prepares `script` with the prelude's arguments.
    fn invocation<'a>(&self, script: &'a Script) -> ScriptInvocation<'a> {
        let now = match &self.time {
            TimeSource::Redis => String::new(),
            TimeSource::Clock(clock) => clock.now_ms().to_string(),
        };
        let mut inv = script.key(&self.time_key);
        inv.arg(&self.tag)
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
        let mut conn = self.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(store_error)
    }
}

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as map_err(store_error)"
)]
fn store_error(e: redis::RedisError) -> StoreError {
    // A full Redis (`maxmemory` reached under `noeviction`, which it must
    // run with) refuses writes with OOM: an outage to wait out, not a bug.
    let full = e.code() == Some("OOM");
    if full
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

impl SessionStore for RedisStore {
    async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatAck, StoreError> {
        let mut inv = self.invocation(&self.scripts.heartbeat);
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
        Ok(HeartbeatAck {
            active_users: u64::try_from(active).unwrap_or(0),
            exact: true,
            at,
        })
    }

    async fn leave(&self, user: &UserId, which: Leave) -> Result<usize, StoreError> {
        let mut inv = self.invocation(&self.scripts.leave);
        inv.arg(user.as_str());
        match &which {
            Leave::All => inv.arg("all").arg(""),
            Leave::Session(client) => inv.arg("one").arg(field(client.as_ref())),
        };
        let (ended, _at) = self.call_ending(&inv).await?;
        Ok(usize::try_from(ended).unwrap_or(0))
    }

    async fn module_counts(&self) -> Result<CountsAt, StoreError> {
        let inv = self.invocation(&self.scripts.counts);
        let flat: Vec<u64> = self.call(&inv).await?;
        let [at, users_anywhere, rest @ ..] = flat.as_slice() else {
            return Err(malformed("short counts"));
        };
        let counts: Vec<ModuleCounts> = rest
            .chunks_exact(4)
            .map(|c| ModuleCounts {
                active_now: c[0],
                idle_now: c[1],
                today: c[2],
                total_users: c[3],
            })
            .collect();
        if counts.len() != self.config.modules.len() {
            return Err(malformed("counts for another module registry"));
        }
        Ok(CountsAt {
            counts,
            users_anywhere: *users_anywhere,
            at: Millis::try_from(*at).unwrap_or_default(),
        })
    }

    async fn resource_viewers(&self, resource: &ResourceId) -> Result<ResourceViewers, StoreError> {
        let mut inv = self.invocation(&self.scripts.viewers);
        inv.arg(resource.as_str()).arg(MAX_LISTED_VIEWERS);
        let flat: Vec<Value> = self.call(&inv).await?;
        let mut it = flat.into_iter();
        let at = int(&it.next().ok_or_else(|| malformed("empty viewers"))?)?;
        let count = int(&it.next().ok_or_else(|| malformed("no viewer count"))?)?;
        let mut viewers = Vec::new();
        while let (Some(user), Some(since), Some(last), Some(idle), Some(prof)) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        {
            // An id today's rules refuse (stored before they did) is skipped,
            // not a 500 for everyone who looks at the resource.
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
        Ok(ResourceViewers::ordered(
            viewers,
            u64::try_from(count).unwrap_or(0),
            at,
        ))
    }

    async fn user_status(&self, users: &[UserId]) -> Result<UsersStatus, StoreError> {
        let mut inv = self.invocation(&self.scripts.users);
        for user in users {
            inv.arg(user.as_str());
        }
        let flat: Vec<Value> = self.call(&inv).await?;
        let mut it = flat.into_iter();
        let at = int(&it.next().ok_or_else(|| malformed("empty user status"))?)?;
        let mut out = Vec::with_capacity(users.len());
        for user in users {
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
            out.push((user.clone(), status));
        }
        Ok(UsersStatus { users: out, at })
    }

    async fn sessions(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<SessionPage, StoreError> {
        let mut inv = self.invocation(&self.scripts.sessions);
        inv.arg(limit);
        match &cursor {
            Some(c) => {
                inv.arg(c.last_seen)
                    .arg(format!("{}\u{1f}{}", field(c.client.as_ref()), c.user))
            }
            None => inv.arg("").arg(""),
        };
        let flat: Vec<Value> = self.call(&inv).await?;
        let mut it = flat.into_iter();
        let at = int(&it.next().ok_or_else(|| malformed("empty page"))?)?;
        let more = int(&it.next().ok_or_else(|| malformed("empty page"))?)? == 1;
        let mut sessions = Vec::new();
        let mut last_row = None;
        while let (Some(member), Some(score), Some(raw)) = (it.next(), it.next(), it.next()) {
            let member = text(member)?;
            let score: Millis = text(score)?
                .parse::<f64>()
                .map(ms)
                .map_err(|_| malformed("score"))?;
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
            let raw = text(raw)?;
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
        let mut total = 0;
        loop {
            let mut inv = self.invocation(&self.scripts.sweep);
            inv.arg(SWEEP_BATCH);
            let (removed, _at) = self.call_ending(&inv).await?;
            total += usize::try_from(removed).unwrap_or(0);
            if removed < SWEEP_BATCH {
                return Ok(total);
            }
        }
    }

    async fn live_sessions(&self) -> Result<Vec<u64>, StoreError> {
        let inv = self.invocation(&self.scripts.live_sessions);
        self.call(&inv).await
    }

    async fn record_sample(&self) -> Result<(), StoreError> {
        let inv = self.invocation(&self.scripts.sample);
        let _: Vec<Value> = self.call(&inv).await?;
        Ok(())
    }

    async fn history(&self, minutes: i64) -> Result<History, StoreError> {
        let mut inv = self.invocation(&self.scripts.history);
        inv.arg(minutes);
        let flat: Vec<Value> = self.call(&inv).await?;
        let mut it = flat.into_iter();
        let at = int(&it.next().ok_or_else(|| malformed("empty history"))?)?;
        let mut buckets = Vec::new();
        while let (Some(start), Some(fields)) = (it.next(), it.next()) {
            let mut bucket = MinuteBucket {
                start: int(&start)?,
                modules: vec![ModuleMinute::default(); self.config.modules.len()],
            };
            for _ in 0..int(&fields)? / 2 {
                let (Some(name), Some(value)) = (it.next(), it.next()) else {
                    return Err(malformed("history fields"));
                };
                let (name, value) = (text(name)?, text(value)?);
                let Some((code, field)) = name.rsplit_once(':') else {
                    continue;
                };
                let Some(id) = self.config.modules.by_code(code) else {
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
