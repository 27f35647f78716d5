//! Presence events written by the Redis store's scripts (`events.lua`):
//! each operation's events, read back through the outbox, are those that
//! `presence::events::diff` gives for the same change, computed here by a
//! small model of the sessions the store holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use presence::clock::{Clock, ManualClock, Millis};
use presence::domain::{Activity, ClientId, Modules, ResourceId, UserId};
use presence::events::{Event, Reason, UserView, diff};
use presence::store::redis::RedisOutbox;
use presence::store::{
    Heartbeat, Leave, NoObserver, RedisConfig, RedisStore, SessionStore, TimeSource, Topology,
};
use presence::webhooks::Cursor;

use super::helpers::start_time;
use super::redis_server::{shared_url, unique_prefix};

pub const TTL: Duration = Duration::from_secs(60);
const TTL_MS: Millis = 60_000;
const CAP: usize = 3;

/// One heartbeat, built from [`beat`].
#[derive(Debug, Clone)]
pub struct Beat {
    user: String,
    tab: Option<String>,
    module: String,
    resource: Option<String>,
    idle: bool,
    hidden: bool,
}

/// A heartbeat of `user` in `module`: default session, active, no resource.
pub fn beat(user: &str, module: &str) -> Beat {
    Beat {
        user: user.into(),
        tab: None,
        module: module.into(),
        resource: None,
        idle: false,
        hidden: false,
    }
}

impl Beat {
    pub fn tab(self, tab: &str) -> Self {
        Self {
            tab: Some(tab.into()),
            ..self
        }
    }
    pub fn on(self, resource: &str) -> Self {
        Self {
            resource: Some(resource.into()),
            ..self
        }
    }
    pub fn idle(self) -> Self {
        Self { idle: true, ..self }
    }
    pub fn hidden(self) -> Self {
        Self {
            hidden: true,
            ..self
        }
    }
}

/// A session as the model holds it.
#[derive(Debug, Clone)]
struct Sess {
    module: String,
    resource: String,
    idle: bool,
    ls: Millis,
}

/// The sessions the store holds, and the events `diff` gives for each
/// change to them, step by step as the scripts take them.
#[derive(Debug, Default)]
struct Model {
    /// The store's shard count: a script sees the resource sets of its
    /// own shard only, so occupancy is per shard.
    shards: usize,
    users: BTreeMap<String, BTreeMap<String, Sess>>,
    hidden: BTreeMap<String, bool>,
    events: Vec<Event>,
}

impl Model {
    fn view(&self, user: &str) -> UserView {
        let mut v = UserView {
            hidden: self.hidden.get(user).copied().unwrap_or(false),
            ..UserView::default()
        };
        for s in self.users.get(user).into_iter().flat_map(BTreeMap::values) {
            v.modules.insert(s.module.clone());
            if !s.resource.is_empty() {
                let m = v
                    .resources
                    .entry(s.resource.clone())
                    .or_insert_with(|| s.module.clone());
                if s.module < *m {
                    m.clone_from(&s.module);
                }
            }
            v.active |= !s.idle;
        }
        v
    }

    /// Whether another user of `user`'s shard holds a session on
    /// `resource`.
    fn others_on(&self, user: &str, resource: &str) -> bool {
        let shard = shard_of(user, self.shards);
        self.users.iter().any(|(u, ss)| {
            u != user
                && shard_of(u, self.shards) == shard
                && ss.values().any(|s| s.resource == resource)
        })
    }

    /// The events from `before` to the user's view now.
    fn step(&mut self, user: &str, before: &UserView, at: Millis, reason: Reason) -> UserView {
        let after = self.view(user);
        let mut out = Vec::new();
        diff(
            user,
            before,
            &after,
            at,
            reason,
            |r| self.others_on(user, r),
            &mut out,
        );
        self.events.extend(out);
        after
    }

    fn sessions(&mut self, user: &str) -> &mut BTreeMap<String, Sess> {
        self.users.entry(user.to_owned()).or_default()
    }

    fn remove(&mut self, user: &str, field: &str) {
        let sessions = self.sessions(user);
        sessions.remove(field);
        if sessions.is_empty() {
            self.users.remove(user);
        }
    }

