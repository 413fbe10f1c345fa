//! SUBSCRIBE and UNSUBSCRIBE: granting QoS, replacing identical filters, shared subscriptions,
//! and retained messages sent per Retain Handling.

use std::sync::Arc;

use tern_codec::{
    AckProperties, Packet, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscriptionIds, UnsubAck, Unsubscribe,
};

use super::Broker;
use crate::authz::Access;
use crate::session::Delivery;
use crate::tree::SubscriptionInfo;
use crate::types::{ConnectionId, SessionKey, SharedMessage, Time};

impl Broker {
    pub(super) fn handle_subscribe(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        subscribe: Subscribe,
        now: Time,
    ) {
        let identifier = subscribe.properties.subscription_identifier;
        let mut reason_codes = Vec::new();
        let mut retained_to_send: Vec<(SharedMessage, QoS, Option<u32>)> = Vec::new();
        let mut snapshots = Vec::new();
        for subscription in subscribe.subscriptions.iter() {
            let filter = subscription.filter;
            let limits = &self.config.limits;
            if filter.len() > limits.topic_length_max_bytes
                || filter.split('/').count() > limits.topic_levels_max
            {
                reason_codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            }
            if !self.authorize(id, Access::Subscribe, &filter) {
                self.denied(id, Access::Subscribe, &filter);
                // 0x87 Not authorized; a 3.1.1 SUBACK carries it as 0x80 Failure.
                reason_codes.push(ReasonCode::NotAuthorized);
                continue;
            }
            let session = self.session(key);
            let is_new = !session.subscriptions.contains_key(&filter);
            if is_new && session.subscriptions.len() >= limits.subscriptions_per_session_max {
                reason_codes.push(ReasonCode::QuotaExceeded);
                continue;
            }
            let mut options = subscription.options;
            options.qos = options.qos.min(limits.qos_max);
            let info = SubscriptionInfo {
                options,
                identifier,
                tree_view: None,
            };
            let Ok(info) = self.index_subscription(key, &filter, info) else {
                reason_codes.push(ReasonCode::TopicFilterInvalid);
                continue;
            };
            self.session_mut(key)
                .subscriptions
                .insert(filter.clone(), info);
            reason_codes.push(granted_code(options.qos));

            // Retained messages go to a new or replaced subscription per Retain Handling
            // (MQTT-3.3.1-9/-10/-11), never to a shared subscription (4.8.2). A tree view gets
            // them as one snapshot, under the same rule.
            let send_retained = !filter.is_shared()
                && match options.retain_handling {
                    RetainHandling::SendAtSubscribe => true,
                    RetainHandling::SendIfNew => is_new,
                    RetainHandling::DoNotSend => false,
                };
            if let (true, Some(view)) = (send_retained, info.tree_view) {
                snapshots.push(view);
            } else if send_retained {
                let first = retained_to_send.len();
                self.retained.tree().for_each_match(&filter, |message| {
                    if !message.is_expired(now) {
                        retained_to_send.push((Arc::clone(message), options.qos, identifier));
                    }
                });
                // In topic order: the same on every run, and easy to read for a person.
                retained_to_send[first..].sort_by(|a, b| a.0.topic.cmp(&b.0.topic));
            }
        }
        // The record is saved before the SUBACK is released, so a durable store acknowledges
        // only a subscription it holds.
        self.save_session(key);
        let v31 = self.connections.get(&id).map(|c| c.version) == Some(ProtocolVersion::V31);
        if v31 && reason_codes.iter().any(|code| !code.is_success()) {
            // An MQTT 3.1 SUBACK can only grant: its byte would be read as a granted QoS, so a
            // refused filter is said the one way 3.1 has, by closing the connection.
            self.violation(
                id,
                ReasonCode::UnspecifiedError,
                "subscription refused, and MQTT 3.1 has no SUBACK failure code",
                now,
            );
            return;
        }
        let suback = SubAck {
            packet_id: subscribe.packet_id,
            properties: AckProperties::default(),
            reason_codes,
        };
        self.send(id, Packet::SubAck(suback));
        for (message, granted, identifier) in retained_to_send {
            let delivery = Delivery {
                seq: 0,
                qos: message.qos.min(granted),
                // A retained message sent because of a subscription keeps RETAIN set (MQTT-3.3.1-8).
                retain: true,
                subscription_ids: SubscriptionIds::from_ids(identifier).unwrap_or_default(),
                charge: message.charge(),
                message,
            };
            self.deliver(key, delivery, super::publish::Feed::Broker, now);
        }
        for view in snapshots {
            self.start_tree_snapshot(view, key, now);
        }
    }

    pub(super) fn handle_unsubscribe(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        unsubscribe: Unsubscribe,
    ) {
        let mut reason_codes = Vec::new();
        for filter in unsubscribe.filters.iter() {
            let removed = self.session_mut(key).subscriptions.remove(&filter);
            let existed = removed.is_some();
            if let Some(info) = removed {
                self.unindex_subscription(key, &filter, &info);
            }
            reason_codes.push(if existed {
                ReasonCode::Success
            } else {
                ReasonCode::NoSubscriptionExisted
            });
        }
        // Reason codes are MQTT 5's; UNSUBACK had none before.
        let version = self.connections.get(&id).map(|c| c.version);
        if version != Some(ProtocolVersion::V5) {
            reason_codes.clear();
        }
        let unsuback = UnsubAck {
            packet_id: unsubscribe.packet_id,
            properties: AckProperties::default(),
            reason_codes,
        };
        self.save_session(key);
        self.send(id, Packet::UnsubAck(unsuback));
    }
}

fn granted_code(qos: QoS) -> ReasonCode {
    match qos {
        QoS::AtMostOnce => ReasonCode::GRANTED_QOS_0,
        QoS::AtLeastOnce => ReasonCode::GrantedQos1,
        QoS::ExactlyOnce => ReasonCode::GrantedQos2,
    }
}
