//! SUBSCRIBE and UNSUBSCRIBE: granting QoS, replacing identical filters, shared subscriptions,
//! and retained messages sent per Retain Handling.

use tern_codec::{
    AckProperties, Packet, ProtocolVersion, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    UnsubAck, Unsubscribe,
};

use super::Broker;
use crate::authz::Access;
use crate::tree::SubscriptionInfo;
use crate::types::{ConnectionId, SessionKey, Time};

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
        let mut feeds = false;
        let mut capped = Vec::new();
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
            // them as one snapshot, under the same rule; any other subscription as a feed paced
            // by the subscriber (retained_feed.rs).
            let send_retained = match options.retain_handling {
                RetainHandling::SendAtSubscribe => true,
                RetainHandling::SendIfNew => is_new,
                RetainHandling::DoNotSend => false,
            };
            if filter.is_shared() {
                continue;
            }
            match info.tree_view {
                Some(view) if send_retained => snapshots.push(view),
                Some(_) => {}
                None => {
                    let qos = options.qos;
                    if self.subscribe_retained(key, &filter, qos, identifier, send_retained) {
                        capped.push(filter.clone());
                    }
                    feeds |= send_retained;
                }
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
        let mut suback = SubAck {
            packet_id: subscribe.packet_id,
            properties: AckProperties::default(),
            reason_codes,
        };
        if let Some(user_properties) = self.capped_properties(id, &capped) {
            let plain = suback.clone();
            suback.properties.user_properties = user_properties;
            // Left out if it would pass the client's Maximum Packet Size (MQTT-3.9.2-2).
            let fits = self
                .connections
                .get(&id)
                .is_some_and(|c| super::fits(c, &Packet::SubAck(suback.clone())));
            if !fits {
                suback = plain;
            }
        }
        self.send(id, Packet::SubAck(suback));
        if feeds {
            self.pump(key, now);
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
                self.stop_retained_feed(key, &filter);
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