    /// `user`'s sessions (field, last seen) in the order the scripts end
    /// them: oldest first, ties by field.
    fn by_last_seen(
        &self,
        user: &str,
        pick: impl Fn(&str, &Sess) -> bool,
    ) -> Vec<(Millis, String)> {
        let mut out: Vec<(Millis, String)> = self
            .users
            .get(user)
            .into_iter()
            .flat_map(|ss| ss.iter())
            .filter(|(f, s)| pick(f, s))
            .map(|(f, s)| (s.ls, f.clone()))
            .collect();
        out.sort();
        out
    }

    fn heartbeat(&mut self, now: Millis, b: &Beat) {
        let user = b.user.as_str();
        let field = b.tab.clone().unwrap_or_default();
        let mut view = self.view(user);
        for (ls, f) in self.by_last_seen(user, |_, s| s.ls <= now - TTL_MS) {
            self.remove(user, &f);
            view = self.step(user, &view, ls + TTL_MS, Reason::Expired);
        }
        let held = self.users.get(user).map_or(0, BTreeMap::len);
        let mine = self
            .users
            .get(user)
            .is_some_and(|ss| ss.contains_key(&field));
        if !mine && held >= CAP {
            let (_, oldest) = self.by_last_seen(user, |_, _| true).remove(0);
            self.remove(user, &oldest);
            view = self.step(user, &view, now, Reason::Left);
        }
        self.sessions(user).insert(
            field,
            Sess {
                module: b.module.clone(),
                resource: b.resource.clone().unwrap_or_default(),
                idle: b.idle,
                ls: now,
            },
        );
        self.hidden.insert(user.to_owned(), b.hidden);
        self.step(user, &view, now, Reason::Moved);
    }

    fn leave(&mut self, now: Millis, user: &str, which: Option<&str>) {
        let gone = self.by_last_seen(user, |f, _| which.is_none_or(|w| w == f));
        let mut view = self.view(user);
        let mut left = false;
        for (ls, f) in gone {
            self.remove(user, &f);
            if ls <= now - TTL_MS {
                view = self.step(user, &view, ls + TTL_MS, Reason::Expired);
            } else {
                left = true;
            }
        }
        if left {
            self.step(user, &view, now, Reason::Left);
        }
    }

    fn sweep(&mut self, now: Millis) {
        // As the time index orders them: last seen, then "field\x1fuser".
        let mut dead: Vec<(Millis, String, String, String)> = self
            .users
            .iter()
            .flat_map(|(u, ss)| {
                ss.iter()
                    .filter(move |(_, s)| s.ls <= now - TTL_MS)
                    .map(move |(f, s)| (s.ls, format!("{f}\u{1f}{u}"), u.clone(), f.clone()))
            })
            .collect();
        dead.sort();
        for (ls, _, user, field) in dead {
            let before = self.view(&user);
            self.remove(&user, &field);
            self.step(&user, &before, ls + TTL_MS, Reason::Expired);
        }
    }
}

/// The store's shard of a user: FNV-1a, as `store/redis/shards.rs`.
fn shard_of(user: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    usize::try_from(hash % shards.max(1) as u64).unwrap()
}

/// A Redis store with events on, its outbox, and the model beside it.
pub struct Rig {
    pub store: RedisStore,
    pub outbox: RedisOutbox,
    pub clock: Arc<ManualClock>,
    pub url: String,
    pub prefix: String,
    modules: Modules,
    model: Model,
    seen: Cursor,
    /// Whether the store writes events.
    events: bool,
}

/// A store on the shared test server (`None` without redis-server) with
/// `shards`, at most `events_max` events per shard (0: off), and an outbox
/// for `endpoints`.
pub fn rig(shards: u16, events_max: usize, endpoints: &[&str]) -> Option<Rig> {
    let url = shared_url()?;
    Some(rig_on(
        Topology::Single { url: url.clone() },
        &url,
        shards,
        events_max,
        endpoints,
    ))
}

