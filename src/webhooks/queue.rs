//! The deliverer's buffer: the entries read from the outbox and not yet
//! done with, in log order, and the decisions that need no network: which
//! events are filtered out, which leave is cancelled by its counterpart
//! within the leave grace, which leave is still held, and when the next
//! batch is due.
//!
//! A leave-type event (its [`Kind::counterpart`] is some) is held until
//! `at + grace`; a later event that [`Event::is_cancelled_by`] names
//! within the grace drops both. Events behind a held leave wait for it, so
//! each user's events keep their order without per-user bookkeeping. An
//! event filtered out by `WEBHOOK_EVENTS` still cancels a leave (a reload
//! is no change, whatever is sent), and is skipped.
//!
//! The cursor to commit only ever moves over a prefix of the buffer that
//! is done (sent, dropped, cancelled or filtered), so a restart resends,
//! never loses.

use std::collections::VecDeque;

use crate::clock::Millis;
use crate::events::{Event, Kind};
use crate::webhooks::outbox::{Cursor, Entry};

/// At most this many events a batch (contract section 9).
pub(super) const MAX_BATCH: usize = 100;

/// Which event types are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Filter([bool; Kind::ALL.len()]);

impl Filter {
    /// Every type, or only `kinds`.
    pub(super) fn new(kinds: Option<&[Kind]>) -> Self {
        Self(Kind::ALL.map(|k| kinds.is_none_or(|n| n.contains(&k))))
    }

    fn sends(self, kind: Kind) -> bool {
        Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .is_some_and(|i| self.0[i])
    }
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    /// When it was read, on the service clock: an event stamped later
    /// (another instance's clock ahead) counts from here.
    read_at: Millis,
    /// Still to be sent: passes the filter and was not cancelled.
    send: bool,
    /// Paired with a leave or its counterpart (each pairs once).
    paired: bool,
    /// When the deliverer first saw it due, on its own monotonic clock
    /// (the batch's linger is real time, whatever the service clock does).
    due_seen: Option<Millis>,
}

impl Slot {
    fn event(&self) -> &Event {
        &self.entry.event
    }

    /// When it may be sent: leaves after the grace, the others at once.
    fn due(&self, grace: Millis) -> Millis {
        let at = self.event().at.min(self.read_at);
        if self.event().kind.counterpart().is_some() {
            at.saturating_add(grace)
        } else {
            at
        }
    }
}

/// What the deliverer does next.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Send the first `slots` slots' events (`entries`).
    Send(Vec<Entry>, usize),
    /// Nothing to send for this many milliseconds (a batch filling, a held
    /// leave).
    Wait(Millis),
    /// Nothing to send until more is read.
    Idle,
}

/// The buffer of one endpoint's deliverer.
#[derive(Debug)]
pub(super) struct Queue {
    slots: VecDeque<Slot>,
    /// After the last entry read into the buffer.
    read: Cursor,
    /// After the last entry done with (what to commit).
    done: Cursor,
    filter: Filter,
    grace: Millis,
    linger: Millis,
}

impl Queue {
    /// An empty buffer starting after `from`.
    pub(super) fn new(from: Cursor, filter: Filter, grace: Millis, linger: Millis) -> Self {
        Self {
            slots: VecDeque::new(),
            read: from.clone(),
            done: from,
            filter,
            grace,
            linger,
        }
    }

    /// Where reading goes on from.
    pub(super) fn read_cursor(&self) -> &Cursor {
        &self.read
    }

    /// Where everything before is done with.
    pub(super) fn done_cursor(&self) -> &Cursor {
        &self.done
    }

    /// Entries buffered.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Takes in entries read after [`read_cursor`](Self::read_cursor) at
    /// `now`, cancelling the leaves they come back from.
    pub(super) fn push(&mut self, entries: Vec<Entry>, now: Millis) {
        for entry in entries {
            self.read.advance(&entry);
            let mut slot = Slot {
                send: self.filter.sends(entry.event.kind),
                read_at: now,
                paired: false,
                due_seen: None,
                entry,
            };
            if self.grace > 0 {
                let grace = self.grace;
                let leave = self.slots.iter_mut().find(|leave| {
                    !leave.paired
                        && leave.event().is_cancelled_by(slot.event())
                        && slot.event().at <= leave.event().at.saturating_add(grace)
                });
                if let Some(leave) = leave {
                    leave.paired = true;
                    leave.send = false;
                    slot.paired = true;
                    slot.send = false;
                }
            }
            self.slots.push_back(slot);
        }
        self.pop_done();
    }

