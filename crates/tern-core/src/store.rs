//! What must survive a restart, as a stream of changes the core emits ([`StoreOp`]), and the
//! [`Store`] trait a durable store implements to apply them and give them back at start-up.
//!
//! The core never calls a store: like packets, store operations are output the runtime polls
//! ([`crate::Broker::poll_store_op`]). The runtime applies a batch of them, and only once the
//! store reports the batch durable does it write the acknowledgements produced with it. That
//! is where group commit lives, outside the deterministic core.

use std::collections::HashMap;

use tern_codec::{MqttString, PacketId, TopicFilter, TopicName};

use crate::auth::SessionOwner;
use crate::firmware::{Registration, Release};
use crate::fleet::{Device, Owner};
use crate::fleet_notify::Notification;
use crate::guard::{GuardKey, GuardRecord};
use crate::history::Kept;
use crate::session::{Delivery, PendingWill};
use crate::tree::SubscriptionInfo;
use crate::types::{SharedMessage, Time};

/// The durable part of a session: who it is, how long it lives, what it subscribed to, its will.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    /// The client identifier.
    pub client_id: MqttString,
    /// The identity the session belongs to.
    pub owner: SessionOwner,
    /// Seconds the session outlives its connection.
    pub expiry_secs: u32,
    /// Its subscriptions.
    pub subscriptions: Vec<(TopicFilter, SubscriptionInfo)>,
    /// Its will, if the last connection left one.
    pub will: Option<PendingWill>,
    /// When the session expires, if its connection has ended (`None` while connected: a
    /// session recovered without a deadline counts as disconnected at recovery).
    pub expires_at: Option<Time>,
    /// When its will is due, if its connection has ended and the will is delayed.
    pub will_at: Option<Time>,
    /// The sequence number its next queued delivery gets, at least: a poller has seen the
    /// ones below, so they are never given again (the store keeps it from one record to the
    /// next even when the deliveries themselves are gone).
    pub next_seq: u64,
}

/// Where an outgoing QoS 1/2 delivery stands, as far as a restart must know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStage {
    /// Queued, not yet given a packet identifier.
    Queued,
    /// PUBLISH sent with this packet identifier; PUBACK or PUBREC awaited.
    Sent(PacketId),
    /// PUBREC received for this packet identifier; PUBCOMP awaited.
    Released(PacketId),
    /// Rejected by its poller (or handed out too often): a dead letter, kept until re-queued.
    Dead,
}

/// One change to the durable state. Only sessions that outlive their connection are recorded.
// Ops live briefly in one queue; boxing the larger variants would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum StoreOp {
    /// A retained message was set or replaced.
    RetainedSet(SharedMessage),
    /// A topic's retained message was cleared.
    RetainedClear(TopicName),
    /// A session was created or its record changed.
    SessionSet(SessionRecord),
    /// A session ended; everything of it goes.
    SessionRemove(MqttString),
    /// A QoS 1/2 message was queued for a session.
    DeliveryQueued {
        /// The session.
        client_id: MqttString,
        /// The delivery, with its sequence number.
        delivery: Delivery,
    },
    /// A queued delivery moved on.
    DeliveryStage {
        /// The session.
        client_id: MqttString,
        /// The delivery's sequence number.
        seq: u64,
        /// Where it stands now.
        stage: DeliveryStage,
    },
    /// A delivery is complete (acknowledged, or dropped) and is forgotten.
    DeliveryDone {
        /// The session.
        client_id: MqttString,
        /// The delivery's sequence number.
        seq: u64,
    },
    /// An incoming QoS 2 packet identifier was recorded (PUBLISH received) or released (PUBREL).
    IncomingQos2 {
        /// The session.
        client_id: MqttString,
        /// The packet identifier.
        packet_id: u16,
        /// True when recorded, false when released.
        pending: bool,
    },
    /// An edge's request guard record was set (written with the effect of its request).
    GuardSet(GuardRecord),
    /// An edge's request guard record expired and is forgotten.
    GuardForget(GuardKey),
    /// A fleet device was added or changed.
    FleetDeviceSet(Device),
    /// A fleet device was deleted (by udid).
    FleetDeviceRemove(String),
    /// A fleet owner was recorded or changed.
    FleetOwnerSet(Owner),
    /// A fleet device registered (its udid, and what it said); deleting the device deletes it.
    FleetRegistrationSet(String, Registration),
    /// A firmware release was added to the catalogue.
    FirmwareSet(Release),
    /// A firmware release was deleted (by id).
    FirmwareRemove(String),
    /// An actionable notification was raised or changed.
    FleetNotifySet(Notification),
    /// A finished notification (or one of a deleted device) is forgotten.
    FleetNotifyRemove {
        /// Its device.
        udid: String,
        /// Its id.
        nid: String,
    },
    /// A message was kept in the history of its topic (`[[history]]`).
    HistoryKeep(Kept),
    /// Deletions of retained messages up to this id are no longer remembered (`broker::kv`).
    KvHorizon(u64),
    /// A kept message went (past its topic's count or age).
    HistoryForget {
        /// Its topic.
        topic: TopicName,
        /// Its message id.
        id: u64,
    },
}