pub fn rig_on(
    topology: Topology,
    url: &str,
    shards: u16,
    events_max: usize,
    endpoints: &[&str],
) -> Rig {
    let clock = Arc::new(ManualClock::new(start_time()));
    let modules = Modules::default();
    let prefix = unique_prefix("events");
    let store = RedisStore::new(
        RedisConfig {
            topology,
            key_prefix: prefix.clone(),
            shards,
            modules: modules.clone(),
            session_ttl: TTL,
            timezone: chrono_tz::Tz::UTC,
            max_sessions_per_user: CAP,
            profile_claims: presence::config::ProfileClaims::parse("name,picture").unwrap(),
            events_max,
        },
        clock.clone(),
        TimeSource::Clock(clock.clone()),
        Arc::new(NoObserver),
    )
    .unwrap();
    let outbox = store.outbox(endpoints.iter().map(|e| (*e).to_owned()));
    Rig {
        store,
        outbox,
        clock,
        url: url.to_owned(),
        prefix,
        modules,
        model: Model {
            shards: usize::from(shards.max(1)),
            ..Model::default()
        },
        seen: Cursor::default(),
        events: events_max > 0,
    }
}

impl Rig {
    pub fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub async fn beat(&mut self, b: Beat) {
        self.store
            .heartbeat(Heartbeat {
                client: b.tab.as_deref().map(|t| ClientId::parse(t).unwrap()),
                resource: b.resource.as_deref().map(|r| ResourceId::parse(r).unwrap()),
                state: if b.idle {
                    Activity::Idle
                } else {
                    Activity::Active
                },
                hidden: b.hidden,
                ..Heartbeat::new(
                    UserId::parse(&b.user).unwrap(),
                    self.modules.by_code(&b.module).unwrap(),
                )
            })
            .await
            .unwrap();
        self.model.heartbeat(self.now(), &b);
    }

    /// Closes `user`'s tab (`Some`), default session (`Some("")`) or all.
    pub async fn leave(&mut self, user: &str, which: Option<&str>) {
        let leave = match which {
            None => Leave::All,
            Some("") => Leave::Session(None),
            Some(tab) => Leave::Session(Some(ClientId::parse(tab).unwrap())),
        };
        self.store
            .leave(&UserId::parse(user).unwrap(), leave)
            .await
            .unwrap();
        self.model.leave(self.now(), user, which);
    }

    pub async fn sweep(&mut self) {
        self.store.sweep().await.unwrap();
        self.model.sweep(self.now());
    }

    /// The events written since the last call, checked against the
    /// model's (per user when the log has several shards), as [`show`]s.
    pub async fn take(&mut self) -> Vec<String> {
        let entries = self.outbox.read(&self.seen, 100_000).await.unwrap();
        for e in &entries {
            self.seen.advance(e);
        }
        let got: Vec<Event> = entries.into_iter().map(|e| e.event).collect();
        let mut want = std::mem::take(&mut self.model.events);
        if !self.events {
            want.clear(); // off: none written
        }
        if self.store.shard_count() == 1 {
            assert_eq!(got, want, "the scripts' events are diff's");
        } else {
            let by_user = |events: &[Event]| {
                let mut out: BTreeMap<String, Vec<Event>> = BTreeMap::new();
                for e in events {
                    out.entry(e.user.clone()).or_default().push(e.clone());
                }
                out
            };
            assert_eq!(
                by_user(&got),
                by_user(&want),
                "each user's events are diff's"
            );
        }
        got.iter().map(show).collect()
    }

    /// Every event the log holds, as [`show`]s.
    pub async fn log(&self) -> Vec<String> {
        let entries = self.outbox.read(&Cursor::default(), 100_000).await.unwrap();
        entries.iter().map(|e| show(&e.event)).collect()
    }

    /// A raw command on the test server.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut conn = redis::Client::open(self.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn).unwrap()
    }
}

/// An event in one line: type, user, then its fields (`at` left out).
pub fn show(e: &Event) -> String {
    let mut out = format!("{} {}", e.kind.as_str(), e.user);
    for part in [e.module.as_deref(), e.resource.as_deref()]
        .into_iter()
        .flatten()
    {
        out = format!("{out} {part}");
    }
    if let Some(r) = e.reason {
        out = format!("{out} {}", r.as_str());
    }
    if let Some(s) = e.state {
        out = format!("{out} {}", s.as_str());
    }
    if e.hidden {
        out.push_str(" hidden");
    }
    out
}

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_second_tab_is_no_event_and_closing_one_of_two_is_none() {
    let Some(mut r) = rig(1, 1000, &[]) else {
        return;
    };
    r.beat(beat("1", "pms").tab("a")).await;
    assert_eq!(r.take().await, ["user.online 1 pms", "module.enter 1 pms"]);
    r.advance(SECOND);
    r.beat(beat("1", "pms").tab("b")).await;
    r.advance(SECOND);
    r.beat(beat("1", "pms").tab("a")).await;
    r.leave("1", Some("b")).await;
    assert!(r.take().await.is_empty(), "per user, never per tab");
    r.leave("1", Some("a")).await;
    assert_eq!(
        r.take().await,
        ["module.leave 1 pms left", "user.offline 1 left"]
    );
}

