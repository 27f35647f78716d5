//! Dense numbers for user ids, and sets of users as bits.
//!
//! The memory store names each user by a small number ([`Uid`]) instead of
//! the id string: an index entry is then four bytes, and a set of users is
//! one bit per user ever seen. [`Users`] keeps every distinct id once, in a
//! single arena, and never forgets one: `totalUsers` has to remember every
//! user ever seen anyway, so numbering them costs nothing extra to keep.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// A user's number in [`Users`]: dense, from 0, never reused.
pub(crate) type Uid = u32;

/// Every user id seen, each stored once and numbered in order of arrival.
///
/// Ids live back to back in one string ([`Names`]). The lookup table holds
/// numbers only and hashes through the arena, so a user costs their id's
/// bytes plus about 14 bytes, with no allocation of their own.
#[derive(Debug, Default)]
pub(crate) struct Users {
    names: Names,
    table: HashTable<Uid>,
    /// SipHash with a per-process key: user ids come from tokens, and an
    /// attacker holding many tokens must not be able to aim at one bucket.
    hasher: std::hash::RandomState,
}

impl Users {
    /// The number of `id`, if it has been seen.
    pub(crate) fn get(&self, id: &str) -> Option<Uid> {
        let hash = self.hasher.hash_one(id);
        self.table
            .find(hash, |&uid| self.names.get(uid) == id)
            .copied()
    }

    /// The number of `id`, numbering it if it is new.
    pub(crate) fn intern(&mut self, id: &str) -> Uid {
        let hash = self.hasher.hash_one(id);
        let Self {
            names,
            table,
            hasher,
        } = self;
        let entry = table.entry(
            hash,
            |&uid| names.get(uid) == id,
            |&uid| hasher.hash_one(names.get(uid)),
        );
        match entry {
            Entry::Occupied(seen) => *seen.get(),
            Entry::Vacant(slot) => {
                // Every user costs at least 9 bytes here (one of id, eight of
                // `ends`), so memory runs out long before 2^32 users.
                let uid = Uid::try_from(names.ends.len()).expect("fewer than 2^32 users");
                names.arena.push_str(id);
                names.ends.push(names.arena.len());
                slot.insert(uid);
                uid
            }
        }
    }

    /// How many users are numbered: every `Uid` is below it.
    pub(crate) fn len(&self) -> Uid {
        self.names.len()
    }

    /// The id numbered `uid`. Panics if `uid` was never handed out.
    pub(crate) fn name(&self, uid: Uid) -> &str {
        self.names.get(uid)
    }

    /// A copy of every id by number: two copies of contiguous memory, so a
    /// caller holding a lock can take it and name users after unlocking.
    pub(crate) fn names(&self) -> Names {
        self.names.clone()
    }
}

/// User ids back to back in one string; `ends[uid]` is where `uid`'s ends.
#[derive(Debug, Default, Clone)]
pub(crate) struct Names {
    arena: String,
    ends: Vec<usize>,
}

impl Names {
    /// How many ids there are: every number below it is handed out.
    pub(crate) fn len(&self) -> Uid {
        // Numbers are `Uid`s, so there are never more of them.
        Uid::try_from(self.ends.len()).unwrap_or(Uid::MAX)
    }

    /// The id numbered `uid`. Panics if `uid` was never handed out.
    pub(crate) fn get(&self, uid: Uid) -> &str {
        let i = uid as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.arena[start..self.ends[i]]
    }
}

/// A set of users, one bit per number, with its size kept.
#[derive(Debug, Default, Clone)]
pub(crate) struct UserSet {
    bits: Vec<u64>,
    len: u64,
}

impl UserSet {
    /// Adds `uid`; true if it was not in the set.
    pub(crate) fn insert(&mut self, uid: Uid) -> bool {
        let (word, bit) = (uid as usize / 64, 1u64 << (uid % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        let added = self.bits[word] & bit == 0;
        self.bits[word] |= bit;
        self.len += u64::from(added);
        added
    }

    /// Removes `uid`; true if it was in the set.
    pub(crate) fn remove(&mut self, uid: Uid) -> bool {
        let (word, bit) = (uid as usize / 64, 1u64 << (uid % 64));
        let present = self.bits.get(word).is_some_and(|w| w & bit != 0);
        if present {
            self.bits[word] &= !bit;
            self.len -= 1;
        }
        present
    }

    /// Whether `uid` is in the set.
    pub(crate) fn contains(&self, uid: Uid) -> bool {
        let (word, bit) = (uid as usize / 64, 1u64 << (uid % 64));
        self.bits.get(word).is_some_and(|w| w & bit != 0)
    }

    /// How many users are in the set.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// Empties the set, keeping its memory.
    pub(crate) fn clear(&mut self) {
        self.bits.fill(0);
        self.len = 0;
    }

    /// The members, in increasing order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Uid> + '_ {
        self.bits.iter().enumerate().flat_map(|(word, &bits)| {
            (0..64)
                .filter(move |b| bits & (1 << b) != 0)
                .filter_map(move |b| Uid::try_from(word * 64 + b).ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_id_gets_the_same_number_and_numbers_are_dense() {
        let mut users = Users::default();
        assert_eq!(users.get("ann"), None);
        let ann = users.intern("ann");
        let bob = users.intern("bob");
        assert_eq!((ann, bob), (0, 1));
        assert_eq!(users.intern("ann"), ann);
        assert_eq!(users.get("bob"), Some(bob));
        assert_eq!(users.get("an"), None, "a prefix is another id");
        assert_eq!(users.get("annbob"), None, "so is a concatenation");
        assert_eq!((users.name(ann), users.name(bob)), ("ann", "bob"));
        let names = users.names();
        users.intern("carol");
        assert_eq!((names.get(ann), names.get(bob)), ("ann", "bob"), "a copy");
    }

    #[test]
    fn many_ids_survive_the_table_growing() {
        let mut users = Users::default();
        for i in 0..10_000 {
            assert_eq!(users.intern(&format!("user-{i}")), i);
        }
        for i in (0..10_000).rev() {
            let id = format!("user-{i}");
            assert_eq!(users.get(&id), Some(i));
            assert_eq!(users.name(i), id);
        }
    }

    #[test]
    fn a_user_set_counts_each_member_once() {
        let mut set = UserSet::default();
        assert!(set.insert(130));
        assert!(set.insert(0));
        assert!(!set.insert(130));
        assert!(set.insert(63));
        assert_eq!(set.len(), 3);
        assert!(set.contains(63) && !set.contains(64) && !set.contains(100_000));
        assert!(set.remove(63) && !set.remove(63) && !set.remove(100_000));
        assert!(set.insert(63));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 63, 130]);
        set.clear();
        assert_eq!(set.len(), 0);
        assert_eq!(set.iter().count(), 0);
        assert!(set.insert(130), "cleared means absent");
    }
}
