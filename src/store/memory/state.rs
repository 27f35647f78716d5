//! The memory store's state, the `State` behind its one mutex, and every
//! operation on it.
//!
//! # Data model
//! Users are numbered ([`Uid`], see [`crate::store::users`]) and every
//! index holds numbers, not strings; a session is one slot of a slab, named
//! by its position ([`Sid`]).
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
//! - `idle`: per module, the users whose sessions there are all idle, kept
//!   by the same recount as `active` (a user's [`Presence`]: where they
//!   have sessions, and where an active one).
//! - Per user, not per session: `last_seen` (8 bytes a user),
//!   `profiles` (only users whose latest token had one) and `hidden`
//!   (one bit a user).

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono_tz::Tz;

use super::events::EventSink;
use super::image::{MemoryImage, Restored, SessionImage, UserImage};
use super::slot::{NO_SESSION, Session, Sid, VACANT};
use crate::clock::Millis;
use crate::clock::day::day_bounds;
use crate::domain::{ClientId, ModuleId, Profile, ResourceId};
use crate::events::Reason;
use crate::store::history::HistoryRing;
use crate::store::users::{Uid, UserSet, Users};
use crate::store::{Cursor, Heartbeat, Ttl};

/// The modules a user holds sessions in, as bits (module ids are `u8`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ModuleSet([u64; 4]);

impl ModuleSet {
    fn add(&mut self, m: ModuleId) {
        let i = m.index();
        self.0[i / 64] |= 1 << (i % 64);
    }

    fn contains(self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    pub(super) fn is_empty(self) -> bool {
        self == Self::default()
    }

    /// The module ids in the set, in registry order.
    pub(super) fn ids(self, modules: &crate::domain::Modules) -> Vec<ModuleId> {
        modules.ids().filter(|m| self.contains(m.index())).collect()
    }
}

/// Where a user holds sessions (`present`), and where at least one of them
/// is active (`awake`): idle in a module is present and not awake there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Presence {
    pub(super) present: ModuleSet,
    pub(super) awake: ModuleSet,
}

impl Presence {
    fn idle_in(self, m: usize) -> bool {
        self.present.contains(m) && !self.awake.contains(m)
    }
}

/// Everything the memory store holds, behind its mutex: see the module docs.
#[derive(Debug)]
pub(super) struct State {
    pub(super) users: Users,
    /// Per user: their first session, or [`NO_SESSION`].
    first: Vec<Sid>,
    pub(super) sessions: Vec<Session>,
    /// The first free slot of `sessions`, or [`NO_SESSION`]; free slots
    /// chain through `next_of_user`, so they cost nothing beyond the slot.
    free: Sid,
    pub(super) by_time: BTreeSet<(Millis, Uid, Sid)>,
    /// Per module: the users with a session there.
    pub(super) active: Vec<u64>,
    /// Per module: the users with sessions there, every one idle.
    pub(super) idle: Vec<u64>,
    /// The users with a session anywhere.
    pub(super) anywhere: u64,
    /// Per module: the sessions there.
    pub(super) held: Vec<u64>,
    pub(super) today: Vec<UserSet>,
    pub(super) total: Vec<UserSet>,
    pub(super) resources: HashMap<ResourceId, HashSet<Sid>>,
    /// Per user: their latest heartbeat (0: not known), 8 bytes a user.
    pub(super) last_seen: Vec<Millis>,
    /// The users whose latest token carried a profile, and that profile.
    pub(super) profiles: HashMap<Uid, Profile>,
    /// The users whose latest token hid them.
    pub(super) hidden: UserSet,
    pub(super) day_start: Millis,
    pub(super) next_day_start: Millis,
    pub(super) history: HistoryRing,
    pub(super) ttl: Ttl,
    /// Sessions ended under the lock, told to the observer after it.
    pub(super) ended: Vec<(ModuleId, Millis, bool)>,
    /// Resources whose viewers changed under the lock (a join, a leave, a
    /// state or profile change), told to their watchers after it; noted
    /// only while `tracking`.
    pub(super) touched: Vec<ResourceId>,
    /// Whether any presence stream watches anything (set at each lock).
    pub(super) tracking: bool,
    /// With webhooks, where each change's events go.
    pub(super) events: Option<EventSink>,
}

