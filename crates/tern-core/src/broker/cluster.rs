//! The core's side of a cluster: which messages leave for the other nodes and when a message
//! accepted here is routed, the interest this node holds, and messages from other nodes.
//!
//! Everything here is inert unless [`crate::Config::cluster`] is on.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use rustc_hash::FxHashMap;
use tern_codec::{MqttString, PacketId, ProtocolVersion, QoS, ReasonCode, TopicFilter};

mod retained;

use super::cluster_session::PendingClaim;
use super::publish::Feed;
use super::Broker;
use crate::cluster::{
    ClusterOp, ClusterPublish, InboundQos2, OutboundQos2, OutboundStage, RemoteMessage,
};
use crate::events::CloseReason;
use crate::session::Delivery;
use crate::session::OutgoingState;
use crate::tree::SubscriptionInfo;
use crate::types::{ConnectionId, Message, SessionKey, SharedMessage, Time};

/// Messages from the log remembered with their place in it, past which the forgotten ones
/// (no session holds them any more) are dropped.
const SEQS_PRUNE_AT: usize = 4096;

/// The cluster state the broker keeps.
#[derive(Debug, Default)]
pub(super) struct ClusterState {
    /// Operations for the other nodes, in the order they happened.
    pub(super) ops: VecDeque<ClusterOp>,
    /// Subscriptions in the trie per filter (the inner filter of `$tree/` subscriptions, a
    /// `$share` filter whole: its group's messages come apart): the node's interest, counted so
    /// it changes only between 0 and 1.
    interest: FxHashMap<TopicFilter, u32>,
    /// Whether the cluster layer last said the cluster is out of reach: new CONNECTs are then
    /// refused (strict partition mode).
    unreachable: bool,
    /// CONNECTs waiting for their session claims (see `cluster_session.rs`).
    pub(super) claims: FxHashMap<ConnectionId, PendingClaim>,
    /// The connection whose settled claim is being completed now.
    pub(super) settling: Option<ConnectionId>,
    /// The highest place in the replicated log of a message routed here: every QoS 1/2
    /// message stored up to it that this node's subscriptions match has been routed.
    last_seq: u64,
    /// Where the log stored each QoS 1/2 message this node routed, by message identity, while
    /// a session holds it: a session's cursor is the first of those it has not had
    /// acknowledged.
    seqs: FxHashMap<u64, (u64, Weak<Message>)>,
    /// Entries in `seqs` after its last pruning.
    seqs_pruned_len: usize,
    /// The identity of the will being published now, which the log stores once.
    pub(super) will_message: Option<u64>,
    /// The QoS 2 PUBLISH being accepted now, whose messages carry its identity to the log.
    receiving: Option<InboundQos2>,
    /// Sessions without a connection whose QoS 1/2 messages stay in the log.
    parked: FxHashMap<SessionKey, Parked>,
    /// The cursor last written for each session with a connection.
    pub(super) written: FxHashMap<SessionKey, Option<u64>>,
    /// The connections and sessions last reported to the cluster ([`ClusterOp::Load`]).
    load: Option<(u64, u64)>,
    /// The cluster view last published under `$SYS/cluster/nodes/`: value by topic.
    pub(super) view: FxHashMap<String, String>,
    /// The cluster's retained messages, as this node takes them.
    pub(super) retained: retained::ClusterRetained,
}

/// A session without a connection whose QoS 1/2 messages stay in the log, read back from
/// `resume_from` on when it resumes, here or on another node.
#[derive(Debug)]
pub(super) struct Parked {
    /// Which session (keys are reused).
    client_id: MqttString,
    /// Its cursor when it was parked (see [`ClusterOp::SessionSaved`]).
    pub(super) cursor: Option<u64>,
    /// The first place in the log of the messages it no longer keeps.
    pub(super) resume_from: u64,
}

impl Broker {
    /// The next operation for the other nodes of the cluster (only with `Config::cluster`).
    /// The runtime hands them over in order; the packets produced with a QoS 1/2
    /// [`ClusterOp::Publish`] for its [`ClusterPublish::acknowledges`] connection must wait
    /// until the message is replicated.
    pub fn poll_cluster_op(&mut self) -> Option<ClusterOp> {
        self.cluster.ops.pop_front()
    }

