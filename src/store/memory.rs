//! The in-memory store: every session in this process, behind one mutex.
//!
//! # Data model
//! - `users`: each user's sessions (at most `max_sessions_per_user`), keyed by
//!   client id; the source of truth.
//! - `by_time`: every session ordered by its last heartbeat. The sweeper pops
//!   expired sessions from its front in small batches (never one long lock),
//!   and the admin list pages through it from the back.
//! - `presence`: per module, and once for "anywhere", each user's latest
//!   heartbeat there, also ordered by time. A count query drops the entries
//!   that are past the TTL from the front and returns the size: exact at
//!   query time, and amortised O(expired) instead of a walk over all sessions.
//! - `today` and `total`: per module, the set of users seen. At the first
//!   operation after local midnight `today` is reseeded with the users whose
//!   session was live at midnight, so `activeNow <= today` holds across the
//!   rollover too.
//! - `resources`: which sessions last named each resource.
//!
//! # Images
//! [`MemoryStore::image`] copies what must outlive a restart (sessions,
//! `today`, `total`, history) into a plain [`MemoryImage`], and
//! [`MemoryStore::restore`] rebuilds the state from one; the derived
//! indexes are never saved, only rebuilt. `crate::snapshot` turns images
//! into files.
//!
//! # Locking
//! One `std::sync::Mutex`: every operation is short and synchronous, and
//! the lock is never held across an `.await` (the async methods only lock
//! inside plain function calls), so a std mutex is both correct and cheaper
//! than an async one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono_tz::Tz;

use super::day::day_bounds;
use super::history::{HISTORY_MINUTES, History, HistoryRing, MinuteBucket};
use super::{
    Cursor, Heartbeat, HeartbeatAck, Leave, ModuleCounts, ModuleSnapshot, ResourceViewers,
    SessionInfo, SessionObserver, SessionPage, SessionStore, StoreError, Viewer,
};
use crate::clock::{Clock, Millis, duration_ms};
use crate::domain::{ClientId, ModuleId, Modules, Page, ResourceId, UserId};

/// How many expired sessions the sweeper removes per lock acquisition.
const SWEEP_BATCH: usize = 1024;

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
}

