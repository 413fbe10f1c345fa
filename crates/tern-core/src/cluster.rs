//! What a node tells the other nodes of a cluster, and what it hears from them, as plain data.
//!
//! The core knows nothing of NATS or any transport. With [`crate::Config::cluster`] on, it
//! emits [`ClusterOp`]s (polled with [`crate::Broker::poll_cluster_op`], as store operations
//! are) and takes [`ClusterInput`]s: messages from other nodes
//! ([`crate::Broker::deliver_from_cluster`]), the outcome of a session claim
//! ([`crate::Broker::claim_settled`]), a session taken over by another node
//! ([`crate::Broker::session_taken_over`]). The runtime carries them; `tern-cluster` puts them
//! on NATS. See ARCHITECTURE.md, "Cluster over NATS JetStream".
//!
//! Times inside the sessions that cross ([`SessionRecord`], [`StoredSession`]) are relative:
//! milliseconds from the moment the core emitted or took them, since every node's `Time`
//! starts at its own zero.

use bytes::Bytes;
use tern_codec::{MqttString, PublishProperties, QoS, TopicFilter, TopicName};

use crate::store::{SessionRecord, StoredSession};
use crate::types::{ConnectionId, SharedMessage};

/// One thing the other nodes must hear.
#[derive(Debug, Clone)]
pub enum ClusterOp {
    /// A message accepted on this node, for every node with interest in its topic.
    Publish(ClusterPublish),
    /// This node now holds a subscription under `filter` (`present`), or no longer any. Sent
    /// once per change of the count of subscriptions under one filter between 0 and 1.
    Interest {
        /// The filter. A `$share` filter comes whole: the cluster hands each message of its
        /// group to one node with members ([`RemoteMessage::shared`]), apart from the copies
        /// for the node's other subscriptions.
        filter: TopicFilter,
        /// Whether the node now has interest in it.
        present: bool,
    },
    /// A CONNECT waits until this node owns the session of its client identifier across the
    /// cluster, taken over from the node that held it if need be; answer with
    /// [`crate::Broker::claim_settled`].
    Claim(SessionClaim),
    /// The claim of `connection` is settled and the session it claimed holds its own interest
    /// (after this operation's [`ClusterOp::Interest`] ones): what the cluster layer held for it
    /// meanwhile may go.
    ClaimDone {
        /// The connection whose CONNECT claimed.
        connection: ConnectionId,
    },
    /// The record of a session owned here changed (its subscriptions, its expiry): it is written
    /// where other nodes find it, only if this node still owns it (fencing). Its deadlines are
    /// left out: they are this node's to keep.
    SessionSaved {
        /// The record, boxed: ops of this kind are rarer than messages, and larger.
        record: Box<SessionRecord>,
        /// Its connection, whose packets produced with this operation (a SUBACK, the CONNACK)
        /// wait until the record is written.
        connection: Option<ConnectionId>,
        /// The session's cursor into the replicated log: every QoS 1/2 message stored before
        /// it that the session's subscriptions match has been delivered and acknowledged, or
        /// was never the session's. `None` when this node cannot tell (the session holds
        /// messages handed over from another node): the cursor last recorded stands.
        cursor: Option<u64>,
        /// For a session without a connection: the first place in the log from which this
        /// node keeps none of its QoS 1/2 messages (they stay in the log, read back when the
        /// session resumes); `None` while it has a connection.
        resume_from: Option<u64>,
    },
    /// A session adopted here ([`crate::Broker::session_adopted`]) holds its own interest now:
    /// what the cluster layer held for it meanwhile may go.
    AdoptDone {
        /// The session's client identifier.
        client_id: MqttString,
    },
    /// A session owned here ended.
    SessionEnded {
        /// Its client identifier.
        client_id: MqttString,
    },
    /// The answer to [`crate::Broker::session_taken_over`] with a token: what this node hands
    /// over of the session, `None` if it had nothing to hand over or the claimant starts afresh.
    HandedOver {
        /// The token the cluster layer gave.
        token: u64,
        /// The session's client identifier.
        client_id: MqttString,
        /// The session (times relative to when it was handed over), boxed: this is rare.
        session: Option<Box<StoredSession>>,
        /// Where the session's queue went on in the log: it was offline here, and this node
        /// kept none of the QoS 1/2 messages stored from there on (see
        /// [`ClusterOp::SessionSaved`]).
        resume_from: Option<u64>,
    },
    /// A QoS 2 delivery to session `client_id` moved on: recorded where a node that resumes the
    /// session without its holder's hand-over (the holder died) finds it, so the client gets
    /// the same packet identifier again (DUP) or a PUBREL, never the message as a new one.
    Outbound {
        /// The session's client identifier.
        client_id: MqttString,
        /// Where the delivery stands.
        record: OutboundQos2,
        /// The connection whose packets produced with this operation (the PUBLISH, the PUBREL)
        /// wait until it is recorded; `None` when nothing waits (PUBCOMP).
        connection: Option<ConnectionId>,
    },
    /// How many connections and sessions this node holds now, for the cluster view the other
    /// nodes publish under `$SYS/cluster/nodes/` (see [`ClusterInput::Nodes`]); sent with a
    /// checkpoint when it changed.
    Load {
        /// Clients connected.
        connections: u64,
        /// Sessions held, with a connection or without.
        sessions: u64,
    },
    /// The publisher of session `client_id` released its QoS 2 message `packet_id` (PUBREL):
    /// whatever remembers the identifier across nodes forgets it. Sent for every PUBREL, known
    /// here or not: the message may have come in on a node that has since died.
    Released {
        /// The session's client identifier.
        client_id: MqttString,
        /// The packet identifier, free for a new message once the PUBCOMP goes out.
        packet_id: u16,
        /// The connection whose PUBCOMP, produced with this operation, waits until the
        /// identifier is forgotten: a PUBREL the node dies before handling is sent again to
        /// another node, and forgets it there.
        connection: Option<ConnectionId>,
    },
    /// A new subscription of this node wants the retained messages of its filter: answer with
    /// [`ClusterInput::RetainedReady`] once the node's subscriptions of this batch are in place
    /// and its copy of the cluster's retained messages holds every one written before then
    /// (see [`crate::Broker::cluster_retained_ready`]).
    RetainedWanted {
        /// What the answer names.
        token: u64,
    },
}

