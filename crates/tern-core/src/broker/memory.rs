//! The memory the broker holds for receivers: the bytes charged to each session (queued and in
//! flight) and to each connection (QoS 0 waiting to be written), their running sum, and what
//! happens when the sum reaches `memory_max_bytes` (docs/design/backpressure.md).

use tern_codec::{QoS, ReasonCode};

use super::Broker;

/// A receiver that acknowledged a message this recently is taking its messages: at the memory
/// limit it is not cut loose, nor refused its new messages, while a stalled one holds any.
const MOVING_WITHIN_MILLIS: u64 = 1_000;
use crate::events::{CloseReason, Event};
use crate::session::{Inflight, Session};
use crate::types::{ConnectionId, SessionKey, Time};

/// Bytes of messages held for one client ([`crate::Message::charge`] of each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeldBytes {
    /// QoS 1/2 messages waiting in its session queue.
    pub queued: usize,
    /// QoS 1/2 messages in flight (sent, not yet acknowledged, or waiting to be resent).
    pub inflight: usize,
    /// QoS 0 messages waiting to be written to its connection.
    pub outbox_qos0: usize,
}

impl HeldBytes {
    /// All of it.
    pub fn total(&self) -> usize {
        self.queued + self.inflight + self.outbox_qos0
    }
}

impl Broker {
    /// Bytes of messages held for all receivers together: what `memory_max_bytes` bounds.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Bytes of messages held for the session of `client_id`, if there is one.
    pub fn session_held_bytes(&self, client_id: &str) -> Option<HeldBytes> {
        let key = *self.session_ids.get(client_id)?;
        Some(self.consumer_bytes(key))
    }

    /// [`Broker::held_bytes`] summed afresh over every session and connection (in time
    /// proportional to their number), to check the running total against.
    pub fn held_bytes_recounted(&self) -> usize {
        let sessions: usize = self
            .sessions
            .iter()
            .flatten()
            .map(Session::held_bytes)
            .sum();
        let outboxes: usize = self.connections.values().map(|c| c.outbox_qos0_bytes).sum();
        sessions + outboxes
    }

    /// Runs `change` on the session of `key`, keeping the running total in step with what the
    /// session holds. Every change to a session's queue or in-flight window goes through here.
    pub(super) fn with_session<R>(
        &mut self,
        key: SessionKey,
        change: impl FnOnce(&mut Session) -> R,
    ) -> R {
        let session = self.session_mut(key);
        let before = session.held_bytes();
        let result = change(session);
        let after = session.held_bytes();
        self.held_bytes = self.held_bytes - before + after;
        result
    }

    /// Ends the in-flight exchange at `index` of `key`'s window.
    pub(super) fn remove_inflight(&mut self, key: SessionKey, index: usize) -> Option<Inflight> {
        self.with_session(key, |session| session.remove_inflight(index))
    }

