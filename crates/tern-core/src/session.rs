//! Session state: subscriptions, the outgoing QoS 1/2 window, messages waiting to be sent, and
//! incoming QoS 2 packet identifiers. A session outlives its connections.

use rustc_hash::FxHashSet;
use std::collections::{HashMap, VecDeque};

use tern_codec::{MqttString, PacketId, ProtocolVersion, QoS, SubscriptionIds, TopicFilter, Will};

use crate::auth::SessionOwner;
use crate::connection::OutgoingPublish;
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
    /// Packet identifiers used by `inflight`.
    used_ids: FxHashSet<u16>,
    /// Entries of `inflight` that do not hold send quota.
    outside_quota: usize,
    /// The identifier to try next.
    next_id: u16,
    /// Deliveries waiting for the window or for a connection, oldest first.
    pub queue: VecDeque<Delivery>,
    /// Payload bytes in `queue`.
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
        }
    }

    /// Queues a delivery unless the session's queue limits are reached.
    pub fn enqueue(
        &mut self,
        mut delivery: Delivery,
        count_max: usize,
        bytes_max: usize,
    ) -> Result<(), QueueRefusal> {
        if self.queue.len() >= count_max {
            return Err(QueueRefusal::CountFull);
        }
        let bytes = delivery.message.payload.len();
        if self.queued_bytes + bytes > bytes_max {
            return Err(QueueRefusal::BytesFull);
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
        self.queued_bytes += delivery.message.payload.len();
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
        self.queued_bytes -= delivery.message.payload.len();
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
                freed += delivery.message.payload.len();
            }
            !gone
        });
        self.queued_bytes -= freed;
        dropped
    }

    /// Payload bytes waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
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

    /// The position of the in-flight delivery with `packet_id` (usually the oldest).
    pub fn find_inflight(&self, packet_id: PacketId) -> Option<usize> {
        self.inflight
            .iter()
            .position(|entry| entry.packet_id == packet_id)
    }

    /// Frees a packet identifier that was allocated but never sent.
    pub fn remove_inflight_id(&mut self, packet_id: PacketId) {
        self.used_ids.remove(&packet_id.get());
    }

    /// Ends an in-flight exchange and frees its packet identifier.
    pub fn remove_inflight(&mut self, index: usize) -> Option<Inflight> {
        let entry = self.inflight.remove(index)?;
        self.used_ids.remove(&entry.packet_id.get());
        if !entry.holds_quota {
            self.outside_quota -= 1;
        }
        Some(entry)
    }
}