#[tokio::test]
async fn a_resource_is_occupied_by_its_first_viewer_and_vacated_by_its_last() {
    let Some(mut r) = rig(1, 1000, &[]) else {
        return;
    };
    r.beat(beat("1", "pms").on("request:1")).await;
    r.beat(beat("2", "ih").on("request:1")).await;
    assert_eq!(
        r.take().await,
        [
            "user.online 1 pms",
            "module.enter 1 pms",
            "resource.join 1 pms request:1",
            "resource.occupied 1 request:1",
            "user.online 2 ih",
            "module.enter 2 ih",
            "resource.join 2 ih request:1",
        ]
    );
    r.leave("1", None).await;
    r.leave("2", Some("")).await;
    assert_eq!(
        r.take().await,
        [
            "resource.leave 1 pms request:1 left",
            "module.leave 1 pms left",
            "user.offline 1 left",
            "resource.leave 2 ih request:1 left",
            "resource.vacated 2 request:1",
            "module.leave 2 ih left",
            "user.offline 2 left",
        ]
    );
}

#[tokio::test]
async fn a_heartbeat_naming_another_module_or_resource_is_a_move() {
    let Some(mut r) = rig(1, 1000, &[]) else {
        return;
    };
    r.beat(beat("1", "pms").on("request:1")).await;
    r.take().await;
    r.advance(SECOND);
    r.beat(beat("1", "pms").on("request:2")).await;
    assert_eq!(
        r.take().await,
        [
            "resource.leave 1 pms request:1 moved",
            "resource.vacated 1 request:1",
            "resource.join 1 pms request:2",
            "resource.occupied 1 request:2",
        ]
    );
    r.advance(SECOND);
    r.beat(beat("1", "ih").on("request:2")).await;
    assert_eq!(
        r.take().await,
        ["module.leave 1 pms moved", "module.enter 1 ih"],
        "the resource stays: no join, no leave"
    );
}

#[tokio::test]
async fn an_expired_session_ends_at_its_expiry_when_swept_or_beaten_over() {
    let Some(mut r) = rig(1, 1000, &[]) else {
        return;
    };
    let start = r.now();
    r.beat(beat("1", "pms").on("request:1")).await;
    r.beat(beat("2", "ih")).await;
    r.take().await;
    r.advance(TTL + SECOND);
    r.sweep().await;
    let events = r.take().await;
    assert_eq!(
        events,
        [
            "resource.leave 1 pms request:1 expired",
            "resource.vacated 1 request:1",
            "module.leave 1 pms expired",
            "user.offline 1 expired",
            "module.leave 2 ih expired",
            "user.offline 2 expired",
        ]
    );
    let all = r.outbox.read(&Cursor::default(), 100).await.unwrap();
    let last = all.last().unwrap();
    assert_eq!(
        last.event.at,
        start + TTL_MS,
        "at the expiry, not the sweep"
    );

    // A heartbeat that finds an expired session of its user ends it first.
    r.beat(beat("3", "pms").tab("a")).await;
    r.take().await;
    r.advance(TTL + SECOND);
    r.beat(beat("3", "ih").tab("b")).await;
    assert_eq!(
        r.take().await,
        [
            "module.leave 3 pms expired",
            "user.offline 3 expired",
            "user.online 3 ih",
            "module.enter 3 ih",
        ]
    );
}

#[tokio::test]
async fn the_cap_pushes_out_the_oldest_session_as_left() {
    let Some(mut r) = rig(1, 1000, &[]) else {
        return;
    };
    r.beat(beat("1", "pms").tab("a").on("request:1")).await;
    for tab in ["b", "c", "d"] {
        r.advance(SECOND);
        r.beat(beat("1", "ih").tab(tab)).await;
    }
    let events = r.take().await;
    assert_eq!(
        events[events.len() - 3..],
        [
            "resource.leave 1 pms request:1 left",
            "resource.vacated 1 request:1",
            "module.leave 1 pms left",
        ]
    );
}

