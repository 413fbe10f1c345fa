//! PUBLISH in both directions: topic aliases, the inbound QoS 1 handshake (QoS 2's are in
//! qos2.rs), retained messages, routing to subscribers, and the outbound window that honours
//! Receive Maximum.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use tern_codec::{
    Ack, ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionIds, TopicFilter, TopicName,
};

use super::fleet_fence;
use super::retained_store::{retained_size, RetainedLimit};
use super::tree_view::Outgoing;
use super::Broker;
use crate::authz::Access;
use crate::cluster::OutboundStage;
use crate::config::Overload;
use crate::connection::{Connection, OutgoingPublish};
use crate::events::{CutReason, DropReason, Event};
use crate::session::{Delivery, FlowState, OutgoingState, Session};
use crate::store::{DeliveryStage, StoreOp};
use crate::tree::{Match, Readiness};
use crate::tree_view::TREE_PREFIX;
use crate::types::{ConnectionId, Message, SessionKey, SharedMessage, Time};

/// Where a delivery comes from, which decides what a full queue does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Feed {
    /// Routed from a PUBLISH or a will: under backpressure a connected subscriber keeps it past
    /// its queue limits and holds the publisher (flow.rs); `shared` for a `$share` member.
    Routed {
        /// Whether through a shared subscription.
        shared: bool,
    },
    /// Sent by the broker itself (`$tree/` snapshots and deltas, the QoS 0 messages of a
    /// retained feed): there is no publisher to hold, and past the queue limits the newest is
    /// dropped. (A retained feed's QoS 1/2 messages enter at the head of the queue, outside its
    /// limits and outside flow control: retained_feed.rs.)
    Broker,
}

impl Broker {
    pub(super) fn handle_publish(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        mut publish: Publish,
        now: Time,
    ) {
        self.stats.received(publish.qos);
        self.fleet_count_in(id);
        if !self.within_publish_rate(id, now) {
            self.violation(
                id,
                ReasonCode::MessageRateTooHigh,
                "publish rate above the per-client limit",
                now,
            );
            return;
        }
        let limits = &self.config.limits;
        if publish.qos > limits.qos_max {
            self.violation(
                id,
                ReasonCode::QosNotSupported,
                "QoS above the maximum",
                now,
            );
            return;
        }
        if publish.retain && !limits.retain_available {
            self.violation(
                id,
                ReasonCode::RetainNotSupported,
                "retain is not available",
                now,
            );
            return;
        }
        if let Err((code, detail)) = self.resolve_topic_alias(id, &mut publish) {
            self.violation(id, code, detail, now);
            return;
        }
        if let Err(detail) = self.check_topic(&publish.topic) {
            self.violation(id, ReasonCode::TopicNameInvalid, detail, now);
            return;
        }
        let v5 = self.is_v5(id);
        let packet_id = publish.packet_id;
        let qos = publish.qos;
        // What is routed, or the reason code it is refused with. A `$tree/` publish is checked
        // per resulting topic when it is spread.
        let outcome = if publish.topic.starts_with(TREE_PREFIX) {
            self.prepare_publish(id, publish)
                .map_err(|(code, detail, topic)| {
                    let client_id = self.session(key).client_id.clone();
                    self.events.push_back(Event::PublishRefused {
                        client_id,
                        topic,
                        reason: code,
                        detail,
                    });
                    code
                })
        } else if self.authorize(id, Access::Publish, &publish.topic) {
            Ok(Outgoing::One(publish))
        } else {
            self.denied(id, Access::Publish, &publish.topic);
            Err(ReasonCode::NotAuthorized)
        };
        let outcome = outcome.and_then(|outgoing| self.within_retained_limits(key, outgoing));
        match (qos, packet_id) {
            (QoS::AtMostOnce, _) => {
                if let Ok(outgoing) = outcome {
                    self.accept_outgoing(Some(key), None, outgoing, now);
                }
            }
            // A QoS 1 message counts against the window until its PUBACK, like a QoS 2 one
            // until its PUBCOMP: held acknowledgements (flow.rs) make that reachable.
            (QoS::AtLeastOnce, Some(_)) if v5 && self.receive_maximum_reached(id, key) => {
                self.violation(
                    id,
                    ReasonCode::ReceiveMaximumExceeded,
                    "too many QoS 1/2 publishes unacknowledged",
                    now,
                );
            }
            (QoS::AtLeastOnce, Some(packet_id)) => {
                let mut ack = Ack::new(packet_id);
                match outcome {
                    // 3.1.1 has no way to say no: the message is dropped, the ack still sent.
                    Err(code) => {
                        if v5 {
                            ack.reason_code = code;
                        }
                    }
                    Ok(outgoing) => {
                        self.collect_congested();
                        if self.accept_outgoing(Some(key), None, outgoing, now) == Some(0) {
                            ack.reason_code = ReasonCode::NoMatchingSubscribers;
                        }
                    }
                }
                // Held back while a subscriber it fed is congested (flow.rs).
                self.acknowledge(id, ack, false, None, now);
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                self.receive_qos2(id, key, packet_id, outcome, now);
            }
            // The codec guarantees a packet identifier for QoS 1 and 2.
            (_, None) => self.violation(
                id,
                ReasonCode::ProtocolError,
                "QoS > 0 without packet identifier",
                now,
            ),
        }
    }

