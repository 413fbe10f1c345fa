//! The client's session state, free of I/O: packet identifiers, the queue of publishes not yet
//! sent, the in-flight window (QoS 1 awaiting PUBACK, QoS 2 awaiting PUBREC or PUBCOMP), the
//! QoS 2 identifiers received and not yet released, and the subscriptions to restore.
//!
//! It survives reconnections; it is what makes an outage invisible to the application.

use std::collections::{BTreeMap, HashMap, VecDeque};

use tern_codec::{Packet, PacketId, Publish, QoS, ReasonCode, SubscriptionOptions, TopicFilter};
use tokio::sync::oneshot;

use crate::error::{PublishError, SubscribeError};
use crate::options::QueuePolicy;

/// The caller's side of a publish: resolved with the acknowledgement's reason code.
pub(crate) type PublishDone = oneshot::Sender<Result<ReasonCode, PublishError>>;
/// The caller's side of a SUBSCRIBE or UNSUBSCRIBE: resolved with the reason codes.
pub(crate) type ControlDone = oneshot::Sender<Result<Vec<ReasonCode>, SubscribeError>>;

/// One publish the client owns until it is acknowledged.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Order of acceptance; also the store's file name.
    pub(crate) seq: u64,
    /// The message with its full topic (aliases are chosen per connection when sending).
    pub(crate) publish: Publish,
    /// QoS 2 only: PUBREC arrived and PUBREL was sent.
    pub(crate) released: bool,
    /// Where the outcome goes; `None` for messages restored from the store.
    pub(crate) done: Option<PublishDone>,
}

impl Outgoing {
    pub(crate) fn finish(mut self, outcome: Result<ReasonCode, PublishError>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(outcome);
        }
    }
}

/// A SUBSCRIBE or UNSUBSCRIBE awaiting its acknowledgement; sent again after a reconnection.
#[derive(Debug)]
pub(crate) struct PendingControl {
    pub(crate) packet: Packet,
    pub(crate) done: Option<ControlDone>,
}

/// What happened when a publish was offered to the queue.
#[derive(Debug)]
pub(crate) enum Enqueued {
    /// Accepted.
    Queued,
    /// Accepted; this older message was dropped to make room.
    Displaced(Outgoing),
    /// Refused: the queue is full.
    Refused(Outgoing),
}

/// Session state kept across connections.
#[derive(Debug, Default)]
pub(crate) struct Session {
    next_seq: u64,
    last_packet_id: u16,
    /// Publishes not yet sent, in order.
    pub(crate) queue: VecDeque<Outgoing>,
    /// QoS 1/2 publishes sent and not complete, by sequence (the order to resend them in).
    pub(crate) inflight: BTreeMap<u64, Outgoing>,
    /// Packet identifier of each in-flight publish to its sequence.
    inflight_ids: HashMap<u16, u64>,
    /// SUBSCRIBE/UNSUBSCRIBE awaiting acknowledgement, by packet identifier.
    pub(crate) control: HashMap<u16, PendingControl>,
    /// QoS 2 identifiers received (delivered, PUBREC sent) and not yet released by PUBREL,
    /// with the message's fingerprint.
    pub(crate) incoming_qos2: HashMap<u16, u64>,
    /// Fingerprints (topic and payload) of QoS 2 messages released by PUBREL, by identifier:
    /// see [`Session::accept_incoming_qos2`].
    released_qos2: HashMap<u16, u64>,
    /// Subscriptions to restore when the broker has no session, by filter.
    pub(crate) subscriptions: BTreeMap<String, (TopicFilter, SubscriptionOptions, Option<u32>)>,
}

impl Session {
    /// The sequence number for a newly accepted publish.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Continues numbering after messages restored from the store.
    pub(crate) fn restore(&mut self, outgoing: Outgoing) {
        self.next_seq = self.next_seq.max(outgoing.seq);
        match outgoing.publish.packet_id {
            Some(id) if outgoing.publish.qos != QoS::AtMostOnce => {
                self.inflight_ids.insert(id.get(), outgoing.seq);
                self.inflight.insert(outgoing.seq, outgoing);
            }
            _ => self.queue.push_back(outgoing),
        }
    }