impl State {
    /// An empty state for `modules` modules, on the local day of `now`.
    pub(super) fn new(modules: usize, timezone: Tz, now: Millis, ttl: Ttl) -> Self {
        let (day_start, next_day_start) = day_bounds(timezone, now);
        Self {
            users: Users::default(),
            first: Vec::new(),
            sessions: Vec::new(),
            free: NO_SESSION,
            by_time: BTreeSet::new(),
            active: vec![0; modules],
            idle: vec![0; modules],
            anywhere: 0,
            held: vec![0; modules],
            today: vec![UserSet::default(); modules],
            total: vec![UserSet::default(); modules],
            resources: HashMap::new(),
            last_seen: Vec::new(),
            profiles: HashMap::new(),
            hidden: UserSet::default(),
            day_start,
            next_day_start,
            history: HistoryRing::new(modules),
            ttl,
            ended: Vec::new(),
            touched: Vec::new(),
            tracking: false,
            events: None,
        }
    }

    /// Fills an empty state from `image` (see [`super::MemoryStore::restore`]).
    /// Profiles keep only `claims` (the current `PROFILE_CLAIMS`), and
    /// only while [`State::profile_of`] would serve them.
    pub(super) fn restore(
        &mut self,
        image: MemoryImage,
        now: Millis,
        cap: usize,
        claims: &[String],
    ) -> Restored {
        let cutoff = self.ttl.cutoff(now);
        let modules = self.today.len();
        let mut restored = Restored::default();
        // History first: the ends filed below add to the restored minutes.
        self.history.restore(image.history, now);
        let mut sessions = image.sessions;
        // Newest first, so a user over the cap keeps their latest sessions.
        sessions.sort_unstable_by_key(|s| std::cmp::Reverse(s.info.last_seen));
        for SessionImage {
            info: s,
            resource_since,
        } in sessions
        {
            let m = s.module.index();
            if m >= modules {
                continue;
            }
            // A clock that was ahead must not leave sessions that never expire.
            let last_seen = s.last_seen.min(now);
            let started_at = s.started_at.min(last_seen);
            if last_seen <= cutoff {
                let length = last_seen - started_at;
                self.record_end(s.module, self.ttl.expires_at(last_seen), length, true);
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
                state: s.state,
            };
            let since = resource_since.min(last_seen);
            session.set_extras(s.client, s.page, s.resource, since);
            self.insert(session);
            self.recount_user(uid, before);
            // A version-1 snapshot kept no per-user times: a session's is
            // the least its user's can be.
            self.remember_seen(uid, last_seen);
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
        for UserImage {
            user,
            last_seen,
            profile,
            hidden,
        } in image.users
        {
            let uid = self.users.intern(user.as_str());
            if let Some(t) = last_seen {
                self.remember_seen(uid, t.min(now));
            }
            let recent = last_seen.is_some_and(|t| t.min(now) > self.ttl.profile_cutoff(now));
            if let Some(p) = profile.filter(|_| recent).and_then(|p| p.within(claims)) {
                self.profiles.insert(uid, p);
            }
            if hidden {
                self.hidden.insert(uid);
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

    fn remember_seen(&mut self, uid: Uid, at: Millis) {
        let ui = uid as usize;
        if self.last_seen.len() <= ui {
            self.last_seen.resize(ui + 1, 0);
        }
        self.last_seen[ui] = self.last_seen[ui].max(at);
    }

    /// `uid` was here in `module` today, and so ever.
    pub(super) fn seen(&mut self, uid: Uid, module: ModuleId) {
        self.today[module.index()].insert(uid);
        self.total[module.index()].insert(uid);
    }

    /// The slots of `uid`'s sessions.
    pub(super) fn sessions_of(&self, uid: Uid) -> impl Iterator<Item = Sid> + '_ {
        let first = self.first.get(uid as usize).copied().unwrap_or(NO_SESSION);
        let some = |sid: Sid| (sid != NO_SESSION).then_some(sid);
        std::iter::successors(some(first), move |&sid| {
            some(self.sessions[sid as usize].next_of_user)
        })
    }

    /// The session of (`uid`, `client`).
    pub(super) fn find(&self, uid: Uid, client: Option<&ClientId>) -> Option<Sid> {
        self.sessions_of(uid)
            .find(|&sid| self.sessions[sid as usize].client() == client)
    }

    /// Where `uid`'s sessions are, and where one of them is active. Every
    /// session held counts: callers remove expired ones first, or skip
    /// them (see [`Self::live_presence`]).
    pub(super) fn modules_of(&self, uid: Uid) -> Presence {
        self.presence_of(uid, Millis::MIN)
    }

    /// [`Self::modules_of`] over the sessions seen after `cutoff` only.
    pub(super) fn presence_of(&self, uid: Uid, cutoff: Millis) -> Presence {
        let mut p = Presence::default();
        for sid in self.sessions_of(uid) {
            let s = &self.sessions[sid as usize];
            if s.last_seen <= cutoff {
                continue;
            }
            p.present.add(s.module);
            if !s.state.is_idle() {
                p.awake.add(s.module);
            }
        }
        p
    }

    /// After a change to `uid`'s sessions, which were `before`: brings
    /// the per-module (present and idle) and anywhere user counts up to date.
    pub(super) fn recount_user(&mut self, uid: Uid, before: Presence) {
        let after = self.modules_of(uid);
        if after == before {
            return;
        }
        let step = |count: &mut u64, was: bool, is: bool| match (was, is) {
            (false, true) => *count += 1,
            (true, false) => *count -= 1,
            _ => {}
        };
        for (m, active) in self.active.iter_mut().enumerate() {
            step(
                active,
                before.present.contains(m),
                after.present.contains(m),
            );
        }
        for (m, idle) in self.idle.iter_mut().enumerate() {
            step(idle, before.idle_in(m), after.idle_in(m));
        }
        step(
            &mut self.anywhere,
            !before.present.is_empty(),
            !after.present.is_empty(),
        );
    }

    /// What a heartbeat of `uid` keeps per user: when, their profile (the
    /// latest token's, or none) and whether they are hidden.
    pub(super) fn remember_user(
        &mut self,
        uid: Uid,
        now: Millis,
        profile: Option<Profile>,
        hidden: bool,
    ) {
        self.remember_seen(uid, now);
        let was_hidden = self.hidden.contains(uid);
        let changed = match profile {
            Some(p) => self
                .profiles
                .insert(uid, p.clone())
                .is_none_or(|old| old != p),
            None => self.profiles.remove(&uid).is_some(),
        };
        if hidden {
            self.hidden.insert(uid);
        } else {
            self.hidden.remove(uid);
        }
        if self.tracking && (changed || was_hidden != hidden) {
            // The user shows (or stops showing) as someone else wherever
            // they are.
            let resources: Vec<ResourceId> = self
                .sessions_of(uid)
                .filter_map(|sid| self.sessions[sid as usize].resource().cloned())
                .collect();
            self.touched.extend(resources);
        }
    }

    /// `uid`'s profile as served at `now`: kept until
    /// [`PROFILE_KEEP`](crate::store::PROFILE_KEEP) after their last
    /// session, whether or not the sweeper has removed it yet.
    pub(super) fn profile_of(&self, uid: Uid, now: Millis) -> Option<Profile> {
        let cutoff = self.ttl.profile_cutoff(now);
        self.profiles
            .get(&uid)
            .filter(|_| self.last_seen_of(uid).is_some_and(|t| t > cutoff))
            .cloned()
    }

    /// Removes, among the users numbered from `from` (at most `max` of
    /// them), the profiles [`State::profile_of`] no longer serves, so a
    /// user who is gone is not remembered by name. Returns where the next
    /// batch starts, or `None` past the last user: the sweeper works through
    /// every user in batches, letting requests in between, as it does
    /// expired sessions.
    pub(super) fn forget_profiles(&mut self, now: Millis, from: Uid, max: Uid) -> Option<Uid> {
        let cutoff = self.ttl.profile_cutoff(now);
        let end = from.saturating_add(max).min(self.users.len());
        for uid in from..end {
            if self.profiles.contains_key(&uid)
                && self.last_seen_of(uid).is_none_or(|t| t <= cutoff)
            {
                self.profiles.remove(&uid);
            }
        }
        (end < self.users.len()).then_some(end)
    }

    /// `uid`'s latest heartbeat, if known.
    pub(super) fn last_seen_of(&self, uid: Uid) -> Option<Millis> {
        self.last_seen
            .get(uid as usize)
            .copied()
            .filter(|&t| t != 0)
    }

    /// Where a cursor points in `by_time`: just before its session if that
    /// is still where the cursor saw it, else before every session of the
    /// cursor's user at that instant (a session moved or gone cannot say
    /// where it was among its user's others of the same millisecond).
    pub(super) fn position(&self, c: &Cursor) -> (Millis, Uid, Sid) {
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
            self.touch(&r);
            self.resources.entry(r).or_default().insert(sid);
        }
        sid
    }

    /// Takes session `sid` out of every index but the user counts (the
    /// caller recounts the user) and records its end in the history: expired at
    /// `last_seen + TTL` if it was past its TTL at `now`, else left at
    /// `now`. Returns its last heartbeat, or `None` for a free slot.
    pub(super) fn remove(&mut self, sid: Sid, now: Millis) -> Option<Millis> {
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
        let expired = self.ttl.is_expired(last_seen, now);
        let (end, length) = if expired {
            (self.ttl.expires_at(last_seen), last_seen - started_at)
        } else {
            (now, now - started_at)
        };
        self.record_end(module, end, length, expired);
        Some((uid, last_seen))
    }

    /// Whether a session whose last heartbeat is at or before `cutoff` is
    /// still held.
    pub(super) fn has_expired(&self, cutoff: Millis) -> bool {
        self.by_time.first().is_some_and(|&(ts, _, _)| ts <= cutoff)
    }

    /// Removes up to `max` sessions whose last heartbeat is at or before
    /// `cutoff`, oldest first; returns how many.
    pub(super) fn expire(&mut self, now: Millis, cutoff: Millis, max: usize) -> usize {
        let mut removed = 0;
        while removed < max && self.has_expired(cutoff) {
            // Popping first guarantees progress even if the indexes were
            // ever to disagree.
            if let Some((_, uid, sid)) = self.by_time.pop_first() {
                let before = self.modules_of(uid);
                let view = self.view_for_events(uid);
                let gone = self.take(sid, now);
                debug_assert!(gone.is_some(), "by_time and sessions agree");
                self.recount_user(uid, before);
                if let Some((_, last_seen)) = gone {
                    self.emit(uid, view, self.ttl.expires_at(last_seen), Reason::Expired);
                }
            }
            removed += 1;
        }
        removed
    }

    /// Before a heartbeat of (`uid`, `client`): removes the user's expired
    /// sessions (a dead session is never revived) and, when the heartbeat
    /// would open a session beyond `cap`, the least recently seen one. The
    /// caller recounts the user.
    pub(super) fn make_room(
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
            self.remove_with_events(uid, sid, now, Reason::Left);
        }
    }

    /// Creates or refreshes the session of `beat` and its `by_time` and
    /// `resources` entries, recording a start (and, on a move, the end in
    /// the old module) in the history. The caller recounts the user.
    pub(super) fn upsert(&mut self, uid: Uid, beat: Heartbeat, now: Millis) {
        let module = beat.module;
        let Some(sid) = self.find(uid, beat.client.as_ref()) else {
            let mut session = Session {
                last_seen: now,
                started_at: now,
                extras: None,
                user: uid,
                next_of_user: NO_SESSION,
                module,
                state: beat.state,
            };
            session.set_extras(beat.client, beat.page, beat.resource, now);
            self.insert(session);
            self.history.at(module.index(), now).count_start();
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
        let state_changed = s.state != beat.state;
        s.state = beat.state;
        if state_changed
            && old_resource == beat.resource
            && let Some(r) = &old_resource
        {
            self.touch(r);
        }
        self.by_time.remove(&(old_seen, uid, sid));
        self.by_time.insert((now, uid, sid));
        if let Some((old, length)) = moved_from {
            self.held[old.index()] -= 1;
            self.held[module.index()] += 1;
            self.history.at(module.index(), now).count_start();
            self.record_end(old, now, length, false);
        }
        if old_resource != beat.resource {
            if let Some(r) = old_resource {
                self.unindex_resource(&r, sid);
            }
            if let Some(r) = beat.resource {
                self.touch(&r);
                self.resources.entry(r).or_default().insert(sid);
            }
        }
    }

    fn record_end(&mut self, module: ModuleId, at: Millis, length: Millis, expired: bool) {
        let minute = self.history.at(module.index(), at);
        minute.count_end(u64::try_from(length).unwrap_or(0));
        self.ended.push((module, length, expired));
    }

    /// Notes that the viewers of `resource` changed, while anyone watches.
    fn touch(&mut self, resource: &ResourceId) {
        if self.tracking {
            self.touched.push(resource.clone());
        }
    }

    fn unindex_resource(&mut self, resource: &ResourceId, sid: Sid) {
        self.touch(resource);
        if let Some(sids) = self.resources.get_mut(resource) {
            sids.remove(&sid);
            if sids.is_empty() {
                self.resources.remove(resource);
            }
        }
    }

    /// Starts a new day: `today` becomes the users live at its midnight.
    pub(super) fn roll_day(&mut self, timezone: Tz, now: Millis) {
        let (start, next) = day_bounds(timezone, now);
        self.day_start = start;
        self.next_day_start = next;
        let live_at_midnight = self.ttl.cutoff(start);
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
