//! The behaviour every store backend must have, written once.
//!
//! Each scenario takes a factory; `store_suite!` instantiates every
//! scenario for a backend, so backends cannot drift apart.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use presence::clock::{Clock, ManualClock};
use presence::domain::{Activity, ClientId, Modules, Page, Profile, ResourceId, UserId};
use presence::store::memory::MemoryConfig;
use presence::store::{
    Heartbeat, Leave, MemoryStore, NoObserver, RedisConfig, RedisStore, SessionStore, Store,
    TimeSource, Topology, UserStatus,
};
use proptest::prelude::*;

use super::helpers::start_time;

const TTL: Duration = Duration::from_secs(300);

/// What a scenario gets: a store over a clock it can move.
pub struct Fixture {
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub modules: Modules,
}

/// Makes a store for a scenario: clock start and time zone.
pub trait Factory: Fn(DateTime<Utc>, Tz) -> Fixture {}
impl<F: Fn(DateTime<Utc>, Tz) -> Fixture> Factory for F {}

pub fn memory(start: DateTime<Utc>, timezone: Tz) -> Fixture {
    let clock = Arc::new(ManualClock::new(start));
    let modules = Modules::default();
    let store = Store::Memory(MemoryStore::new(
        &MemoryConfig {
            modules: modules.clone(),
            session_ttl: TTL,
            timezone,
            max_sessions_per_user: 16,
            profile_claims: presence::config::ProfileClaims::parse("name,picture").unwrap(),
        },
        clock.clone(),
        Arc::new(NoObserver),
    ));
    Fixture {
        store,
        clock,
        modules,
    }
}

/// The same store on Redis: a shared test server, a key prefix of its own.
pub fn redis(start: DateTime<Utc>, timezone: Tz) -> Fixture {
    let url = super::redis_server::shared_url().expect("redis-server is available");
    redis_on(start, timezone, Topology::Single { url }, 1)
}

/// On the master of a shared Sentinel set (1 master, 1 replica, 3
/// sentinels), found through the sentinels.
pub fn sentinel(start: DateTime<Utc>, timezone: Tz) -> Fixture {
    let set = super::redis_server::shared_sentinels().expect("redis-server is available");
    let topology = Topology::Sentinel {
        sentinels: set.sentinel_urls(),
        master: super::redis_server::SentinelSet::MASTER.into(),
    };
    redis_on(start, timezone, topology, 1)
}

/// On a shared cluster of three masters and three replicas, with users in
/// three shards.
pub fn cluster(start: DateTime<Utc>, timezone: Tz) -> Fixture {
    let cluster = super::redis_server::shared_cluster().expect("redis-server is available");
    let topology = Topology::Cluster {
        nodes: cluster.seed_urls(),
    };
    redis_on(start, timezone, topology, 3)
}

/// A Redis store on `topology` with `shards`, under a key prefix of its own.
pub fn redis_on(start: DateTime<Utc>, timezone: Tz, topology: Topology, shards: u16) -> Fixture {
    let clock = Arc::new(ManualClock::new(start));
    let modules = Modules::default();
    let config = RedisConfig {
        topology,
        key_prefix: super::redis_server::unique_prefix("contract"),
        shards,
        modules: modules.clone(),
        session_ttl: TTL,
        timezone,
        max_sessions_per_user: 16,
        profile_claims: presence::config::ProfileClaims::parse("name,picture").unwrap(),
        events_max: 0,
    };
    let store = Store::Redis(
        RedisStore::new(
            config,
            clock.clone(),
            TimeSource::Clock(clock.clone()),
            Arc::new(NoObserver),
        )
        .unwrap(),
    );
    Fixture {
        store,
        clock,
        modules,
    }
}

fn redis_available() -> bool {
    super::redis_server::available()
}

fn memory_available() -> bool {
    true
}

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// How a test heartbeat is sent: state, a `name` in the profile, hidden.
#[derive(Debug, Default, Clone, Copy)]
struct As {
    state: Activity,
    name: Option<&'static str>,
    hidden: bool,
}

const IDLE: As = As {
    state: Activity::Idle,
    name: None,
    hidden: false,
};

impl Fixture {
    async fn beat(&self, who: &str, client: Option<&str>, module: &str) -> u64 {
        self.beat_on(who, client, module, None).await
    }

    async fn beat_on(
        &self,
        who: &str,
        client: Option<&str>,
        module: &str,
        resource: Option<&str>,
    ) -> u64 {
        self.beat_as(who, client, module, resource, &As::default())
            .await
    }

    /// A heartbeat with a state, a profile and a hidden flag.
    async fn beat_as(
        &self,
        who: &str,
        client: Option<&str>,
        module: &str,
        resource: Option<&str>,
        how: &As,
    ) -> u64 {
        self.store
            .heartbeat(Heartbeat {
                user: user(who),
                client: client.map(|c| ClientId::parse(c).unwrap()),
                module: self.modules.by_code(module).unwrap(),
                page: Some(Page::parse("/home").unwrap()),
                resource: resource.map(|r| ResourceId::parse(r).unwrap()),
                state: how.state,
                profile: how.name.map(|n| Profile::build([("name", n)]).unwrap()),
                hidden: how.hidden,
            })
            .await
            .unwrap()
            .active_users
    }

    /// `idleNow` of `pms` and `ih`.
    async fn idle(&self) -> [u64; 2] {
        let snap = self.store.module_counts().await.unwrap();
        for m in &snap.counts {
            assert!(m.idle_now <= m.active_now, "idleNow <= activeNow: {m:?}");
        }
        [snap.counts[0].idle_now, snap.counts[1].idle_now]
    }

