//! One session's slot in the memory store's slab: its 40 bytes, and the
//! optional strings a heartbeat may add, in one allocation of their own.

use crate::clock::Millis;
use crate::domain::{Activity, ClientId, ModuleId, Page, ResourceId, UserId};
use crate::store::SessionInfo;
use crate::store::users::Uid;

/// A session's slot in the slab.
pub(super) type Sid = u32;

/// The end of a user's chain of sessions.
pub(super) const NO_SESSION: Sid = Sid::MAX;

/// The `user` of a free slot.
pub(super) const VACANT: Uid = Uid::MAX;

/// One session: 40 bytes, and the strings only if the heartbeat sent any.
/// (`tests` below keeps it at 40.)
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) last_seen: Millis,
    pub(super) started_at: Millis,
    pub(super) extras: Option<Box<Extras>>,
    pub(super) user: Uid,
    /// The user's next session, or [`NO_SESSION`]; for a free slot, the
    /// next free slot.
    pub(super) next_of_user: Sid,
    pub(super) module: ModuleId,
    /// The state of its latest heartbeat: one byte, in what was padding.
    pub(super) state: Activity,
}

/// What a heartbeat may add to a session.
#[derive(Debug, Clone)]
pub(super) struct Extras {
    client: Option<ClientId>,
    page: Option<Page>,
    pub(super) resource: Option<ResourceId>,
    /// Since when `resource` has been named.
    resource_since: Millis,
}

impl Session {
    pub(super) fn client(&self) -> Option<&ClientId> {
        self.extras.as_ref()?.client.as_ref()
    }

    pub(super) fn page(&self) -> Option<&Page> {
        self.extras.as_ref()?.page.as_ref()
    }

    pub(super) fn resource(&self) -> Option<&ResourceId> {
        self.extras.as_ref()?.resource.as_ref()
    }

    pub(super) fn resource_since(&self) -> Millis {
        self.extras
            .as_ref()
            .map_or(self.started_at, |e| e.resource_since)
    }

    /// What the admin list shows of this session, which is `user`'s.
    pub(super) fn info(&self, user: UserId) -> SessionInfo {
        SessionInfo {
            user,
            client: self.client().cloned(),
            module: self.module,
            page: self.page().cloned(),
            resource: self.resource().cloned(),
            state: self.state,
            started_at: self.started_at,
            last_seen: self.last_seen,
        }
    }

    /// Sets the optional strings, keeping their allocation when there is one.
    pub(super) fn set_extras(
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

#[cfg(test)]
mod tests {
    #[test]
    fn a_session_slot_stays_40_bytes() {
        assert_eq!(std::mem::size_of::<super::Session>(), 40);
    }
}