    /// Charges a QoS 0 message of `bytes` to the outbox of `id`.
    pub(super) fn charge_outbox(&mut self, id: ConnectionId, bytes: usize) {
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.outbox_qos0 += 1;
            connection.outbox_qos0_bytes += bytes;
            self.held_bytes += bytes;
        }
    }

    /// Whether a delivery of `bytes` to `key` at `qos` fits the memory limit. A QoS 1/2
    /// delivery makes room by cutting loose other consumers, the largest first: for a receiver
    /// that is taking its messages, any consumer making no progress (stalled is not slow),
    /// then moving ones holding more than it does; for a stalled receiver, stalled ones holding
    /// more than it does. A QoS 0 delivery never cuts anyone loose.
    pub(super) fn within_memory(
        &mut self,
        key: SessionKey,
        bytes: usize,
        qos: QoS,
        now: Time,
    ) -> bool {
        let max = self.config.limits.memory_max_bytes;
        if max == 0 || self.held_bytes + bytes <= max {
            return true;
        }
        // QoS 0 cuts nobody loose, nor does a message larger than the whole limit.
        if qos == QoS::AtMostOnce || bytes > max {
            return false;
        }
        let moving = self.moving(key, now);
        // A stalled receiver holding half of everything is the consumer to go: no scan needed.
        if !moving && self.consumer_bytes(key).total() * 2 >= self.held_bytes {
            return false;
        }
        let own = self.consumer_bytes(key).total();
        while self.held_bytes + bytes > max {
            match self.consumer_to_shed(key, now) {
                // A moving receiver goes on at the cost of any stalled one.
                Some((victim, false, _)) if moving => self.shed(victim),
                // Otherwise, among the stalled or among the moving, the larger goes.
                Some((victim, victim_moving, held)) if victim_moving == moving && held > own => {
                    self.shed(victim)
                }
                _ => return false,
            }
        }
        true
    }

    /// Whether `key` is taking its messages: connected, and it acknowledged one within the
    /// last [`MOVING_WITHIN_MILLIS`].
    fn moving(&self, key: SessionKey, now: Time) -> bool {
        let session = self.session(key);
        let acked = session.acked_at.as_millis();
        session.connection.is_some()
            && acked > 0
            && now.as_millis().saturating_sub(acked) < MOVING_WITHIN_MILLIS
    }

    /// The consumer other than `key` to cut loose first, if any holds some bytes: a stalled
    /// one before a moving one, the largest first. Returns it, whether it is moving, and what
    /// it holds.
    fn consumer_to_shed(&self, key: SessionKey, now: Time) -> Option<(SessionKey, bool, usize)> {
        (0..self.sessions.len())
            .filter(|&slot| slot != key.0 as usize)
            .filter(|&slot| matches!(self.sessions.get(slot), Some(Some(_))))
            .map(|slot| {
                let other = SessionKey(slot as u32);
                let held = self.consumer_bytes(other).total();
                (!self.moving(other, now), held, other)
            })
            .filter(|&(_, held, _)| held > 0)
            .max()
            .map(|(stalled, held, other)| (other, !stalled, held))
    }

    /// What the session of `key` and its connection hold.
    fn consumer_bytes(&self, key: SessionKey) -> HeldBytes {
        let session = self.session(key);
        let outbox_qos0 = session
            .connection
            .and_then(|id| self.connections.get(&id))
            .map_or(0, |connection| connection.outbox_qos0_bytes);
        HeldBytes {
            queued: session.queued_bytes(),
            inflight: session.inflight_bytes(),
            outbox_qos0,
        }
    }

    /// Cuts `key` loose: every message held for it goes (counted), and its connection is
    /// closed once the current input is handled (MQTT 5: DISCONNECT 0x97 Quota exceeded).
    fn shed(&mut self, key: SessionKey) {
        let bytes = self.consumer_bytes(key).total();
        let messages = self.discard_held(key);
        self.stats.sessions_shed += 1;
        let session = self.session(key);
        let client_id = session.client_id.clone();
        if let Some(id) = session.connection {
            self.shed_connections.push(id);
        }
        self.events.push_back(Event::Shed {
            client_id,
            bytes,
            messages,
        });
    }

    /// Lets go of everything held for `key`: its queue, its in-flight window and what waits
    /// in its connection's outbox (which is closed at once after). Returns the messages lost.
    fn discard_held(&mut self, key: SessionKey) -> usize {
        let mut lost = 0;
        if let Some(id) = self.session(key).connection {
            lost += self.clear_outbox(id);
        }
        let seqs = self.with_session(key, Session::discard_held);
        for &seq in &seqs {
            self.delivery_done(key, seq);
        }
        lost += seqs.len();
        let lost_u64 = lost as u64;
        self.stats.publish_dropped += lost_u64;
        self.stats.publish_dropped_memory += lost_u64;
        lost
    }

    /// Empties the outbox of `id`; returns the QoS 0 messages it held.
    fn clear_outbox(&mut self, id: ConnectionId) -> usize {
        let Some(connection) = self.connections.get_mut(&id) else {
            return 0;
        };
        // Only ever followed by the close: what the connection was still to write does not
        // matter any more, and what it holds is what must be freed.
        connection.outbox = Default::default();
        self.held_bytes -= connection.outbox_qos0_bytes;
        connection.outbox_qos0_bytes = 0;
        std::mem::take(&mut connection.outbox_qos0)
    }

    /// Closes the connections of sessions cut loose during the last input, dropping what was
    /// queued for them since.
    pub(super) fn close_shed(&mut self, now: Time) {
        while let Some(id) = self.shed_connections.pop() {
            let key = self.connections.get(&id).and_then(|c| c.session());
            if let Some(key) = key {
                self.discard_held(key);
            }
            self.close(
                id,
                CloseReason::MemoryLimit,
                Some(ReasonCode::QuotaExceeded),
                now,
            );
        }
    }
}
