//! Session state: subscriptions, the outgoing QoS 1/2 window, messages waiting to be sent, and
//! incoming QoS 2 packet identifiers. A session outlives its connections.

use rustc_hash::FxHashSet;
use std::collections::{HashMap, VecDeque};

use tern_codec::{MqttString, PacketId, ProtocolVersion, QoS, SubscriptionIds, TopicFilter, Will};

use crate::auth::SessionOwner;
use crate::broker::retained_feed::RetainedFeeds;
use crate::connection::OutgoingPublish;
use crate::mailbox::Mailbox;
use crate::tree::SubscriptionInfo;
use crate::types::{ConnectionId, SharedMessage, Time};

/// Session expiry meaning "never expires" (MQTT 5 value 0xFFFFFFFF).
pub const EXPIRY_NEVER: u32 = u32::MAX;

/// One message on its way to one session.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Position in the session's stream of deliveries, increasing by one per queued message.
    pub seq: u64,
    /// The shared message.
    pub message: SharedMessage,
    /// QoS it is delivered with: the lower of the published and the granted QoS.
    pub qos: QoS,
    /// RETAIN flag as sent to this subscriber.
    pub retain: bool,
    /// Identifiers of the subscriptions it matched.
    pub subscription_ids: SubscriptionIds,
    /// What holding it costs, in bytes: [`crate::Message::charge`] of its message, worked out
    /// once per message rather than at every step of its way.
    pub charge: usize,
}

impl Delivery {
    /// The PUBLISH for this delivery at `now`.
    ///
    /// The Message Expiry Interval sent is what remains of it (MQTT-3.3.2-6).
    pub fn outgoing(&self, packet_id: Option<PacketId>, dup: bool, now: Time) -> OutgoingPublish {
        let message = &self.message;
        OutgoingPublish {
            message: SharedMessage::clone(message),
            qos: self.qos,
            retain: self.retain,
            dup,
            packet_id,
            message_expiry_interval: message
                .expires_at
                .map(|at| now.secs_until(at).max(1))
                .or(message.properties.message_expiry_interval),
            subscription_ids: self.subscription_ids.clone(),
            alias: None,
            alias_only: false,
        }
    }
}

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutgoingState {
    /// QoS 1 PUBLISH sent, PUBACK awaited.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, PUBREC awaited.
    AwaitPubRec,
    /// PUBREL sent, PUBCOMP awaited.
    AwaitPubComp,
}

/// An outgoing QoS 1/2 delivery that has a packet identifier.
#[derive(Debug, Clone)]
pub struct Inflight {
    /// Its packet identifier.
    pub packet_id: PacketId,
    /// What is being delivered.
    pub delivery: Delivery,
    /// How far the exchange has got.
    pub state: OutgoingState,
    /// Whether it holds a unit of the current connection's send quota: its PUBLISH went out on
    /// this connection (MQTT-4.9.0-2). After a reconnect nothing does until it is resent.
    pub holds_quota: bool,
}

/// A will message waiting for its connection to end or its delay to pass.
#[derive(Debug, Clone)]
pub struct PendingWill {
    /// The will as the CONNECT carried it; it becomes a message when published, so its
    /// expiry counts from then.
    pub will: Will,
    /// Will Delay Interval in seconds (MQTT 5; 0 in 3.1.1).
    pub delay_secs: u32,
}

/// Why a message for a session was not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// `queued_count_max` reached.
    CountFull,
    /// `queued_bytes_max` reached.
    BytesFull,
}

/// Where a session stands in flow control (docs/design/backpressure.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowState {
    /// Holds no publisher: its queue is below its limits, or it has no connection.
    #[default]
    Clear,
    /// Connected, and its queue reached its limits: the publishers feeding it wait for their
    /// acknowledgements until it drains to the low-water mark.
    Congested,
    /// Cut loose for making no progress or falling too far behind: it holds nobody, and its
    /// newest messages are dropped past its queue limits until it drains to the low-water mark
    /// (or its connection, already being closed, ends).
    CutLoose,
}

