//! Long polls waiting on the broker thread: one per mailbox (a newer poll of the same mailbox
//! takes the place of an older one, which is answered `poll_superseded`), each until its
//! deadline, looked at again when the core says a delivery was queued to its mailbox or when
//! a lease in it ends. A waiting poll is its request and reply channel, in a map and a
//! timeline: no task, no timer and no buffer of its own. The map holds each boxed: a table
//! keeps room for more entries than it holds, and that room is a pointer each, not a request.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tern_codec::MqttString;
use tokio::time::Instant;

use crate::bridge::Envelope;

/// A long poll waiting.
#[derive(Debug)]
pub(crate) struct Waiter {
    pub(crate) envelope: Envelope,
    /// When it is answered, whatever it has.
    pub(crate) deadline: Instant,
    /// Its place in the timeline: when it is looked at next.
    wake: (Instant, u64),
}

/// The waiting long polls.
#[derive(Debug, Default)]
pub(crate) struct Waiters {
    waiting: HashMap<MqttString, Box<Waiter>>,
    /// When each is looked at next (its deadline, or a lease ending before it).
    timeline: BTreeSet<(Instant, u64, MqttString)>,
    next_id: u64,
}

impl Waiters {
    /// Parks `envelope`, a long poll of `client_id`'s mailbox, until `deadline`, to be looked
    /// at again at `recheck` if that comes first. Returns the poll it takes the place of.
    pub(crate) fn park(
        &mut self,
        client_id: MqttString,
        envelope: Envelope,
        deadline: Instant,
        recheck: Option<Instant>,
    ) -> Option<Envelope> {
        let replaced = self.take(&client_id).map(|waiter| waiter.envelope);
        let at = recheck.map_or(deadline, |recheck| recheck.min(deadline));
        self.next_id += 1;
        let wake = (at, self.next_id);
        self.timeline.insert((at, self.next_id, client_id.clone()));
        let waiter = Waiter {
            envelope,
            deadline,
            wake,
        };
        self.waiting.insert(client_id, Box::new(waiter));
        replaced
    }

    /// Takes the poll waiting on `client_id`'s mailbox.
    pub(crate) fn take(&mut self, client_id: &MqttString) -> Option<Waiter> {
        let waiter = self.waiting.remove(client_id)?;
        let (at, id) = waiter.wake;
        self.timeline.remove(&(at, id, client_id.clone()));
        Some(*waiter)
    }

    /// The mailboxes whose polls are due to be looked at, at `now`.
    pub(crate) fn due(&self, now: Instant) -> Vec<MqttString> {
        self.timeline
            .iter()
            .take_while(|(at, _, _)| *at <= now)
            .map(|(_, _, client_id)| client_id.clone())
            .collect()
    }

    /// When the next poll is due to be looked at.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        self.timeline.first().map(|(at, _, _)| *at)
    }
}

/// `after` from now, as an instant.
pub(crate) fn in_(after: Duration) -> Instant {
    Instant::now() + after
}