    /// Tells the core whether this node can reach the cluster. While it cannot, every new
    /// CONNECT is refused with Server unavailable (3.1.1: return code 3), so that a load
    /// balancer sends the client to another node (strict partition mode); connected clients
    /// stay, their QoS 1/2 acknowledgements waiting as ever for replication.
    pub fn set_cluster_reachable(&mut self, reachable: bool) {
        self.cluster.unreachable = !reachable;
    }

    /// Refuses a CONNECT while the cluster is out of reach; returns whether it did.
    pub(super) fn refuse_while_partitioned(
        &mut self,
        id: ConnectionId,
        version: ProtocolVersion,
        now: Time,
    ) -> bool {
        if !self.config.cluster || !self.cluster.unreachable {
            return false;
        }
        let reason = CloseReason::ClusterUnavailable;
        self.refuse_connect_because(id, version, ReasonCode::ServerUnavailable, reason, now);
        true
    }

    /// The filters this node has interest in, for the other nodes (in no particular order).
    pub fn cluster_interest(&self) -> impl Iterator<Item = &TopicFilter> {
        self.cluster.interest.keys()
    }

    /// Routes a message from the cluster (another node's, or a QoS 1/2 message of this node
    /// back from the replicated log) to this node's subscriptions, once, as a local publish is:
    /// overlapping subscriptions of a session make one delivery. It is not sent on to other
    /// nodes. A RETAIN message with its revision in the cluster's retained messages updates
    /// this node's copy of them (cluster/retained.rs). Returns whether a subscription matched.
    ///
    /// A `$share` group takes only the copies handed to this node for it
    /// ([`RemoteMessage::shared`]): the cluster picks one node per message and group, and the
    /// node one of its members.
    pub fn deliver_from_cluster(&mut self, mut remote: RemoteMessage, now: Time) -> bool {
        let shared = remote.shared.take();
        let retained = remote
            .retained_revision
            .filter(|_| remote.retain)
            .map(|revision| (revision, remote.topic.clone()));
        let routed = self.cluster.last_seq;
        let message = self.message_from_cluster(remote, now);
        if shared.is_some() {
            // A group's copy comes from its own consumer, not in the stream's order with the
            // rest: it says nothing of what this node has routed.
            self.cluster.last_seq = routed;
        }
        if let Some((revision, topic)) = retained {
            self.take_retained(topic, revision, message.as_ref());
        }
        let Some(message) = message else {
            return false;
        };
        match shared {
            Some(filter) => self.route_to_group(&message, &filter, now),
            None => self.route(&message, false, now) > 0,
        }
    }

    /// Whether a `$share` group on this node takes `message` as it is routed here: always on a
    /// single node; on a cluster node only the broker's own `$SYS` messages, which stay on the
    /// node (the cluster hands every other message to one node per group).
    pub(super) fn groups_route_here(&self, message: &SharedMessage) -> bool {
        !self.config.cluster || Self::stays_on_node(message)
    }

    /// Whether `message` is the broker's own `$SYS`, whose figures are the node's.
    fn stays_on_node(message: &SharedMessage) -> bool {
        message.origin.is_none() && message.topic.is_dollar()
    }

    /// The message a node of the cluster sent, as this node routes it; `None` if it expired.
    pub(super) fn message_from_cluster(
        &mut self,
        remote: RemoteMessage,
        now: Time,
    ) -> Option<SharedMessage> {
        if let Some(seq) = remote.seq {
            self.cluster.last_seq = self.cluster.last_seq.max(seq);
        }
        if remote.expiry_millis == Some(0) {
            return None;
        }
        let origin = remote
            .publisher
            .as_ref()
            .and_then(|client_id| self.session_ids.get(client_id))
            .copied();
        let message = Message {
            id: self.next_message_id(),
            topic: remote.topic,
            payload: remote.payload,
            qos: remote.qos,
            retain: remote.retain,
            properties: remote.properties,
            expires_at: remote.expiry_millis.map(|millis| now.plus_millis(millis)),
            origin,
        };
        let message = Arc::new(message);
        if let Some(seq) = remote.seq {
            self.remember_seq(&message, seq);
        }
        Some(message)
    }

