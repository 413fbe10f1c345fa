//! What a node tells the other nodes of a cluster, and what it hears from them, as plain data.
//!
//! The core knows nothing of NATS or any transport. With [`crate::Config::cluster`] on, it
//! emits [`ClusterOp`]s (polled with [`crate::Broker::poll_cluster_op`], as store operations
//! are) and takes [`RemoteMessage`]s (with [`crate::Broker::deliver_from_cluster`]). The
//! runtime carries them; `tern-cluster` puts them on NATS. See ARCHITECTURE.md, "Cluster over
//! NATS JetStream".

use bytes::Bytes;
use tern_codec::{MqttString, PublishProperties, QoS, TopicFilter, TopicName};

use crate::types::{ConnectionId, SharedMessage};

/// One thing the other nodes must hear.
#[derive(Debug, Clone)]
pub enum ClusterOp {
    /// A message accepted on this node, for every node with interest in its topic.
    Publish(ClusterPublish),
    /// This node now holds a subscription under `filter` (`present`), or no longer any. Sent
    /// once per change of the count of subscriptions under one filter between 0 and 1.
    Interest {
        /// The filter (for a `$share` subscription, its inner filter).
        filter: TopicFilter,
        /// Whether the node now has interest in it.
        present: bool,
    },
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
    /// The cluster layer stopped and will do nothing more; why.
    Failed(String),
}