impl MemoryConfig {
    /// The memory store's part of the `serve` settings.
    pub fn from_args(args: &crate::config::ServeArgs) -> Self {
        Self {
            modules: args.modules.clone(),
            session_ttl: args.session_ttl,
            timezone: args.stats_timezone,
            max_sessions_per_user: usize::from(args.max_sessions_per_user),
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
    modules: Modules,
    clock: Arc<dyn Clock>,
    ttl: Millis,
    timezone: Tz,
    max_sessions_per_user: usize,
}

type SessionKey = (UserId, Option<ClientId>);

#[derive(Debug)]
struct Session {
    client: Option<ClientId>,
    module: ModuleId,
    page: Option<Page>,
    resource: Option<ResourceId>,
    started_at: Millis,
    resource_since: Millis,
    last_seen: Millis,
}

#[derive(Debug)]
struct State {
    users: HashMap<UserId, Vec<Session>>,
    by_time: BTreeSet<(Millis, SessionKey)>,
    presence: Vec<PresenceIndex>,
    anywhere: PresenceIndex,
    today: Vec<HashSet<UserId>>,
    total: Vec<HashSet<UserId>>,
    resources: HashMap<ResourceId, HashSet<SessionKey>>,
    day_start: Millis,
    next_day_start: Millis,
    history: HistoryRing,
    ttl: Millis,
    /// Sessions ended under the lock, told to the observer after it.
    ended: Vec<(ModuleId, Millis, bool)>,
}

/// Each user's latest heartbeat in one place, ordered by time.
#[derive(Debug, Default)]
struct PresenceIndex {
    latest: HashMap<UserId, Millis>,
    by_time: BTreeSet<(Millis, UserId)>,
}

impl PresenceIndex {
    fn set(&mut self, user: &UserId, latest: Option<Millis>) {
        let old = match latest {
            Some(ts) => self.latest.insert(user.clone(), ts),
            None => self.latest.remove(user),
        };
        if old == latest {
            return;
        }
        if let Some(old) = old {
            self.by_time.remove(&(old, user.clone()));
        }
        if let Some(ts) = latest {
            self.by_time.insert((ts, user.clone()));
        }
    }

    /// Forgets every entry at or before `cutoff`.
    fn prune(&mut self, cutoff: Millis) {
        while let Some((ts, _)) = self.by_time.first() {
            if *ts > cutoff {
                break;
            }
            if let Some((_, user)) = self.by_time.pop_first() {
                self.latest.remove(&user);
            }
        }
    }

    /// Forgets entries at or before `cutoff`, then counts the users left.
    fn prune_and_count(&mut self, cutoff: Millis) -> u64 {
        self.prune(cutoff);
        self.latest.len() as u64
    }
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
            duration_ms(config.session_ttl),
        );
        Self {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                observer,
                modules: config.modules.clone(),
                clock,
                ttl: duration_ms(config.session_ttl),
                timezone: config.timezone,
                max_sessions_per_user: config.max_sessions_per_user.max(1),
            }),
        }
    }

    /// How many sessions are held in memory, live or expired but not yet
    /// swept.
    pub fn sessions_in_memory(&self) -> usize {
        self.lock().0.by_time.len()
    }

    /// The module registry the store was built for.
    pub fn modules(&self) -> &Modules {
        &self.shared.modules
    }

    /// A copy of everything that must outlive a restart. The lock is held
    /// only to copy: ids are shared (`Arc`), not duplicated.
    pub fn image(&self) -> MemoryImage {
        let (st, now, _) = self.lock();
        let sessions = st
            .users
            .iter()
            .flat_map(|(user, sessions)| {
                sessions.iter().map(|s| SessionImage {
                    user: user.clone(),
                    client: s.client.clone(),
                    module: s.module,
                    page: s.page.clone(),
                    resource: s.resource.clone(),
                    started_at: s.started_at,
                    resource_since: s.resource_since,
                    last_seen: s.last_seen,
                })
            })
            .collect();
        let users = |sets: &[HashSet<UserId>]| -> Vec<Vec<UserId>> {
            sets.iter().map(|s| s.iter().cloned().collect()).collect()
        };
        MemoryImage {
            at: now,
            today_start: st.day_start,
            sessions,
            today: users(&st.today),
            total: users(&st.total),
            history: st.history.window(now, HISTORY_MINUTES),
        }
    }

    /// Replaces the whole state with `image`, judged by today's clock and
    /// limits: sessions past their TTL are dropped (their end filed in the
    /// history, as the sweeper would have), each user keeps at most
    /// `max_sessions_per_user` (the most recently seen), and `today` is
    /// kept only if the image is from the current local day; otherwise it
    /// starts with the users live now, as at a midnight rollover.
    pub fn restore(&self, image: MemoryImage) -> Restored {
        let now = self.shared.clock.now_ms();
        let mut fresh = State::new(
            self.shared.modules.len(),
            self.shared.timezone,
            now,
            self.shared.ttl,
        );
        let restored = fresh.restore(image, now, self.shared.max_sessions_per_user);
        let mut st = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *st = fresh;
        self.notify(st);
        restored
    }

    /// Locks the state, rolling `today` over first if the day has changed.
    /// Returns the guard, `now` and the liveness cutoff.
    fn lock(&self) -> (MutexGuard<'_, State>, Millis, Millis) {
        // A panic while holding the lock cannot leave the indexes half-updated
        // in a way that matters more than losing the process, and every
        // critical section is panic-free code; recover rather than cascade.
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = self.shared.clock.now_ms();
        let ttl = self.shared.ttl;
        // Only forward: a wall clock stepping back must not undo today.
        if now >= state.next_day_start {
            state.roll_day(self.shared.timezone, now, ttl);
        }
        (state, now, now - ttl)
    }

    fn heartbeat_sync(&self, beat: Heartbeat) -> HeartbeatAck {
        let (mut st, now, cutoff) = self.lock();
        let user = beat.user.clone();
        let module = beat.module;
        let cap = self.shared.max_sessions_per_user;
        let mut touched = st.make_room(&user, beat.client.as_ref(), cutoff, cap);
        touched.push(module);
        touched.extend(st.upsert(beat, now));
        touched.sort_unstable();
        touched.dedup();
        for m in touched {
            st.refresh_presence(&user, Some(m), cutoff);
        }
        st.refresh_presence(&user, None, cutoff);
        st.today[module.index()].insert(user.clone());
        st.total[module.index()].insert(user);
        let active_here = st.presence[module.index()].prune_and_count(cutoff);
        st.history.at(module.index(), now).see(active_here, now);
        let ack = HeartbeatAck {
            active_users: st.anywhere.prune_and_count(cutoff),
            at: now,
        };
        self.notify(st);
        ack
    }

    /// Releases the lock, then tells the observer of the sessions that ended.
    fn notify(&self, mut st: MutexGuard<'_, State>) {
        let ended = std::mem::take(&mut st.ended);
        drop(st);
        for (module, length, expired) in ended {
            #[allow(
                clippy::cast_precision_loss,
                reason = "session lengths are far below 2^52 ms"
            )]
            let seconds = length.max(0) as f64 / 1000.0;
            let code = &self.shared.modules.get(module).code;
            self.shared.observer.session_ended(code, seconds, expired);
        }
    }

    fn leave_sync(&self, user: &UserId, which: Leave) -> usize {
        let (mut st, now, cutoff) = self.lock();
        let clients: Vec<Option<ClientId>> = match which {
            Leave::Session(client) => vec![client],
            Leave::All => st
                .users
                .get(user)
                .map(|ss| ss.iter().map(|s| s.client.clone()).collect())
                .unwrap_or_default(),
        };
        let mut ended = 0;
        let mut touched = Vec::new();
        for client in clients {
            if let Some(s) = st.remove_session(user, client.as_ref(), now) {
                ended += usize::from(s.last_seen > cutoff);
                touched.push(s.module);
            }
        }
        for module in touched {
            st.refresh_presence(user, Some(module), cutoff);
        }
        st.refresh_presence(user, None, cutoff);
        self.notify(st);
        ended
    }

    fn module_counts_sync(&self) -> ModuleSnapshot {
        let (mut st, now, cutoff) = self.lock();
        let st = &mut *st;
        let counts = st
            .presence
            .iter_mut()
            .zip(&st.today)
            .zip(&st.total)
            .map(|((presence, today), total)| ModuleCounts {
                active_now: presence.prune_and_count(cutoff),
                today: today.len() as u64,
                total_users: total.len() as u64,
            })
            .collect();
        ModuleSnapshot {
            counts,
            users_anywhere: st.anywhere.prune_and_count(cutoff),
            at: now,
        }
    }

    fn resource_viewers_sync(&self, resource: &ResourceId) -> ResourceViewers {
        let (st, now, cutoff) = self.lock();
        let mut by_user: HashMap<&UserId, Viewer> = HashMap::new();
        for (user, client) in st.resources.get(resource).into_iter().flatten() {
            let Some(s) = st.session(user, client.as_ref()) else {
                continue;
            };
            if s.last_seen <= cutoff {
                continue;
            }
            by_user
                .entry(user)
                .and_modify(|v| {
                    v.since = v.since.min(s.resource_since);
                    v.last_seen = v.last_seen.max(s.last_seen);
                })
                .or_insert_with(|| Viewer {
                    user: user.clone(),
                    since: s.resource_since,
                    last_seen: s.last_seen,
                });
        }
        let mut viewers: Vec<Viewer> = by_user.into_values().collect();
        viewers.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.user.cmp(&b.user)));
        ResourceViewers { viewers, at: now }
    }

    fn sessions_sync(&self, limit: usize, cursor: Option<Cursor>) -> SessionPage {
        let (st, now, cutoff) = self.lock();
        let newest_first: Box<dyn Iterator<Item = &(Millis, SessionKey)>> = match cursor {
            None => Box::new(st.by_time.iter().rev()),
            Some(c) => Box::new(st.by_time.range(..(c.last_seen, (c.user, c.client))).rev()),
        };
        let mut sessions = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        for (ts, (user, client)) in newest_first.take_while(|(ts, _)| *ts > cutoff) {
            if sessions.len() == limit {
                more = true;
                break;
            }
            if let Some(s) = st.session(user, client.as_ref()) {
                sessions.push(SessionInfo {
                    user: user.clone(),
                    client: client.clone(),
                    module: s.module,
                    page: s.page.clone(),
                    resource: s.resource.clone(),
                    started_at: s.started_at,
                    last_seen: *ts,
                });
            }
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

    /// Removes up to one batch of expired sessions; returns how many.
    fn sweep_batch(&self) -> usize {
        let (mut st, now, cutoff) = self.lock();
        let mut removed = 0;
        while removed < SWEEP_BATCH && st.by_time.first().is_some_and(|(ts, _)| *ts <= cutoff) {
            // Popping first guarantees progress even if the indexes were
            // ever to disagree.
            if let Some((_, (user, client))) = st.by_time.pop_first() {
                let gone = st.remove_session(&user, client.as_ref(), now);
                debug_assert!(gone.is_some(), "by_time and users agree");
            }
            removed += 1;
        }
        // A session that left memory was past the TTL, and so is every
        // presence entry that only it kept.
        for p in &mut st.presence {
            p.prune(cutoff);
        }
        st.anywhere.prune(cutoff);
        self.notify(st);
        removed
    }
}

impl State {
    /// An empty state for `modules` modules, on the local day of `now`.
    fn new(modules: usize, timezone: Tz, now: Millis, ttl: Millis) -> Self {
        let (day_start, next_day_start) = day_bounds(timezone, now);
        Self {
            users: HashMap::new(),
            by_time: BTreeSet::new(),
            presence: (0..modules).map(|_| PresenceIndex::default()).collect(),
            anywhere: PresenceIndex::default(),
            today: vec![HashSet::new(); modules],
            total: vec![HashSet::new(); modules],
            resources: HashMap::new(),
            day_start,
            next_day_start,
            history: HistoryRing::new(modules),
            ttl,
            ended: Vec::new(),
        }
    }

    /// Fills an empty state from `image` (see [`MemoryStore::restore`]).
    fn restore(&mut self, image: MemoryImage, now: Millis, cap: usize) -> Restored {
        let cutoff = now - self.ttl;
        let modules = self.today.len();
        let mut restored = Restored::default();
        // History first: the ends filed below add to the restored minutes.
        self.history.restore(image.history, now);
        let mut sessions = image.sessions;
        // Newest first, so a user over the cap keeps their latest sessions.
        sessions.sort_unstable_by_key(|s| std::cmp::Reverse(s.last_seen));
        let mut touched = Vec::new();
        for s in sessions {
            let m = s.module.index();
            if m >= modules {
                continue;
            }
            // A clock that was ahead must not leave sessions that never expire.
            let last_seen = s.last_seen.min(now);
            let started_at = s.started_at.min(last_seen);
            if last_seen <= cutoff {
                let length = last_seen - started_at;
                self.record_end(s.module, last_seen + self.ttl, length, true);
                restored.expired += 1;
                continue;
            }
            let held = self.users.get(&s.user).map_or(&[][..], Vec::as_slice);
            if held.len() >= cap || held.iter().any(|h| h.client == s.client) {
                restored.over_cap += 1;
                continue;
            }
            let key: SessionKey = (s.user.clone(), s.client.clone());
            self.by_time.insert((last_seen, key.clone()));
            if let Some(r) = &s.resource {
                self.resources.entry(r.clone()).or_default().insert(key);
            }
            // Live now, so here today or live at midnight: in `today`
            // either way, which keeps `activeNow <= today`.
            self.today[m].insert(s.user.clone());
            self.total[m].insert(s.user.clone());
            self.users.entry(s.user.clone()).or_default().push(Session {
                client: s.client,
                module: s.module,
                page: s.page,
                resource: s.resource,
                started_at,
                resource_since: s.resource_since.min(last_seen),
                last_seen,
            });
            touched.push((s.user, s.module));
            restored.sessions += 1;
        }
        for (user, module) in touched {
            self.refresh_presence(&user, Some(module), cutoff);
            self.refresh_presence(&user, None, cutoff);
        }
        restored.today_kept = image.today_start == self.day_start;
        if restored.today_kept {
            for (today, users) in self.today.iter_mut().zip(image.today) {
                today.extend(users);
            }
        }
        for (total, users) in self.total.iter_mut().zip(image.total) {
            total.extend(users);
        }
        // Whatever the image says, everyone here today was seen ever.
        for (total, today) in self.total.iter_mut().zip(&self.today) {
            total.extend(today.iter().cloned());
        }
        restored
    }

    /// Before a heartbeat of (user, client): removes the user's expired
    /// sessions (a dead session is never revived) and, when the heartbeat
    /// would open a session beyond `cap`, the least recently seen one.
    /// Returns the modules of the removed sessions.
    fn make_room(
        &mut self,
        user: &UserId,
        client: Option<&ClientId>,
        cutoff: Millis,
        cap: usize,
    ) -> Vec<ModuleId> {
        let Some(sessions) = self.users.get(user) else {
            return Vec::new();
        };
        let (live, expired): (Vec<&Session>, Vec<&Session>) =
            sessions.iter().partition(|s| s.last_seen > cutoff);
        let mut doomed: Vec<Option<ClientId>> = expired.iter().map(|s| s.client.clone()).collect();
        let opens_a_session = !live.iter().any(|s| s.client.as_ref() == client);
        if opens_a_session && live.len() >= cap {
            doomed.extend(
                live.iter()
                    .min_by_key(|s| s.last_seen)
                    .map(|s| s.client.clone()),
            );
        }
        doomed
            .into_iter()
            .filter_map(|c| self.remove_session(user, c.as_ref(), cutoff + self.ttl))
            .map(|s| s.module)
            .collect()
    }

    /// Creates or refreshes the session of `beat` and its `by_time` and
    /// `resources` entries, recording a start (and, on a move, the end in
    /// the old module) in the history. Returns the module it moved from.
    fn upsert(&mut self, beat: Heartbeat, now: Millis) -> Option<ModuleId> {
        let module = beat.module;
        let key: SessionKey = (beat.user.clone(), beat.client.clone());
        let sessions = self.users.entry(beat.user).or_default();
        let mut moved_from = None;
        let previous = match sessions.iter_mut().find(|s| s.client == beat.client) {
            Some(s) => {
                let previous = (s.last_seen, s.resource.clone());
                if s.module != beat.module {
                    moved_from = Some((s.module, now - s.started_at));
                    s.module = beat.module;
                    s.started_at = now;
                }
                if s.resource != beat.resource {
                    s.resource_since = now;
                }
                s.resource.clone_from(&beat.resource);
                s.page = beat.page;
                s.last_seen = now;
                Some(previous)
            }
            None => {
                sessions.push(Session {
                    client: beat.client,
                    module: beat.module,
                    page: beat.page,
                    resource: beat.resource.clone(),
                    started_at: now,
                    resource_since: now,
                    last_seen: now,
                });
                None
            }
        };
        if previous.is_none() || moved_from.is_some() {
            self.history.at(module.index(), now).started += 1;
        }
        if let Some((old, length)) = moved_from {
            self.record_end(old, now, length, false);
        }
        let (old_time, old_resource) = previous.unzip();
        if let Some(old) = old_time {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((now, key.clone()));
        let old_resource = old_resource.flatten();
        if old_resource != beat.resource {
            if let Some(r) = old_resource {
                self.unindex_resource(&r, &key);
            }
            if let Some(r) = beat.resource {
                self.resources.entry(r).or_default().insert(key);
            }
        }
        moved_from.map(|(old, _)| old)
    }

    fn session(&self, user: &UserId, client: Option<&ClientId>) -> Option<&Session> {
        self.users
            .get(user)?
            .iter()
            .find(|s| s.client.as_ref() == client)
    }

    /// Takes one session out of `users`, `by_time` and `resources`, and
    /// records its end in the history: expired at `last_seen + TTL` if it
    /// was past its TTL at `now`, else left at `now`. The caller refreshes
    /// presence for the session's module.
    fn remove_session(
        &mut self,
        user: &UserId,
        client: Option<&ClientId>,
        now: Millis,
    ) -> Option<Session> {
        let sessions = self.users.get_mut(user)?;
        let i = sessions.iter().position(|s| s.client.as_ref() == client)?;
        let session = sessions.swap_remove(i);
        if sessions.is_empty() {
            self.users.remove(user);
        }
        let key: SessionKey = (user.clone(), session.client.clone());
        self.by_time.remove(&(session.last_seen, key.clone()));
        if let Some(r) = &session.resource {
            self.unindex_resource(r, &key);
        }
        let expired = session.last_seen <= now - self.ttl;
        let (end, length) = if expired {
            (
                session.last_seen + self.ttl,
                session.last_seen - session.started_at,
            )
        } else {
            (now, now - session.started_at)
        };
        self.record_end(session.module, end, length, expired);
        Some(session)
    }

    fn record_end(&mut self, module: ModuleId, at: Millis, length: Millis, expired: bool) {
        let minute = self.history.at(module.index(), at);
        minute.ended += 1;
        minute.ended_ms += u64::try_from(length).unwrap_or(0);
        self.ended.push((module, length, expired));
    }

    fn unindex_resource(&mut self, resource: &ResourceId, key: &SessionKey) {
        if let Some(keys) = self.resources.get_mut(resource) {
            keys.remove(key);
            if keys.is_empty() {
                self.resources.remove(resource);
            }
        }
    }

    /// Recomputes the user's latest live heartbeat in `module` (or
    /// anywhere, for `None`) from their sessions.
    fn refresh_presence(&mut self, user: &UserId, module: Option<ModuleId>, cutoff: Millis) {
        let latest = self.users.get(user).and_then(|ss| {
            ss.iter()
                .filter(|s| s.last_seen > cutoff && module.is_none_or(|m| s.module == m))
                .map(|s| s.last_seen)
                .max()
        });
        let index = match module {
            Some(m) => &mut self.presence[m.index()],
            None => &mut self.anywhere,
        };
        index.set(user, latest);
    }

    /// Starts a new day: `today` becomes the users live at its midnight.
    fn roll_day(&mut self, timezone: Tz, now: Millis, ttl: Millis) {
        let (start, next) = day_bounds(timezone, now);
        self.day_start = start;
        self.next_day_start = next;
        let live_at_midnight = start - ttl;
        for (today, presence) in self.today.iter_mut().zip(&self.presence) {
            today.clear();
            today.extend(
                presence
                    .latest
                    .iter()
                    .filter(|(_, ts)| **ts > live_at_midnight)
                    .map(|(u, _)| u.clone()),
            );
        }
    }
}

/// What the memory store keeps across a restart, as plain values: see
/// [`MemoryStore::image`]. Modules are registry positions of the store it
/// came from or goes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryImage {
    /// When it was taken.
    pub at: Millis,
    /// The start of the local day `today` is for.
    pub today_start: Millis,
    /// Every session held: live, or expired and not yet swept.
    pub sessions: Vec<SessionImage>,
    /// Per module, in registry order: the users seen today.
    pub today: Vec<Vec<UserId>>,
    /// Per module, in registry order: the users ever seen.
    pub total: Vec<Vec<UserId>>,
    /// The last 24 hours of history, oldest first.
    pub history: Vec<MinuteBucket>,
}

/// One session in a [`MemoryImage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionImage {
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
    /// When the session started in this module.
    pub started_at: Millis,
    /// Since when it has named `resource`.
    pub resource_since: Millis,
    /// Its latest heartbeat.
    pub last_seen: Millis,
}

