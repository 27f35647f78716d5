//! The in-memory store: every session in this process, behind one mutex.
//!
//! - this file: [`MemoryStore`], the handle every request goes through:
//!   it takes the lock (expiring sessions first), runs one operation on the
//!   state and tells the observer of the sessions that ended.
//! - `state`: the locked `State`, its indexes and every operation on them.
//! - `slot`: one session's slot in the state's slab.
//! - `image`: `MemoryImage`, the state as plain values for a snapshot.
//! - [`snapshot`]: those images saved to a file and restored at start-up
//!   (`STATE_FILE`).
//!
//! # Locking
//! One `std::sync::Mutex`: every operation is short and synchronous, and
//! the lock is never held across an `.await` (the async methods only lock
//! inside plain function calls), so a std mutex is both correct and cheaper
//! than an async one. No operation holds it for longer than one batch of
//! expiry plus its own work, however many sessions expire at once; the
//! exceptions are the midnight rollover and `MemoryStore::image`, which
//! are O(sessions) once a day and once a snapshot.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono_tz::Tz;

use super::history::{HISTORY_MINUTES, History};
use super::users::{Uid, UserSet};
use super::watch::Watchers;
use super::{
    CountsAt, Cursor, Heartbeat, HeartbeatAck, Leave, MAX_LISTED_VIEWERS, ModuleCounts,
    ResourceViewers, SessionObserver, SessionPage, SessionStore, StoreError, Ttl, UserStatus,
    UsersStatus, Viewer,
};
use crate::clock::{Clock, Millis};
use crate::config::ProfileClaims;
use crate::domain::{Activity, Modules, ResourceId, UserId};
use crate::events::Reason;
use crate::webhooks::MemoryOutbox;

mod events;
mod image;
mod slot;
pub mod snapshot;
mod state;

pub(crate) use image::{MemoryImage, Restored, SessionImage, UserImage};
use slot::{Session, Sid, VACANT};
use state::State;

/// How many expired sessions the sweeper and the count queries remove per
/// lock acquisition.
const SWEEP_BATCH: usize = 1024;

/// How many users' profiles the sweeper looks at per lock acquisition.
const PROFILE_BATCH: Uid = 4096;

/// How many expired sessions every other operation removes first: enough
/// to keep up with any realistic expiry rate, small enough that a mass
/// expiry adds microseconds, not milliseconds, to a heartbeat.
const EAGER_BATCH: usize = 64;

/// What the memory store needs to know.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// The module registry.
    pub modules: Modules,
    /// How long a session lives without a heartbeat.
    pub session_ttl: Duration,
    /// Where "today" starts.
    pub timezone: Tz,
    /// The most sessions one user may hold; a new one beyond it replaces the
    /// user's least recently seen session.
    pub max_sessions_per_user: usize,
    /// `PROFILE_CLAIMS`: a restored profile keeps only these (heartbeats
    /// bring profiles made with them already).
    pub profile_claims: ProfileClaims,
}

impl MemoryConfig {
    pub(crate) fn from_args(args: &crate::config::ServeArgs) -> Self {
        Self {
            modules: args.modules.clone(),
            session_ttl: args.session_ttl,
            timezone: args.stats_timezone,
            max_sessions_per_user: usize::from(args.max_sessions_per_user),
            profile_claims: args.jwt.profile_claims.clone(),
        }
    }
}

/// Sessions in this process's memory. Cheap to clone: clones share state.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    observer: Arc<dyn SessionObserver>,
    /// The presence streams' registry, told of each resource that changed.
    watchers: Arc<Watchers>,
    modules: Modules,
    clock: Arc<dyn Clock>,
    ttl: Ttl,
    timezone: Tz,
    max_sessions_per_user: usize,
    profile_claims: ProfileClaims,
}

/// The state under its lock, with the instant the operation runs at.
struct Locked<'a> {
    state: MutexGuard<'a, State>,
    now: Millis,
    /// [`Ttl::cutoff`] of `now`: a session last seen at or before it has
    /// expired.
    cutoff: Millis,
}