    /// Offers a publish to the queue of at most `limit` messages.
    pub(crate) fn enqueue(
        &mut self,
        outgoing: Outgoing,
        limit: usize,
        policy: QueuePolicy,
    ) -> Enqueued {
        if self.queue.len() < limit {
            self.queue.push_back(outgoing);
            return Enqueued::Queued;
        }
        match (policy, self.queue.pop_front()) {
            (QueuePolicy::DropOldest, Some(oldest)) => {
                self.queue.push_back(outgoing);
                Enqueued::Displaced(oldest)
            }
            (_, front) => {
                if let Some(front) = front {
                    self.queue.push_front(front);
                }
                Enqueued::Refused(outgoing)
            }
        }
    }

    /// A packet identifier in use by nothing else (MQTT-2.3.1-2); `None` if all 65,535 are.
    pub(crate) fn allocate_id(&mut self) -> Option<PacketId> {
        for _ in 0..u16::MAX {
            self.last_packet_id = self.last_packet_id.wrapping_add(1);
            if self.last_packet_id == 0 {
                self.last_packet_id = 1;
            }
            let id = self.last_packet_id;
            if !self.inflight_ids.contains_key(&id) && !self.control.contains_key(&id) {
                return PacketId::new(id);
            }
        }
        None
    }

    /// Moves the next queued publish into flight (assigning its packet identifier) if the
    /// window allows; QoS 0 messages leave the queue without entering the window.
    pub(crate) fn next_to_send(&mut self, window: usize) -> Option<Outgoing> {
        let front = self.queue.front()?;
        if front.publish.qos == QoS::AtMostOnce {
            return self.queue.pop_front();
        }
        if self.inflight.len() >= window {
            return None;
        }
        let id = self.allocate_id()?;
        let mut outgoing = self.queue.pop_front()?;
        outgoing.publish.packet_id = Some(id);
        Some(outgoing)
    }

    /// Records a publish as in flight.
    pub(crate) fn track(&mut self, outgoing: Outgoing) {
        if let Some(id) = outgoing.publish.packet_id {
            self.inflight_ids.insert(id.get(), outgoing.seq);
            self.inflight.insert(outgoing.seq, outgoing);
        }
    }

    /// The in-flight publish with this packet identifier.
    pub(crate) fn inflight_mut(&mut self, id: PacketId) -> Option<&mut Outgoing> {
        let seq = self.inflight_ids.get(&id.get())?;
        self.inflight.get_mut(seq)
    }

    /// Removes and returns the in-flight publish with this packet identifier.
    pub(crate) fn complete(&mut self, id: PacketId) -> Option<Outgoing> {
        let seq = self.inflight_ids.remove(&id.get())?;
        self.inflight.remove(&seq)
    }

    /// Records an incoming QoS 2 PUBLISH; `true` if it is new and must be delivered.
    ///
    /// A resend (DUP) of an identifier awaiting PUBREL is not new (MQTT-4.3.3-9). Nor is a DUP
    /// resend of the very message (same topic and payload) we already released: a broker must
    /// not resend a PUBLISH after its PUBREL, but Mosquitto 2.0.11 does when a link breaks
    /// while it is resending PUBRELs, and exactly-once must survive that.
    pub(crate) fn accept_incoming_qos2(&mut self, publish: &Publish, id: PacketId) -> bool {
        if self.incoming_qos2.contains_key(&id.get()) {
            return false;
        }
        let fingerprint = fingerprint(publish);
        let released = self.released_qos2.remove(&id.get());
        if publish.dup && released == Some(fingerprint) {
            // Keep remembering it: the broker may resend it again after another outage.
            self.released_qos2.insert(id.get(), fingerprint);
            return false;
        }
        self.incoming_qos2.insert(id.get(), fingerprint);
        true
    }

    /// Handles PUBREL for an incoming QoS 2 message; `false` if the identifier is unknown.
    pub(crate) fn release_incoming_qos2(&mut self, id: PacketId) -> bool {
        match self.incoming_qos2.remove(&id.get()) {
            Some(fingerprint) => {
                self.released_qos2.insert(id.get(), fingerprint);
                true
            }
            None => false,
        }
    }

    /// The broker kept no session: nothing it sent before will be resent.
    pub(crate) fn forget_incoming(&mut self) {
        self.incoming_qos2.clear();
        self.released_qos2.clear();
    }

    /// Fails every waiting caller: the client is shutting down.
    pub(crate) fn close(&mut self) {
        for outgoing in self.queue.drain(..) {
            outgoing.finish(Err(PublishError::Closed));
        }
        for (_, outgoing) in std::mem::take(&mut self.inflight) {
            outgoing.finish(Err(PublishError::Closed));
        }
        self.inflight_ids.clear();
        for (_, pending) in self.control.drain() {
            if let Some(done) = pending.done {
                let _ = done.send(Err(SubscribeError::Closed));
            }
        }
    }
}

