//! Packets held back until numbered batches they depend on are done: by the store (durable)
//! or by the cluster (replicated). Each source numbers its own batches and keeps its own holds.
//!
//! A connection that got packets in a batch records a hold: "the first N packets of my outbox
//! need batch S". It writes only the packets whose holds are released, so an acknowledgement
//! never reaches a socket before what it acknowledges is done.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use tern_core::ConnectionId;

/// Packets of one connection held until batches are done.
#[derive(Debug, Default)]
struct Held {
    /// Packets taken from the connection's outbox so far.
    taken: u64,
    /// Packets before this count may be written.
    open_until: u64,
    /// `(end, seq)`: packets before `end` (and after the previous hold) need batch `seq`.
    waiting: VecDeque<(u64, u64)>,
}

/// The holds of one source of batches.
#[derive(Debug, Default)]
pub(crate) struct Holds {
    /// Every batch up to this number is done.
    done: Cell<u64>,
    /// The connections holding packets back, keyed by connection; looked up for every packet
    /// written, so hashed cheaply (the keys are our own counters, not a peer's input).
    held: RefCell<FxHashMap<ConnectionId, Held>>,
}

impl Holds {
    /// Holds the `pending` packets now in `id`'s outbox behind batch `seq`.
    pub(crate) fn hold(&self, id: ConnectionId, pending: usize, seq: u64) {
        if pending == 0 {
            return;
        }
        let mut held = self.held.borrow_mut();
        // A connection has an entry only while it holds packets back: counting starts here.
        let entry = held.entry(id).or_default();
        let end = entry.taken + pending as u64;
        entry.waiting.push_back((end, seq));
    }

    /// Whether the next packet in `id`'s outbox may be written now.
    pub(crate) fn may_transmit(&self, id: ConnectionId) -> bool {
        let mut held = self.held.borrow_mut();
        let Some(entry) = held.get_mut(&id) else {
            return true;
        };
        let done = self.done.get();
        while let Some(&(end, seq)) = entry.waiting.front() {
            if seq > done {
                break;
            }
            entry.open_until = end;
            entry.waiting.pop_front();
        }
        if entry.waiting.is_empty() {
            // Nothing held back any more: the entry goes, so that finishing a batch visits
            // only the connections still waiting for one.
            held.remove(&id);
            return true;
        }
        entry.taken < entry.open_until
    }

    /// Notes that a packet was taken from `id`'s outbox.
    pub(crate) fn transmitted(&self, id: ConnectionId) {
        if let Some(entry) = self.held.borrow_mut().get_mut(&id) {
            entry.taken += 1;
        }
    }

    /// Records that batches up to `seq` are done; adds to `out` the connections that may now
    /// write more.
    pub(crate) fn done(&self, seq: u64, out: &mut Vec<ConnectionId>) {
        self.done.set(seq);
        for (&id, entry) in self.held.borrow().iter() {
            if entry.waiting.front().is_some_and(|&(_, s)| s <= seq) {
                out.push(id);
            }
        }
    }

    /// Forgets a connection that is gone.
    pub(crate) fn forget(&self, id: ConnectionId) {
        self.held.borrow_mut().remove(&id);
    }

    /// Every batch up to this number is done.
    pub(crate) fn done_through(&self) -> u64 {
        self.done.get()
    }

    /// Whether no connection holds anything back.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.held.borrow().is_empty()
    }
}