    /// What to do at `now` on the service clock (which decides when a
    /// held leave is due) and `real` on the deliverer's monotonic clock
    /// (which times the linger from when an event was first seen due): the
    /// next batch when it is full or has waited its linger, else how long
    /// to wait before looking again.
    pub(super) fn next(&mut self, now: Millis, real: Millis) -> Next {
        let mut batch = Vec::new();
        let mut first_seen = None;
        let mut slots = 0;
        let mut held = None;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !slot.send {
                continue;
            }
            let due = slot.due(self.grace);
            if due > now {
                held = Some(due - now);
                break;
            }
            first_seen.get_or_insert(*slot.due_seen.get_or_insert(real));
            batch.push(slot.entry.clone());
            slots = i + 1;
            if batch.len() == MAX_BATCH {
                break;
            }
        }
        match first_seen {
            Some(_) if batch.len() == MAX_BATCH => Next::Send(batch, slots),
            Some(first) => {
                let left = first.saturating_add(self.linger) - real;
                if left <= 0 {
                    Next::Send(batch, slots)
                } else {
                    // A held leave that comes due first may join the batch.
                    Next::Wait(held.map_or(left, |h| h.min(left)))
                }
            }
            None => held.map_or(Next::Idle, Next::Wait),
        }
    }

    /// The first `slots` slots are done with (their batch delivered or
    /// dropped).
    pub(super) fn finish(&mut self, slots: usize) {
        for slot in self.slots.drain(..slots.min(self.slots.len())) {
            self.done.advance(&slot.entry);
        }
        self.pop_done();
    }

    /// Moves the done cursor over leading entries that will not be sent.
    fn pop_done(&mut self) {
        while self.slots.front().is_some_and(|s| !s.send) {
            if let Some(slot) = self.slots.pop_front() {
                self.done.advance(&slot.entry);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::outbox::StreamId;
    use crate::webhooks::tests::event;

    const GRACE: Millis = 5_000;
    const LINGER: Millis = 1_000;

    fn entries(events: &[(Kind, &str, Millis)], first_seq: u64) -> Vec<Entry> {
        events
            .iter()
            .zip(first_seq..)
            .map(|(&(kind, user, at), seq)| Entry {
                shard: 0,
                id: StreamId { ms: 1, seq },
                event: event(kind, user, at),
            })
            .collect()
    }

    fn queue() -> Queue {
        Queue::new(Cursor::default(), Filter::new(None), GRACE, LINGER)
    }

    fn sent(next: &Next) -> Vec<(Kind, String)> {
        match next {
            Next::Send(entries, _) => entries
                .iter()
                .map(|e| (e.event.kind, e.event.user.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_batch_waits_its_linger_unless_full() {
        let mut q = queue();
        q.push(entries(&[(Kind::UserOnline, "a", 0)], 0), 0);
        // Seen due at 500 on the deliverer's clock: it goes at 1,500.
        assert_eq!(q.next(500, 500), Next::Wait(1_000));
        assert_eq!(q.next(1_000, 1_000), Next::Wait(500));
        assert_eq!(sent(&q.next(1_000, 1_500)).len(), 1);
        let many: Vec<_> = (0..150).map(|_| (Kind::UserState, "b", 0)).collect();
        q.push(entries(&many, 1), 0);
        match q.next(0, 0) {
            Next::Send(batch, slots) => assert_eq!((batch.len(), slots), (100, 100)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_leave_and_its_return_within_the_grace_are_both_dropped() {
        let mut q = queue();
        q.push(
            entries(
                &[(Kind::UserOffline, "a", 0), (Kind::UserOnline, "a", 4_000)],
                0,
            ),
            4_000,
        );
        assert_eq!(q.len(), 0);
        assert_eq!(q.next(10_000, 10_000), Next::Idle);
        assert_eq!(q.done_cursor().at(0), StreamId { ms: 1, seq: 1 });
    }

    #[test]
    fn a_return_after_the_grace_or_of_another_user_cancels_nothing() {
        let mut q = queue();
        q.push(
            entries(
                &[
                    (Kind::UserOffline, "a", 0),
                    (Kind::UserOnline, "b", 1_000),
                    (Kind::UserOnline, "a", 6_000),
                ],
                0,
            ),
            6_000,
        );
        assert_eq!(q.len(), 3);
        q.next(6_000, 0);
        assert_eq!(
            sent(&q.next(6_000, LINGER)),
            [
                (Kind::UserOffline, "a".into()),
                (Kind::UserOnline, "b".into()),
                (Kind::UserOnline, "a".into())
            ]
        );
    }

    #[test]
    fn events_behind_a_held_leave_wait_for_it() {
        let mut q = queue();
        q.push(
            entries(
                &[
                    (Kind::UserOnline, "b", 0),
                    (Kind::UserOffline, "a", 0),
                    (Kind::UserOnline, "c", 0),
                ],
                0,
            ),
            0,
        );
        // The event before the leave goes after its linger, alone.
        q.next(0, 0);
        assert_eq!(
            sent(&q.next(1_000, 1_000)),
            [(Kind::UserOnline, "b".into())]
        );
        let Next::Send(_, slots) = q.next(1_000, 1_000) else {
            panic!()
        };
        q.finish(slots);
        assert_eq!(q.next(1_000, 1_000), Next::Wait(GRACE - 1_000));
        q.next(GRACE, GRACE);
        assert_eq!(
            sent(&q.next(GRACE + LINGER, GRACE + LINGER)),
            [
                (Kind::UserOffline, "a".into()),
                (Kind::UserOnline, "c".into())
            ]
        );
    }

    #[test]
    fn filtered_events_are_skipped_but_still_cancel_a_leave() {
        let kinds = [Kind::UserOffline, Kind::ModuleLeave];
        let mut q = Queue::new(Cursor::default(), Filter::new(Some(&kinds)), GRACE, LINGER);
        q.push(
            entries(
                &[
                    (Kind::UserOffline, "a", 0),
                    (Kind::UserOnline, "a", 1_000),
                    (Kind::UserState, "b", 1_000),
                    (Kind::ModuleLeave, "b", 2_000),
                ],
                0,
            ),
            2_000,
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q.done_cursor().at(0), StreamId { ms: 1, seq: 2 });
        q.next(2_000 + GRACE, 0);
        assert_eq!(
            sent(&q.next(2_000 + GRACE, LINGER)),
            [(Kind::ModuleLeave, "b".into())]
        );
    }

    #[test]
    fn without_grace_leaves_go_at_once() {
        let mut q = Queue::new(Cursor::default(), Filter::new(None), 0, LINGER);
        q.push(
            entries(
                &[(Kind::UserOffline, "a", 0), (Kind::UserOnline, "a", 10)],
                0,
            ),
            10,
        );
        q.next(10, 0);
        assert_eq!(sent(&q.next(10, LINGER)).len(), 2);
    }
}