    /// The status of one user.
    async fn status(&self, who: &str) -> UserStatus {
        let answer = self.store.user_status(&[user(who)]).await.unwrap();
        assert_eq!(answer.at, self.clock.now_ms());
        answer.users.into_iter().next().unwrap().1
    }

    /// The module codes of a status.
    fn codes(&self, status: &UserStatus) -> Vec<String> {
        status
            .modules
            .iter()
            .map(|&m| self.modules.get(m).code.clone())
            .collect()
    }

    /// `[activeNow, today, totalUsers]` of `pms` and `ih`.
    async fn counts(&self) -> [[u64; 3]; 2] {
        let snap = self.store.module_counts().await.unwrap();
        assert_eq!(snap.at, self.clock.now_ms(), "counts are taken now");
        let c = |i: usize| {
            let m = snap.counts[i];
            [m.active_now, m.today, m.total_users]
        };
        [c(0), c(1)]
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

// Scenario 1 of the original design: two users in different modules, then
// A moves: procurement 0, innovation 2.
pub async fn two_users_then_a_moves(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    assert_eq!(f.beat("A", None, "pms").await, 1);
    assert_eq!(f.beat("B", None, "ih").await, 2);
    assert_eq!(f.counts().await, [[1, 1, 1], [1, 1, 1]]);
    f.advance(Duration::from_secs(45));
    assert_eq!(f.beat("A", None, "ih").await, 2);
    let [pms, ih] = f.counts().await;
    assert_eq!(pms[0], 0, "A left procurement");
    assert_eq!(ih[0], 2, "both are in innovation");
    assert_eq!(pms[1..], [1, 1], "A was in procurement today");
    assert_eq!(ih[1..], [2, 2]);
}

// Scenario 2: after 5 minutes without a heartbeat the session is gone from
// activeNow, while today and totalUsers keep the user, swept or not.
pub async fn session_expires_after_ttl_but_today_keeps_it(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    f.beat("A", None, "pms").await;
    f.advance(TTL - Duration::from_millis(1));
    assert_eq!(
        f.counts().await[0],
        [1, 1, 1],
        "alive one ms before the TTL"
    );
    f.advance(Duration::from_millis(1));
    assert_eq!(
        f.counts().await[0],
        [0, 1, 1],
        "gone at the TTL, before any sweep"
    );
    // Whether the count above already freed it is the backend's business
    // (the memory store removes what has expired before counting).
    assert!(f.store.sweep().await.unwrap() <= 1);
    assert_eq!(f.store.sweep().await.unwrap(), 0, "nothing left to sweep");
    assert_eq!(f.counts().await[0], [0, 1, 1], "and after the sweep");
    assert_eq!(f.store.sessions(10, None).await.unwrap().sessions, vec![]);
}

// A heartbeat after expiry starts a new session.
pub async fn a_heartbeat_after_expiry_starts_a_new_session(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    f.beat("A", None, "pms").await;
    f.advance(TTL + Duration::from_secs(1));
    f.beat("A", None, "pms").await;
    let page = f.store.sessions(10, None).await.unwrap();
    assert_eq!(page.sessions.len(), 1);
    assert_eq!(page.sessions[0].started_at, f.clock.now_ms());
    assert_eq!(f.counts().await[0], [1, 1, 1]);
}

// clientId: two tabs of one user in two modules count in both; without a
// clientId a heartbeat moves the user's one default session.
pub async fn client_ids_are_separate_sessions(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    f.beat("A", Some("tab1"), "pms").await;
    assert_eq!(
        f.beat("A", Some("tab2"), "ih").await,
        1,
        "one distinct user"
    );
    assert_eq!(f.counts().await, [[1, 1, 1], [1, 1, 1]]);
    assert_eq!(f.store.sessions(10, None).await.unwrap().sessions.len(), 2);

    // Ending tab1 leaves tab2 counted.
    assert_eq!(
        f.store
            .leave(&user("A"), Leave::Session(ClientId::parse("tab1")))
            .await
            .unwrap(),
        1
    );
    assert_eq!(f.counts().await[0][0], 0);
    assert_eq!(f.counts().await[1][0], 1);

    // The default session is one more session, and it moves.
    f.beat("B", None, "pms").await;
    f.beat("B", None, "ih").await;
    assert_eq!(f.counts().await[0][0], 0);
    assert_eq!(f.counts().await[1][0], 2);

    // Logout ends every session.
    f.beat("A", Some("tab3"), "pms").await;
    assert_eq!(f.store.leave(&user("A"), Leave::All).await.unwrap(), 2);
    assert_eq!(f.counts().await[0][0], 0);
    assert_eq!(f.counts().await[1][0], 1);
    assert_eq!(
        f.store.leave(&user("A"), Leave::All).await.unwrap(),
        0,
        "nothing left"
    );
}

// A user with two sessions in one module stays active while either lives.
pub async fn a_module_keeps_a_user_while_any_session_lives(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    f.beat("A", Some("tab1"), "pms").await;
    f.advance(Duration::from_secs(200));
    f.beat("A", Some("tab2"), "pms").await;
    f.advance(Duration::from_secs(150));
    // tab1 is past its TTL, tab2 is not.
    assert_eq!(f.counts().await[0][0], 1);
    f.beat("A", Some("tab2"), "ih").await;
    assert_eq!(f.counts().await[0][0], 0, "tab1 expired, tab2 moved away");
}

// The cap on sessions per user: the 17th replaces the least recently seen.
pub async fn sessions_per_user_are_capped(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    for i in 0..17 {
        f.beat("A", Some(&format!("tab{i}")), "pms").await;
        f.advance(Duration::from_millis(10));
    }
    let page = f.store.sessions(100, None).await.unwrap();
    assert_eq!(page.sessions.len(), 16);
    assert!(
        page.sessions
            .iter()
            .all(|s| s.client.as_ref().map(ClientId::as_str) != Some("tab0"))
    );
}

// `today` rolls over at local midnight in a non-UTC time zone, keeping the
// users still live at midnight, while totalUsers keeps everyone.
pub async fn today_rolls_over_at_local_midnight(make: impl Factory) {
    let tz: Tz = "America/New_York".parse().unwrap();
    // 23:50 on 14 January in New York is 04:50 UTC on the 15th.
    let start = DateTime::parse_from_rfc3339("2026-01-14T23:50:00-05:00")
        .unwrap()
        .with_timezone(&Utc);
    let f = make(start, tz);
    f.beat("early", None, "pms").await; // 23:50, expires 23:55
    f.advance(Duration::from_secs(8 * 60));
    f.beat("late", None, "pms").await; // 23:58, live at midnight
    assert_eq!(f.counts().await[0], [1, 2, 2]);
    f.advance(Duration::from_secs(3 * 60)); // 00:01 on the 15th
    assert_eq!(
        f.counts().await[0],
        [1, 1, 2],
        "only the user live at midnight is in today"
    );
    f.beat("new", None, "pms").await;
    assert_eq!(f.counts().await[0], [2, 2, 3]);
    // 20:00 in New York is 01:00 UTC on the 16th: UTC midnight changes nothing.
    f.advance(Duration::from_secs(20 * 3600 - 60));
    f.beat("evening", None, "pms").await;
    assert_eq!(f.counts().await[0], [1, 3, 4], "still the 15th in New York");
    f.advance(Duration::from_secs(4 * 3600 + 60)); // 00:01 on the 16th
    assert_eq!(
        f.counts().await[0],
        [0, 0, 4],
        "a new day: nobody is live or here today yet"
    );
}

// Resource viewers: live sessions whose latest heartbeat named it, one
// entry per user.
pub async fn resource_viewers_follow_the_latest_heartbeat(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    let r = ResourceId::parse("request:123").unwrap();
    f.beat_on("A", Some("t1"), "pms", Some("request:123")).await;
    f.advance(Duration::from_secs(10));
    f.beat_on("A", Some("t2"), "pms", Some("request:123")).await;
    f.beat_on("B", None, "pms", Some("request:123")).await;
    f.beat_on("C", None, "pms", Some("request:999")).await;
    let viewers = f.store.resource_viewers(&r).await.unwrap().viewers;
    let ids: Vec<&str> = viewers.iter().map(|v| v.user.as_str()).collect();
    assert_eq!(ids, ["A", "B"], "one entry per user, earliest first");
    assert_eq!(viewers[0].since, f.clock.now_ms() - 10_000);
    assert_eq!(viewers[0].last_seen, f.clock.now_ms());

    f.beat_on("B", None, "pms", Some("request:999")).await;
    f.beat_on("A", Some("t1"), "pms", None).await;
    let viewers = f.store.resource_viewers(&r).await.unwrap().viewers;
    assert_eq!(viewers.len(), 1, "B moved on; A still has t2 on it");
    f.advance(TTL);
    assert!(
        f.store
            .resource_viewers(&r)
            .await
            .unwrap()
            .viewers
            .is_empty(),
        "expired"
    );
}

// The admin list: newest first, every session exactly once across pages.
pub async fn sessions_page_newest_first_without_gaps(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    for i in 0..25 {
        f.beat(
            &format!("u{i:02}"),
            None,
            if i % 2 == 0 { "pms" } else { "ih" },
        )
        .await;
        if i % 3 == 0 {
            f.advance(Duration::from_millis(5)); // some share a timestamp
        }
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = f.store.sessions(7, cursor).await.unwrap();
        assert!(page.sessions.len() <= 7);
        seen.extend(
            page.sessions
                .iter()
                .map(|s| (s.last_seen, s.user.to_string())),
        );
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25, "every session once");
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    let mut users: Vec<_> = seen.iter().map(|(_, u)| u.clone()).collect();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 25);
}

// Paging by cursor survives the cursor's own session leaving between pages,
// even when every session shares one timestamp.
pub async fn paging_survives_the_cursor_session_leaving(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    for i in 0..5 {
        f.beat(&format!("u{i}"), None, "pms").await;
    }
    let first = f.store.sessions(2, None).await.unwrap();
    let cursor = first.next.clone().expect("more pages");
    f.store.leave(&cursor.user, Leave::All).await.unwrap();
    let mut seen: Vec<String> = first.sessions.iter().map(|s| s.user.to_string()).collect();
    let mut next = Some(cursor);
    while let Some(cursor) = next {
        let page = f.store.sessions(2, Some(cursor)).await.unwrap();
        seen.extend(page.sessions.iter().map(|s| s.user.to_string()));
        next = page.next;
    }
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), seen.len(), "no session twice: {seen:?}");
    assert_eq!(
        seen.len(),
        5,
        "every session that was there at the first page: {seen:?}"
    );
}

