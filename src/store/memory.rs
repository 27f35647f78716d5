//! The in-memory store: every session in this process, behind one mutex.
//!
//! # Data model
//! Users are numbered ([`Uid`], see [`super::users`]) and every index holds
//! numbers, not strings; a session is one slot of a slab, named by its
//! position ([`Sid`]).
//! - `sessions`: the slab, and the source of truth. Each user's sessions
//!   (at most `max_sessions_per_user`) chain from `first[uid]`. The
//!   optional strings of a session (client, page, resource) sit in one
//!   allocation that a heartbeat without them does not make.
//! - `by_time`: every session ordered by its last heartbeat. Expired
//!   sessions are removed from its front, a bounded batch at a time: by
//!   every operation before its own work, and by the sweeper until none is
//!   left. The admin list pages through it from the back.
//! - `active` and `anywhere`: per module, and once for "anywhere", how many
//!   users hold a session there, kept up to date by every change to a
//!   user's sessions. A count query removes what has expired (in batches,
//!   letting other requests in between) and reads the counter: exact at
//!   query time, and O(1) once nothing is left to expire.
//! - `today` and `total`: per module, the set of users seen, as bits. At
//!   the first operation after local midnight `today` is reseeded with the
//!   users whose session was live at midnight, so `activeNow <= today`
//!   holds across the rollover too.
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
//! than an async one. No operation holds it for longer than one batch of
//! expiry plus its own work, however many sessions expire at once; the
//! exceptions are the midnight rollover and [`MemoryStore::image`], which
//! are O(sessions) once a day and once a snapshot.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono_tz::Tz;

use super::history::{HISTORY_MINUTES, History, HistoryRing, MinuteBucket};
use super::users::{Uid, UserSet, Users};
use super::{
    Cursor, Heartbeat, HeartbeatAck, Leave, ModuleCounts, ModuleSnapshot, ResourceViewers,
    SessionInfo, SessionObserver, SessionPage, SessionStore, StoreError, Viewer,
};
use crate::clock::day::day_bounds;
use crate::clock::{Clock, Millis, duration_ms};
use crate::domain::{ClientId, ModuleId, Modules, Page, ResourceId, UserId};

/// How many expired sessions the sweeper and the count queries remove per
/// lock acquisition.
const SWEEP_BATCH: usize = 1024;

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

/// A session's slot in the slab.
type Sid = u32;

/// The end of a user's chain of sessions.
const NO_SESSION: Sid = Sid::MAX;

/// The `user` of a free slot.
const VACANT: Uid = Uid::MAX;

/// One session: 40 bytes, and the strings only if the heartbeat sent any.
#[derive(Debug, Clone)]
struct Session {
    last_seen: Millis,
    started_at: Millis,
    extras: Option<Box<Extras>>,
    user: Uid,
    /// The user's next session, or [`NO_SESSION`]; for a free slot, the
    /// next free slot.
    next_of_user: Sid,
    module: ModuleId,
}

/// What a heartbeat may add to a session.
#[derive(Debug, Clone)]
struct Extras {
    client: Option<ClientId>,
    page: Option<Page>,
    resource: Option<ResourceId>,
    /// Since when `resource` has been named.
    resource_since: Millis,
}

impl Session {
    fn client(&self) -> Option<&ClientId> {
        self.extras.as_ref()?.client.as_ref()
    }

    fn page(&self) -> Option<&Page> {
        self.extras.as_ref()?.page.as_ref()
    }

    fn resource(&self) -> Option<&ResourceId> {
        self.extras.as_ref()?.resource.as_ref()
    }

    fn resource_since(&self) -> Millis {
        self.extras
            .as_ref()
            .map_or(self.started_at, |e| e.resource_since)
    }

    /// Sets the optional strings, keeping their allocation when there is one.
    fn set_extras(
        &mut self,
        client: Option<ClientId>,
        page: Option<Page>,
        resource: Option<ResourceId>,
        resource_since: Millis,
    ) {
        if client.is_none() && page.is_none() && resource.is_none() {
            self.extras = None;
            return;
        }
        match &mut self.extras {
            Some(e) => {
                e.client = client;
                e.page = page;
                e.resource = resource;
                e.resource_since = resource_since;
            }
            None => {
                self.extras = Some(Box::new(Extras {
                    client,
                    page,
                    resource,
                    resource_since,
                }));
            }
        }
    }
}

