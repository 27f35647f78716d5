//! The presence events each store writes for webhooks (contract section
//! 9), written once and run on every backend: per user, never per tab;
//! reasons; occupancy; state; hidden users; expiry at its own time.

use std::sync::Arc;
use std::time::Duration;

use presence::clock::{Clock, ManualClock};
use presence::domain::{Activity, ClientId, ResourceId, UserId};
use presence::events::{Event, Kind, Reason};
use presence::store::memory::MemoryConfig;
use presence::store::{Heartbeat, Leave, MemoryStore, NoObserver, SessionStore, Store};
use presence::webhooks::{Cursor, MemoryOutbox, Outbox};

use super::helpers::start_time;

const TTL: Duration = Duration::from_secs(300);

/// A store writing events, and a reader of what it wrote since last asked.
pub struct Events {
    pub store: Store,
    pub clock: Arc<ManualClock>,
    pub outbox: Outbox,
    read: Cursor,
}

impl Events {
    /// The events written since the last call, oldest first.
    pub async fn take(&mut self) -> Vec<Event> {
        let entries = self.outbox.read(&self.read, 10_000).await.unwrap();
        for entry in &entries {
            self.read.advance(entry);
        }
        entries.into_iter().map(|e| e.event).collect()
    }

    /// The types of [`Self::take`], with the resource or module they name.
    pub async fn kinds(&mut self) -> Vec<String> {
        self.take()
            .await
            .iter()
            .map(|e| {
                let on = e.resource.as_ref().or(e.module.as_ref());
                match (on, e.reason) {
                    (Some(on), Some(r)) => format!("{} {on} {}", e.kind.as_str(), r.as_str()),
                    (Some(on), None) => format!("{} {on}", e.kind.as_str()),
                    (None, Some(r)) => format!("{} {}", e.kind.as_str(), r.as_str()),
                    (None, None) => e.kind.as_str().to_owned(),
                }
            })
            .collect()
    }

    pub async fn beat(&self, who: &str, tab: Option<&str>, module: &str, resource: Option<&str>) {
        self.beat_as(who, tab, module, resource, Activity::Active, false)
            .await;
    }

    pub async fn beat_as(
        &self,
        who: &str,
        tab: Option<&str>,
        module: &str,
        resource: Option<&str>,
        state: Activity,
        hidden: bool,
    ) {
        let modules = presence::domain::Modules::default();
        self.store
            .heartbeat(Heartbeat {
                client: tab.map(|t| ClientId::parse(t).unwrap()),
                resource: resource.map(|r| ResourceId::parse(r).unwrap()),
                state,
                hidden,
                ..Heartbeat::new(
                    UserId::parse(who).unwrap(),
                    modules.by_code(module).unwrap(),
                )
            })
            .await
            .unwrap();
    }

    pub async fn leave(&self, who: &str, tab: Option<&str>) {
        let which = Leave::Session(tab.map(|t| ClientId::parse(t).unwrap()));
        self.store
            .leave(&UserId::parse(who).unwrap(), which)
            .await
            .unwrap();
    }
}

pub fn memory() -> Events {
    let clock = Arc::new(ManualClock::new(start_time()));
    let memory = MemoryStore::new(
        &MemoryConfig {
            modules: presence::domain::Modules::default(),
            session_ttl: TTL,
            timezone: chrono_tz::UTC,
            max_sessions_per_user: 2,
            profile_claims: presence::config::ProfileClaims::parse("name,picture").unwrap(),
        },
        clock.clone(),
        Arc::new(NoObserver),
    );
    let outbox = Arc::new(MemoryOutbox::new(["test".to_owned()], 10_000));
    memory.send_events_to(outbox.clone());
    Events {
        store: Store::Memory(memory),
        clock,
        outbox: Outbox::Memory(outbox),
        read: Cursor::default(),
    }
}