/// A change to the cluster's retained messages, as the node's copy of them takes it
/// ([`crate::Broker::retained_from_cluster`]).
#[derive(Debug, Clone)]
pub struct RetainedEntry {
    /// Its revision: the later of two changes of one topic wins, on every node.
    pub revision: u64,
    /// The topic.
    pub topic: TopicName,
    /// The message now retained, `None` once deleted (or expired).
    pub message: Option<RemoteMessage>,
}

/// Where a QoS 2 delivery to a session stands, by its packet identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundQos2 {
    /// The packet identifier it was sent with.
    pub packet_id: u16,
    /// Where the replicated log stored the message.
    pub seq: u64,
    /// How far its exchange got.
    pub stage: OutboundStage,
}

/// How far a QoS 2 delivery's exchange got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundStage {
    /// The PUBLISH is (about to be) sent: resent with DUP under the same identifier.
    Sent,
    /// The client's PUBREC came and the PUBREL is (about to be) sent: the PUBREL is sent again.
    Released,
    /// The PUBCOMP came (or a PUBREC refusing the message): nothing is owed, and the message
    /// is not sent again, though the session's cursor may not have passed it yet.
    Completed,
}

/// A QoS 2 PUBLISH's identity across nodes: the publisher's session and packet identifier.
/// A copy sent again (DUP) to another node, after the node that took the first one died
/// before its PUBREC reached the client, must be stored in the log once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboundQos2 {
    /// The PUBLISH's packet identifier.
    pub packet_id: u16,
    /// Whether the client sent it as a resend (DUP): only a resend may be a message the
    /// cluster already has.
    pub dup: bool,
    /// Which of the messages the PUBLISH became (a `$tree/` publish may spread into several),
    /// from 0.
    pub part: u32,
}

/// A CONNECT's claim on the session of its client identifier.
#[derive(Debug, Clone)]
pub struct SessionClaim {
    /// The connection that sent the CONNECT.
    pub connection: ConnectionId,
    /// The client identifier.
    pub client_id: MqttString,
    /// Whether the client asked for a clean start: the session's previous holder then ends it
    /// (publishing its will by the usual rules) rather than handing it over.
    pub clean_start: bool,
}

/// How a claim ended.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    /// This node owns the session now.
    Owned {
        /// The session as the node that held it handed it over (times relative to when the
        /// input was made), or as the cluster last recorded it when that node could not answer;
        /// `None` when there was none, or the client starts afresh.
        handed_over: Option<Box<StoredSession>>,
        /// QoS 1/2 messages for the session that came while it was being handed over, in the
        /// order they came: they are the claimant's to deliver, not the previous holder's.
        backlog: Vec<RemoteMessage>,
        /// The QoS 2 deliveries of the backlog a node had sent the session, as recorded: they
        /// go out again as they stood (see [`ClusterOp::Outbound`]).
        outbound: Vec<OutboundQos2>,
    },
    /// The session could not be claimed (the cluster is out of reach): the CONNECT is refused
    /// with Server unavailable.
    Unavailable,
}

/// A message accepted on this node for the other nodes.
#[derive(Debug, Clone)]
pub struct ClusterPublish {
    /// The message. QoS 0: already routed on this node. QoS 1 and 2: not routed here yet; every
    /// node, this one included, routes it when it comes back from the replicated log, so all
    /// deliver the same messages in the log's order, and only what was replicated.
    pub message: SharedMessage,
    /// The client identifier of the publishing session, for No Local on every node.
    pub publisher: Option<MqttString>,
    /// What remained of the message's expiry when the operation was emitted, in milliseconds.
    pub expiry_millis: Option<u64>,
    /// The connection whose acknowledgement (PUBACK, PUBREC) must wait until the message is
    /// replicated: its packets produced with this operation are held until then. `None` for
    /// QoS 0 and for messages no client waits on (wills).
    pub acknowledges: Option<ConnectionId>,
    /// Whether it is the publisher's will: every node that may publish it (its owner, a node
    /// adopting the session of a dead one) gives it the same identity in the log, so it is
    /// stored once.
    pub will: bool,
    /// For a message a client published at QoS 2: its identity across nodes, so that a resend
    /// to another node is stored once.
    pub exactly_once: Option<InboundQos2>,
}