/// What [`Session::withdraw`] did.
#[derive(Debug, Default)]
pub struct Withdrawn {
    /// Sequence numbers of the deliveries dropped.
    pub dropped: Vec<u64>,
    /// QoS 2 deliveries moved to the PUBREL stage (sequence number, packet identifier).
    pub released: Vec<(u64, PacketId)>,
}

/// Session state, connected or not.
#[derive(Debug)]
pub struct Session {
    /// The client identifier.
    pub client_id: MqttString,
    /// The identity that created the session: only it may resume the session.
    pub owner: SessionOwner,
    /// The connection currently attached, if any.
    pub connection: Option<ConnectionId>,
    /// Protocol level of the last connection.
    pub version: ProtocolVersion,
    /// Seconds the session outlives its connection; [`EXPIRY_NEVER`] for ever.
    pub expiry_secs: u32,
    /// When the session expires, while it has no connection.
    pub expires_at: Option<Time>,
    /// Subscriptions by filter (the tree holds the same, for matching).
    pub subscriptions: HashMap<TopicFilter, SubscriptionInfo>,
    /// Outgoing QoS 1/2 deliveries with packet identifiers, in the order first sent.
    pub inflight: VecDeque<Inflight>,
    /// Bytes charged for `inflight` ([`crate::Message::charge`]).
    inflight_bytes: usize,
    /// Packet identifiers used by `inflight`.
    used_ids: FxHashSet<u16>,
    /// Entries of `inflight` that do not hold send quota.
    outside_quota: usize,
    /// The identifier to try next.
    next_id: u16,
    /// Deliveries waiting for the window or for a connection, oldest first.
    pub queue: VecDeque<Delivery>,
    /// Bytes charged for `queue` ([`crate::Message::charge`]).
    queued_bytes: usize,
    /// Sequence number of the next queued delivery.
    next_seq: u64,
    /// Packet identifiers of incoming QoS 2 publishes received but not yet released.
    pub incoming_qos2: FxHashSet<u16>,
    /// The will of the current (or last) connection.
    pub will: Option<Box<PendingWill>>,
    /// When the will is due, once its connection has ended.
    pub will_at: Option<Time>,
    /// Whether the durable store holds a record of this session.
    pub persisted: bool,
    /// Whether configured rules opened the device fleet's namespaces to its last connection
    /// (an operator's monitoring client): then it keeps the fleet's messages while offline,
    /// as its subscriptions allow. Not stored: after a restart, or once the rules change, it
    /// keeps them again from its next connection.
    pub fleet_opened: bool,
    /// Where it stands in flow control; only ever other than `Clear` while connected.
    pub flow: FlowState,
    /// When its client last acknowledged a delivery (PUBACK, PUBREC or PUBCOMP).
    pub acked_at: Time,
    /// Retained messages still owed to its new subscriptions; boxed, as most sessions owe none.
    pub(crate) retained_feeds: Option<Box<RetainedFeeds>>,
    /// What polling it over HTTP needs (leases, dead letters); boxed, as most sessions are
    /// never polled.
    pub mailbox: Option<Box<Mailbox>>,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: MqttString, version: ProtocolVersion) -> Self {
        Self {
            client_id,
            owner: SessionOwner::unverified(),
            connection: None,
            version,
            expiry_secs: 0,
            expires_at: None,
            subscriptions: HashMap::new(),
            inflight: VecDeque::new(),
            inflight_bytes: 0,
            used_ids: FxHashSet::default(),
            outside_quota: 0,
            next_id: 1,
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 0,
            incoming_qos2: FxHashSet::default(),
            will: None,
            will_at: None,
            persisted: false,
            fleet_opened: false,
            flow: FlowState::Clear,
            acked_at: Time::from_millis(0),
            retained_feeds: None,
            mailbox: None,
        }
    }

    /// The sequence number the next queued delivery gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Raises the next sequence number to at least `seq` (recovered from the store), so numbers
    /// a poller saw are never given again.
    pub fn raise_next_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// Takes the queued delivery `seq`, wherever it is in the queue.
    pub fn remove_queued(&mut self, seq: u64) -> Option<Delivery> {
        let index = self.queue.iter().position(|d| d.seq == seq)?;
        let delivery = self.queue.remove(index)?;
        self.queued_bytes -= delivery.charge;
        Some(delivery)
    }

    /// The mailbox state, made on first use.
    pub fn mailbox_mut(&mut self) -> &mut Mailbox {
        self.mailbox.get_or_insert_with(Box::default)
    }

    /// Whether the queue has reached either of its limits: the high-water mark of flow control.
    pub fn at_high_water(&self, count_max: usize, bytes_max: usize) -> bool {
        self.queue.len() >= count_max || self.queued_bytes >= bytes_max
    }

    /// Whether the queue is down to `percent` of both its limits: the low-water mark.
    pub fn at_low_water(&self, count_max: usize, bytes_max: usize, percent: u8) -> bool {
        let percent = u128::from(percent);
        (self.queue.len() as u128) * 100 <= (count_max as u128) * percent
            && (self.queued_bytes as u128) * 100 <= (bytes_max as u128) * percent
    }

    /// Why a delivery charged `bytes` would not be queued under these limits, if it would not.
    pub fn queue_refusal(
        &self,
        bytes: usize,
        count_max: usize,
        bytes_max: usize,
    ) -> Option<QueueRefusal> {
        if self.queue.len() >= count_max {
            return Some(QueueRefusal::CountFull);
        }
        if self.queued_bytes + bytes > bytes_max {
            return Some(QueueRefusal::BytesFull);
        }
        None
    }

    /// Queues a delivery unless the session's queue limits are reached.
    pub fn enqueue(
        &mut self,
        mut delivery: Delivery,
        count_max: usize,
        bytes_max: usize,
    ) -> Result<(), QueueRefusal> {
        let bytes = delivery.charge;
        if let Some(refusal) = self.queue_refusal(bytes, count_max, bytes_max) {
            return Err(refusal);
        }
        delivery.seq = self.next_seq;
        self.next_seq += 1;
        self.queued_bytes += bytes;
        self.queue.push_back(delivery);
        Ok(())
    }

    /// Puts back a queued delivery recovered from the store, keeping its sequence number.
    pub fn restore_queued(&mut self, delivery: Delivery) {
        self.next_seq = self.next_seq.max(delivery.seq + 1);
        self.queued_bytes += delivery.charge;
        self.queue.push_back(delivery);
    }

    /// Puts back an in-flight delivery recovered from the store; it is resent (with DUP, or as
    /// PUBREL) when the client reconnects.
    pub fn restore_inflight(
        &mut self,
        packet_id: PacketId,
        delivery: Delivery,
        state: OutgoingState,
    ) {
        self.next_seq = self.next_seq.max(delivery.seq + 1);
        self.used_ids.insert(packet_id.get());
        self.outside_quota += 1;
        self.inflight_bytes += delivery.charge;
        self.inflight.push_back(Inflight {
            packet_id,
            delivery,
            state,
            holds_quota: false,
        });
    }

    /// Takes the oldest queued delivery.
    pub fn dequeue(&mut self) -> Option<Delivery> {
        let delivery = self.queue.pop_front()?;
        self.queued_bytes -= delivery.charge;
        Some(delivery)
    }

    /// Drops the queued deliveries whose message has expired at `now`; returns their sequence
    /// numbers.
    pub fn purge_expired(&mut self, now: Time) -> Vec<u64> {
        self.drop_queued(|delivery| delivery.message.is_expired(now))
    }

    /// Withdraws the deliveries `refused` picks. Queued ones and QoS 1 ones in flight are
    /// dropped. A QoS 2 PUBLISH in flight may be held by the client, whose packet identifier
    /// then stays in use until a PUBREL: it moves to the PUBREL stage, which frees the
    /// identifier on both sides without sending the message again. One whose PUBREC came is
    /// left as it is (the client has it).
    pub fn withdraw(&mut self, refused: impl Fn(&Delivery) -> bool) -> Withdrawn {
        let mut withdrawn = Withdrawn {
            dropped: self.drop_queued(&refused),
            released: Vec::new(),
        };
        let mut index = 0;
        while let Some(entry) = self.inflight.get_mut(index) {
            index += 1;
            if entry.state == OutgoingState::AwaitPubComp || !refused(&entry.delivery) {
                continue;
            }
            if entry.state == OutgoingState::AwaitPubRec {
                entry.state = OutgoingState::AwaitPubComp;
                withdrawn
                    .released
                    .push((entry.delivery.seq, entry.packet_id));
                continue;
            }
            index -= 1;
            if let Some(entry) = self.remove_inflight(index) {
                withdrawn.dropped.push(entry.delivery.seq);
            }
        }
        withdrawn
    }

    fn drop_queued(&mut self, mut drop: impl FnMut(&Delivery) -> bool) -> Vec<u64> {
        let mut dropped = Vec::new();
        let mut freed = 0;
        self.queue.retain(|delivery| {
            let gone = drop(delivery);
            if gone {
                dropped.push(delivery.seq);
                freed += delivery.charge;
            }
            !gone
        });
        self.queued_bytes -= freed;
        dropped
    }

    /// Bytes charged for the deliveries waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Bytes charged for the deliveries in flight.
    pub fn inflight_bytes(&self) -> usize {
        self.inflight_bytes
    }

    /// Bytes charged for every delivery the session holds: queued, in flight or dead letters.
    pub fn held_bytes(&self) -> usize {
        let dead = self.mailbox.as_ref().map_or(0, |m| m.dead_bytes());
        self.queued_bytes + self.inflight_bytes + dead
    }

    /// Whether a delivery charged `bytes` may join the in-flight window under `bytes_max`; the
    /// first always may, so a message larger than the limit still goes out alone.
    pub fn inflight_has_room(&self, bytes: usize, bytes_max: usize) -> bool {
        self.inflight.is_empty() || self.inflight_bytes + bytes <= bytes_max
    }

    /// Lets go of every delivery the session holds, queued, in flight and dead letters (packet
    /// identifiers are freed); returns their sequence numbers.
    pub fn discard_held(&mut self) -> Vec<u64> {
        let inflight = self.inflight.drain(..).map(|entry| entry.delivery.seq);
        let mut seqs: Vec<u64> = inflight
            .chain(self.queue.drain(..).map(|delivery| delivery.seq))
            .collect();
        if let Some(mailbox) = self.mailbox.as_mut() {
            seqs.extend(mailbox.discard_dead());
        }
        self.used_ids.clear();
        self.outside_quota = 0;
        self.inflight_bytes = 0;
        self.queued_bytes = 0;
        seqs
    }

    /// Allocates a packet identifier not used by any in-flight delivery.
    ///
    /// The caller keeps `inflight` below 65,535 entries, so one is always free.
    pub fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            let candidate = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if let Some(id) = PacketId::new(candidate) {
                if self.used_ids.insert(candidate) {
                    return id;
                }
            }
        }
    }

    /// Records a delivery as sent with `packet_id`.
    pub fn push_inflight(&mut self, packet_id: PacketId, delivery: Delivery) {
        debug_assert!(self.used_ids.contains(&packet_id.get()));
        self.inflight_bytes += delivery.charge;
        let state = match delivery.qos {
            QoS::ExactlyOnce => OutgoingState::AwaitPubRec,
            _ => OutgoingState::AwaitPubAck,
        };
        self.inflight.push_back(Inflight {
            packet_id,
            delivery,
            state,
            holds_quota: true,
        });
    }

    /// In-flight deliveries that hold the current connection's send quota.
    pub fn quota_used(&self) -> usize {
        self.inflight.len() - self.outside_quota
    }

    /// A new connection starts with its whole send quota (MQTT-4.9.0-1): no delivery holds any.
    pub fn reset_quota(&mut self) {
        for entry in &mut self.inflight {
            entry.holds_quota = false;
        }
        self.outside_quota = self.inflight.len();
    }

    /// The oldest delivery whose PUBLISH awaits re-sending on this connection.
    pub fn next_to_resend(&self) -> Option<usize> {
        if self.outside_quota == 0 {
            return None;
        }
        self.inflight
            .iter()
            .position(|entry| !entry.holds_quota && entry.state != OutgoingState::AwaitPubComp)
    }

    /// Marks the delivery at `index` as sent on this connection.
    pub fn take_quota(&mut self, index: usize) {
        if let Some(entry) = self.inflight.get_mut(index) {
            if !entry.holds_quota {
                entry.holds_quota = true;
                self.outside_quota -= 1;
            }
        }
    }

    /// The position of the in-flight delivery with `packet_id`.
    ///
    /// Identifiers are handed out in turn, so the window is in identifier order counted from
    /// its oldest, usually without gaps: the distance from the oldest identifier is then its
    /// position, and otherwise a binary search finds it. A scan would pass every QoS 2
    /// delivery awaiting its PUBCOMP on each PUBREC, thousands in a deep window. Where that
    /// order does not hold (deliveries restored from the store, identifiers that went round
    /// past one held for long) it scans.
    pub fn find_inflight(&self, packet_id: PacketId) -> Option<usize> {
        let oldest = self.inflight.front()?.packet_id.get();
        // How many identifiers after the oldest one `id` is handed out (1 follows 65,535).
        let after_oldest = |id: u16| (u32::from(id) + 65_535 - u32::from(oldest)) % 65_535;
        let distance = after_oldest(packet_id.get());
        let guess = usize::try_from(distance).unwrap_or(usize::MAX);
        if self
            .inflight
            .get(guess)
            .is_some_and(|entry| entry.packet_id == packet_id)
        {
            return Some(guess);
        }
        self.inflight
            .binary_search_by_key(&distance, |entry| after_oldest(entry.packet_id.get()))
            .ok()
            .or_else(|| {
                self.inflight
                    .iter()
                    .position(|entry| entry.packet_id == packet_id)
            })
    }

    /// Frees a packet identifier that was allocated but never sent.
    pub fn remove_inflight_id(&mut self, packet_id: PacketId) {
        self.used_ids.remove(&packet_id.get());
    }

    /// Ends an in-flight exchange and frees its packet identifier.
    pub fn remove_inflight(&mut self, index: usize) -> Option<Inflight> {
        let entry = self.inflight.remove(index)?;
        self.inflight_bytes -= entry.delivery.charge;
        self.used_ids.remove(&entry.packet_id.get());
        if !entry.holds_quota {
            self.outside_quota -= 1;
        }
        Some(entry)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is a failure.

    use std::sync::Arc;

    use bytes::Bytes;
    use tern_codec::{MqttString, PacketId, ProtocolVersion, QoS, SubscriptionIds};

    use super::{Delivery, QueueRefusal, Session};
    use crate::types::Message;

    /// A QoS 1 delivery on topic `t` charged `bytes` (one for the topic, the rest payload).
    fn delivery(bytes: usize) -> Delivery {
        let message = Message {
            id: 1,
            topic: "t".parse().unwrap(),
            payload: Bytes::from(vec![0u8; bytes - 1]),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            origin: None,
        };
        let message = Arc::new(message);
        Delivery {
            seq: 0,
            charge: message.charge(),
            message,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: SubscriptionIds::new(),
        }
    }

    fn session() -> Session {
        Session::new(MqttString::new("c").unwrap(), ProtocolVersion::V5)
    }

    #[test]
    fn queue_and_window_bytes_go_up_and_down_exactly() {
        let mut session = session();
        session.enqueue(delivery(100), 10, 1000).unwrap();
        session.enqueue(delivery(30), 10, 1000).unwrap();
        assert_eq!((session.queued_bytes(), session.inflight_bytes()), (130, 0));
        let first = session.dequeue().unwrap();
        let id = session.allocate_packet_id();
        session.push_inflight(id, first);
        assert_eq!(
            (session.queued_bytes(), session.inflight_bytes()),
            (30, 100)
        );
        assert_eq!(session.held_bytes(), 130);
        let index = session.find_inflight(id).unwrap();
        session.remove_inflight(index).unwrap();
        assert_eq!((session.queued_bytes(), session.inflight_bytes()), (30, 0));
        session.restore_inflight(
            PacketId::new(7).unwrap(),
            delivery(5),
            super::OutgoingState::AwaitPubComp,
        );
        assert_eq!(session.held_bytes(), 35);
        assert_eq!(session.discard_held().len(), 2);
        assert_eq!(session.held_bytes(), 0);
        assert!(session.queue.is_empty() && session.inflight.is_empty());
    }

    #[test]
    fn queue_limits_refuse_the_newest() {
        let mut session = session();
        session.enqueue(delivery(60), 2, 100).unwrap();
        assert_eq!(
            session.enqueue(delivery(41), 2, 100).unwrap_err(),
            QueueRefusal::BytesFull
        );
        session.enqueue(delivery(40), 2, 100).unwrap();
        assert_eq!(
            session.enqueue(delivery(1), 2, 100).unwrap_err(),
            QueueRefusal::CountFull
        );
        assert_eq!(session.queued_bytes(), 100);
    }

    /// A window of `n` deliveries with identifiers handed out from `first` on.
    fn window_from(first: u16, n: usize) -> (Session, Vec<PacketId>) {
        let mut session = session();
        session.next_id = first;
        let ids = (0..n)
            .map(|_| {
                let id = session.allocate_packet_id();
                session.push_inflight(id, delivery(10));
                id
            })
            .collect();
        (session, ids)
    }

    #[test]
    fn every_delivery_in_flight_is_found_by_its_identifier() {
        // In order, across the wrap from 65,535 to 1, with gaps where deliveries completed
        // out of order.
        let (mut window, mut ids) = window_from(65_000, 2_000);
        assert_eq!((ids[535].get(), ids[536].get()), (65_535, 1));
        for gone in [1_500, 536, 535, 1] {
            let id = ids.remove(gone);
            let index = window.find_inflight(id).unwrap();
            window.remove_inflight(index).unwrap();
            assert_eq!(window.find_inflight(id), None);
        }
        for (index, &id) in ids.iter().enumerate() {
            assert_eq!(window.find_inflight(id), Some(index));
        }
        // Out of identifier order, as restored from the store.
        let mut restored = session();
        for id in [9, 3, 60_000, 4, 1] {
            restored.restore_inflight(
                PacketId::new(id).unwrap(),
                delivery(10),
                super::OutgoingState::AwaitPubAck,
            );
        }
        for (index, id) in [9, 3, 60_000, 4, 1].into_iter().enumerate() {
            assert_eq!(
                restored.find_inflight(PacketId::new(id).unwrap()),
                Some(index)
            );
        }
        assert_eq!(restored.find_inflight(PacketId::new(2).unwrap()), None);
    }

    #[test]
    fn window_byte_limit_admits_the_first_whatever_its_size() {
        let mut session = session();
        assert!(session.inflight_has_room(500, 100));
        let id = session.allocate_packet_id();
        session.push_inflight(id, delivery(60));
        assert!(session.inflight_has_room(40, 100));
        assert!(!session.inflight_has_room(41, 100));
    }
}