    /// Session `key` as parked, if it is: without a connection, its QoS 1/2 messages left in
    /// the log.
    pub(super) fn parked(&self, key: SessionKey) -> Option<&Parked> {
        let parked = self.cluster.parked.get(&key)?;
        let session = self.session(key);
        (session.connection.is_none() && session.client_id == parked.client_id).then_some(parked)
    }

    /// Parks session `key`, which has lost its connection: what it holds stays, and from
    /// here on its QoS 1/2 messages stay in the log (its cursor and where they resume are
    /// written with its record). Its subscriptions leave the trie, and with them the node's
    /// interest: its messages no longer cross to this node.
    pub(super) fn park(&mut self, key: SessionKey) {
        if self.parked(key).is_some() {
            return;
        }
        let parked = Parked {
            client_id: self.session(key).client_id.clone(),
            cursor: self.cluster_cursor(key),
            resume_from: self.cluster.last_seq + 1,
        };
        self.cluster.parked.insert(key, parked);
        for (filter, info) in self.parkable(key) {
            self.unindex_subscription(key, &filter, &info);
        }
    }

    /// Session `key` takes its messages again (it is resuming): its subscriptions are back in
    /// the trie.
    pub(super) fn unpark(&mut self, key: SessionKey) {
        let Some(parked) = self.cluster.parked.remove(&key) else {
            return;
        };
        if self.session(key).client_id != parked.client_id {
            return;
        }
        for (filter, info) in self.parkable(key) {
            // Already in the trie if the session never left it: then nothing changes.
            let _ = self.index_subscription(key, &filter, info);
        }
    }

    /// Forgets that session `key` was parked, as it leaves this node (its subscriptions leave
    /// the trie with it, and are not in it).
    pub(super) fn forget_parked(&mut self, key: SessionKey) {
        self.cluster.parked.remove(&key);
    }

    /// The subscriptions of session `key` that leave the trie while it is parked: all but tree
    /// views, whose members keep their place.
    fn parkable(&self, key: SessionKey) -> Vec<(TopicFilter, SubscriptionInfo)> {
        self.session(key)
            .subscriptions
            .iter()
            .filter(|(_, info)| info.tree_view.is_none())
            .map(|(filter, info)| (filter.clone(), *info))
            .collect()
    }

    /// Delivers a routed message to session `key`, unless it stays in the log: a QoS 1/2
    /// message from the log for a parked session, which reads it back when it resumes (but
    /// not a `$share` group's).
    pub(super) fn deliver_routed(
        &mut self,
        key: SessionKey,
        delivery: Delivery,
        feed: Feed,
        now: Time,
    ) {
        // A `$share` group's message is this member's alone: kept, as it is not read back.
        let left_in_log = self.config.cluster
            && delivery.qos != QoS::AtMostOnce
            && feed != (Feed::Routed { shared: true })
            && self.parked(key).is_some()
            && self.cluster.seqs.contains_key(&delivery.message.id);
        if !left_in_log {
            self.deliver(key, delivery, feed, now);
        }
    }

    /// Writes the records of the connected sessions whose cursor moved since it was last
    /// written, so that a node's death redelivers little of what their clients acknowledged.
    /// Called every few seconds (the cluster layer says when); between calls, the cursor in
    /// the record lags.
    pub fn cluster_checkpoint(&mut self) {
        if !self.config.cluster {
            return;
        }
        let moved: Vec<SessionKey> = self
            .cluster
            .written
            .iter()
            .filter(|(key, written)| {
                let live = self.sessions.get(key.0 as usize).and_then(Option::as_ref);
                live.is_some_and(|session| session.connection.is_some())
                    && self.cluster_cursor(**key) != **written
            })
            .map(|(key, _)| *key)
            .collect();
        for key in moved {
            self.cluster_session_saved_quietly(key);
        }
        let stats = self.stats();
        let load = (stats.clients_connected, stats.sessions);
        if self.cluster.load != Some(load) {
            self.cluster.load = Some(load);
            let (connections, sessions) = load;
            let op = ClusterOp::Load {
                connections,
                sessions,
            };
            self.cluster.ops.push_back(op);
        }
        let sessions = &self.sessions;
        self.cluster.written.retain(|key, _| {
            sessions
                .get(key.0 as usize)
                .and_then(Option::as_ref)
                .is_some_and(|session| session.connection.is_some())
        });
    }