// History: starts, ends (leave, move, expiry) with their lengths, the peak
// and when it was reached, and the minute samples.
pub async fn history_records_starts_ends_peaks_and_samples(make: impl Factory) {
    let f = make(start_time(), Tz::UTC); // 09:30:00
    let t0 = f.clock.now_ms();
    f.beat("A", None, "pms").await;
    f.advance(Duration::from_secs(10));
    f.beat("B", None, "pms").await; // peak 2 at 09:30:10
    f.advance(Duration::from_secs(10));
    f.store.record_sample().await.unwrap(); // 09:30:20: sample 2
    f.beat("D", None, "pms").await; // peak 3 at 09:30:20
    f.store.record_sample().await.unwrap(); // the first sample of a minute stays
    f.store.leave(&user("D"), Leave::All).await.unwrap(); // D: 0 s, left
    f.advance(Duration::from_secs(100)); // 09:32:00
    f.store.leave(&user("A"), Leave::All).await.unwrap(); // A: 120 s, left
    f.advance(Duration::from_secs(60)); // 09:33:00
    f.beat("C", None, "pms").await;
    f.advance(Duration::from_secs(60)); // 09:34:00
    f.beat("C", None, "ih").await; // C: 60 s in pms, moved
    f.advance(Duration::from_secs(180)); // 09:37:00: B expired at 09:35:10
    f.store.sweep().await.unwrap(); // B: 0 s (one heartbeat), expired

    let h = f.store.history(60).await.unwrap();
    assert_eq!(h.at, f.clock.now_ms());
    let minute = |start: i64| {
        h.minutes
            .iter()
            .find(|b| b.start == start)
            .map(|b| b.modules.clone())
    };
    let at = |secs: i64| t0 + secs * 1000;
    let first = minute(at(0)).expect("09:30 recorded");
    assert_eq!(first[0].sample, Some(2));
    assert_eq!((first[0].peak, first[0].peak_at), (3, Some(at(20))));
    assert_eq!(first[0].started, 3);
    assert_eq!(first[1].sample, Some(0));
    let sum = |m: usize, f: fn(&presence::store::history::ModuleMinute) -> u64| -> u64 {
        h.minutes.iter().map(|b| f(&b.modules[m])).sum()
    };
    assert_eq!(sum(0, |m| m.started), 4, "A, B, C, D started in pms");
    assert_eq!(sum(1, |m| m.started), 1, "C started in ih");
    assert_eq!(sum(0, |m| m.ended), 4, "D and A left, C moved, B expired");
    assert_eq!(sum(0, |m| m.ended_ms), 180_000, "0 s + 120 s + 60 s + 0 s");
    let b_expiry = minute(at(5 * 60)).expect("09:35 recorded");
    assert_eq!(
        b_expiry[0].ended, 1,
        "B's end is filed when it expired, not when swept"
    );
    assert!(
        h.minutes.windows(2).all(|w| w[0].start < w[1].start),
        "oldest first"
    );

    // A window of one minute holds only the current minute.
    f.beat("E", None, "ih").await;
    let last = f.store.history(1).await.unwrap();
    assert_eq!(last.minutes.len(), 1);
    assert_eq!(last.minutes[0].start, at(7 * 60));
    assert_eq!(last.minutes[0].modules[1].started, 1);
}

