//! Presence events: what the product's backend is told when someone comes,
//! goes, or goes idle (contract section 9).
//!
//! Events are per user, never per tab. A store describes a user, before and
//! after each change to their sessions, as a [`UserView`] (whether they are
//! online, the modules and resources they are in, their state, whether
//! they are hidden) and [`diff`] turns the two into events:
//!
//! | event | when |
//! |---|---|
//! | `user.online` / `user.offline` | no session before, some after / the reverse |
//! | `module.enter` / `module.leave` | a module in the after view only / in the before view only |
//! | `resource.join` / `resource.leave` | the same for a resource |
//! | `resource.occupied` / `resource.vacated` | a join when no other user is on the resource / a leave that leaves nobody |
//! | `user.state` | online before and after, and the user-wide state changed |
//!
//! The order within one change: `user.online`, `module.enter`,
//! `resource.join`, `resource.occupied`, `user.state`; leaves in the
//! reverse nesting (`resource.vacated` after its `resource.leave`, then
//! `module.leave`, then `user.offline`), leaves of a change before its
//! enters, so a move reads "left A, entered B". A user's state is `active`
//! when any of their sessions is, else `idle`.
//!
//! The view counts every session the store holds, expired or not: a
//! session's end is an event when it is removed (with `reason: expired` and
//! `at` its expiry when its TTL had passed), so the events of a user always
//! describe the sessions the store had. The Redis scripts compute the same
//! in Lua (`src/store/redis/events.lua`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::clock::Millis;
use crate::domain::Activity;
pub use crate::domain::EventKind as Kind;

/// Why a leave-type event happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// A `DELETE` (or a session pushed out by the per-user cap).
    Left,
    /// No heartbeat within `SESSION_TTL`.
    Expired,
    /// The session's heartbeat named another module or resource.
    Moved,
}

impl Reason {
    /// As the contract names it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Expired => "expired",
            Self::Moved => "moved",
        }
    }
}

/// One event, as stored before delivery and as sent (the JSON is the
/// contract's, `at` as RFC 3339 once sent; see [`Event::to_json`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Its type.
    pub kind: Kind,
    /// When it happened.
    pub at: Millis,
    /// Whose.
    pub user: String,
    /// The module: entered, left, or of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
    /// The resource joined, left, occupied or vacated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Why, on a leave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// The new state, on `user.state`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<Activity>,
    /// Whether the user is hidden from other users (section 6).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hidden: bool,
}

impl Event {
    /// The contract's JSON of this event under `id`.
    pub fn to_json(&self, id: &str) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        out.insert("id".into(), id.into());
        out.insert("type".into(), self.kind.as_str().into());
        out.insert("at".into(), crate::clock::rfc3339(self.at).into());
        out.insert("userId".into(), self.user.as_str().into());
        if let Some(m) = &self.module {
            out.insert("module".into(), m.as_str().into());
        }
        if let Some(r) = &self.resource {
            out.insert("resource".into(), r.as_str().into());
        }
        if let Some(r) = self.reason {
            out.insert("reason".into(), r.as_str().into());
        }
        if let Some(s) = self.state {
            out.insert("state".into(), s.as_str().into());
        }
        if self.hidden {
            out.insert("hidden".into(), true.into());
        }
        serde_json::Value::Object(out)
    }

    /// Whether `later` cancels this leave within the grace: its
    /// counterpart, for the same user, module or resource.
    pub fn is_cancelled_by(&self, later: &Self) -> bool {
        if self.kind.counterpart() != Some(later.kind) {
            return false;
        }
        match self.kind {
            Kind::UserOffline => self.user == later.user,
            Kind::ModuleLeave => self.user == later.user && self.module == later.module,
            Kind::ResourceLeave => self.user == later.user && self.resource == later.resource,
            Kind::ResourceVacated => self.resource == later.resource,
            _ => false,
        }
    }
}

/// A user as events see them: the sessions the store holds for them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserView {
    /// Modules with a session, by code.
    pub modules: BTreeSet<String>,
    /// Resources with a session, each with the module of (one of) its
    /// sessions.
    pub resources: BTreeMap<String, String>,
    /// Whether any session is active.
    pub active: bool,
    /// Whether the user's latest token hid them.
    pub hidden: bool,
}

impl UserView {
    /// Whether the user holds any session.
    pub fn online(&self) -> bool {
        !self.modules.is_empty()
    }
}

/// The events of one change to `user`'s sessions, from `before` to
/// `after`, at `at` (leaves use `reason`); `others_on(resource)` says
/// whether another user holds a session on `resource` (after the change),
/// for `resource.occupied` and `resource.vacated`. Appends to `out`.
pub fn diff(
    user: &str,
    before: &UserView,
    after: &UserView,
    at: Millis,
    reason: Reason,
    mut others_on: impl FnMut(&str) -> bool,
    out: &mut Vec<Event>,
) {
    if before == after {
        return;
    }
    let hidden = after.hidden || (!after.online() && before.hidden);
    let event = |kind| Event {
        kind,
        at,
        user: user.to_owned(),
        module: None,
        resource: None,
        reason: None,
        state: None,
        hidden,
    };
    // Leaves first: resources, then modules, then the user.
    for (resource, module) in &before.resources {
        if after.resources.contains_key(resource) {
            continue;
        }
        out.push(Event {
            module: Some(module.clone()),
            resource: Some(resource.clone()),
            reason: Some(reason),
            ..event(Kind::ResourceLeave)
        });
        if !others_on(resource) {
            out.push(Event {
                resource: Some(resource.clone()),
                ..event(Kind::ResourceVacated)
            });
        }
    }
    for module in before.modules.difference(&after.modules) {
        out.push(Event {
            module: Some(module.clone()),
            reason: Some(reason),
            ..event(Kind::ModuleLeave)
        });
    }
    if before.online() && !after.online() {
        out.push(Event {
            reason: Some(reason),
            ..event(Kind::UserOffline)
        });
        return;
    }
    if !before.online() && after.online() {
        out.push(Event {
            module: after.modules.iter().next().cloned(),
            ..event(Kind::UserOnline)
        });
    }
    for module in after.modules.difference(&before.modules) {
        out.push(Event {
            module: Some(module.clone()),
            ..event(Kind::ModuleEnter)
        });
    }
    for (resource, module) in &after.resources {
        if before.resources.contains_key(resource) {
            continue;
        }
        out.push(Event {
            module: Some(module.clone()),
            resource: Some(resource.clone()),
            ..event(Kind::ResourceJoin)
        });
        if !others_on(resource) {
            out.push(Event {
                resource: Some(resource.clone()),
                ..event(Kind::ResourceOccupied)
            });
        }
    }
    if before.online() && before.active != after.active {
        out.push(Event {
            state: Some(if after.active {
                Activity::Active
            } else {
                Activity::Idle
            }),
            ..event(Kind::UserState)
        });
    }
}