    /// Remembers where the log stored `message`, forgetting messages no session holds any
    /// more once there are many.
    fn remember_seq(&mut self, message: &SharedMessage, seq: u64) {
        let seqs = &mut self.cluster.seqs;
        seqs.insert(message.id, (seq, Arc::downgrade(message)));
        if seqs.len() >= SEQS_PRUNE_AT.max(2 * self.cluster.seqs_pruned_len) {
            seqs.retain(|_, (_, held)| held.strong_count() > 0);
            self.cluster.seqs_pruned_len = seqs.len();
        }
    }

    /// Session `key`'s cursor into the log (see [`ClusterOp::SessionSaved`]): the place of the
    /// first QoS 1/2 message it holds unacknowledged, or past the last routed here when it
    /// holds none; `None` if it holds one whose place this node does not know.
    pub(super) fn cluster_cursor(&self, key: SessionKey) -> Option<u64> {
        let session = self.session(key);
        let held = session.inflight.iter().map(|entry| &entry.delivery);
        let mut first: Option<u64> = None;
        for delivery in held.chain(session.queue.iter()) {
            if delivery.message.qos == QoS::AtMostOnce {
                continue;
            }
            let (seq, _) = self.cluster.seqs.get(&delivery.message.id)?;
            first = Some(first.map_or(*seq, |first| first.min(*seq)));
        }
        Some(first.unwrap_or(self.cluster.last_seq + 1))
    }

    /// Hands a message accepted on this node to the cluster; returns whether it is to be
    /// routed here now. QoS 0 is, QoS 1/2 is routed when it comes back from the replicated
    /// log (see [`ClusterPublish::message`]). The broker's own `$SYS` messages stay on the
    /// node: their figures are its own.
    pub(super) fn forward_to_cluster(&mut self, message: &SharedMessage, now: Time) -> bool {
        if !self.config.cluster || Self::stays_on_node(message) {
            return true;
        }
        let session = message.origin.map(|key| self.session(key));
        let publisher = session.map(|s| s.client_id.clone());
        let acknowledges = session
            .and_then(|s| s.connection)
            .filter(|_| message.qos != QoS::AtMostOnce);
        let expiry_millis = message
            .expires_at
            .map(|at| at.as_millis().saturating_sub(now.as_millis()));
        let will = self.cluster.will_message == Some(message.id);
        let exactly_once = self
            .cluster
            .receiving
            .as_mut()
            .filter(|_| message.qos == QoS::ExactlyOnce)
            .map(|receiving| {
                let this = *receiving;
                receiving.part += 1;
                this
            });
        self.cluster
            .ops
            .push_back(ClusterOp::Publish(ClusterPublish {
                message: SharedMessage::clone(message),
                publisher,
                expiry_millis,
                acknowledges,
                will,
                exactly_once,
            }));
        // A retained message is routed once the cluster retains it, QoS 0 too (the cluster
        // layer hands it back): no subscriber here sees it before a new one could read it.
        message.qos == QoS::AtMostOnce && !message.retain
    }

    /// Accepts what a QoS 2 PUBLISH of packet identifier `packet_id` became (`accept`), its
    /// messages marked with their identity across nodes (see [`InboundQos2`]).
    pub(super) fn receive_qos2_once(
        &mut self,
        packet_id: u16,
        dup: bool,
        accept: impl FnOnce(&mut Self),
    ) {
        if self.config.cluster {
            let receiving = InboundQos2 {
                packet_id,
                dup,
                part: 0,
            };
            self.cluster.receiving = Some(receiving);
        }
        accept(self);
        self.cluster.receiving = None;
    }