pub async fn a_user_comes_and_goes_once_whatever_their_tabs(mut e: Events) {
    e.beat("ann", Some("t1"), "pms", Some("request:1")).await;
    assert_eq!(
        e.kinds().await,
        [
            "user.online pms",
            "module.enter pms",
            "resource.join request:1",
            "resource.occupied request:1"
        ]
    );
    // A second tab on the same request, a re-beat of the first: nothing.
    e.beat("ann", Some("t2"), "pms", Some("request:1")).await;
    e.beat("ann", Some("t1"), "pms", Some("request:1")).await;
    assert_eq!(e.kinds().await, Vec::<String>::new());
    // Closing one of the two tabs: nothing.
    e.leave("ann", Some("t2")).await;
    assert_eq!(e.kinds().await, Vec::<String>::new());
    e.leave("ann", Some("t1")).await;
    assert_eq!(
        e.kinds().await,
        [
            "resource.leave request:1 left",
            "resource.vacated request:1",
            "module.leave pms left",
            "user.offline left"
        ]
    );
}

pub async fn a_move_leaves_then_enters_with_reason_moved(mut e: Events) {
    e.beat("ann", None, "pms", Some("request:1")).await;
    e.take().await;
    e.beat("ann", None, "ih", Some("idea:7")).await;
    assert_eq!(
        e.kinds().await,
        [
            "resource.leave request:1 moved",
            "resource.vacated request:1",
            "module.leave pms moved",
            "module.enter ih",
            "resource.join idea:7",
            "resource.occupied idea:7"
        ]
    );
    // Off the resource, still in the module.
    e.beat("ann", None, "ih", None).await;
    assert_eq!(
        e.kinds().await,
        ["resource.leave idea:7 moved", "resource.vacated idea:7"]
    );
}

pub async fn a_resource_is_occupied_by_its_first_viewer_and_vacated_by_its_last(mut e: Events) {
    e.beat("ann", None, "pms", Some("request:1")).await;
    e.take().await;
    e.beat("bob", None, "pms", Some("request:1")).await;
    assert_eq!(
        e.kinds().await,
        [
            "user.online pms",
            "module.enter pms",
            "resource.join request:1"
        ]
    );
    e.leave("ann", None).await;
    let events = e.take().await;
    assert!(
        events.iter().all(|ev| ev.kind != Kind::ResourceVacated),
        "bob is still there: {events:?}"
    );
    e.leave("bob", None).await;
    let kinds: Vec<Kind> = e.take().await.iter().map(|ev| ev.kind).collect();
    assert!(kinds.contains(&Kind::ResourceVacated), "{kinds:?}");
}

pub async fn state_changes_are_per_user(mut e: Events) {
    e.beat("ann", Some("t1"), "pms", None).await;
    e.beat("ann", Some("t2"), "pms", None).await;
    e.take().await;
    // One of two tabs idle: the user is still active.
    e.beat_as("ann", Some("t1"), "pms", None, Activity::Idle, false)
        .await;
    assert_eq!(e.kinds().await, Vec::<String>::new());
    e.beat_as("ann", Some("t2"), "pms", None, Activity::Idle, false)
        .await;
    let events = e.take().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].kind, Kind::UserState);
    assert_eq!(events[0].state, Some(Activity::Idle));
    e.beat("ann", Some("t1"), "pms", None).await;
    let events = e.take().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].state, Some(Activity::Active));
}

pub async fn an_expiry_is_told_at_its_own_time_with_reason_expired(mut e: Events) {
    e.beat("ann", None, "pms", Some("request:1")).await;
    let beat_at = e.clock.now_ms();
    e.take().await;
    e.clock.advance(TTL + Duration::from_secs(40));
    e.store.sweep().await.unwrap();
    let events = e.take().await;
    let kinds: Vec<&str> = events.iter().map(|ev| ev.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "resource.leave",
            "resource.vacated",
            "module.leave",
            "user.offline"
        ]
    );
    for ev in &events {
        assert_eq!(ev.at, beat_at + 300_000, "{ev:?}");
        if ev.kind != Kind::ResourceVacated {
            assert_eq!(ev.reason, Some(Reason::Expired), "{ev:?}");
        }
    }
}

