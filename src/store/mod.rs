//! Where sessions live, behind one trait that every backend satisfies.
//!
//! Routes and the sweeper talk to a [`Store`]; they never know which backend
//! answers. [`SessionStore`] is the behaviour every backend must have (the
//! suite in `tests/api/store_contract.rs` is written once against it), and
//! [`Store`] is the closed set of backends chosen once at start-up. A closed
//! enum that delegates keeps the async methods `Send` and static-dispatched
//! without boxing a future per call, which matters on the heartbeat path.
//!
//! Time: a backend reads the clock itself and reports the instant it used
//! (`at`), so one request never mixes two notions of "now", and a backend
//! that has a shared clock of its own (Redis) can use it.

use std::future::Future;
use std::sync::Arc;

use crate::clock::{Clock, Millis};
use crate::config::{Config, ConfigError};
use crate::domain::{Activity, ClientId, ModuleId, Page, Profile, ResourceId, UserId};

pub mod history;
pub mod memory;
pub mod redis;
mod ttl;
pub(crate) mod users;
pub mod watch;

pub use history::History;
use memory::MemoryConfig;
pub use memory::MemoryStore;
pub use redis::{RedisConfig, RedisStore, TimeSource, Topology};
pub use ttl::{PROFILE_KEEP, Ttl};

/// Told of every session that ends, for the session-length metric.
pub trait SessionObserver: Send + Sync + std::fmt::Debug + 'static {
    /// Sessions in `module` (its code) ended after `seconds` each; `expired`
    /// when they ran out their TTL, else they were left (ended, moved
    /// away). Told in groups: a mass expiry ends a million at once.
    fn sessions_ended(&self, module: &str, expired: bool, seconds: &[f64]);
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl SessionObserver for NoObserver {
    fn sessions_ended(&self, _module: &str, _expired: bool, _seconds: &[f64]) {}
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached now; the request may be retried.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The backend answered, but not as expected (a bug, not an outage).
    #[error("session store failed: {0}")]
    Backend(String),
}

/// One heartbeat, already validated.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    /// Who, from the token.
    pub user: UserId,
    /// Which tab or device; `None` is the user's default session.
    pub client: Option<ClientId>,
    /// Where the user is.
    pub module: ModuleId,
    /// The route the user is on, if sent.
    pub page: Option<Page>,
    /// What the user is viewing, if sent.
    pub resource: Option<ResourceId>,
    /// Whether the user is at the keyboard in this session.
    pub state: Activity,
    /// The user's profile from their token: kept once per user, replaced
    /// (or removed, when `None`) by every heartbeat.
    pub profile: Option<Profile>,
    /// Whether the user's token hides them from viewers and user status
    /// (they still count); kept per user, latest heartbeat wins.
    pub hidden: bool,
}

impl Heartbeat {
    /// A heartbeat of `user` in `module` that says nothing more: the
    /// user's default session, no page or resource, active, no profile,
    /// not hidden. The rest is set with struct update syntax:
    /// `Heartbeat { resource: Some(r), ..Heartbeat::new(user, module) }`.
    pub fn new(user: UserId, module: ModuleId) -> Self {
        Self {
            user,
            client: None,
            module,
            page: None,
            resource: None,
            state: Activity::Active,
            profile: None,
            hidden: false,
        }
    }
}

/// What a heartbeat tells the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatAck {
    /// Distinct users live in any module after this heartbeat.
    pub active_users: u64,
    /// Whether `active_users` is exact. The memory store answers without
    /// waiting for a mass expiry to be worked off (see `docs/design.md`);
    /// until it is, the count may include users who have just expired, and
    /// is not used for peaks.
    pub exact: bool,
    /// When the store recorded it.
    pub at: Millis,
}

/// Which sessions a leave ends.
#[derive(Debug, Clone)]
pub enum Leave {
    /// One session: a tab (`Some`) or the user's default session (`None`).
    Session(Option<ClientId>),
    /// Every session of the user (logout).
    All,
}

/// The three counts of one module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModuleCounts {
    /// Distinct users with a live session in the module now.
    pub active_now: u64,
    /// Of those, the users all of whose live sessions there are idle.
    pub idle_now: u64,
    /// Distinct users seen in the module since 00:00 in `STATS_TIMEZONE`.
    pub today: u64,
    /// Distinct users ever seen in the module.
    pub total_users: u64,
}

