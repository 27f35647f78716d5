//! The memory store's presence events: each change to a user's sessions
//! described as [`events::diff`] of the user's view before and after it,
//! appended to the webhook outbox under the store's lock, so the events of
//! one user are in the order their changes were made.
//!
//! Off (no outbox) unless webhooks are configured; on, a heartbeat that
//! changes nothing a view shows (the same session re-beating its module,
//! resource and state) computes no view at all.

use std::sync::Arc;

use super::slot::Sid;
use super::state::State;
use crate::clock::Millis;
use crate::domain::{ClientId, ModuleId, ResourceId};
use crate::events::{self, Reason, UserView};
use crate::store::users::Uid;
use crate::webhooks::MemoryOutbox;

/// Where the events go, with the module codes they name.
#[derive(Debug)]
pub(super) struct EventSink {
    pub(super) codes: Vec<String>,
    pub(super) outbox: Arc<MemoryOutbox>,
}

impl State {
    /// `uid`'s view, when events are on.
    pub(super) fn view_for_events(&self, uid: Uid) -> Option<UserView> {
        let sink = self.events.as_ref()?;
        let mut view = UserView {
            hidden: self.hidden.contains(uid),
            ..UserView::default()
        };
        for sid in self.sessions_of(uid) {
            let s = &self.sessions[sid as usize];
            let code = &sink.codes[s.module.index()];
            view.modules.insert(code.clone());
            if let Some(r) = s.resource() {
                // Of two modules on one resource, the one first in byte
                // order, as the Redis scripts choose.
                let module = view
                    .resources
                    .entry(r.to_string())
                    .or_insert_with(|| code.clone());
                if code < module {
                    module.clone_from(code);
                }
            }
            view.active |= !s.state.is_idle();
        }
        Some(view)
    }

    /// Appends the events of `uid`'s change from `before` (taken with
    /// [`Self::view_for_events`]) to now, at `at` for `reason`.
    pub(super) fn emit(&self, uid: Uid, before: Option<UserView>, at: Millis, reason: Reason) {
        let (Some(before), Some(after), Some(sink)) =
            (before, self.view_for_events(uid), self.events.as_ref())
        else {
            return;
        };
        let mut out = Vec::new();
        let others_on = |resource: &str| {
            let Some(id) = ResourceId::parse(resource) else {
                return false;
            };
            self.resources.get(&id).is_some_and(|sids| {
                sids.iter()
                    .any(|&sid| self.sessions[sid as usize].user != uid)
            })
        };
        events::diff(
            self.users.name(uid),
            &before,
            &after,
            at,
            reason,
            others_on,
            &mut out,
        );
        if !out.is_empty() {
            sink.outbox.append(at, out);
        }
    }

    /// Whether a heartbeat of (`uid`, `client`) in `module` on `resource`,
    /// `idle` or not, leaves every view as it is: its session is held,
    /// live, already there and in that state, and no other session of the
    /// user has expired (its removal would be an event).
    pub(super) fn beat_is_quiet(
        &self,
        uid: Uid,
        client: Option<&ClientId>,
        module: ModuleId,
        resource: Option<&ResourceId>,
        idle: bool,
        cutoff: Millis,
    ) -> bool {
        let mut found = false;
        for sid in self.sessions_of(uid) {
            let s = &self.sessions[sid as usize];
            if s.last_seen <= cutoff {
                return false;
            }
            if s.client() == client {
                found = s.module == module && s.resource() == resource && s.state.is_idle() == idle;
                if !found {
                    return false;
                }
            }
        }
        found
    }

    /// Removes session `sid` of `uid` as the heartbeat's or leave's
    /// `reason` at `now`, or as expired when its TTL has passed, with its
    /// events.
    pub(super) fn remove_with_events(&mut self, uid: Uid, sid: Sid, now: Millis, reason: Reason) {
        let before = self.view_for_events(uid);
        let Some(last_seen) = self.remove(sid, now) else {
            return;
        };
        if self.ttl.is_expired(last_seen, now) {
            self.emit(uid, before, self.ttl.expires_at(last_seen), Reason::Expired);
        } else {
            self.emit(uid, before, now, reason);
        }
    }
}