    /// Replaces an empty topic by its alias, or records a new alias (MQTT 5, 3.3.2.3.4).
    fn resolve_topic_alias(
        &mut self,
        id: ConnectionId,
        publish: &mut Publish,
    ) -> Result<(), (ReasonCode, &'static str)> {
        let Some(alias) = publish.properties.take_topic_alias() else {
            return Ok(());
        };
        let max = self.config.limits.topic_alias_max;
        let Some(connection) = self.connections.get_mut(&id) else {
            return Ok(());
        };
        if connection.version != ProtocolVersion::V5 || alias > max {
            return Err((
                ReasonCode::TopicAliasInvalid,
                "topic alias above the maximum",
            ));
        }
        if publish.topic.is_empty() {
            match connection.aliases.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err((ReasonCode::ProtocolError, "unknown topic alias")),
            }
        } else {
            connection.aliases.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    /// Applies the topic length and depth limits.
    pub(super) fn check_topic(&self, topic: &TopicName) -> Result<(), &'static str> {
        let limits = &self.config.limits;
        if topic.len() > limits.topic_length_max_bytes {
            return Err("topic name too long");
        }
        // A plain byte count: it vectorises, where splitting searches level by level.
        let levels = topic.bytes().filter(|&byte| byte == b'/').count() + 1;
        if levels > limits.topic_levels_max {
            return Err("topic name has too many levels");
        }
        Ok(())
    }

    /// Routes what an accepted PUBLISH of `origin` became; returns the subscriptions matched,
    /// or `None` where that is not known yet (a cluster routes QoS 1/2 once replicated).
    /// `device`: the udid of a fleet device publishing in a request with its own key (whether
    /// or not it has a session), whose notifications and registrations count as over MQTT.
    pub(super) fn accept_outgoing(
        &mut self,
        origin: Option<SessionKey>,
        device: Option<&str>,
        outgoing: Outgoing,
        now: Time,
    ) -> Option<usize> {
        match outgoing {
            Outgoing::One(publish) => self.accept_publish(origin, device, publish, now),
            Outgoing::Spread(publishes) => {
                // Every one is published, whatever the matches of the others.
                let mut matched = Some(0);
                for publish in publishes {
                    let one = self.accept_publish(origin, device, publish, now);
                    matched = matched.zip(one).map(|(sum, one)| sum + one);
                }
                matched
            }
        }
    }