/// The modules a user holds sessions in, as bits (module ids are `u8`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ModuleSet([u64; 4]);

impl ModuleSet {
    fn add(&mut self, m: ModuleId) {
        let i = m.index();
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    fn is_empty(self) -> bool {
        self == Self::default()
    }
}

#[derive(Debug)]
struct State {
    users: Users,
    /// Per user: their first session, or [`NO_SESSION`].
    first: Vec<Sid>,
    sessions: Vec<Session>,
    /// The first free slot of `sessions`, or [`NO_SESSION`]; free slots
    /// chain through `next_of_user`, so they cost nothing beyond the slot.
    free: Sid,
    by_time: BTreeSet<(Millis, Uid, Sid)>,
    /// Per module: the users with a session there.
    active: Vec<u64>,
    /// The users with a session anywhere.
    anywhere: u64,
    /// Per module: the sessions there.
    held: Vec<u64>,
    today: Vec<UserSet>,
    total: Vec<UserSet>,
    resources: HashMap<ResourceId, HashSet<Sid>>,
    day_start: Millis,
    next_day_start: Millis,
    history: HistoryRing,
    ttl: Millis,
    /// Sessions ended under the lock, told to the observer after it.
    ended: Vec<(ModuleId, Millis, bool)>,
}

type Locked<'a> = (MutexGuard<'a, State>, Millis, Millis);

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
    /// removed.
    pub fn sessions_in_memory(&self) -> usize {
        self.lock_without_expiry().0.by_time.len()
    }

    /// The module registry the store was built for.
    pub fn modules(&self) -> &Modules {
        &self.shared.modules
    }

    /// A copy of everything that must outlive a restart. Under the lock it
    /// copies the id arena, the user sets and the slots (their strings by
    /// reference count); users are named after the lock is released.
    pub fn image(&self) -> MemoryImage {
        let (st, now, _) = self.lock_without_expiry();
        let names = st.users.names();
        let slots: Vec<Session> = st
            .sessions
            .iter()
            .filter(|s| s.user != VACANT)
            .cloned()
            .collect();
        let (today, total) = (st.today.clone(), st.total.clone());
        let (today_start, history) = (st.day_start, st.history.window(now, HISTORY_MINUTES));
        drop(st);
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
                    user: name(s.user),
                    client: s.client().cloned(),
                    module: s.module,
                    page: s.page().cloned(),
                    resource: s.resource().cloned(),
                    started_at: s.started_at,
                    resource_since: s.resource_since(),
                    last_seen: s.last_seen,
                })
                .collect(),
            today: users(&today),
            total: users(&total),
            history,
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
        let ttl = self.shared.ttl;
        // Only forward: a wall clock stepping back must not undo today.
        if now >= state.next_day_start {
            state.roll_day(self.shared.timezone, now, ttl);
        }
        (state, now, now - ttl)
    }

    /// [`Self::lock_without_expiry`], then removes up to [`EAGER_BATCH`]
    /// expired sessions. Counts are exact unless more than that many
    /// expired since the last operation; [`Self::settled`] makes sure.
    fn lock(&self) -> Locked<'_> {
        let (mut st, now, cutoff) = self.lock_without_expiry();
        st.expire(now, cutoff, EAGER_BATCH);
        (st, now, cutoff)
    }

    /// Locks the state once no expired session is left in it, removing
    /// them [`SWEEP_BATCH`] at a time and letting other tasks in between.
    /// Also returns how many it removed.
    async fn settled(&self) -> (Locked<'_>, usize) {
        let mut removed = 0;
        loop {
            if let Some(locked) = self.settle_step(&mut removed) {
                return (locked, removed);
            }
            tokio::task::yield_now().await;
        }
    }

    /// One batch of [`Self::settled`], counted into `removed`: the guard if
    /// nothing expired is left.
    fn settle_step(&self, removed: &mut usize) -> Option<Locked<'_>> {
        let (mut st, now, cutoff) = self.lock_without_expiry();
        *removed += st.expire(now, cutoff, SWEEP_BATCH);
        if !st.has_expired(cutoff) {
            return Some((st, now, cutoff));
        }
        self.notify(st);
        None
    }

    fn heartbeat_sync(&self, beat: Heartbeat) -> HeartbeatAck {
        let (mut st, now, cutoff) = self.lock();
        let module = beat.module;
        let uid = st.users.intern(beat.user.as_str());
        let before = st.modules_of(uid);
        st.make_room(
            uid,
            beat.client.as_ref(),
            now,
            cutoff,
            self.shared.max_sessions_per_user,
        );
        st.upsert(uid, beat, now);
        st.settle(uid, before);
        st.seen(uid, module);
        // Counts include sessions expired but not yet removed only while a
        // mass expiry is being worked off; such counts set no peak.
        let exact = !st.has_expired(cutoff);
        if exact {
            let active_here = st.active[module.index()];
            st.history.at(module.index(), now).see(active_here, now);
        }
        let ack = HeartbeatAck {
            active_users: st.anywhere,
            exact,
            at: now,
        };
        self.notify(st);
        ack
    }

    /// Releases the lock, then tells the observer of the sessions that ended.
    fn notify(&self, mut st: MutexGuard<'_, State>) {
        let mut ended = std::mem::take(&mut st.ended);
        drop(st);
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
        let (mut st, now, cutoff) = self.lock();
        // An unknown user holds nothing, and is not numbered for asking.
        let Some(uid) = st.users.get(user.as_str()) else {
            self.notify(st);
            return 0;
        };
        let doomed: Vec<Sid> = match which {
            Leave::Session(client) => st.find(uid, client.as_ref()).into_iter().collect(),
            Leave::All => st.sessions_of(uid).collect(),
        };
        let before = st.modules_of(uid);
        let mut ended = 0;
        for sid in doomed {
            if let Some(last_seen) = st.remove(sid, now) {
                ended += usize::from(last_seen > cutoff);
            }
        }
        st.settle(uid, before);
        self.notify(st);
        ended
    }

    fn module_counts_now(st: &State, now: Millis) -> ModuleSnapshot {
        let counts = st
            .active
            .iter()
            .zip(&st.today)
            .zip(&st.total)
            .map(|((&active_now, today), total)| ModuleCounts {
                active_now,
                today: today.len(),
                total_users: total.len(),
            })
            .collect();
        ModuleSnapshot {
            counts,
            users_anywhere: st.anywhere,
            at: now,
        }
    }

    fn resource_viewers_sync(&self, resource: &ResourceId) -> ResourceViewers {
        // Read-only: expired sessions are skipped, not removed.
        let (st, now, cutoff) = self.lock_without_expiry();
        let mut by_user: HashMap<Uid, (Millis, Millis)> = HashMap::new();
        for &sid in st.resources.get(resource).into_iter().flatten() {
            let s = &st.sessions[sid as usize];
            if s.last_seen <= cutoff {
                continue;
            }
            let (since, last_seen) = (s.resource_since(), s.last_seen);
            by_user
                .entry(s.user)
                .and_modify(|v| *v = (v.0.min(since), v.1.max(last_seen)))
                .or_insert((since, last_seen));
        }
        let mut viewers: Vec<Viewer> = by_user
            .into_iter()
            .map(|(uid, (since, last_seen))| Viewer {
                user: UserId::known(st.users.name(uid)),
                since,
                last_seen,
            })
            .collect();
        viewers.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.user.cmp(&b.user)));
        ResourceViewers { viewers, at: now }
    }

    fn sessions_sync(&self, limit: usize, cursor: Option<Cursor>) -> SessionPage {
        // Read-only: expired sessions are skipped, not removed.
        let (st, now, cutoff) = self.lock_without_expiry();
        let upper = match cursor {
            None => Bound::Unbounded,
            Some(c) => Bound::Excluded(st.position(&c)),
        };
        let mut sessions = Vec::with_capacity(limit.min(1024));
        let mut more = false;
        let newest_first = st.by_time.range((Bound::Unbounded, upper)).rev();
        for &(ts, uid, sid) in newest_first.take_while(|(ts, _, _)| *ts > cutoff) {
            if sessions.len() == limit {
                more = true;
                break;
            }
            let s = &st.sessions[sid as usize];
            sessions.push(SessionInfo {
                user: UserId::known(st.users.name(uid)),
                client: s.client().cloned(),
                module: s.module,
                page: s.page().cloned(),
                resource: s.resource().cloned(),
                started_at: s.started_at,
                last_seen: ts,
            });
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

impl State {
    /// An empty state for `modules` modules, on the local day of `now`.
    fn new(modules: usize, timezone: Tz, now: Millis, ttl: Millis) -> Self {
        let (day_start, next_day_start) = day_bounds(timezone, now);
        Self {
            users: Users::default(),
            first: Vec::new(),
            sessions: Vec::new(),
            free: NO_SESSION,
            by_time: BTreeSet::new(),
            active: vec![0; modules],
            anywhere: 0,
            held: vec![0; modules],
            today: vec![UserSet::default(); modules],
            total: vec![UserSet::default(); modules],
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
            let uid = self.users.intern(s.user.as_str());
            let held = self.sessions_of(uid).count();
            if held >= cap || self.find(uid, s.client.as_ref()).is_some() {
                restored.over_cap += 1;
                continue;
            }
            let before = self.modules_of(uid);
            let mut session = Session {
                last_seen,
                started_at,
                extras: None,
                user: uid,
                next_of_user: NO_SESSION,
                module: s.module,
            };
            let since = s.resource_since.min(last_seen);
            session.set_extras(s.client, s.page, s.resource, since);
            self.insert(session);
            self.settle(uid, before);
            // Live now, so here today or live at midnight: in `today`
            // either way, which keeps `activeNow <= today`.
            self.seen(uid, s.module);
            restored.sessions += 1;
        }
        restored.today_kept = image.today_start == self.day_start;
        if restored.today_kept {
            for (m, users) in image.today.into_iter().enumerate().take(modules) {
                for user in users {
                    let uid = self.users.intern(user.as_str());
                    self.today[m].insert(uid);
                }
            }
        }
        for (m, users) in image.total.into_iter().enumerate().take(modules) {
            for user in users {
                let uid = self.users.intern(user.as_str());
                self.total[m].insert(uid);
            }
        }
        // Whatever the image says, everyone here today was seen ever.
        for (total, today) in self.total.iter_mut().zip(&self.today) {
            for uid in today.iter() {
                total.insert(uid);
            }
        }
        restored
    }

    /// `uid` was here in `module` today, and so ever.
    fn seen(&mut self, uid: Uid, module: ModuleId) {
        self.today[module.index()].insert(uid);
        self.total[module.index()].insert(uid);
    }

    /// The slots of `uid`'s sessions.
    fn sessions_of(&self, uid: Uid) -> impl Iterator<Item = Sid> + '_ {
        let first = self.first.get(uid as usize).copied().unwrap_or(NO_SESSION);
        let some = |sid: Sid| (sid != NO_SESSION).then_some(sid);
        std::iter::successors(some(first), move |&sid| {
            some(self.sessions[sid as usize].next_of_user)
        })
    }

    /// The session of (`uid`, `client`).
    fn find(&self, uid: Uid, client: Option<&ClientId>) -> Option<Sid> {
        self.sessions_of(uid)
            .find(|&sid| self.sessions[sid as usize].client() == client)
    }

    fn modules_of(&self, uid: Uid) -> ModuleSet {
        let mut set = ModuleSet::default();
        for sid in self.sessions_of(uid) {
            set.add(self.sessions[sid as usize].module);
        }
        set
    }

    /// After a change to `uid`'s sessions, which were in `before`: brings
    /// the per-module and anywhere user counts up to date.
    fn settle(&mut self, uid: Uid, before: ModuleSet) {
        let after = self.modules_of(uid);
        if after == before {
            return;
        }
        for (m, active) in self.active.iter_mut().enumerate() {
            match (before.contains(m), after.contains(m)) {
                (false, true) => *active += 1,
                (true, false) => *active -= 1,
                _ => {}
            }
        }
        match (before.is_empty(), after.is_empty()) {
            (true, false) => self.anywhere += 1,
            (false, true) => self.anywhere -= 1,
            _ => {}
        }
    }

    /// Where a cursor points in `by_time`: just before its session if that
    /// is still where the cursor saw it, else before every session of the
    /// cursor's user at that instant (a session moved or gone cannot say
    /// where it was among its user's others of the same millisecond).
    fn position(&self, c: &Cursor) -> (Millis, Uid, Sid) {
        let Some(uid) = self.users.get(c.user.as_str()) else {
            // Never handed out by this store: everything at that instant
            // from a user numbered later is skipped, nothing older.
            return (c.last_seen, 0, 0);
        };
        match self.find(uid, c.client.as_ref()) {
            Some(sid) if self.sessions[sid as usize].last_seen == c.last_seen => {
                (c.last_seen, uid, sid)
            }
            _ => (c.last_seen, uid, 0),
        }
    }

    /// Puts `session` in a free slot and every index but the user counts.
    fn insert(&mut self, mut session: Session) -> Sid {
        let uid = session.user;
        let ui = uid as usize;
        if self.first.len() <= ui {
            self.first.resize(ui + 1, NO_SESSION);
        }
        session.next_of_user = self.first[ui];
        let (last_seen, module) = (session.last_seen, session.module);
        let resource = session.resource().cloned();
        let sid = match self.free {
            NO_SESSION => {
                // As with users: memory runs out long before 2^32 sessions.
                let sid = Sid::try_from(self.sessions.len()).expect("fewer than 2^32 sessions");
                self.sessions.push(session);
                sid
            }
            sid => {
                self.free = self.sessions[sid as usize].next_of_user;
                self.sessions[sid as usize] = session;
                sid
            }
        };
        self.first[ui] = sid;
        self.by_time.insert((last_seen, uid, sid));
        self.held[module.index()] += 1;
        if let Some(r) = resource {
            self.resources.entry(r).or_default().insert(sid);
        }
        sid
    }

    /// Takes session `sid` out of every index but the user counts (the
    /// caller settles them) and records its end in the history: expired at
    /// `last_seen + TTL` if it was past its TTL at `now`, else left at
    /// `now`. Returns its last heartbeat, or `None` for a free slot.
    fn remove(&mut self, sid: Sid, now: Millis) -> Option<Millis> {
        let (uid, last_seen) = self.take(sid, now)?;
        self.by_time.remove(&(last_seen, uid, sid));
        Some(last_seen)
    }

    /// [`Self::remove`] but for `by_time`, which the caller has seen to.
    /// Returns the session's user and last heartbeat.
    fn take(&mut self, sid: Sid, now: Millis) -> Option<(Uid, Millis)> {
        let slot = self.sessions.get_mut(sid as usize)?;
        if slot.user == VACANT {
            return None;
        }
        let uid = std::mem::replace(&mut slot.user, VACANT);
        let extras = slot.extras.take();
        let (last_seen, started_at, module, next) = (
            slot.last_seen,
            slot.started_at,
            slot.module,
            slot.next_of_user,
        );
        // Unlink from the user's chain.
        let ui = uid as usize;
        if self.first[ui] == sid {
            self.first[ui] = next;
        } else {
            let prev = self
                .sessions_of(uid)
                .find(|&p| self.sessions[p as usize].next_of_user == sid);
            if let Some(prev) = prev {
                self.sessions[prev as usize].next_of_user = next;
            }
        }
        self.sessions[sid as usize].next_of_user = self.free;
        self.free = sid;
        self.held[module.index()] -= 1;
        if let Some(r) = extras.and_then(|e| e.resource) {
            self.unindex_resource(&r, sid);
        }
        let expired = last_seen <= now - self.ttl;
        let (end, length) = if expired {
            (last_seen + self.ttl, last_seen - started_at)
        } else {
            (now, now - started_at)
        };
        self.record_end(module, end, length, expired);
        Some((uid, last_seen))
    }

    /// Whether a session whose last heartbeat is at or before `cutoff` is
    /// still held.
    fn has_expired(&self, cutoff: Millis) -> bool {
        self.by_time.first().is_some_and(|&(ts, _, _)| ts <= cutoff)
    }

    /// Removes up to `max` sessions whose last heartbeat is at or before
    /// `cutoff`, oldest first; returns how many.
    fn expire(&mut self, now: Millis, cutoff: Millis, max: usize) -> usize {
        let mut removed = 0;
        while removed < max && self.has_expired(cutoff) {
            // Popping first guarantees progress even if the indexes were
            // ever to disagree.
            if let Some((_, uid, sid)) = self.by_time.pop_first() {
                let before = self.modules_of(uid);
                let gone = self.take(sid, now);
                debug_assert!(gone.is_some(), "by_time and sessions agree");
                self.settle(uid, before);
            }
            removed += 1;
        }
        removed
    }

    /// Before a heartbeat of (`uid`, `client`): removes the user's expired
    /// sessions (a dead session is never revived) and, when the heartbeat
    /// would open a session beyond `cap`, the least recently seen one. The
    /// caller settles the user counts.
    fn make_room(
        &mut self,
        uid: Uid,
        client: Option<&ClientId>,
        now: Millis,
        cutoff: Millis,
        cap: usize,
    ) {
        let mut doomed = Vec::new();
        let mut live = 0;
        let mut reopens = false;
        let mut oldest: Option<(Millis, Sid)> = None;
        for sid in self.sessions_of(uid) {
            let s = &self.sessions[sid as usize];
            if s.last_seen <= cutoff {
                doomed.push(sid);
                continue;
            }
            live += 1;
            reopens |= s.client() == client;
            if oldest.is_none_or(|(ts, _)| s.last_seen < ts) {
                oldest = Some((s.last_seen, sid));
            }
        }
        if !reopens && live >= cap {
            doomed.extend(oldest.map(|(_, sid)| sid));
        }
        for sid in doomed {
            self.remove(sid, now);
        }
    }

    /// Creates or refreshes the session of `beat` and its `by_time` and
    /// `resources` entries, recording a start (and, on a move, the end in
    /// the old module) in the history. The caller settles the user counts.
    fn upsert(&mut self, uid: Uid, beat: Heartbeat, now: Millis) {
        let module = beat.module;
        let Some(sid) = self.find(uid, beat.client.as_ref()) else {
            let mut session = Session {
                last_seen: now,
                started_at: now,
                extras: None,
                user: uid,
                next_of_user: NO_SESSION,
                module,
            };
            session.set_extras(beat.client, beat.page, beat.resource, now);
            self.insert(session);
            self.history.at(module.index(), now).started += 1;
            return;
        };
        let s = &mut self.sessions[sid as usize];
        let old_seen = s.last_seen;
        let old_resource = s.resource().cloned();
        let moved_from = (s.module != module).then(|| (s.module, now - s.started_at));
        if moved_from.is_some() {
            s.module = module;
            s.started_at = now;
        }
        let since = if old_resource == beat.resource {
            s.resource_since()
        } else {
            now
        };
        s.set_extras(beat.client, beat.page, beat.resource.clone(), since);
        s.last_seen = now;
        self.by_time.remove(&(old_seen, uid, sid));
        self.by_time.insert((now, uid, sid));
        if let Some((old, length)) = moved_from {
            self.held[old.index()] -= 1;
            self.held[module.index()] += 1;
            self.history.at(module.index(), now).started += 1;
            self.record_end(old, now, length, false);
        }
        if old_resource != beat.resource {
            if let Some(r) = old_resource {
                self.unindex_resource(&r, sid);
            }
            if let Some(r) = beat.resource {
                self.resources.entry(r).or_default().insert(sid);
            }
        }
    }

    fn record_end(&mut self, module: ModuleId, at: Millis, length: Millis, expired: bool) {
        let minute = self.history.at(module.index(), at);
        minute.ended += 1;
        minute.ended_ms += u64::try_from(length).unwrap_or(0);
        self.ended.push((module, length, expired));
    }

    fn unindex_resource(&mut self, resource: &ResourceId, sid: Sid) {
        if let Some(sids) = self.resources.get_mut(resource) {
            sids.remove(&sid);
            if sids.is_empty() {
                self.resources.remove(resource);
            }
        }
    }

    /// Starts a new day: `today` becomes the users live at its midnight.
    fn roll_day(&mut self, timezone: Tz, now: Millis, ttl: Millis) {
        let (start, next) = day_bounds(timezone, now);
        self.day_start = start;
        self.next_day_start = next;
        let live_at_midnight = start - ttl;
        for today in &mut self.today {
            today.clear();
        }
        for s in &self.sessions {
            if s.user != VACANT && s.last_seen > live_at_midnight {
                self.today[s.module.index()].insert(s.user);
            }
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
        let ((st, now, _), _) = self.settled().await;
        let snapshot = Self::module_counts_now(&st, now);
        self.notify(st);
        Ok(snapshot)
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
        let ((st, _, _), _) = self.settled().await;
        let held = st.held.clone();
        self.notify(st);
        Ok(held)
    }

    async fn sweep(&self) -> Result<usize, StoreError> {
        let ((st, _, _), removed) = self.settled().await;
        self.notify(st);
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn record_sample(&self) -> Result<(), StoreError> {
        let ((mut st, now, _), _) = self.settled().await;
        for m in 0..st.active.len() {
            let active = st.active[m];
            let minute = st.history.at(m, now);
            if minute.sample.is_none() {
                minute.sample = Some(active);
                minute.see(active, now);
            }
        }
        self.notify(st);
        Ok(())
    }

    async fn history(&self, minutes: i64) -> Result<History, StoreError> {
        let (st, now, _) = self.lock_without_expiry();
        Ok(History {
            minutes: st.history.window(now, minutes),
            at: now,
        })
    }
}