impl MemoryStore {
    /// An empty store reading time from `clock`.
    pub fn new(
        config: &MemoryConfig,
        clock: Arc<dyn Clock>,
        observer: Arc<dyn SessionObserver>,
    ) -> Self {
        let state = State::new(
            config.modules.len(),
            config.timezone,
            clock.now_ms(),
            Ttl::from(config.session_ttl),
        );
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                observer,
                watchers: Arc::default(),
                modules: config.modules.clone(),
                clock,
                ttl: Ttl::from(config.session_ttl),
                timezone: config.timezone,
                max_sessions_per_user: config.max_sessions_per_user.max(1),
                profile_claims: config.profile_claims.clone(),
            }),
        }
    }

    /// How many sessions are held in memory, live or expired but not yet
    /// removed.
    pub fn sessions_in_memory(&self) -> usize {
        self.lock_without_expiry().state.by_time.len()
    }

    pub(crate) fn modules(&self) -> &Modules {
        &self.shared.modules
    }

    /// A copy of everything that must outlive a restart. Under the lock it
    /// copies the id arena, the user sets, the per-user times, profiles
    /// (by reference count) and hidden set, and the slots (their strings by
    /// reference count); users are named after the lock is released.
    pub(crate) fn image(&self) -> MemoryImage {
        let Locked { state, now, .. } = self.lock_without_expiry();
        let names = state.users.names();
        let slots: Vec<Session> = state
            .sessions
            .iter()
            .filter(|s| s.user != VACANT)
            .cloned()
            .collect();
        let (today, total) = (state.today.clone(), state.total.clone());
        let (today_start, history) = (state.day_start, state.history.window(now, HISTORY_MINUTES));
        let last_seen = state.last_seen.clone();
        let profiles = state.profiles.clone();
        let hidden = state.hidden.clone();
        let webhooks = state.events.as_ref().map(|e| e.outbox.lock().clone());
        drop(state);
        let name = |uid: Uid| UserId::known(names.get(uid));
        let users = |sets: &[UserSet]| -> Vec<Vec<UserId>> {
            sets.iter().map(|s| s.iter().map(name).collect()).collect()
        };
        MemoryImage {
            at: now,
            today_start,
            sessions: slots
                .iter()
                .map(|s| SessionImage {
                    info: s.info(name(s.user)),
                    resource_since: s.resource_since(),
                })
                .collect(),
            today: users(&today),
            total: users(&total),
            history,
            users: (0..names.len())
                .filter_map(|uid| {
                    let last_seen = last_seen.get(uid as usize).copied().filter(|&t| t != 0);
                    let profile = profiles.get(&uid).cloned();
                    let hidden = hidden.contains(uid);
                    (last_seen.is_some() || profile.is_some() || hidden).then(|| UserImage {
                        user: name(uid),
                        last_seen,
                        profile,
                        hidden,
                    })
                })
                .collect(),
            webhooks,
        }
    }

    /// Replaces the whole state with `image`, judged by today's clock and
    /// limits: sessions past their TTL are dropped (their end filed in the
    /// history, as the sweeper would have), each user keeps at most
    /// `max_sessions_per_user` (the most recently seen), and `today` is
    /// kept only if the image is from the current local day; otherwise it
    /// starts with the users live now, as at a midnight rollover.
    pub(crate) fn restore(&self, image: MemoryImage) -> Restored {
        let now = self.shared.clock.now_ms();
        let mut fresh = State::new(
            self.shared.modules.len(),
            self.shared.timezone,
            now,
            self.shared.ttl,
        );
        fresh.tracking = !self.shared.watchers.is_empty();
        let webhooks = image.webhooks.clone();
        let restored = fresh.restore(
            image,
            now,
            self.shared.max_sessions_per_user,
            &self.shared.profile_claims.0,
        );
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The events sink is the process's, not the image's; what waited
        // in the image goes back into it.
        fresh.events = state.events.take();
        if let (Some(sink), Some(log)) = (&fresh.events, webhooks) {
            sink.outbox.restore(log);
        }
        *state = fresh;
        self.notify(state);
        restored
    }

    /// Locks the state, rolling `today` over first if the day has changed;
    /// expired sessions stay where they are.
    fn lock_without_expiry(&self) -> Locked<'_> {
        // A panic while holding the lock cannot leave the indexes half-updated
        // in a way that matters more than losing the process, and every
        // critical section is panic-free code; recover rather than cascade.
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.shared.clock.now_ms();
        state.tracking = !self.shared.watchers.is_empty();
        // Only forward: a wall clock stepping back must not undo today.
        if now >= state.next_day_start {
            state.roll_day(self.shared.timezone, now);
        }
        Locked {
            state,
            now,
            cutoff: self.shared.ttl.cutoff(now),
        }
    }

    /// [`Self::lock_without_expiry`], then removes up to [`EAGER_BATCH`]
    /// expired sessions. Counts are exact unless more than that many
    /// expired since the last operation; [`Self::lock_expiring_all`] makes
    /// sure.
    fn lock_expiring(&self) -> Locked<'_> {
        let mut locked = self.lock_without_expiry();
        locked.state.expire(locked.now, locked.cutoff, EAGER_BATCH);
        locked
    }

    /// Locks the state once no expired session is left in it, removing
    /// them [`SWEEP_BATCH`] at a time and letting other tasks in between.
    /// Also returns how many it removed.
    async fn lock_expiring_all(&self) -> (Locked<'_>, usize) {
        let mut removed = 0;
        loop {
            if let Some(locked) = self.expire_one_batch(&mut removed) {
                return (locked, removed);
            }
            tokio::task::yield_now().await;
        }
    }

    /// One batch of [`Self::lock_expiring_all`], counted into `removed`:
    /// the lock if nothing expired is left, else it is released.
    fn expire_one_batch(&self, removed: &mut usize) -> Option<Locked<'_>> {
        let mut locked = self.lock_without_expiry();
        *removed += locked.state.expire(locked.now, locked.cutoff, SWEEP_BATCH);
        if !locked.state.has_expired(locked.cutoff) {
            return Some(locked);
        }
        self.notify(locked.state);
        None
    }

    fn heartbeat_sync(&self, mut beat: Heartbeat) -> HeartbeatAck {
        let Locked {
            mut state,
            now,
            cutoff,
        } = self.lock_expiring();
        let module = beat.module;
        let uid = state.users.intern(beat.user.as_str());
        let before = state.modules_of(uid);
        let quiet = state.events.is_none()
            || state.beat_is_quiet(
                uid,
                beat.client.as_ref(),
                module,
                beat.resource.as_ref(),
                beat.state.is_idle(),
                cutoff,
            );
        state.make_room(
            uid,
            beat.client.as_ref(),
            now,
            cutoff,
            self.shared.max_sessions_per_user,
        );
        let view = if quiet {
            None
        } else {
            state.view_for_events(uid)
        };
        let (profile, hidden) = (beat.profile.take(), beat.hidden);
        state.upsert(uid, beat, now);
        state.recount_user(uid, before);
        state.remember_user(uid, now, profile, hidden);
        state.emit(uid, view, now, Reason::Moved);
        state.seen(uid, module);
        // Counts include sessions expired but not yet removed only while a
        // mass expiry is being worked off; such counts set no peak.
        let exact = !state.has_expired(cutoff);
        if exact {
            let active_here = state.active[module.index()];
            state.history.at(module.index(), now).see(active_here, now);
        }
        let ack = HeartbeatAck {
            active_users: state.anywhere,
            exact,
            at: now,
        };
        self.notify(state);
        ack
    }

    /// From now on, appends the events of every change to `outbox`
    /// (webhooks).
    pub fn send_events_to(&self, outbox: Arc<MemoryOutbox>) {
        let codes = self
            .shared
            .modules
            .ids()
            .map(|id| self.shared.modules.get(id).code.clone())
            .collect();
        self.lock_without_expiry().state.events = Some(events::EventSink { codes, outbox });
    }

    /// The outbox events go to, if any.
    pub fn outbox(&self) -> Option<Arc<MemoryOutbox>> {
        let locked = self.lock_without_expiry();
        locked.state.events.as_ref().map(|e| e.outbox.clone())
    }

    /// One batch of the sweeper's pass over profiles, from user `from`.
    fn forget_profiles_from(&self, from: Uid) -> Option<Uid> {
        let Locked { mut state, now, .. } = self.lock_without_expiry();
        let next = state.forget_profiles(now, from, PROFILE_BATCH);
        self.notify(state);
        next
    }

    /// The registry of presence streams this store notifies.
    pub fn watchers(&self) -> &Arc<Watchers> {
        &self.shared.watchers
    }

    /// Releases the lock, then tells the observer of the sessions that
    /// ended and the watchers of the resources that changed.
    fn notify(&self, mut state: MutexGuard<'_, State>) {
        let mut ended = std::mem::take(&mut state.ended);
        let mut touched = std::mem::take(&mut state.touched);
        drop(state);
        touched.sort_unstable();
        touched.dedup();
        for resource in &touched {
            self.shared.watchers.touch(resource);
        }
        ended.sort_unstable_by_key(|&(module, _, expired)| (module.index(), expired));
        for group in ended.chunk_by(|a, b| (a.0, a.2) == (b.0, b.2)) {
            let (module, _, expired) = group[0];
            #[allow(
                clippy::cast_precision_loss,
                reason = "session lengths are far below 2^52 ms"
            )]
            let seconds: Vec<f64> = group
                .iter()
                .map(|&(_, length, _)| length.max(0) as f64 / 1000.0)
                .collect();
            let code = &self.shared.modules.get(module).code;
            self.shared.observer.sessions_ended(code, expired, &seconds);
        }
    }

    fn leave_sync(&self, user: &UserId, which: Leave) -> usize {
        let Locked {
            mut state,
            now,
            cutoff,
        } = self.lock_expiring();
        // An unknown user holds nothing, and is not numbered for asking.
        let Some(uid) = state.users.get(user.as_str()) else {
            self.notify(state);
            return 0;
        };
        let doomed: Vec<Sid> = match which {
            Leave::Session(client) => state.find(uid, client.as_ref()).into_iter().collect(),
            Leave::All => state.sessions_of(uid).collect(),
        };
        let before = state.modules_of(uid);
        let view = state.view_for_events(uid);
        let mut ended = 0;
        for sid in doomed {
            if let Some(last_seen) = state.remove(sid, now) {
                ended += usize::from(last_seen > cutoff);
            }
        }
        state.recount_user(uid, before);
        state.emit(uid, view, now, Reason::Left);
        self.notify(state);
        ended
    }

    fn module_counts_now(state: &State, now: Millis) -> CountsAt {
        let counts = state
            .active
            .iter()
            .zip(&state.idle)
            .zip(&state.today)
            .zip(&state.total)
            .map(|(((&active_now, &idle_now), today), total)| ModuleCounts {
                active_now,
                idle_now,
                today: today.len(),
                total_users: total.len(),
            })
            .collect();
        CountsAt {
            counts,
            users_anywhere: state.anywhere,
            at: now,
        }
    }

    fn resource_viewers_sync(&self, resource: &ResourceId) -> ResourceViewers {
        // Read-only: expired sessions are skipped, not removed.
        let Locked { state, now, cutoff } = self.lock_without_expiry();
        let mut by_user: HashMap<Uid, (Millis, Millis, Activity)> = HashMap::new();
        for &sid in state.resources.get(resource).into_iter().flatten() {
            let s = &state.sessions[sid as usize];
            if s.last_seen <= cutoff || state.hidden.contains(s.user) {
                continue;
            }
            let (since, last_seen) = (s.resource_since(), s.last_seen);
            by_user
                .entry(s.user)
                .and_modify(|v| *v = (v.0.min(since), v.1.max(last_seen), v.2.min(s.state)))
                .or_insert((since, last_seen, s.state));
        }
        let count = by_user.len() as u64;
        let mut listed: Vec<(Uid, (Millis, Millis, Activity))> = by_user.into_iter().collect();
        // Only the listed viewers are named: a resource with a crowd on it
        // costs one sort of numbers, not a string per viewer.
        listed.sort_unstable_by_key(|&(uid, (since, ..))| (since, uid));
        // Every viewer tied with the last one listed is a candidate: the
        // final order breaks ties by id, not by number.
        let candidates = match listed.get(MAX_LISTED_VIEWERS - 1) {
            Some(&(_, (last_since, ..))) => listed.partition_point(|v| v.1.0 <= last_since),
            None => listed.len(),
        };
        let viewers: Vec<Viewer> = listed
            .into_iter()
            .take(candidates)
            .map(|(uid, (since, last_seen, state_here))| Viewer {
                user: UserId::known(state.users.name(uid)),
                since,
                last_seen,
                state: state_here,
                profile: state.profile_of(uid, now),
            })
            .collect();
        ResourceViewers::ordered(viewers, count, now)
    }

    fn user_status_sync(&self, users: &[UserId]) -> UsersStatus {
        // Read-only: expired sessions are skipped, not removed.
        let Locked { state, now, cutoff } = self.lock_without_expiry();
        let users = users
            .iter()
            .map(|user| {
                let known = state.users.get(user.as_str());
                let status = match known {
                    Some(uid) if !state.hidden.contains(uid) => {
                        let live = state.presence_of(uid, cutoff);
                        let state_now = if live.present.is_empty() {
                            None
                        } else if live.awake.is_empty() {
                            Some(Activity::Idle)
                        } else {
                            Some(Activity::Active)
                        };
                        UserStatus {
                            state: state_now,
                            modules: live.present.ids(&self.shared.modules),
                            last_seen: state.last_seen_of(uid),
                            profile: state.profile_of(uid, now),
                        }
                    }
                    _ => UserStatus::default(),
                };
                (user.clone(), status)
            })
            .collect();
        UsersStatus { users, at: now }
    }

    fn sessions_sync(&self, limit: usize, cursor: Option<Cursor>) -> SessionPage {
        // Read-only: expired sessions are skipped, not removed.
        let Locked { state, now, cutoff } = self.lock_without_expiry();
        let upper = match cursor {
            None => Bound::Unbounded,
            Some(c) => Bound::Excluded(state.position(&c)),
        };
        let mut sessions = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        let newest_first = state.by_time.range((Bound::Unbounded, upper)).rev();
        for &(_, uid, sid) in newest_first.take_while(|(ts, _, _)| *ts > cutoff) {
            if sessions.len() == limit {
                more = true;
                break;
            }
            let s = &state.sessions[sid as usize];
            sessions.push(s.info(UserId::known(state.users.name(uid))));
        }
        let next = more.then(|| sessions.last()).flatten().map(|s| Cursor {
            last_seen: s.last_seen,
            user: s.user.clone(),
            client: s.client.clone(),
        });
        SessionPage {
            sessions,
            next,
            at: now,
        }
    }
}