/// A message another node accepted (or, for QoS 1 and 2, this node, back from the log).
#[derive(Debug, Clone)]
pub struct RemoteMessage {
    /// Its topic.
    pub topic: TopicName,
    /// Its payload.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// Whether it was published with RETAIN.
    pub retain: bool,
    /// Its properties (no topic alias, no subscription identifiers, no expiry interval).
    pub properties: PublishProperties,
    /// What remains of its expiry, in milliseconds.
    pub expiry_millis: Option<u64>,
    /// The client identifier of the publishing session, for No Local.
    pub publisher: Option<MqttString>,
    /// Where the replicated log stored it (QoS 1/2); `None` for QoS 0, which is not stored.
    pub seq: Option<u64>,
    /// The `$share` filter whose group this copy is for: the cluster picked this node to give
    /// it to one member of that group here. `None` for the copy the node's other
    /// subscriptions take (which no group takes).
    pub shared: Option<TopicFilter>,
    /// For a message published with RETAIN: the revision under which the cluster retains it
    /// (or deleted its topic's, for an empty one), which the node's copy of the retained
    /// messages takes too (see [`RetainedEntry`]).
    pub retained_revision: Option<u64>,
}

/// The operations of one input batch, numbered, as the runtime hands them to the cluster layer.
#[derive(Debug, Clone)]
pub struct ClusterBatch {
    /// Its number; batches are numbered 1, 2, 3, ... in the order they are sent.
    pub seq: u64,
    /// Its operations, in order.
    pub ops: Vec<ClusterOp>,
}

/// What the cluster layer tells the runtime.
#[derive(Debug, Clone)]
pub enum ClusterInput {
    /// Messages from the cluster, for [`crate::Broker::deliver_from_cluster`], in the order
    /// they arrived.
    Deliver(Vec<RemoteMessage>),
    /// Every batch up to and including this number has been handed on, and its QoS 1/2
    /// messages are replicated: the acknowledgements held for them may go.
    Through(u64),
    /// Whether the cluster is within reach: the node lost (`false`) or regained (`true`) its
    /// connection to it. See [`crate::Broker::set_cluster_reachable`].
    Reachable(bool),
    /// The claim of a CONNECT is settled: see [`crate::Broker::claim_settled`].
    ClaimSettled {
        /// The connection whose CONNECT claimed.
        connection: ConnectionId,
        /// How it ended.
        outcome: ClaimOutcome,
    },
    /// Another node took over the session of `client_id`: see
    /// [`crate::Broker::session_taken_over`].
    TakenOver {
        /// The session's client identifier.
        client_id: MqttString,
        /// Whether the new connection starts afresh.
        clean_start: bool,
        /// With a token, the claimant waits for the session ([`ClusterOp::HandedOver`]);
        /// without, this node found out it lost the session (a write of it was refused).
        token: Option<u64>,
    },
    /// Time to write the cursors that moved: see [`crate::Broker::cluster_checkpoint`].
    Checkpoint,
    /// This node adopted the session of a node that died: see
    /// [`crate::Broker::session_adopted`].
    Adopted {
        /// The session as the dead node last recorded it (times relative), its will included.
        session: Box<StoredSession>,
        /// The QoS 1/2 messages owed to it from its cursor on, in the log's order.
        backlog: Vec<RemoteMessage>,
        /// The QoS 2 deliveries of the backlog the dead node had sent, as recorded.
        outbound: Vec<OutboundQos2>,
    },
    /// The nodes the cluster has, as their leases say: see [`crate::Broker::cluster_nodes`].
    Nodes(Vec<NodeStatus>),
    /// Changes to the cluster's retained messages, in the order of their revisions: see
    /// [`crate::Broker::retained_from_cluster`].
    Retained(Vec<RetainedEntry>),
    /// The subscriptions that asked ([`ClusterOp::RetainedWanted`]) may read the retained
    /// messages now: see [`crate::Broker::cluster_retained_ready`].
    RetainedReady(Vec<u64>),
    /// The cluster layer stopped and will do nothing more; why.
    Failed(String),
}

/// A node of the cluster as its lease last said, for the cluster view under `$SYS/cluster/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// Its node identifier (letters, digits, `-`, `_`).
    pub id: String,
    /// Whether its lease is current.
    pub alive: bool,
    /// What it last reported of its load (see [`ClusterOp::Load`]); `None` for a dead node,
    /// or one that has not reported yet.
    pub load: Option<(u64, u64)>,
}