    /// Turns an accepted PUBLISH into a message and routes it; returns the subscriptions
    /// matched, if known.
    fn accept_publish(
        &mut self,
        origin: Option<SessionKey>,
        device: Option<&str>,
        publish: Publish,
        now: Time,
    ) -> Option<usize> {
        self.fleet_notify_inbound(origin, device, &publish, now);
        let mut properties = publish.properties;
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|secs| now.plus_secs(secs));
        properties.clear_subscription_identifiers();
        let message = Message {
            id: self.next_message_id(),
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties,
            expires_at,
            origin,
        };
        let message = Arc::new(message);
        let matched = self.accept_message(Arc::clone(&message), now);
        self.fleet_registration(origin, device, &message, now);
        matched
    }

    /// Stores or clears the retained copy, then routes; returns the subscriptions matched (`None`
    /// for a message the cluster routes once replicated).
    pub(super) fn accept_message(&mut self, message: SharedMessage, now: Time) -> Option<usize> {
        // On a cluster node the cluster keeps it, and the node's copy takes it from there
        // (cluster/retained.rs).
        if message.retain && !self.retained_by_cluster(&message) {
            // The broker's own `$SYS` statistics are current only while it runs: never stored.
            let durable = !(message.origin.is_none() && message.topic.is_dollar());
            if message.payload.is_empty() {
                // An empty retained message clears the topic (MQTT-3.3.1-6): the store keeps
                // only that it was deleted (kv.rs).
                let had = self.retained.clear(&message.topic).is_some();
                self.retained_deleted(&message.topic, had, durable);
            } else if let Err(limit) = self.retained_fits(&message) {
                // A client's PUBLISH was checked before it was acknowledged; what reaches here
                // is a will, which nobody can be told of: it is delivered, not retained.
                if let Some(key) = message.origin {
                    self.retained_refused(key, message.topic.clone(), limit);
                }
            } else {
                // Kept for as long as the topic holds it: in allocations of its own, not as
                // slices that pin the read buffer the PUBLISH arrived in.
                let kept = Arc::new(message.detached());
                self.retained_set_over(&kept.topic);
                if durable {
                    self.persist(StoreOp::RetainedSet(Arc::clone(&kept)));
                }
                self.retained.set(kept);
            }
        }
        let groups_here = self.groups_route_here(&message);
        if !self.forward_to_cluster(&message, now) {
            // Routed when it comes back replicated; whether anyone matched is not known here.
            return None;
        }
        Some(self.route(&message, groups_here, now))
    }

    /// Whether storing `message` as retained stays within the limits. The broker's own `$SYS`
    /// topics are few and fixed, and never refused.
    fn retained_fits(&self, message: &Message) -> Result<(), RetainedLimit> {
        if message.origin.is_none() {
            return Ok(());
        }
        let limits = &self.config.limits;
        let size = retained_size(&message.topic, message.payload.len());
        self.retained.fits(
            &message.topic,
            size,
            limits.retained_count_max,
            limits.retained_bytes_max,
        )
    }

    /// Refuses a PUBLISH whose retained copies would exceed the retained limits (0x97), before
    /// it is acknowledged; the copies of a `$tree/` publish are counted together.
    fn within_retained_limits(
        &mut self,
        key: SessionKey,
        outgoing: Outgoing,
    ) -> Result<Outgoing, ReasonCode> {
        let publishes = match &outgoing {
            Outgoing::One(publish) => std::slice::from_ref(publish),
            Outgoing::Spread(publishes) => publishes.as_slice(),
        };
        match self.retained_room(publishes) {
            Ok(()) => Ok(outgoing),
            Err(limit) => {
                self.retained_refused(key, publishes[0].topic.clone(), limit);
                Err(ReasonCode::QuotaExceeded)
            }
        }
    }

    /// Whether the retained copies of `publishes`, counted together, stay within the retained
    /// limits.
    pub(super) fn retained_room(&self, publishes: &[Publish]) -> Result<(), RetainedLimit> {
        let (mut new_topics, mut added, mut replaced) = (0, 0, 0);
        for publish in publishes
            .iter()
            .filter(|p| p.retain && !p.payload.is_empty())
        {
            added += retained_size(&publish.topic, publish.payload.len());
            match self.retained.tree().get(&publish.topic) {
                Some(old) => replaced += retained_size(&old.topic, old.payload.len()),
                None => new_topics += 1,
            }
        }
        if added == 0 {
            return Ok(());
        }
        let limits = &self.config.limits;
        self.retained.check(
            new_topics,
            added,
            replaced,
            limits.retained_count_max,
            limits.retained_bytes_max,
        )
    }

    /// Counts and reports a retained message refused for `limit`.
    fn retained_refused(&mut self, key: SessionKey, topic: TopicName, limit: RetainedLimit) {
        let client_id = self.session(key).client_id.clone();
        self.retained_refused_for(client_id, topic, limit);
    }

    /// Counts and reports a retained message of `client_id` refused for `limit`.
    pub(super) fn retained_refused_for(
        &mut self,
        client_id: tern_codec::MqttString,
        topic: TopicName,
        limit: RetainedLimit,
    ) {
        self.stats.retained_refused += 1;
        self.events.push_back(Event::PublishRefused {
            client_id,
            topic,
            reason: ReasonCode::QuotaExceeded,
            detail: limit.detail(),
        });
    }

    /// Delivers `message` to every matching subscription (and the tap); returns how many
    /// matched (a `$tree/` view counts once, whatever its members). `$share` groups take it
    /// only with `groups` (on a cluster node, a group takes its messages as the cluster hands
    /// them to one node: [`Broker::route_to_group`]).
    pub(super) fn route(&mut self, message: &SharedMessage, groups: bool, now: Time) -> usize {
        self.tap.offer_message(message);
        self.keep_history(message, now);
        let mut matches = std::mem::take(&mut self.scratch);
        matches.clear();
        let sessions = &self.sessions;
        let connections = &self.connections;
        let fleet_closes = self.fleet_closes(&message.topic);
        let readiness = |key: SessionKey| match groups {
            true => readiness(sessions, connections, fleet_closes, key),
            false => Readiness::Excluded,
        };
        self.subscriptions
            .matches(&message.topic, readiness, &mut matches);
        self.fence_matches(fleet_closes, &mut matches);
        // Tree views share one delta among their members, so No Local does not apply to them.
        let tree_views = self.route_to_tree_views(message, &mut matches, now);
        // No Local: never back to the publishing session through such a subscription (MQTT-3.8.3-3).
        matches.retain(|m| !(m.info.options.no_local && Some(m.key) == message.origin));
        let matched = usize::from(tree_views) + matches.len();
        // Worked out once, for every receiver.
        let charge = message.charge();
        // Group a session's overlapping non-shared subscriptions into one delivery.
        matches.sort_by_key(|m| (m.shared, m.key));
        let mut index = 0;
        while index < matches.len() {
            let first = matches[index];
            let mut end = index + 1;
            if !first.shared {
                while end < matches.len() && !matches[end].shared && matches[end].key == first.key {
                    end += 1;
                }
            }
            self.deliver_matches(message, charge, &matches[index..end], now);
            index = end;
        }
        self.scratch = matches;
        matched
    }

    /// Delivers `message` to one member of the `$share` group of filter `shared` on this node,
    /// chosen as [`Broker::route`] chooses; returns whether one took it. For a message the
    /// cluster handed to this node for that group.
    pub(super) fn route_to_group(
        &mut self,
        message: &SharedMessage,
        shared: &TopicFilter,
        now: Time,
    ) -> bool {
        if !shared.matches(&message.topic) {
            return false;
        }
        let sessions = &self.sessions;
        let connections = &self.connections;
        let fleet_closes = self.fleet_closes(&message.topic);
        let readiness = |key| readiness(sessions, connections, fleet_closes, key);
        let Some(chosen) = self.subscriptions.choose_shared(shared, readiness) else {
            return false;
        };
        self.deliver_matches(message, message.charge(), &[chosen], now);
        true
    }

    /// One delivery to one session for its subscriptions in `group` (all the same session);
    /// `charge` is the message's.
    pub(super) fn deliver_matches(
        &mut self,
        message: &SharedMessage,
        charge: usize,
        group: &[Match<SessionKey>],
        now: Time,
    ) {
        let key = group[0].key;
        // Overlapping subscriptions: the highest granted QoS and every identifier (MQTT-3.3.4-2/-3).
        let granted = group
            .iter()
            .map(|m| m.info.options.qos)
            .max()
            .unwrap_or(QoS::AtMostOnce);
        let retain_as_published = group.iter().any(|m| m.info.options.retain_as_published);
        let identifiers = group.iter().filter_map(|m| m.info.identifier);
        let subscription_ids = SubscriptionIds::from_ids(identifiers).unwrap_or_default();
        let delivery = Delivery {
            seq: 0,
            message: Arc::clone(message),
            qos: message.qos.min(granted),
            // Without Retain As Published, a forwarded message has RETAIN cleared (MQTT-3.3.1-12).
            retain: message.retain && retain_as_published,
            subscription_ids,
            charge,
        };
        let feed = Feed::Routed {
            shared: group[0].shared,
        };
        self.deliver_routed(key, delivery, feed, now);
    }

    /// Sends a delivery now if the session is connected and its window allows, else queues it.
    pub(super) fn deliver(&mut self, key: SessionKey, delivery: Delivery, feed: Feed, now: Time) {
        if self.is_waiting_mailbox(key) {
            self.deliver_to_mailbox(key, delivery, now);
            return;
        }
        let session = self.session(key);
        let connection = session.connection;
        let bytes = delivery.charge;
        if delivery.qos == QoS::AtMostOnce {
            let Some(id) = connection else {
                return; // QoS 0 messages are not kept for MQTT sessions without a connection.
            };
            let limits = &self.config.limits;
            let over = self.connections.get(&id).is_some_and(|c| {
                c.outbox_qos0 >= limits.outbox_qos0_count_max
                    || c.outbox_qos0_bytes + bytes > limits.outbox_qos0_bytes_max
            });
            if over {
                self.dropped(key, DropReason::OutboxFull);
                return;
            }
            if !self.within_memory(key, bytes, QoS::AtMostOnce, now) {
                self.dropped(key, DropReason::MemoryFull);
                return;
            }
            let publish = delivery.outgoing(None, false, now);
            if !self.fits_client(id, &publish) {
                self.dropped(key, DropReason::TooLargeForClient);
                return;
            }
            self.charge_outbox(id, bytes);
            self.send_publish(id, publish);
            return;
        }
        let limits = &self.config.limits;
        let (count_max, bytes_max) = (limits.queued_count_max, limits.queued_bytes_max);
        // A connected subscriber under backpressure keeps what passes its queue limits (they
        // are where its publishers are held, flow.rs), up to its budget.
        let backpressure = limits.overload == Overload::Backpressure
            && connection.is_some()
            && session.flow != FlowState::CutLoose
            && feed != Feed::Broker;
        if session.queue_refusal(bytes, count_max, bytes_max).is_some() {
            if !backpressure {
                self.dropped(key, DropReason::QueueFull);
                return;
            }
            if session.queued_bytes() + bytes > bytes_max.saturating_mul(2) {
                self.cut_loose(key, CutReason::OverBudget, now);
                self.dropped(key, DropReason::QueueFull);
                return;
            }
        }
        if !self.within_memory(key, bytes, delivery.qos, now) {
            self.dropped(key, DropReason::MemoryFull);
            return;
        }
        let (count_max, bytes_max) = match backpressure {
            true => (usize::MAX, usize::MAX),
            false => (count_max, bytes_max),
        };
        let queued = self.with_session(key, |session| {
            session.enqueue(delivery, count_max, bytes_max)
        });
        if queued.is_err() {
            self.dropped(key, DropReason::QueueFull);
            return;
        }
        if let Some(delivery) = self.session(key).queue.back().cloned() {
            self.persist_for(key, |client_id| StoreOp::DeliveryQueued {
                client_id,
                delivery,
            });
        }
        self.note_mailbox(key);
        if connection.is_some() {
            self.pump(key, now);
            if let (true, Feed::Routed { shared }) = (backpressure, feed) {
                self.note_queue_growth(key, shared, now);
            }
        }
    }

    /// The send quota of connection `id`: QoS 1/2 PUBLISH packets it may have unacknowledged.
    pub(super) fn send_window(&self, id: ConnectionId) -> Option<usize> {
        let connection = self.connections.get(&id)?;
        Some(usize::from(
            connection
                .client_receive_maximum
                .min(self.config.limits.inflight_count_max)
                .max(1),
        ))
    }

    /// Resends the in-flight PUBLISH at `index` with DUP set, on the send quota; one too large
    /// for the client is discarded as if delivered (MQTT-3.1.2-25). Returns whether it is still
    /// in flight.
    pub(super) fn resend_publish(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        index: usize,
        now: Time,
    ) -> bool {
        let entry = &self.session(key).inflight[index];
        let publish = entry.delivery.outgoing(Some(entry.packet_id), true, now);
        if !self.fits_client(id, &publish) {
            if let Some(entry) = self.remove_inflight(key, index) {
                self.delivery_done(key, entry.delivery.seq);
            }
            self.dropped(key, DropReason::TooLargeForClient);
            return false;
        }
        self.session_mut(key).take_quota(index);
        self.send_publish(id, publish);
        true
    }

    /// Moves queued deliveries into the in-flight window while it has room, after the
    /// deliveries still to be resent on this connection; a congested queue that drained lets
    /// go of the publishers it held.
    pub(super) fn pump(&mut self, key: SessionKey, now: Time) {
        self.fill_window(key, now);
        if self.session(key).flow != FlowState::Clear {
            self.settle_flow(key, now);
        }
    }

    /// Moves queued deliveries into the in-flight window while it has room, after the
    /// deliveries still to be resent on this connection.
    fn fill_window(&mut self, key: SessionKey, now: Time) {
        let Some(id) = self.session(key).connection else {
            return;
        };
        let Some(window) = self.send_window(id) else {
            return;
        };
        let inflight_bytes_max = self.config.limits.inflight_bytes_max;
        loop {
            let session = self.session_mut(key);
            // The send quota (MQTT-4.9.0-2), and a free packet identifier.
            if session.quota_used() >= window || session.inflight.len() >= usize::from(u16::MAX) {
                return;
            }
            if let Some(index) = session.next_to_resend() {
                self.resend_publish(id, key, index, now);
                continue;
            }
            // Retained messages owed to new subscriptions go first (retained_feed.rs).
            self.feed_retained(key, id, now);
            let session = self.session(key);
            let Some(next) = session.queue.front() else {
                return;
            };
            // The byte limit of the window: the rest waits in the queue, where its own limits
            // apply.
            if !session.inflight_has_room(next.charge, inflight_bytes_max) {
                return;
            }
            let Some(delivery) = self.with_session(key, Session::dequeue) else {
                return;
            };
            if delivery.message.is_expired(now) {
                self.delivery_done(key, delivery.seq);
                self.dropped(key, DropReason::Expired);
                continue;
            }
            let packet_id = self.session_mut(key).allocate_packet_id();
            let publish = delivery.outgoing(Some(packet_id), false, now);
            if !self.fits_client(id, &publish) {
                // Too large for the client: discarded as if sent (MQTT-3.1.2-25).
                self.session_mut(key).remove_inflight_id(packet_id);
                self.delivery_done(key, delivery.seq);
                self.dropped(key, DropReason::TooLargeForClient);
                continue;
            }
            let seq = delivery.seq;
            let (message_id, qos) = (delivery.message.id, delivery.qos);
            self.with_session(key, |session| session.push_inflight(packet_id, delivery));
            self.persist_for(key, |client_id| StoreOp::DeliveryStage {
                client_id,
                seq,
                stage: DeliveryStage::Sent(packet_id),
            });
            if qos == QoS::ExactlyOnce {
                let stage = OutboundStage::Sent;
                self.cluster_outbound(key, Some(id), packet_id, message_id, stage);
            }
            self.send_publish(id, publish);
        }
    }

    /// Whether the encoded PUBLISH fits the client's Maximum Packet Size.
    fn fits_client(&self, id: ConnectionId, publish: &OutgoingPublish) -> bool {
        self.connections.get(&id).is_some_and(|connection| {
            super::within_packet_size(connection, |version| publish.view().encoded_len(version))
        })
    }

    /// Records that the delivery `seq` of `key` needs no more work.
    pub(super) fn delivery_done(&mut self, key: SessionKey, seq: u64) {
        self.persist_for(key, |client_id| StoreOp::DeliveryDone { client_id, seq });
    }

    pub(super) fn dropped(&mut self, key: SessionKey, reason: DropReason) {
        self.stats.publish_dropped += 1;
        self.stats.publish_expired += u64::from(reason == DropReason::Expired);
        self.stats.publish_dropped_memory += u64::from(reason == DropReason::MemoryFull);
        let client_id = self.session(key).client_id.clone();
        self.events.push_back(Event::Dropped { client_id, reason });
    }

    pub(super) fn handle_puback(&mut self, key: SessionKey, ack: Ack, now: Time) {
        let session = self.session_mut(key);
        match session.find_inflight(ack.packet_id) {
            Some(index) if session.inflight[index].state == OutgoingState::AwaitPubAck => {
                session.acked_at = now;
                if let Some(entry) = self.remove_inflight(key, index) {
                    self.delivery_done(key, entry.delivery.seq);
                    self.fleet_notify_acked(key, entry.delivery.message.id, now);
                }
                self.pump(key, now);
            }
            // An acknowledgement for nothing in flight (say, repeated after a reconnect) is ignored.
            _ => {}
        }
    }
}

/// How ready session `key` is to take a message of a `$share` group: a group passes over a
/// member whose queue is full before it holds anyone, and never gives a fleet message
/// (`fleet_closes`) to a member kept out of the fleet.
fn readiness(
    sessions: &[Option<Session>],
    connections: &FxHashMap<ConnectionId, Box<Connection>>,
    fleet_closes: bool,
    key: SessionKey,
) -> Readiness {
    match sessions.get(key.0 as usize).and_then(Option::as_ref) {
        Some(s) if fleet_closes && fleet_fence::session_fenced(s, connections) => {
            Readiness::Excluded
        }
        Some(s) if s.connection.is_some() && s.flow == FlowState::Clear => Readiness::Ready,
        Some(s) if s.connection.is_some() => Readiness::Busy,
        _ => Readiness::Offline,
    }
}