impl SessionStore for MemoryStore {
    async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatAck, StoreError> {
        Ok(self.heartbeat_sync(beat))
    }

    async fn leave(&self, user: &UserId, which: Leave) -> Result<usize, StoreError> {
        Ok(self.leave_sync(user, which))
    }

    async fn module_counts(&self) -> Result<CountsAt, StoreError> {
        let (Locked { state, now, .. }, _) = self.lock_expiring_all().await;
        let snapshot = Self::module_counts_now(&state, now);
        self.notify(state);
        Ok(snapshot)
    }

    async fn resource_viewers(&self, resource: &ResourceId) -> Result<ResourceViewers, StoreError> {
        Ok(self.resource_viewers_sync(resource))
    }

    async fn user_status(&self, users: &[UserId]) -> Result<UsersStatus, StoreError> {
        Ok(self.user_status_sync(users))
    }

    async fn sessions(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<SessionPage, StoreError> {
        Ok(self.sessions_sync(limit, cursor))
    }

    async fn live_sessions(&self) -> Result<Vec<u64>, StoreError> {
        let (Locked { state, .. }, _) = self.lock_expiring_all().await;
        let held = state.held.clone();
        self.notify(state);
        Ok(held)
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        let (removed, mut next) = {
            let (Locked { mut state, now, .. }, removed) = self.lock_expiring_all().await;
            let next = state.forget_profiles(now, 0, PROFILE_BATCH);
            self.notify(state);
            (removed, next)
        };
        while let Some(from) = next {
            tokio::task::yield_now().await;
            next = self.forget_profiles_from(from);
        }
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn record_sample(&self) -> Result<(), StoreError> {
        let (Locked { mut state, now, .. }, _) = self.lock_expiring_all().await;
        for m in 0..state.active.len() {
            let active = state.active[m];
            let minute = state.history.at(m, now);
            if minute.sample.is_none() {
                minute.sample = Some(active);
                minute.see(active, now);
            }
        }
        self.notify(state);
        Ok(())
    }

    async fn history(&self, minutes: i64) -> Result<History, StoreError> {
        let Locked { state, now, .. } = self.lock_without_expiry();
        Ok(History {
            minutes: state.history.window(now, minutes),
            at: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;
    use crate::clock::ManualClock;
    use crate::config::ProfileClaims;
    use crate::domain::Profile;
    use crate::store::NoObserver;

    #[tokio::test]
    async fn the_sweeper_forgets_every_gone_users_profile_past_one_batch() {
        let clock = Arc::new(ManualClock::new(
            chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        ));
        let modules = Modules::default();
        let store = MemoryStore::new(
            &MemoryConfig {
                modules: modules.clone(),
                session_ttl: Duration::from_secs(300),
                timezone: chrono_tz::UTC,
                max_sessions_per_user: 16,
                profile_claims: ProfileClaims::parse("name").unwrap(),
            },
            clock.clone(),
            Arc::new(NoObserver),
        );
        let pms = modules.by_code("pms").unwrap();
        let users = PROFILE_BATCH * 2 + 10;
        for i in 0..users {
            let name = format!("User {i}");
            store.heartbeat_sync(Heartbeat {
                profile: Profile::build([("name", name.as_str())]),
                ..Heartbeat::new(UserId::parse(&format!("u{i}")).unwrap(), pms)
            });
        }
        let named = |store: &MemoryStore| {
            store
                .image()
                .users
                .iter()
                .filter(|u| u.profile.is_some())
                .count()
        };
        assert_eq!(named(&store), users as usize);
        // A day after their sessions expired, one user comes back.
        clock.advance(Duration::from_secs(300 + 24 * 3600 + 1));
        store.heartbeat_sync(Heartbeat {
            profile: Profile::build([("name", "Back")]),
            ..Heartbeat::new(UserId::parse("u7").unwrap(), pms)
        });
        store.sweep().await.unwrap();
        let image = store.image();
        let kept: Vec<&str> = image
            .users
            .iter()
            .filter(|u| u.profile.is_some())
            .map(|u| u.user.as_str())
            .collect();
        assert_eq!(
            (kept.len(), kept.first().copied()),
            (1, Some("u7")),
            "only the user who came back keeps a profile: the sweep went past its first batch"
        );
    }
}
