//! Who watches which resource: the registry that presence streams join and
//! that a store's change points notify.
//!
//! A stream registers an [`Inbox`] under each of its (at most 32) resources;
//! a change to a resource sets that resource's bit in the inbox of each of
//! its watchers and wakes them. So a change costs one hash lookup plus one
//! wake per watcher of that resource, and nothing ever scans every
//! subscription: a heartbeat on a resource nobody watches costs the lookup.
//! The memory store notifies from its change points; the Redis store from
//! the messages its scripts publish, on every instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::domain::ResourceId;

/// The most resources one inbox can tell apart (bits of its mask).
pub const MAX_WATCHED: usize = 32;

/// One watcher's mailbox: which of its resources changed since it last
/// looked, and a wake-up.
#[derive(Debug, Default)]
pub struct Inbox {
    dirty: AtomicU32,
    wake: Notify,
}

impl Inbox {
    /// Waits until something is marked, then takes the marks: bit `i` set
    /// when the watcher's resource `i` changed.
    pub async fn changed(&self) -> u32 {
        loop {
            let taken = self.take();
            if taken != 0 {
                return taken;
            }
            self.wake.notified().await;
        }
    }

    /// The marks so far, cleared.
    pub fn take(&self) -> u32 {
        self.dirty.swap(0, Ordering::AcqRel)
    }

    /// Marks resource `i` of this watcher changed (also for a watcher that
    /// re-reads on a timer of its own).
    pub fn mark(&self, bits: u32) {
        self.dirty.fetch_or(bits, Ordering::AcqRel);
        // `notify_one` keeps a permit when nobody waits yet, so a mark made
        // between `take` and `notified` is not lost.
        self.wake.notify_one();
    }
}

type Entries = HashMap<ResourceId, Vec<(Arc<Inbox>, u32)>>;

/// The registry: resource -> the inboxes watching it, with their bit.
#[derive(Debug, Default)]
pub struct Watchers {
    by_resource: Mutex<Entries>,
    /// How many resources are watched, kept beside the map so a store can
    /// skip noting changes (a resource id copied per heartbeat) while
    /// nobody watches anything.
    watched: AtomicUsize,
}

impl Watchers {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        // Plain vectors of handles: a panic elsewhere cannot leave them
        // inconsistent in a way that matters. Never held across `.await`.
        self.by_resource
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers `inbox` for `resources` (resource `i` is bit `i`; at most
    /// [`MAX_WATCHED`]); the registration lasts as long as the returned
    /// guard.
    pub fn watch(self: &Arc<Self>, resources: &[ResourceId], inbox: &Arc<Inbox>) -> Registration {
        let mut map = self.lock();
        for (i, r) in resources.iter().take(MAX_WATCHED).enumerate() {
            map.entry(r.clone())
                .or_default()
                .push((Arc::clone(inbox), 1 << i));
        }
        self.watched.store(map.len(), Ordering::Relaxed);
        Registration {
            watchers: Arc::clone(self),
            resources: resources.iter().take(MAX_WATCHED).cloned().collect(),
            inbox: Arc::clone(inbox),
        }
    }

    /// Tells the watchers of `resource` that it changed.
    pub fn touch(&self, resource: &ResourceId) {
        let map = self.lock();
        if let Some(list) = map.get(resource) {
            for (inbox, bit) in list {
                inbox.mark(*bit);
            }
        }
    }

    /// Tells every watcher that everything changed: after an outage in
    /// which change messages may have been lost.
    pub fn touch_all(&self) {
        let map = self.lock();
        for list in map.values() {
            for (inbox, bit) in list {
                inbox.mark(*bit);
            }
        }
    }

    /// How many resources are watched now.
    pub fn watched(&self) -> usize {
        self.lock().len()
    }

    /// Whether no resource is watched. A store that reads this under its
    /// own lock misses no change a new watcher cares about: the watcher
    /// registers before its first read, which takes the same lock.
    pub fn is_empty(&self) -> bool {
        self.watched.load(Ordering::Relaxed) == 0
    }
}

/// A watcher's place in the registry; leaves it when dropped.
#[derive(Debug)]
pub struct Registration {
    watchers: Arc<Watchers>,
    resources: Vec<ResourceId>,
    inbox: Arc<Inbox>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.watchers.lock();
        for r in &self.resources {
            if let Some(list) = map.get_mut(r) {
                list.retain(|(inbox, _)| !Arc::ptr_eq(inbox, &self.inbox));
                if list.is_empty() {
                    map.remove(r);
                }
            }
        }
        self.watchers.watched.store(map.len(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> ResourceId {
        ResourceId::parse(s).expect("valid")
    }

    #[tokio::test]
    async fn a_change_marks_only_the_watchers_of_that_resource() {
        let watchers = Arc::new(Watchers::default());
        let (a, b) = (Arc::new(Inbox::default()), Arc::new(Inbox::default()));
        let _ra = watchers.watch(&[r("x"), r("y")], &a);
        let rb = watchers.watch(&[r("y")], &b);
        watchers.touch(&r("y"));
        watchers.touch(&r("z"));
        assert_eq!(a.changed().await, 0b10);
        assert_eq!(b.changed().await, 0b1);
        assert_eq!(a.take(), 0);
        drop(rb);
        assert_eq!(watchers.watched(), 2);
        assert!(!watchers.is_empty());
        watchers.touch_all();
        assert_eq!(a.take(), 0b11);
        assert_eq!(b.take(), 0);
    }
}