/// A session as recovered from the store.
#[derive(Debug, Clone)]
pub struct StoredSession {
    /// Its record.
    pub record: SessionRecord,
    /// Its QoS 1/2 deliveries in sequence order, with where each stood.
    pub deliveries: Vec<(Delivery, DeliveryStage)>,
    /// Incoming QoS 2 packet identifiers not yet released.
    pub incoming_qos2: Vec<u16>,
}

/// Everything a store gives back at start-up.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Retained messages.
    pub retained: Vec<SharedMessage>,
    /// Sessions that outlive their connections.
    pub sessions: Vec<StoredSession>,
    /// The request guard's records, for the edge that wrote them (the core does not use them).
    pub guard: Vec<GuardRecord>,
    /// The fleet's owners.
    pub fleet_owners: Vec<Owner>,
    /// The fleet's devices.
    pub fleet_devices: Vec<Device>,
    /// The fleet's devices' last registrations, by udid.
    pub fleet_registrations: Vec<(String, Registration)>,
    /// The firmware catalogue's releases.
    pub firmware: Vec<Release>,
    /// The devices' actionable notifications.
    pub fleet_notifications: Vec<Notification>,
    /// The messages kept in topics' history, in any order.
    pub history: Vec<Kept>,
    /// The highest id of a deletion of a retained message no longer remembered (0: none).
    pub kv_horizon: u64,
}

/// A durable home for the broker's state.
pub trait Store {
    /// Why an operation failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies a batch of changes; when this returns `Ok`, the batch is as durable as the store
    /// promises (for example, fsynced).
    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), Self::Error>;

    /// Everything stored, to rebuild the broker at start-up.
    fn load(&mut self) -> Result<Snapshot, Self::Error>;
}

/// A store in memory: the image a durable store would keep, for tests and for
/// `durability = "none"`. It survives a broker rebuilt in the same process, not a process exit.
#[derive(Debug, Default)]
pub struct MemoryStore {
    retained: HashMap<TopicName, SharedMessage>,
    sessions: HashMap<MqttString, MemorySession>,
    guard: HashMap<GuardKey, GuardRecord>,
    fleet_owners: HashMap<String, Owner>,
    fleet_devices: HashMap<String, Device>,
    fleet_registrations: HashMap<String, Registration>,
    firmware: HashMap<String, Release>,
    fleet_notifications: HashMap<(String, String), Notification>,
    history: HashMap<(TopicName, u64), Kept>,
    kv_horizon: u64,
}

#[derive(Debug)]
struct MemorySession {
    record: SessionRecord,
    deliveries: std::collections::BTreeMap<u64, (Delivery, DeliveryStage)>,
    incoming_qos2: std::collections::BTreeSet<u16>,
}

/// `MemoryStore` never fails.
#[derive(Debug, thiserror::Error)]
#[error("the memory store cannot fail")]
pub struct Infallible;