// idleNow: users present in a module all of whose live sessions there are
// idle. A session's state is that of its latest heartbeat; a move, a leave
// and an expiry all change who is idle, and activeNow keeps its meaning.
pub async fn idle_now_counts_users_whose_sessions_there_are_all_idle(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    f.beat_as("A", Some("t1"), "pms", None, &As::default())
        .await;
    f.beat_as("A", Some("t2"), "pms", None, &IDLE).await;
    assert_eq!(f.idle().await, [0, 0], "one active session is enough");
    f.beat_as("B", None, "pms", None, &IDLE).await;
    assert_eq!(f.idle().await, [1, 0]);
    assert_eq!(f.counts().await[0][0], 2, "activeNow counts idle users too");
    f.beat_as("A", Some("t1"), "pms", None, &IDLE).await;
    assert_eq!(f.idle().await, [2, 0], "the latest heartbeat decides");
    f.beat_as("B", None, "pms", None, &As::default()).await;
    assert_eq!(f.idle().await, [1, 0]);
    f.beat_as("A", Some("t1"), "ih", None, &As::default()).await;
    assert_eq!(f.idle().await, [1, 0], "A: idle t2 in pms, active t1 in ih");
    f.store
        .leave(&user("A"), Leave::Session(ClientId::parse("t2")))
        .await
        .unwrap();
    assert_eq!(f.idle().await, [0, 0]);

    // C's active tab expires before its idle one: C turns idle by expiry.
    f.beat_as("C", Some("t1"), "ih", None, &As::default()).await;
    f.advance(Duration::from_secs(200));
    f.beat_as("C", Some("t2"), "ih", None, &IDLE).await;
    assert_eq!(f.idle().await, [0, 0]);
    f.advance(Duration::from_secs(100));
    assert_eq!(f.idle().await, [0, 1], "C's active tab expired");
    let page = f.store.sessions(10, None).await.unwrap();
    let states: Vec<(String, Activity)> = page
        .sessions
        .iter()
        .map(|s| (s.user.to_string(), s.state))
        .collect();
    assert_eq!(
        states,
        [("C".into(), Activity::Idle)],
        "admin sessions carry the state; the others expired"
    );
    f.advance(Duration::from_secs(200));
    assert_eq!(f.idle().await, [0, 0], "gone at its TTL");
    f.store.sweep().await.unwrap();
    assert_eq!(f.idle().await, [0, 0]);
}

