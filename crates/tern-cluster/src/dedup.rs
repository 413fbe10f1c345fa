//! Drops the extra copies NATS hands a node whose subscriptions overlap.
//!
//! NATS delivers a message once per matching subscription of a connection, so a node holding
//! `tern.d.m.a.*` and `tern.d.m.a.>` gets `a/b` twice. Every message carries the node it was
//! accepted on (boot identity) and that node's counter, unique in the cluster; the node
//! remembers the most recent ones it routed. Copies of one message are handed out by the NATS
//! connection together, so they arrive close to each other: the window only needs to cover
//! what can arrive between them, which the subscriptions' bounded queues limit.

use std::collections::VecDeque;

use rustc_hash::FxHashSet;

/// Messages remembered; a copy arriving after this many other messages would pass as new.
pub const WINDOW: usize = 1 << 16;

/// The identities of the messages most recently routed.
#[derive(Debug)]
pub struct Recent {
    seen: FxHashSet<(u64, u64)>,
    order: VecDeque<(u64, u64)>,
    capacity: usize,
}

impl Default for Recent {
    fn default() -> Self {
        Self::with_capacity(WINDOW)
    }
}

impl Recent {
    /// Remembers up to `capacity` identities.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: FxHashSet::default(),
            order: VecDeque::with_capacity(capacity.min(1024)),
            capacity: capacity.max(1),
        }
    }

    /// Whether the message `(origin, counter)` is new; remembers it.
    pub fn first_copy(&mut self, origin: u64, counter: u64) -> bool {
        if !self.seen.insert((origin, counter)) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
        self.order.push_back((origin, counter));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_copy_is_dropped_within_the_window_whatever_the_order() {
        let mut recent = Recent::with_capacity(4);
        assert!(recent.first_copy(1, 5));
        assert!(recent.first_copy(1, 7));
        assert!(recent.first_copy(2, 5), "another node's counter");
        assert!(!recent.first_copy(1, 5));
        assert!(recent.first_copy(1, 6), "late but new");
        assert!(!recent.first_copy(1, 7));
        // Past the window the oldest is forgotten.
        assert!(recent.first_copy(3, 1));
        assert!(recent.first_copy(1, 5));
    }
}
