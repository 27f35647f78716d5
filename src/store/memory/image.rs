//! The memory store as plain values: what a snapshot writes and reads.
//!
//! [`MemoryStore::image`] copies what must outlive a restart (sessions,
//! `today`, `total`, history) into a plain [`MemoryImage`], and
//! [`MemoryStore::restore`] rebuilds the state from one; the derived
//! indexes are never saved, only rebuilt. [`super::snapshot`] turns images
//! into files.
//!
//! [`MemoryStore::image`]: super::MemoryStore::image
//! [`MemoryStore::restore`]: super::MemoryStore::restore

use crate::clock::Millis;
use crate::domain::{Profile, UserId};
use crate::store::SessionInfo;
use crate::store::history::MinuteBucket;
use crate::webhooks::MemoryLog;

/// What the memory store keeps across a restart, as plain values: see
/// [`MemoryStore::image`]. Modules are registry positions of the store it
/// came from or goes to.
///
/// [`MemoryStore::image`]: super::MemoryStore::image
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MemoryImage {
    /// When it was taken.
    pub(crate) at: Millis,
    /// The start of the local day `today` is for.
    pub(crate) today_start: Millis,
    /// Every session held: live, or expired and not yet swept.
    pub(crate) sessions: Vec<SessionImage>,
    /// Per module, in registry order: the users seen today.
    pub(crate) today: Vec<Vec<UserId>>,
    /// Per module, in registry order: the users ever seen.
    pub(crate) total: Vec<Vec<UserId>>,
    /// The last 24 hours of history, oldest first.
    pub(crate) history: Vec<MinuteBucket>,
    /// What is kept per user: every user with a known last heartbeat, a
    /// profile or a hidden flag.
    pub(crate) users: Vec<UserImage>,
    /// With webhooks: the events waiting for delivery, and each endpoint's
    /// cursor.
    pub(crate) webhooks: Option<MemoryLog>,
}

/// What the memory store keeps of one user besides their sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserImage {
    pub(crate) user: UserId,
    /// Their latest heartbeat, if known.
    pub(crate) last_seen: Option<Millis>,
    /// Their latest token's profile.
    pub(crate) profile: Option<Profile>,
    /// Whether their latest token hid them.
    pub(crate) hidden: bool,
}

/// One session in a [`MemoryImage`]: what the admin list shows of it, and
/// since when it has named its resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionImage {
    pub(crate) info: SessionInfo,
    /// Since when it has named `info.resource`.
    pub(crate) resource_since: Millis,
}

/// What [`MemoryStore::restore`] kept and dropped.
///
/// [`MemoryStore::restore`]: super::MemoryStore::restore
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Live sessions put back.
    pub(crate) sessions: usize,
    /// Sessions that had expired by the restore; dropped, their end filed
    /// in the history.
    pub(crate) expired: usize,
    /// Sessions dropped as beyond `max_sessions_per_user` (each user's
    /// least recently seen) or repeated.
    pub(crate) over_cap: usize,
    /// Whether `today` was kept (the image is from the current local day).
    pub(crate) today_kept: bool,
}