    /// Tells the cluster that session `key`, on connection `id`, released its QoS 2 message
    /// `packet_id` (PUBREL); the PUBCOMP produced with it waits until that is recorded.
    pub(super) fn cluster_released(&mut self, id: ConnectionId, key: SessionKey, packet_id: u16) {
        if !self.config.cluster {
            return;
        }
        let client_id = self.session(key).client_id.clone();
        self.cluster.ops.push_back(ClusterOp::Released {
            client_id,
            packet_id,
            connection: Some(id),
        });
    }

    /// Records where the QoS 2 delivery of message `message_id` to session `key` stands now
    /// (see [`ClusterOp::Outbound`]); the packets `connection` gets with it wait until it is
    /// recorded. A delivery whose place in the log this node does not know (handed over from
    /// another node) is not recorded.
    pub(super) fn cluster_outbound(
        &mut self,
        key: SessionKey,
        connection: Option<ConnectionId>,
        packet_id: PacketId,
        message_id: u64,
        stage: OutboundStage,
    ) {
        if !self.config.cluster {
            return;
        }
        let Some(&(seq, _)) = self.cluster.seqs.get(&message_id) else {
            return;
        };
        let record = OutboundQos2 {
            packet_id: packet_id.get(),
            seq,
            stage,
        };
        let client_id = self.session(key).client_id.clone();
        self.cluster.ops.push_back(ClusterOp::Outbound {
            client_id,
            record,
            connection,
        });
    }

    /// Puts the QoS 2 deliveries in session `key`'s queue that a node had sent it (`records`,
    /// by the place of their message in the log) back in flight as they stood, so that the
    /// client gets each again under its packet identifier (DUP), or its PUBREL, and never as a
    /// new message; those completed go.
    pub(super) fn resume_outbound(&mut self, key: SessionKey, records: &[OutboundQos2]) {
        if records.is_empty() {
            return;
        }
        let by_seq: FxHashMap<u64, &OutboundQos2> =
            records.iter().map(|record| (record.seq, record)).collect();
        let queued: Vec<Delivery> = self.with_session(key, |session| {
            std::iter::from_fn(|| session.dequeue()).collect()
        });
        for delivery in queued {
            let record = self
                .cluster
                .seqs
                .get(&delivery.message.id)
                .filter(|_| delivery.qos == QoS::ExactlyOnce)
                .and_then(|(seq, _)| by_seq.get(seq));
            if record.is_some_and(|record| record.stage == OutboundStage::Completed) {
                self.delivery_done(key, delivery.seq);
                continue;
            }
            let resumed = record.and_then(|record| {
                let packet_id = PacketId::new(record.packet_id)?;
                let state = match record.stage {
                    OutboundStage::Released => OutgoingState::AwaitPubComp,
                    _ => OutgoingState::AwaitPubRec,
                };
                Some((packet_id, state))
            });
            self.with_session(key, |session| match resumed {
                Some((packet_id, state)) if session.find_inflight(packet_id).is_none() => {
                    session.restore_inflight(packet_id, delivery, state);
                }
                _ => session.restore_queued(delivery),
            });
        }
    }

    /// Counts a subscription added to the trie under `filter`.
    pub(super) fn interest_added(&mut self, filter: &TopicFilter) {
        if !self.config.cluster {
            return;
        }
        let filter = interest_filter(filter);
        let count = self.cluster.interest.entry(filter.clone()).or_insert(0);
        *count += 1;
        if *count == 1 {
            let op = ClusterOp::Interest {
                filter,
                present: true,
            };
            self.cluster.ops.push_back(op);
        }
    }

    /// Counts a subscription removed from the trie under `filter`.
    pub(super) fn interest_removed(&mut self, filter: &TopicFilter) {
        if !self.config.cluster {
            return;
        }
        let filter = interest_filter(filter);
        let Some(count) = self.cluster.interest.get_mut(&filter) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            self.cluster.interest.remove(&filter);
            let op = ClusterOp::Interest {
                filter,
                present: false,
            };
            self.cluster.ops.push_back(op);
        }
    }
}

/// The interest a subscription under `filter` needs, kept in allocations of its own (it
/// outlives the SUBSCRIBE it came in): a `$share` filter whole, as its group takes its
/// messages apart from the node's other subscriptions.
fn interest_filter(filter: &TopicFilter) -> TopicFilter {
    filter.detached()
}