#[tokio::test]
async fn a_user_turns_idle_when_every_session_is_and_active_when_one_is() {
    let Some(mut r) = rig(1, 1000, &[]) else {
        return;
    };
    r.beat(beat("1", "pms").tab("a")).await;
    r.beat(beat("1", "pms").tab("b").idle()).await;
    r.take().await;
    r.advance(SECOND);
    r.beat(beat("1", "pms").tab("a").idle()).await;
    assert_eq!(r.take().await, ["user.state 1 idle"]);
    r.advance(SECOND);
    r.beat(beat("1", "pms").tab("a").idle()).await;
    assert!(r.take().await.is_empty(), "still idle: nothing");
    r.beat(beat("1", "pms").tab("b")).await;
    assert_eq!(r.take().await, ["user.state 1 active"]);
}

#[tokio::test]
async fn a_hidden_users_events_say_so_up_to_their_offline() {
    let Some(mut r) = rig(1, 1000, &[]) else {
        return;
    };
    r.beat(beat("1", "pms").hidden()).await;
    r.advance(SECOND);
    r.beat(beat("1", "pms").idle().hidden()).await;
    r.leave("1", None).await;
    assert_eq!(
        r.take().await,
        [
            "user.online 1 pms hidden",
            "module.enter 1 pms hidden",
            "user.state 1 idle hidden",
            "module.leave 1 pms left hidden",
            "user.offline 1 left hidden",
        ]
    );
}