impl Store for MemoryStore {
    type Error = Infallible;

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), Infallible> {
        for op in ops {
            match op {
                StoreOp::RetainedSet(message) => {
                    self.retained
                        .insert(message.topic.clone(), SharedMessage::clone(message));
                }
                StoreOp::RetainedClear(topic) => {
                    self.retained.remove(topic);
                }
                StoreOp::SessionSet(record) => {
                    let entry = self
                        .sessions
                        .entry(record.client_id.clone())
                        .or_insert_with(|| MemorySession {
                            record: record.clone(),
                            deliveries: Default::default(),
                            incoming_qos2: Default::default(),
                        });
                    entry.record = record.clone();
                }
                StoreOp::SessionRemove(client_id) => {
                    self.sessions.remove(client_id);
                }
                StoreOp::DeliveryQueued {
                    client_id,
                    delivery,
                } => {
                    if let Some(session) = self.sessions.get_mut(client_id) {
                        session
                            .deliveries
                            .insert(delivery.seq, (delivery.clone(), DeliveryStage::Queued));
                    }
                }
                StoreOp::DeliveryStage {
                    client_id,
                    seq,
                    stage,
                } => {
                    if let Some(entry) = self
                        .sessions
                        .get_mut(client_id)
                        .and_then(|s| s.deliveries.get_mut(seq))
                    {
                        entry.1 = *stage;
                    }
                }
                StoreOp::DeliveryDone { client_id, seq } => {
                    if let Some(session) = self.sessions.get_mut(client_id) {
                        session.deliveries.remove(seq);
                    }
                }
                StoreOp::IncomingQos2 {
                    client_id,
                    packet_id,
                    pending,
                } => {
                    if let Some(session) = self.sessions.get_mut(client_id) {
                        if *pending {
                            session.incoming_qos2.insert(*packet_id);
                        } else {
                            session.incoming_qos2.remove(packet_id);
                        }
                    }
                }
                StoreOp::GuardSet(record) => {
                    self.guard.insert(record.key(), record.clone());
                }
                StoreOp::GuardForget(key) => {
                    self.guard.remove(key);
                }
                StoreOp::FleetDeviceSet(device) => {
                    self.fleet_devices
                        .insert(device.udid.clone(), device.clone());
                }
                StoreOp::FleetDeviceRemove(udid) => {
                    self.fleet_devices.remove(udid);
                    self.fleet_registrations.remove(udid);
                }
                StoreOp::FleetRegistrationSet(udid, registration) => {
                    self.fleet_registrations
                        .insert(udid.clone(), registration.clone());
                }
                StoreOp::FirmwareSet(release) => {
                    self.firmware.insert(release.id.clone(), release.clone());
                }
                StoreOp::FirmwareRemove(id) => {
                    self.firmware.remove(id);
                }
                StoreOp::FleetOwnerSet(owner) => {
                    self.fleet_owners.insert(owner.id.clone(), owner.clone());
                }
                StoreOp::FleetNotifySet(n) => {
                    let key = (n.udid.clone(), n.nid.clone());
                    self.fleet_notifications.insert(key, n.clone());
                }
                StoreOp::FleetNotifyRemove { udid, nid } => {
                    self.fleet_notifications
                        .remove(&(udid.clone(), nid.clone()));
                }
                StoreOp::HistoryKeep(kept) => {
                    let key = (kept.message.topic.clone(), kept.message.id);
                    self.history.insert(key, kept.clone());
                }
                StoreOp::HistoryForget { topic, id } => {
                    self.history.remove(&(topic.clone(), *id));
                }
                StoreOp::KvHorizon(id) => self.kv_horizon = self.kv_horizon.max(*id),
            }
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Snapshot, Infallible> {
        let retained = self.retained.values().cloned().collect();
        let sessions = self
            .sessions
            .values()
            .map(|s| StoredSession {
                record: s.record.clone(),
                deliveries: s.deliveries.values().cloned().collect(),
                incoming_qos2: s.incoming_qos2.iter().copied().collect(),
            })
            .collect();
        let guard = self.guard.values().cloned().collect();
        let history = self.history.values().cloned().collect();
        Ok(Snapshot {
            retained,
            sessions,
            guard,
            fleet_owners: self.fleet_owners.values().cloned().collect(),
            fleet_devices: self.fleet_devices.values().cloned().collect(),
            fleet_registrations: self
                .fleet_registrations
                .iter()
                .map(|(udid, r)| (udid.clone(), r.clone()))
                .collect(),
            firmware: self.firmware.values().cloned().collect(),
            fleet_notifications: self.fleet_notifications.values().cloned().collect(),
            history,
            kv_horizon: self.kv_horizon,
        })
    }
}