pub async fn a_heartbeat_after_expiry_tells_the_expiry_then_the_return(mut e: Events) {
    e.beat("ann", None, "pms", None).await;
    e.take().await;
    e.clock.advance(TTL + Duration::from_secs(1));
    e.beat("ann", None, "pms", None).await;
    assert_eq!(
        e.kinds().await,
        [
            "module.leave pms expired",
            "user.offline expired",
            "user.online pms",
            "module.enter pms"
        ]
    );
}

pub async fn a_hidden_users_events_say_so(mut e: Events) {
    e.beat_as(
        "ghost",
        None,
        "pms",
        Some("request:1"),
        Activity::Active,
        true,
    )
    .await;
    let events = e.take().await;
    assert!(!events.is_empty());
    assert!(events.iter().all(|ev| ev.hidden), "{events:?}");
    e.beat("ann", None, "pms", None).await;
    assert!(e.take().await.iter().all(|ev| !ev.hidden));
}

pub async fn a_session_pushed_out_by_the_cap_leaves(mut e: Events) {
    // The fixtures allow two sessions a user.
    e.beat("ann", Some("t1"), "pms", None).await;
    e.clock.advance(Duration::from_secs(1));
    e.beat("ann", Some("t2"), "ih", None).await;
    e.take().await;
    e.clock.advance(Duration::from_secs(1));
    e.beat("ann", Some("t3"), "ih", None).await;
    assert_eq!(e.kinds().await, ["module.leave pms left"]);
}

pub fn redis() -> Events {
    let url = super::redis_server::shared_url().expect("redis-server is available");
    let clock = Arc::new(ManualClock::new(start_time()));
    let config = presence::store::RedisConfig {
        topology: presence::store::Topology::Single { url },
        key_prefix: super::redis_server::unique_prefix("events"),
        shards: 1,
        modules: presence::domain::Modules::default(),
        session_ttl: TTL,
        timezone: chrono_tz::UTC,
        max_sessions_per_user: 2,
        profile_claims: presence::config::ProfileClaims::parse("name,picture").unwrap(),
        events_max: 10_000,
    };
    let redis = presence::store::RedisStore::new(
        config,
        clock.clone(),
        presence::store::TimeSource::Clock(clock.clone()),
        Arc::new(NoObserver),
    )
    .unwrap();
    let outbox = Outbox::Redis(redis.outbox(["test".to_owned()]));
    Events {
        store: Store::Redis(redis),
        clock,
        outbox,
        read: Cursor::default(),
    }
}

fn redis_available() -> bool {
    super::redis_server::available()
}

macro_rules! events_suite {
    ($backend:ident, $available:ident: $($scenario:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test]
                async fn $scenario() {
                    if !super::$available() {
                        return;
                    }
                    super::$scenario(super::$backend()).await;
                }
            )*
        }
    };
}

macro_rules! for_every_events_scenario {
    ($suite:ident!($($args:tt)*)) => {
        $suite!($($args)*:
            a_user_comes_and_goes_once_whatever_their_tabs,
            a_move_leaves_then_enters_with_reason_moved,
            a_resource_is_occupied_by_its_first_viewer_and_vacated_by_its_last,
            state_changes_are_per_user,
            an_expiry_is_told_at_its_own_time_with_reason_expired,
            a_heartbeat_after_expiry_tells_the_expiry_then_the_return,
            a_hidden_users_events_say_so,
            a_session_pushed_out_by_the_cap_leaves,
        );
    };
}

fn always() -> bool {
    true
}

for_every_events_scenario!(events_suite!(memory, always));
for_every_events_scenario!(events_suite!(redis, redis_available));
