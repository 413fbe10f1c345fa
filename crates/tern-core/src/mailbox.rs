//! A session read by polling (the HTTP bridge's mailbox): what it needs beyond an MQTT
//! session. The session's queue and in-flight window are the mailbox; a poll hands out their
//! deliveries by sequence number without moving them, and what it handed out is leased: not
//! handed out again until the lease ends or the device gives it back. Leases and delivery
//! counts live in memory (after a restart every unsettled delivery is deliverable again, which
//! at-least-once allows); dead letters are durable, as deliveries at the dead-letter stage.

use std::collections::{BTreeMap, VecDeque};

use crate::session::Delivery;
use crate::types::Time;

/// The queue limits of the mailboxes of a class of clients: those whose client identifier
/// begins with `prefix` (the longest matching prefix wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxClass {
    /// Client identifiers of the class begin with this.
    pub prefix: String,
    /// Messages a mailbox of the class holds at most.
    pub queued_count_max: usize,
    /// Bytes of messages ([`crate::Message::charge`]) a mailbox of the class holds at most.
    pub queued_bytes_max: usize,
}

/// What was handed out of one delivery, by its sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Until when it is not handed out again.
    pub until: Time,
    /// How many times it was handed out.
    pub deliveries: u32,
}

/// A session's mailbox state; boxed in the session, present once the session was polled or
/// subscribed to over HTTP (or had dead letters when recovered).
#[derive(Debug, Default)]
pub struct Mailbox {
    /// Deliveries handed out and not settled, by sequence number.
    pub(crate) leases: BTreeMap<u64, Lease>,
    /// Rejected deliveries, and those handed out too often, oldest first: kept until
    /// re-queued, or until more than the limit push the oldest out.
    pub(crate) dead: VecDeque<Delivery>,
    /// Bytes charged for `dead` ([`crate::Message::charge`]).
    dead_bytes: usize,
    /// A long poll waits on this mailbox: a delivery queued to it is noted for the bridge.
    pub(crate) watched: bool,
    /// Noted since the bridge last took the ready mailboxes.
    pub(crate) noted: bool,
}

impl Mailbox {
    /// Bytes charged for the dead letters.
    pub fn dead_bytes(&self) -> usize {
        self.dead_bytes
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> impl Iterator<Item = &Delivery> {
        self.dead.iter()
    }

    /// Keeps `delivery` as a dead letter.
    pub(crate) fn push_dead(&mut self, delivery: Delivery) {
        self.leases.remove(&delivery.seq);
        self.dead_bytes += delivery.charge;
        self.dead.push_back(delivery);
    }

    /// Takes the oldest dead letter.
    pub(crate) fn pop_dead(&mut self) -> Option<Delivery> {
        let delivery = self.dead.pop_front()?;
        self.dead_bytes -= delivery.charge;
        Some(delivery)
    }

    /// Takes the dead letter `seq`.
    pub(crate) fn take_dead(&mut self, seq: u64) -> Option<Delivery> {
        let index = self.dead.iter().position(|d| d.seq == seq)?;
        let delivery = self.dead.remove(index)?;
        self.dead_bytes -= delivery.charge;
        Some(delivery)
    }

    /// Lets go of every dead letter; returns their sequence numbers.
    pub(crate) fn discard_dead(&mut self) -> Vec<u64> {
        self.dead_bytes = 0;
        self.dead.drain(..).map(|delivery| delivery.seq).collect()
    }
}
