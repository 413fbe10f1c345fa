//! `$SYS/broker/...` topics: the usual statistics, published as retained messages on request
//! of the runtime (every few seconds); and on a cluster node the cluster view,
//! `$SYS/cluster/nodes/<node>/...`, as the nodes' leases say.

use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{PublishProperties, QoS, TopicName};

use super::Broker;
use crate::cluster::NodeStatus;
use crate::types::{Message, Time};

/// Counts only the runtime sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrafficTotals {
    /// Bytes read from clients.
    pub bytes_received: u64,
    /// Bytes written to clients.
    pub bytes_sent: u64,
    /// Packets the runtime could not encode (and so did not send).
    pub encode_errors: u64,
    /// Client sockets that failed on a read, a write or the close.
    pub socket_errors: u64,
}

impl Broker {
    /// Publishes the `$SYS/broker/...` statistics as retained QoS 0 messages.
    pub fn publish_sys(&mut self, now: Time, traffic: TrafficTotals, version: &str) {
        let mut stats = self.stats();
        self.add_flow_stats(&mut stats, Some(now));
        let values: [(&str, String); 34] = [
            ("version", version.to_owned()),
            ("uptime", format!("{} seconds", self.uptime_secs(now))),
            ("clients/connected", stats.clients_connected.to_string()),
            ("clients/total", stats.sessions.to_string()),
            ("messages/received", stats.publish_received.to_string()),
            ("messages/sent", stats.publish_sent.to_string()),
            ("messages/dropped", stats.publish_dropped.to_string()),
            (
                "messages/dropped/memory",
                stats.publish_dropped_memory.to_string(),
            ),
            ("clients/shed", stats.sessions_shed.to_string()),
            ("clients/cut_loose", stats.subscribers_cut_loose.to_string()),
            ("clients/congested", stats.subscribers_congested.to_string()),
            ("publishers/held", stats.publishers_held.to_string()),
            ("publishers/paused", stats.publishers_paused.to_string()),
            ("publishers/acks_held", stats.acks_held.to_string()),
            ("publishers/held_millis", stats.held_millis.to_string()),
            ("publishers/paused_millis", stats.paused_millis.to_string()),
            ("memory/held", stats.held_bytes.to_string()),
            (
                "memory/maximum",
                self.config.limits.memory_max_bytes.to_string(),
            ),
            ("retained messages/count", stats.retained.to_string()),
            ("retained messages/bytes", stats.retained_bytes.to_string()),
            (
                "retained messages/refused",
                stats.retained_refused.to_string(),
            ),
            (
                "retained messages/capped",
                stats.retained_capped.to_string(),
            ),
            ("subscriptions/count", stats.subscriptions.to_string()),
            ("bytes/received", traffic.bytes_received.to_string()),
            ("bytes/sent", traffic.bytes_sent.to_string()),
            ("messages/denied", stats.publish_denied.to_string()),
            ("subscriptions/denied", stats.subscribe_denied.to_string()),
            ("clients/auth_failures", stats.auth_failures.to_string()),
            ("clients/auth_checks_run", stats.auth_checks_run.to_string()),
            (
                "clients/auth_checks_skipped",
                stats.auth_checks_skipped.to_string(),
            ),
            ("clients/auth_queue_full", stats.auth_queue_full.to_string()),
            (
                "clients/logins_throttled",
                stats.logins_throttled.to_string(),
            ),
            ("errors/encode", traffic.encode_errors.to_string()),
            ("errors/socket", traffic.socket_errors.to_string()),
        ];
        for (name, value) in values {
            self.publish_sys_value(format!("$SYS/broker/{name}"), value, now);
        }
        self.close_oversized(now);
    }

    /// Publishes the cluster view as `nodes` (every node the cluster has, from their leases)
    /// say: `$SYS/cluster/nodes/<node>/state` (`alive` or `dead`), and for a live node
    /// `.../clients/connected` and `.../clients/total` (sessions) as it last reported them;
    /// retained on this node like `$SYS/broker/...`, each published when it changes, and
    /// cleared (an empty retained message) when it no longer applies.
    pub fn cluster_nodes(&mut self, nodes: Vec<NodeStatus>, now: Time) {
        let mut view = std::collections::BTreeMap::new();
        for node in nodes {
            let prefix = format!("$SYS/cluster/nodes/{}", node.id);
            let state = if node.alive { "alive" } else { "dead" };
            view.insert(format!("{prefix}/state"), state.to_owned());
            if let Some((connections, sessions)) = node.load.filter(|_| node.alive) {
                view.insert(
                    format!("{prefix}/clients/connected"),
                    connections.to_string(),
                );
                view.insert(format!("{prefix}/clients/total"), sessions.to_string());
            }
        }
        let gone: Vec<String> = self
            .cluster
            .view
            .keys()
            .filter(|topic| !view.contains_key(*topic))
            .cloned()
            .collect();
        for topic in gone {
            self.cluster.view.remove(&topic);
            self.publish_sys_value(topic, String::new(), now);
        }
        for (topic, value) in view {
            if self.cluster.view.get(&topic) != Some(&value) {
                self.cluster.view.insert(topic.clone(), value.clone());
                self.publish_sys_value(topic, value, now);
            }
        }
        self.close_oversized(now);
    }

    /// Publishes `value` on the broker's own `topic` as a retained QoS 0 message (empty: the
    /// topic's retained message cleared).
    fn publish_sys_value(&mut self, topic: String, value: String, now: Time) {
        let Ok(topic) = topic.parse::<TopicName>() else {
            return;
        };
        let message = Message {
            id: self.next_message_id(),
            topic,
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: None,
            origin: None,
        };
        self.accept_message(Arc::new(message), now);
    }
}