/// Counts of every module, in registry order, and when they were taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountsAt {
    /// Indexed by [`ModuleId::index`].
    pub counts: Vec<ModuleCounts>,
    /// Distinct users live in any module.
    pub users_anywhere: u64,
    /// The instant the counts are exact for.
    pub at: Millis,
}

/// One user viewing a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    /// Who.
    pub user: UserId,
    /// Since when the user has been viewing it (earliest of their sessions).
    pub since: Millis,
    /// Their latest heartbeat naming it.
    pub last_seen: Millis,
    /// Active if any of their live sessions on it is, else idle.
    pub state: Activity,
    /// Their profile, if their token had one.
    pub profile: Option<Profile>,
}

/// The most viewers one answer lists; `count` counts them all.
pub const MAX_LISTED_VIEWERS: usize = 100;

/// The viewers of one resource and when they were listed. Hidden users
/// are neither listed nor counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceViewers {
    /// One entry per user, earliest `since` first, at most
    /// [`MAX_LISTED_VIEWERS`].
    pub viewers: Vec<Viewer>,
    /// Every visible viewer, listed or not.
    pub count: u64,
    /// The instant the list is exact for.
    pub at: Millis,
}

impl ResourceViewers {
    /// `viewers` (one entry per user, `count` in all, perhaps more than
    /// given) at `at`, put in the order every backend answers: earliest
    /// `since` first, then by user id; the first [`MAX_LISTED_VIEWERS`].
    pub(crate) fn ordered(mut viewers: Vec<Viewer>, count: u64, at: Millis) -> Self {
        viewers.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.user.cmp(&b.user)));
        viewers.truncate(MAX_LISTED_VIEWERS);
        Self { viewers, count, at }
    }
}

/// Where one user is, as user status reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserStatus {
    /// `None` when offline (no live session, or hidden); else active if
    /// any live session is, idle if all are.
    pub state: Option<Activity>,
    /// The modules of their live sessions, in registry order.
    pub modules: Vec<ModuleId>,
    /// Their latest heartbeat, while the store remembers it; `None` for a
    /// user never seen (or hidden).
    pub last_seen: Option<Millis>,
    /// Their profile, if remembered (never for a hidden user).
    pub profile: Option<Profile>,
}

/// The status of the users asked for, in the order asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersStatus {
    /// One entry per user asked for.
    pub users: Vec<(UserId, UserStatus)>,
    /// The instant the answer is exact for.
    pub at: Millis,
}
/// One live session, for the admin list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Whose.
    pub user: UserId,
    /// Which tab; `None` for the default session.
    pub client: Option<ClientId>,
    /// Where.
    pub module: ModuleId,
    /// Latest page sent.
    pub page: Option<Page>,
    /// Latest resource sent.
    pub resource: Option<ResourceId>,
    /// The state of its latest heartbeat.
    pub state: Activity,
    /// When the session started in this module.
    pub started_at: Millis,
    /// Its latest heartbeat.
    pub last_seen: Millis,
}

/// A position in the admin session list: the last session of a page.
/// Sessions are ordered newest `last_seen` first; the order within one
/// millisecond is the backend's own (see `docs/design.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// `last_seen` of the last session returned.
    pub last_seen: Millis,
    /// Its user.
    pub user: UserId,
    /// Its client.
    pub client: Option<ClientId>,
}

/// One page of the admin session list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPage {
    /// Newest `last_seen` first.
    pub sessions: Vec<SessionInfo>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    /// The instant the page is exact for.
    pub at: Millis,
}