#[tokio::test]
async fn with_events_off_no_stream_is_written() {
    let Some(mut r) = rig(1, 0, &[]) else {
        return;
    };
    r.beat(beat("1", "pms").on("request:1")).await;
    r.advance(TTL + SECOND);
    r.sweep().await;
    r.beat(beat("1", "ih")).await;
    r.leave("1", None).await;
    let keys: Vec<String> = r.cmd(&["KEYS", &format!("{{{}}}:events*", r.prefix)]);
    assert!(keys.is_empty(), "{keys:?}");
    assert!(
        r.outbox
            .read(&Cursor::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_full_queue_drops_its_oldest_events_and_counts_them() {
    let Some(mut r) = rig(1, 5, &[]) else {
        return;
    };
    for user in ["1", "2", "3", "4"] {
        r.beat(beat(user, "pms")).await; // two events each
    }
    assert_eq!(
        r.log().await,
        [
            "module.enter 2 pms",
            "user.online 3 pms",
            "module.enter 3 pms",
            "user.online 4 pms",
            "module.enter 4 pms",
        ]
    );
    assert_eq!(r.outbox.dropped().await.unwrap(), 3);
}

#[tokio::test]
async fn with_three_shards_each_users_events_are_in_order() {
    let Some(mut r) = rig(3, 1000, &[]) else {
        return;
    };
    for (i, user) in ["1", "2", "alice", "bob"].into_iter().enumerate() {
        r.beat(beat(user, "pms").on("request:1")).await;
        r.advance(SECOND);
        r.beat(beat(user, "ih").tab("t").on(&format!("request:{i}")))
            .await;
    }
    let events = r.take().await;
    // Occupancy is per shard: a script sees its own shard's viewers only,
    // so request:1 is occupied once in each shard (users 1 and 2 share
    // one).
    let occupied = events
        .iter()
        .filter(|e| e.starts_with("resource.occupied") && e.ends_with(" request:1"))
        .count();
    assert_eq!(occupied, 3, "{events:#?}");
    let shards: std::collections::BTreeSet<usize> = r
        .outbox
        .read(&Cursor::default(), 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| e.shard)
        .collect();
    assert_eq!(shards.len(), 3, "the users live in every shard");
    r.advance(TTL + SECOND);
    r.sweep().await;
    r.take().await;
}

/// A small pseudo-random sequence, the same on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        usize::try_from((self.0 >> 33) % n as u64).unwrap()
    }
}

/// Random beats, leaves, sweeps and waits by three users on two
/// resources: every operation's events are diff's.
async fn random_operations_make_diffs_events(shards: u16, seed: u64) {
    let Some(mut r) = rig(shards, 100_000, &[]) else {
        return;
    };
    let mut rng = Lcg(seed);
    let users = ["1", "2", "42"];
    let tabs = ["", "a", "b", "c"];
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..250 {
        // Time always moves, so no two heartbeats of a user tie.
        let waits = [1, 1_000, 20_000, 61_000];
        r.advance(Duration::from_millis(waits[rng.below(waits.len())]));
        let user = users[rng.below(users.len())];
        let tab = tabs[rng.below(tabs.len())];
        match rng.below(10) {
            0 => r.sweep().await,
            1 => r.leave(user, Some(tab)).await,
            2 => r.leave(user, None).await,
            _ => {
                let mut b = beat(user, ["pms", "ih"][rng.below(2)]);
                if !tab.is_empty() {
                    b = b.tab(tab);
                }
                if let Some(res) = [None, Some("request:1"), Some("request:2")][rng.below(3)] {
                    b = b.on(res);
                }
                if rng.below(3) == 0 {
                    b = b.idle();
                }
                if rng.below(5) == 0 {
                    b = b.hidden();
                }
                r.beat(b).await;
            }
        }
        for e in r.take().await {
            // The type, and the reason or flag it came with.
            let words: Vec<&str> = e.split(' ').collect();
            seen.insert(format!("{} {}", words[0], words[words.len() - 1]));
        }
    }
    for want in [
        "resource.occupied request:2",
        "resource.vacated request:1",
        "user.state idle",
        "user.state active",
        "user.offline expired",
        "user.offline left",
        "module.leave moved",
        "resource.leave moved",
        "resource.leave expired",
        "user.online hidden",
    ] {
        assert!(seen.contains(want), "the run made no {want}: {seen:#?}");
    }
}

#[tokio::test]
async fn random_operations_on_one_shard_make_diffs_events() {
    for seed in [1, 2, 3] {
        random_operations_make_diffs_events(1, seed).await;
    }
}

#[tokio::test]
async fn random_operations_on_three_shards_make_diffs_events() {
    random_operations_make_diffs_events(3, 7).await;
}

/// Redis commands by name (scripts' included) since the last reset.
fn command_calls(r: &Rig) -> BTreeMap<String, u64> {
    let info: String = r.cmd(&["INFO", "commandstats"]);
    let calls = info
        .lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats.split(',').find_map(|s| s.strip_prefix("calls="))?;
            Some((name.to_owned(), calls.parse().ok()?))
        })
        .collect();
    let _: String = r.cmd(&["CONFIG", "RESETSTAT"]);
    calls
}

/// The commands of `n` heartbeats of one session that change nothing.
async fn steady_beats(r: &mut Rig, n: usize) -> BTreeMap<String, u64> {
    let b = beat("1", "pms").on("request:1");
    r.beat(b.clone()).await;
    r.take().await;
    command_calls(r);
    for _ in 0..n {
        r.advance(SECOND);
        r.beat(b.clone()).await;
    }
    let calls = command_calls(r);
    assert!(r.take().await.is_empty());
    calls
}

#[tokio::test]
async fn a_heartbeat_that_changes_nothing_costs_the_same_with_events_on() {
    let Some(server) = super::redis_server::RedisServer::start() else {
        return;
    };
    let url = server.url();
    let topology = || Topology::Single { url: url.clone() };
    let mut off = rig_on(topology(), &url, 1, 0, &[]);
    let mut on = rig_on(topology(), &url, 1, 1000, &[]);
    let (calls_off, calls_on) = (
        steady_beats(&mut off, 10).await,
        steady_beats(&mut on, 10).await,
    );
    assert_eq!(calls_on, calls_off);
    if std::env::var_os("SHOW_COMMANDS").is_some() {
        eprintln!("10 steady heartbeats: {calls_on:?}");
        on.advance(SECOND);
        on.beat(beat("1", "ih").on("request:2")).await;
        eprintln!("a move with events on: {:?}", command_calls(&on));
        off.advance(SECOND);
        off.beat(beat("1", "ih").on("request:2")).await;
        eprintln!("a move with events off: {:?}", command_calls(&off));
    }
}