/// What [`MemoryStore::restore`] kept and dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Restored {
    /// Live sessions put back.
    pub sessions: usize,
    /// Sessions that had expired by the restore; dropped, their end filed
    /// in the history.
    pub expired: usize,
    /// Sessions dropped as beyond `max_sessions_per_user` (each user's
    /// least recently seen) or repeated.
    pub over_cap: usize,
    /// Whether `today` was kept (the image is from the current local day).
    pub today_kept: bool,
}

impl SessionStore for MemoryStore {
    async fn heartbeat(&self, beat: Heartbeat) -> Result<HeartbeatAck, StoreError> {
        Ok(self.heartbeat_sync(beat))
    }

    async fn leave(&self, user: &UserId, which: Leave) -> Result<usize, StoreError> {
        Ok(self.leave_sync(user, which))
    }

    async fn module_counts(&self) -> Result<ModuleSnapshot, StoreError> {
        Ok(self.module_counts_sync())
    }

    async fn resource_viewers(&self, resource: &ResourceId) -> Result<ResourceViewers, StoreError> {
        Ok(self.resource_viewers_sync(resource))
    }

    async fn sessions(
        &self,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<SessionPage, StoreError> {
        Ok(self.sessions_sync(limit, cursor))
    }

    async fn live_sessions(&self) -> Result<Vec<u64>, StoreError> {
        // A walk over the live sessions, newest first: O(live sessions), for
        // the metrics scrape only.
        let (st, _now, cutoff) = self.lock();
        let mut per_module = vec![0; self.shared.modules.len()];
        for (_, (user, client)) in st.by_time.iter().rev().take_while(|(ts, _)| *ts > cutoff) {
            if let Some(s) = st.session(user, client.as_ref()) {
                per_module[s.module.index()] += 1;
            }
        }
        Ok(per_module)
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let removed = self.sweep_batch();
            total += removed;
            if removed < SWEEP_BATCH {
                return Ok(total);
            }
            // Let heartbeats in between batches.
            tokio::task::yield_now().await;
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn record_sample(&self) -> Result<(), StoreError> {
        let (mut st, now, cutoff) = self.lock();
        for m in 0..st.presence.len() {
            let active = st.presence[m].prune_and_count(cutoff);
            let minute = st.history.at(m, now);
            if minute.sample.is_none() {
                minute.sample = Some(active);
                minute.see(active, now);
            }
        }
        Ok(())
    }

    async fn history(&self, minutes: i64) -> Result<History, StoreError> {
        let (st, now, _) = self.lock();
        Ok(History {
            minutes: st.history.window(now, minutes),
            at: now,
        })
    }
}