// Viewers: each with a state (active if any of their sessions on it is),
// the profile of their latest token (kept per user), hidden users neither
// listed nor counted (but counted in module stats).
pub async fn viewers_carry_state_and_profile_and_leave_out_hidden_users(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    let r = ResourceId::parse("request:1").unwrap();
    let ann = As {
        state: Activity::Idle,
        name: Some("Ann Lee"),
        hidden: false,
    };
    f.beat_as("A", Some("t1"), "pms", Some("request:1"), &ann)
        .await;
    f.advance(Duration::from_secs(1));
    f.beat_as("B", None, "pms", Some("request:1"), &As::default())
        .await;
    let hidden = As {
        hidden: true,
        name: Some("Hal"),
        ..As::default()
    };
    f.beat_as("H", None, "pms", Some("request:1"), &hidden)
        .await;
    let found = f.store.resource_viewers(&r).await.unwrap();
    assert_eq!(found.count, 2, "H is hidden");
    let seen: Vec<(&str, Activity, Option<&str>)> = found
        .viewers
        .iter()
        .map(|v| {
            (
                v.user.as_str(),
                v.state,
                v.profile.as_ref().map(Profile::as_json),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("A", Activity::Idle, Some(r#"{"name":"Ann Lee"}"#)),
            ("B", Activity::Active, None),
        ]
    );
    assert_eq!(f.counts().await[0][0], 3, "H still counts in module stats");
    let admin_list = f.store.sessions(10, None).await.unwrap().sessions;
    assert!(
        admin_list.iter().any(|s| s.user.as_str() == "H"),
        "admins see H"
    );

    // A second tab of A on it, active: A is active there. A's latest token
    // has no profile: the profile is gone, for every session of A.
    f.beat_as("A", Some("t2"), "ih", Some("request:1"), &As::default())
        .await;
    let found = f.store.resource_viewers(&r).await.unwrap();
    assert_eq!(found.viewers[0].state, Activity::Active);
    assert_eq!(found.viewers[0].profile, None, "the latest token wins");
    // H's latest token does not hide them any more.
    f.beat_as("H", None, "pms", Some("request:1"), &As::default())
        .await;
    assert_eq!(f.store.resource_viewers(&r).await.unwrap().count, 3);
}

// At most 100 viewers are listed, the earliest `since` first; `count`
// counts them all.
pub async fn viewers_list_the_earliest_hundred_and_count_all(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    let r = ResourceId::parse("doc:big").unwrap();
    for i in 0..105 {
        f.beat_on(&format!("u{i:03}"), None, "pms", Some("doc:big"))
            .await;
        if i % 2 == 1 {
            f.advance(Duration::from_millis(10)); // pairs share a `since`
        }
    }
    let found = f.store.resource_viewers(&r).await.unwrap();
    assert_eq!(found.count, 105);
    let ids: Vec<String> = found.viewers.iter().map(|v| v.user.to_string()).collect();
    let expected: Vec<String> = (0..100).map(|i| format!("u{i:03}")).collect();
    assert_eq!(ids, expected);
}

// User status: state where any live session is active, idle where all are,
// offline with none; modules in registry order; lastSeen kept after the
// sessions end; hidden users read as never seen.
pub async fn user_status_reports_state_modules_last_seen_and_profile(make: impl Factory) {
    let f = make(start_time(), Tz::UTC);
    assert_eq!(f.status("nobody").await, UserStatus::default());
    let ann = As {
        name: Some("Ann"),
        ..As::default()
    };
    f.beat_as("A", Some("t1"), "ih", None, &ann).await;
    f.beat_as("A", Some("t2"), "pms", None, &IDLE).await;
    let a = f.status("A").await;
    assert_eq!(a.state, Some(Activity::Active));
    assert_eq!(f.codes(&a), ["pms", "ih"], "registry order");
    assert_eq!(a.last_seen, Some(f.clock.now_ms()));
    assert_eq!(a.profile, None, "the latest token had no name");
    f.advance(Duration::from_secs(10));
    let idle_ann = As {
        state: Activity::Idle,
        ..ann
    };
    f.beat_as("A", Some("t1"), "ih", None, &idle_ann).await;
    let a = f.status("A").await;
    assert_eq!(a.state, Some(Activity::Idle), "every session idle");
    assert_eq!(a.profile.unwrap().as_json(), r#"{"name":"Ann"}"#);
    let seen = f.clock.now_ms();

    let hidden = As {
        hidden: true,
        name: Some("Hal"),
        ..As::default()
    };
    f.beat_as("H", None, "pms", None, &hidden).await;
    assert_eq!(
        f.status("H").await,
        UserStatus::default(),
        "hidden: never seen"
    );

    let both = f
        .store
        .user_status(&[user("H"), user("A"), user("nobody")])
        .await
        .unwrap();
    let order: Vec<&str> = both.users.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(order, ["H", "A", "nobody"], "in the order asked");

    f.advance(TTL);
    let a = f.status("A").await;
    assert_eq!(
        (a.state, a.modules.len()),
        (None, 0),
        "offline after the TTL"
    );
    assert_eq!(a.last_seen, Some(seen), "lastSeen outlives the sessions");
    assert!(a.profile.is_some());
    f.store.sweep().await.unwrap();
    f.beat("A", None, "pms").await;
    f.store.leave(&user("A"), Leave::All).await.unwrap();
    let a = f.status("A").await;
    assert_eq!(a.state, None, "offline after a logout");
    assert_eq!(a.last_seen, Some(f.clock.now_ms()));
}

// A profile is kept a bounded time (a day) past the user's last session,
// then neither served nor kept: a user who left or expired long ago takes
// their name with them. lastSeen stays; a new heartbeat brings it back.
pub async fn a_profile_goes_a_day_after_the_users_last_session(make: impl Factory) {
    const KEEP: Duration = Duration::from_secs(24 * 3600);
    let f = make(start_time(), Tz::UTC);
    let (ann, bob) = (
        As {
            name: Some("Ann"),
            ..As::default()
        },
        As {
            name: Some("Bob"),
            ..As::default()
        },
    );
    f.beat_as("B", None, "pms", Some("r"), &bob).await;
    f.store.leave(&user("B"), Leave::All).await.unwrap();
    f.beat_as("A", Some("t1"), "pms", None, &ann).await;
    f.advance(Duration::from_secs(60));
    f.beat_as("A", Some("t2"), "ih", None, &ann).await;
    let a_seen = f.clock.now_ms();
    let named = |s: &UserStatus| s.profile.as_ref().map(|p| p.as_json().to_owned());
    f.advance(TTL + KEEP - Duration::from_secs(60) - Duration::from_millis(1));
    assert_eq!(
        named(&f.status("B").await).as_deref(),
        Some(r#"{"name":"Bob"}"#)
    );
    f.advance(Duration::from_millis(1));
    assert_eq!(
        named(&f.status("B").await),
        None,
        "a day after B's last session"
    );
    f.store.sweep().await.unwrap();
    let a = f.status("A").await;
    assert_eq!(
        named(&a).as_deref(),
        Some(r#"{"name":"Ann"}"#),
        "A's last session is later"
    );
    f.advance(Duration::from_secs(60));
    let a = f.status("A").await;
    assert_eq!(
        (named(&a), a.last_seen),
        (None, Some(a_seen)),
        "lastSeen stays"
    );
    f.store.sweep().await.unwrap();
    assert_eq!(named(&f.status("A").await), None, "swept too");
    f.beat_as("A", None, "pms", Some("r"), &ann).await;
    assert_eq!(
        named(&f.status("A").await).as_deref(),
        Some(r#"{"name":"Ann"}"#)
    );
    let viewers = f
        .store
        .resource_viewers(&ResourceId::parse("r").unwrap())
        .await
        .unwrap();
    assert_eq!(viewers.viewers.len(), 1);
    assert!(viewers.viewers[0].profile.is_some());
}

macro_rules! store_suite {
    ($backend:ident, $available:ident: $($scenario:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    if !super::$available() {
                        return;
                    }
                    super::$scenario(super::$backend).await;
                }
            )*
        }
    };
}

/// Calls `$suite!($args: every scenario)`: the one list of scenarios.
macro_rules! for_every_scenario {
    ($suite:ident!($($args:tt)*)) => {
        $suite!($($args)*:
            two_users_then_a_moves,
            session_expires_after_ttl_but_today_keeps_it,
            a_heartbeat_after_expiry_starts_a_new_session,
            client_ids_are_separate_sessions,
            a_module_keeps_a_user_while_any_session_lives,
            sessions_per_user_are_capped,
            today_rolls_over_at_local_midnight,
            resource_viewers_follow_the_latest_heartbeat,
            sessions_page_newest_first_without_gaps,
            paging_survives_the_cursor_session_leaving,
            history_records_starts_ends_peaks_and_samples,
            idle_now_counts_users_whose_sessions_there_are_all_idle,
            viewers_carry_state_and_profile_and_leave_out_hidden_users,
            viewers_list_the_earliest_hundred_and_count_all,
            user_status_reports_state_modules_last_seen_and_profile,
            a_profile_goes_a_day_after_the_users_last_session,
        );
    };
}

for_every_scenario!(store_suite!(memory, memory_available));
for_every_scenario!(store_suite!(redis, redis_available));
for_every_scenario!(store_suite!(sentinel, redis_available));
for_every_scenario!(store_suite!(cluster, redis_available));

/// One random operation on the store.
#[derive(Debug, Clone)]
enum Op {
    Beat {
        user: u8,
        client: Option<u8>,
        pms: bool,
        idle: bool,
        hidden: bool,
        resource: Option<u8>,
    },
    Leave {
        user: u8,
        client: Option<u8>,
    },
    Logout {
        user: u8,
    },
    Advance {
        secs: u32,
    },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (
            (0..8u8, proptest::option::of(0..3u8), any::<bool>()),
            (any::<bool>(), prop::bool::weighted(0.15), proptest::option::of(0..2u8)),
        )
            .prop_map(|((user, client, pms), (idle, hidden, resource))| Op::Beat {
                user,
                client,
                pms,
                idle,
                hidden,
                resource,
            }),
        1 => (0..8u8, proptest::option::of(0..3u8)).prop_map(|(user, client)| Op::Leave { user, client }),
        1 => (0..8u8).prop_map(|user| Op::Logout { user }),
        3 => (0..400u32).prop_map(|secs| Op::Advance { secs }),
        1 => (0..4 * 3600u32).prop_map(|secs| Op::Advance { secs }),
        1 => Just(Op::Sweep),
    ]
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// One session of the model.
#[derive(Debug, Clone, Copy)]
struct ModelSession {
    pms: bool,
    seen: i64,
    idle: bool,
    resource: Option<u8>,
}

/// What the store should say, computed the plain way.
struct Model {
    timezone: Tz,
    /// (user, client) -> the session
    sessions: std::collections::HashMap<(u8, Option<u8>), ModelSession>,
    /// Per user: their latest heartbeat, and whether it hid them.
    users: std::collections::HashMap<u8, (i64, bool)>,
    today: [std::collections::HashSet<u8>; 2],
    total: [std::collections::HashSet<u8>; 2],
    day: chrono::NaiveDate,
}

impl Model {
    fn date(&self, ms: i64) -> chrono::NaiveDate {
        DateTime::<Utc>::from_timestamp_millis(ms)
            .unwrap()
            .with_timezone(&self.timezone)
            .date_naive()
    }

    /// A new local day: today is whoever was live at its midnight.
    fn roll_day(&mut self, now: i64, ttl: i64) {
        use chrono::TimeZone;
        let day = self.date(now);
        if day == self.day {
            return;
        }
        self.day = day;
        let midnight = self
            .timezone
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .unwrap()
            .timestamp_millis();
        for (i, today) in self.today.iter_mut().enumerate() {
            *today = self
                .sessions
                .iter()
                .filter(|(_, s)| s.pms == (i == 0) && s.seen > midnight - ttl)
                .map(|((u, _), _)| *u)
                .collect();
        }
    }

    /// Live sessions: (user, session).
    fn live(&self, now: i64, ttl: i64) -> impl Iterator<Item = (u8, &ModelSession)> {
        self.sessions
            .iter()
            .filter(move |(_, s)| now - s.seen < ttl)
            .map(|((u, _), s)| (*u, s))
    }

    fn active(&self, i: usize, now: i64, ttl: i64) -> u64 {
        let mut live: Vec<u8> = self
            .live(now, ttl)
            .filter(|(_, s)| s.pms == (i == 0))
            .map(|(u, _)| u)
            .collect();
        live.sort_unstable();
        live.dedup();
        live.len() as u64
    }

    /// Users present in module `i` with no active session there.
    fn idle(&self, i: usize, now: i64, ttl: i64) -> u64 {
        let here: Vec<(u8, &ModelSession)> = self
            .live(now, ttl)
            .filter(|(_, s)| s.pms == (i == 0))
            .collect();
        let mut idle: Vec<u8> = here
            .iter()
            .filter(|(u, _)| here.iter().all(|(v, s)| v != u || s.idle))
            .map(|(u, _)| *u)
            .collect();
        idle.sort_unstable();
        idle.dedup();
        idle.len() as u64
    }

    fn hidden(&self, user: u8) -> bool {
        self.users.get(&user).is_some_and(|&(_, hidden)| hidden)
    }

    /// (state, module codes, lastSeen) as user status should say.
    fn status(
        &self,
        user: u8,
        now: i64,
        ttl: i64,
    ) -> (Option<Activity>, Vec<&'static str>, Option<i64>) {
        if self.hidden(user) {
            return (None, vec![], None);
        }
        let mine: Vec<&ModelSession> = self
            .live(now, ttl)
            .filter(|(u, _)| *u == user)
            .map(|(_, s)| s)
            .collect();
        let state = match (mine.is_empty(), mine.iter().all(|s| s.idle)) {
            (true, _) => None,
            (false, true) => Some(Activity::Idle),
            (false, false) => Some(Activity::Active),
        };
        let modules = [("pms", true), ("ih", false)]
            .into_iter()
            .filter(|(_, pms)| mine.iter().any(|s| s.pms == *pms))
            .map(|(code, _)| code)
            .collect();
        (state, modules, self.users.get(&user).map(|&(t, _)| t))
    }

    /// The visible viewers of resource `r`: user -> active anywhere on it.
    fn viewers(&self, r: u8, now: i64, ttl: i64) -> std::collections::BTreeMap<String, Activity> {
        let mut out = std::collections::BTreeMap::new();
        for (u, s) in self.live(now, ttl) {
            if s.resource != Some(r) || self.hidden(u) {
                continue;
            }
            let state = if s.idle {
                Activity::Idle
            } else {
                Activity::Active
            };
            out.entry(u.to_string())
                .and_modify(|a: &mut Activity| *a = (*a).min(state))
                .or_insert(state);
        }
        out
    }
}

/// Runs `ops` against a store and, after each, checks every count against
/// the model, and the contract's invariant.
async fn check_against_model(f: &Fixture, timezone: Tz, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let ttl = i64::try_from(TTL.as_millis()).unwrap();
    let mut model = Model {
        timezone,
        sessions: Default::default(),
        users: Default::default(),
        today: Default::default(),
        total: Default::default(),
        day: chrono::NaiveDate::MIN,
    };
    model.roll_day(f.clock.now_ms(), ttl);
    for op in ops {
        let now = f.clock.now_ms();
        match op {
            Op::Beat {
                user,
                client,
                pms,
                idle,
                hidden,
                resource,
            } => {
                let code = if pms { "pms" } else { "ih" };
                let how = As {
                    state: if idle {
                        Activity::Idle
                    } else {
                        Activity::Active
                    },
                    name: None,
                    hidden,
                };
                f.beat_as(
                    &user.to_string(),
                    client.map(|c| format!("c{c}")).as_deref(),
                    code,
                    resource.map(|r| format!("r{r}")).as_deref(),
                    &how,
                )
                .await;
                model.sessions.insert(
                    (user, client),
                    ModelSession {
                        pms,
                        seen: now,
                        idle,
                        resource,
                    },
                );
                model.users.insert(user, (now, hidden));
                let i = usize::from(!pms);
                model.today[i].insert(user);
                model.total[i].insert(user);
            }
            Op::Leave { user, client } => {
                let c = client.map(|c| ClientId::parse(&format!("c{c}")).unwrap());
                f.store
                    .leave(
                        &UserId::parse(&user.to_string()).unwrap(),
                        Leave::Session(c),
                    )
                    .await
                    .unwrap();
                model.sessions.remove(&(user, client));
            }
            Op::Logout { user } => {
                f.store
                    .leave(&UserId::parse(&user.to_string()).unwrap(), Leave::All)
                    .await
                    .unwrap();
                model.sessions.retain(|(u, _), _| *u != user);
            }
            Op::Advance { secs } => {
                f.advance(Duration::from_secs(u64::from(secs)));
                model.roll_day(f.clock.now_ms(), ttl);
            }
            Op::Sweep => {
                f.store.sweep().await.unwrap();
            }
        }
        let now = f.clock.now_ms();
        let counts = f.counts().await;
        for (i, [active, today, total]) in counts.into_iter().enumerate() {
            prop_assert!(
                active <= today && today <= total,
                "{active} <= {today} <= {total}"
            );
            prop_assert_eq!(
                active,
                model.active(i, now, ttl),
                "activeNow of module {}",
                i
            );
            prop_assert_eq!(today, model.today[i].len() as u64, "today of module {}", i);
            prop_assert_eq!(
                total,
                model.total[i].len() as u64,
                "totalUsers of module {}",
                i
            );
        }
        let idle = f.idle().await;
        for (i, idle) in idle.into_iter().enumerate() {
            prop_assert_eq!(idle, model.idle(i, now, ttl), "idleNow of module {}", i);
        }
        let everyone: Vec<UserId> = (0..8u8).map(|u| user(&u.to_string())).collect();
        let status = f.store.user_status(&everyone).await.unwrap();
        for (u, (id, got)) in status.users.iter().enumerate() {
            let u = u8::try_from(u).unwrap();
            prop_assert_eq!(id.as_str(), u.to_string());
            let (state, modules, last_seen) = model.status(u, now, ttl);
            prop_assert_eq!(got.state, state, "state of user {}", u);
            prop_assert_eq!(f.codes(got), modules, "modules of user {}", u);
            prop_assert_eq!(got.last_seen, last_seen, "lastSeen of user {}", u);
        }
        for r in 0..2u8 {
            let resource = ResourceId::parse(&format!("r{r}")).unwrap();
            let found = f.store.resource_viewers(&resource).await.unwrap();
            let got: std::collections::BTreeMap<String, Activity> = found
                .viewers
                .iter()
                .map(|v| (v.user.to_string(), v.state))
                .collect();
            let expected = model.viewers(r, now, ttl);
            prop_assert_eq!(found.count, expected.len() as u64, "count of r{}", r);
            prop_assert_eq!(got, expected, "viewers of r{}", r);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    // Starts half an hour before midnight in Kolkata, so runs cross one or
    // more local midnights with sessions live across them.
    #[test]
    fn memory_counts_match_a_model_under_random_operations(ops in proptest::collection::vec(op(), 1..80)) {
        let timezone: Tz = "Asia/Kolkata".parse().unwrap();
        block_on(async {
            let f = memory(model_start(), timezone);
            check_against_model(&f, timezone, ops).await
        })?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn redis_counts_match_a_model_under_random_operations(ops in proptest::collection::vec(op(), 1..60)) {
        if redis_available() {
            let timezone: Tz = "Asia/Kolkata".parse().unwrap();
            block_on(async {
                let f = redis(model_start(), timezone);
                check_against_model(&f, timezone, ops).await
            })?;
        }
    }

    // With users in three shards, every count is still the model's.
    #[test]
    fn sharded_redis_counts_match_a_model_under_random_operations(ops in proptest::collection::vec(op(), 1..60)) {
        if redis_available() {
            let timezone: Tz = "Asia/Kolkata".parse().unwrap();
            block_on(async {
                let url = super::redis_server::shared_url().unwrap();
                let f = redis_on(model_start(), timezone, Topology::Single { url }, 3);
                check_against_model(&f, timezone, ops).await
            })?;
        }
    }
}

/// Half an hour before midnight in Kolkata.
fn model_start() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-14T23:30:00+05:30")
        .unwrap()
        .with_timezone(&Utc)
}

// The sweeper task removes expired sessions from memory every interval.
#[tokio::test(start_paused = true)]
async fn the_sweeper_frees_expired_sessions_every_interval() {
    use tokio_util::sync::CancellationToken;

    let (state, clock, _) =
        super::helpers::build_state(&["--jwt-secret", "s", "--sweep-interval", "1m"]);
    let Store::Memory(memory) = state.store.clone() else {
        unreachable!("the default store is memory")
    };
    let pms = state.modules.by_code("pms").unwrap();
    for who in ["A", "B"] {
        let beat = Heartbeat::new(user(who), pms);
        state.store.heartbeat(beat).await.unwrap();
    }
    assert_eq!(memory.sessions_in_memory(), 2);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(presence::sweeper::run(
        state.store.clone(),
        state.limiter.clone(),
        Duration::from_secs(60),
        cancel.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(memory.sessions_in_memory(), 2, "nothing expired yet");
    clock.advance(TTL);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(memory.sessions_in_memory(), 2, "the next sweep has not run");
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(memory.sessions_in_memory(), 0, "swept at the next tick");
    cancel.cancel();
    task.await.unwrap();
}

// When many sessions expire at once, no single operation removes them all
// under the lock: a heartbeat removes one small batch and goes on, and a
// count removes the rest in batches before it answers, so it is exact.
#[tokio::test]
async fn a_mass_expiry_is_removed_in_batches_and_counted_exactly() {
    let f = memory(start_time(), Tz::UTC);
    let Store::Memory(memory) = f.store.clone() else {
        unreachable!("a memory fixture")
    };
    for i in 0..5_000 {
        f.beat(
            &format!("u{i}"),
            None,
            if i % 2 == 0 { "pms" } else { "ih" },
        )
        .await;
    }
    f.advance(TTL);
    let late = || Heartbeat {
        client: Some(ClientId::parse("tab").unwrap()),
        ..Heartbeat::new(user("late"), f.modules.by_code("ih").unwrap())
    };
    let ack = f.store.heartbeat(late()).await.unwrap();
    assert!(
        !ack.exact,
        "{} users counted with a backlog",
        ack.active_users
    );
    let held = memory.sessions_in_memory();
    assert!(
        (4_000..5_001).contains(&held),
        "one heartbeat removed one batch, not all: {held} held"
    );
    assert_eq!(f.counts().await, [[0, 2_500, 2_500], [1, 2_501, 2_501]]);
    assert_eq!(memory.sessions_in_memory(), 1, "counting removed the rest");
    let minute = f.store.history(1).await.unwrap().minutes.pop().unwrap();
    assert!(
        minute.modules.iter().all(|m| m.peak <= 1),
        "an inexact count sets no peak: {minute:?}"
    );
    let ack = f.store.heartbeat(late()).await.unwrap();
    assert!(ack.exact && ack.active_users == 1, "exact once worked off");
}