/// Identifies a message's content (topic and payload) for duplicate detection.
pub(crate) fn fingerprint(publish: &Publish) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    publish.topic.as_str().hash(&mut hasher);
    publish.payload.hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use tern_codec::{MqttString, TopicName};

    fn message(session: &mut Session, qos: QoS) -> Outgoing {
        let topic = TopicName::new(MqttString::new("t").unwrap()).unwrap();
        let mut publish = Publish::new(topic, Bytes::from_static(b"x"));
        publish.qos = qos;
        Outgoing {
            seq: session.next_seq(),
            publish,
            released: false,
            done: None,
        }
    }

    #[test]
    fn window_limits_qos1_and_keeps_order() {
        let mut session = Session::default();
        for qos in [QoS::AtLeastOnce, QoS::AtLeastOnce, QoS::AtMostOnce] {
            let m = message(&mut session, qos);
            assert!(matches!(
                session.enqueue(m, 10, QueuePolicy::RejectNew),
                Enqueued::Queued
            ));
        }
        let first = session.next_to_send(1).unwrap();
        assert_eq!(first.publish.packet_id, PacketId::new(1));
        session.track(first);
        // The window of 1 is full: the second QoS 1 message waits, and so does the QoS 0
        // message behind it, so order is kept.
        assert!(session.next_to_send(1).is_none());
        assert_eq!(
            session.complete(PacketId::new(1).unwrap()).map(|o| o.seq),
            Some(1)
        );
        let second = session.next_to_send(1).unwrap();
        assert_eq!(second.seq, 2);
        session.track(second);
        // QoS 0 needs no slot in the window; everything before it has been sent.
        let third = session.next_to_send(1).unwrap();
        assert_eq!((third.seq, third.publish.packet_id), (3, None));
    }

    #[test]
    fn full_queue_follows_the_policy() {
        let mut session = Session::default();
        let a = message(&mut session, QoS::AtLeastOnce);
        assert!(matches!(
            session.enqueue(a, 1, QueuePolicy::RejectNew),
            Enqueued::Queued
        ));
        let b = message(&mut session, QoS::AtLeastOnce);
        assert!(matches!(
            session.enqueue(b, 1, QueuePolicy::RejectNew),
            Enqueued::Refused(o) if o.seq == 2
        ));
        let c = message(&mut session, QoS::AtLeastOnce);
        assert!(matches!(
            session.enqueue(c, 1, QueuePolicy::DropOldest),
            Enqueued::Displaced(o) if o.seq == 1
        ));
        assert_eq!(session.queue.front().map(|o| o.seq), Some(3));
    }

    #[test]
    fn packet_ids_skip_those_in_use() {
        let mut session = Session::default();
        let mut outgoing = message(&mut session, QoS::AtLeastOnce);
        outgoing.publish.packet_id = PacketId::new(2);
        session.track(outgoing);
        assert_eq!(session.allocate_id(), PacketId::new(1));
        assert_eq!(session.allocate_id(), PacketId::new(3));
        session.last_packet_id = u16::MAX;
        // Wraps past 0.
        assert_eq!(session.allocate_id(), PacketId::new(1));
    }

    #[test]
    fn qos2_resent_after_release_is_not_delivered_again() {
        let mut session = Session::default();
        let topic = TopicName::new(MqttString::new("t").unwrap()).unwrap();
        let mut publish = Publish::new(topic, Bytes::from_static(b"m1"));
        publish.qos = QoS::ExactlyOnce;
        let id = PacketId::new(5).unwrap();
        assert!(session.accept_incoming_qos2(&publish, id));
        publish.dup = true;
        assert!(
            !session.accept_incoming_qos2(&publish, id),
            "resent before PUBREL"
        );
        assert!(session.release_incoming_qos2(id));
        assert!(
            !session.release_incoming_qos2(id),
            "second PUBREL finds nothing"
        );
        assert!(
            !session.accept_incoming_qos2(&publish, id),
            "resent after PUBREL"
        );
        // A new message reusing the identifier is delivered, DUP or not.
        let mut next = publish.clone();
        next.payload = Bytes::from_static(b"m2");
        assert!(session.accept_incoming_qos2(&next, id));
        assert!(session.release_incoming_qos2(id));
        next.dup = false;
        assert!(
            session.accept_incoming_qos2(&next, id),
            "not DUP: a new message"
        );
    }
}