/// The behaviour every session store has.
///
/// A session is live while `now - last_seen < SESSION_TTL` (the rule is
/// [`Ttl`]'s); every read applies that rule itself, so nothing past its TTL is ever counted or
/// listed, whenever the sweeper last ran.
pub trait SessionStore: Send + Sync + 'static {
    /// Records a heartbeat: creates or refreshes the session keyed by
    /// (user, client), moving it to the heartbeat's module.
    fn heartbeat(
        &self,
        beat: Heartbeat,
    ) -> impl Future<Output = Result<HeartbeatAck, StoreError>> + Send;

    /// Ends sessions of `user` now; returns how many were live.
    fn leave(
        &self,
        user: &UserId,
        which: Leave,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// The counts of every module.
    fn module_counts(&self) -> impl Future<Output = Result<CountsAt, StoreError>> + Send;

    /// Who is viewing `resource` now (hidden users left out).
    fn resource_viewers(
        &self,
        resource: &ResourceId,
    ) -> impl Future<Output = Result<ResourceViewers, StoreError>> + Send;

    /// Where each of `users` is now, in one look (one round trip on
    /// Redis). Hidden users read as never seen.
    fn user_status(
        &self,
        users: &[UserId],
    ) -> impl Future<Output = Result<UsersStatus, StoreError>> + Send;

    /// Up to `limit` live sessions after `cursor`.
    fn sessions(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> impl Future<Output = Result<SessionPage, StoreError>> + Send;

    /// Live sessions per module, indexed by [`ModuleId::index`].
    fn live_sessions(&self) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send;

    /// Removes expired sessions from memory; returns how many.
    fn sweep(&self) -> impl Future<Output = Result<usize, StoreError>> + Send;

    /// Succeeds when the store can serve requests (for `/readyz`).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records each module's `activeNow` as the current minute's sample
    /// (the first sample of a minute wins, so several instances may all
    /// sample).
    fn record_sample(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The last `minutes` minutes of history, up to now.
    fn history(&self, minutes: i64) -> impl Future<Output = Result<History, StoreError>> + Send;
}

/// The store chosen at start-up.
#[derive(Debug, Clone)]
pub enum Store {
    /// Sessions in this process's memory (`STORE=memory`).
    Memory(MemoryStore),
    /// Sessions in Redis, shared by every instance (`STORE=redis`).
    Redis(RedisStore),
}

impl Store {
    /// The store the settings ask for: Redis where [`Config::redis`]
    /// says, or memory. With `STORE=redis`, `redis_time` says whose clock
    /// decides liveness (Redis's own in production).
    ///
    /// # Errors
    /// An unusable `REDIS_URL`.
    pub(crate) fn open(
        config: &Config,
        clock: Arc<dyn Clock>,
        redis_time: TimeSource,
        observer: Arc<dyn SessionObserver>,
    ) -> Result<Self, ConfigError> {
        let args = &config.args;
        Ok(match &config.redis {
            None => Self::Memory(MemoryStore::new(
                &MemoryConfig::from_args(args),
                clock,
                observer,
            )),
            Some(topology) => Self::Redis(
                RedisStore::new(
                    RedisConfig {
                        // With webhooks, the scripts write events too.
                        events_max: config.webhooks.as_ref().map_or(0, |w| w.queue_max),
                        ..RedisConfig::from_args(args, topology)
                    },
                    clock,
                    redis_time,
                    observer,
                )
                .map_err(|e| ConfigError::new(topology.variable(), e.to_string()))?,
            ),
        })
    }

    /// The registry of presence streams that this store's changes reach
    /// (on Redis, changes made by any instance).
    pub fn watchers(&self) -> &Arc<watch::Watchers> {
        match self {
            Self::Memory(s) => s.watchers(),
            Self::Redis(s) => s.watchers(),
        }
    }

    /// The backend's name, for logs and `/readyz`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

/// Forwards a call to whichever backend this is.
macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Store::Memory($store) => $call.await,
            Store::Redis($store) => $call.await,
        }
    };
}

impl SessionStore for Store {
    async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatAck, StoreError> {
        delegate!(self, s => s.heartbeat(beat))
    }

    async fn leave(&self, user: &UserId, which: Leave) -> Result<usize, StoreError> {
        delegate!(self, s => s.leave(user, which))
    }

    async fn module_counts(&self) -> Result<CountsAt, StoreError> {
        delegate!(self, s => s.module_counts())
    }

    async fn resource_viewers(&self, resource: &ResourceId) -> Result<ResourceViewers, StoreError> {
        delegate!(self, s => s.resource_viewers(resource))
    }

    async fn user_status(&self, users: &[UserId]) -> Result<UsersStatus, StoreError> {
        delegate!(self, s => s.user_status(users))
    }

    async fn sessions(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<SessionPage, StoreError> {
        delegate!(self, s => s.sessions(limit, cursor))
    }

    async fn live_sessions(&self) -> Result<Vec<u64>, StoreError> {
        delegate!(self, s => s.live_sessions())
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        delegate!(self, s => s.sweep())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.ping())
    }

    async fn record_sample(&self) -> Result<(), StoreError> {
        delegate!(self, s => s.record_sample())
    }

    async fn history(&self, minutes: i64) -> Result<History, StoreError> {
        delegate!(self, s => s.history(minutes))
    }
}
