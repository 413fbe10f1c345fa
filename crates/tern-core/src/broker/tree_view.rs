//! Tree views in the broker: indexing `$tree/` subscriptions in the subscription trie, the
//! snapshot after SUBACK, merging routed messages into batched deltas, and spreading a
//! `$tree/` publish into one message per key.

use std::sync::Arc;

use tern_codec::{
    MqttString, PayloadFormat, Publish, PublishProperties, QoS, ReasonCode, SubscriptionIds,
    TopicFilter, TopicName, UserProperties,
};

use super::Broker;
use crate::session::Delivery;
use crate::tree::SubscriptionInfo;
use crate::tree_view::json::{self, TreeBuilder};
use crate::tree_view::{
    key_path, tree_inner, tree_topic, Change, TreeView, TreeViewId, TREE_PREFIX,
};
use crate::types::{Message, SessionKey, SharedMessage, Time};

/// What an accepted PUBLISH becomes: itself, or the messages a `$tree/` publish spreads into.
// It lives on the stack only between decoding and routing; boxing the common case would cost
// an allocation per PUBLISH.
#[allow(clippy::large_enum_variant)]
pub(super) enum Outgoing {
    One(Publish),
    Spread(Vec<Publish>),
}

/// Which kind of tree message, told to MQTT 5 clients in the `tree` user property.
#[derive(Clone, Copy)]
enum Kind {
    Snapshot,
    Delta,
}

impl Broker {
    /// Adds `filter` to the subscription trie for `key`: a `$tree/` filter under its inner filter
    /// with its tree view (reused if the session already holds this filter), any other as is.
    /// Returns the info as stored, or why the filter is refused.
    pub(super) fn index_subscription(
        &mut self,
        key: SessionKey,
        filter: &TopicFilter,
        mut info: SubscriptionInfo,
    ) -> Result<SubscriptionInfo, &'static str> {
        let Some(inner) = tree_inner(filter) else {
            info.tree_view = None;
            self.subscriptions.insert(filter, key, info);
            return Ok(info);
        };
        let inner = inner?;
        let topic = tree_topic(filter).ok_or("tree filter cannot be spelled as a topic")?;
        let existing = self
            .session(key)
            .subscriptions
            .get(filter)
            .and_then(|i| i.tree_view)
            .filter(|id| self.tree_views.views.contains_key(id));
        let id = match existing {
            Some(id) => {
                if let Some(view) = self.tree_views.views.get_mut(&id) {
                    view.qos = info.options.qos;
                    view.identifier = info.identifier;
                }
                id
            }
            None => self.tree_views.insert(TreeView {
                session: key,
                inner: inner.clone(),
                topic,
                qos: info.options.qos,
                identifier: info.identifier,
                pending: Default::default(),
                pending_bytes: 0,
                pending_qos: QoS::AtMostOnce,
                due: None,
            }),
        };
        info.tree_view = Some(id);
        self.subscriptions.insert(&inner, key, info);
        Ok(info)
    }

    /// Removes `key`'s subscription `filter` (held with `info`) from the trie, and its tree view.
    pub(super) fn unindex_subscription(
        &mut self,
        key: SessionKey,
        filter: &TopicFilter,
        info: &SubscriptionInfo,
    ) {
        match info.tree_view {
            None => {
                self.subscriptions.remove(filter, key);
            }
            Some(id) => {
                if let Some(view) = self.tree_views.views.remove(&id) {
                    self.subscriptions.remove_tree_view(&view.inner, key);
                }
            }
        }
    }

    /// Routes `message` into the pending deltas of the tree views in `matches`, and removes
    /// those from `matches`.
    pub(super) fn route_to_tree_views(
        &mut self,
        message: &SharedMessage,
        matches: &mut Vec<crate::tree::Match<SessionKey>>,
        now: Time,
    ) {
        if !matches.iter().any(|m| m.info.tree_view.is_some()) {
            return;
        }
        for m in matches.iter() {
            if let Some(id) = m.info.tree_view {
                self.record_tree_change(id, message, now);
            }
        }
        matches.retain(|m| m.info.tree_view.is_none());
    }

    fn record_tree_change(&mut self, id: TreeViewId, message: &SharedMessage, now: Time) {
        let window = self.config.trees.window_millis;
        let limits = &self.config.limits;
        let Some(view) = self.tree_views.views.get_mut(&id) else {
            return;
        };
        let change = if message.retain && message.payload.is_empty() {
            Change::Cleared
        } else {
            Change::Set(message.payload.clone())
        };
        if view.record(&message.topic, change, message.qos) {
            let at = now.plus_millis(window);
            view.due = Some(at);
            self.tree_views.due.insert((at, id));
        }
        // A pending delta is bounded like a session queue: past the limits it goes out early.
        if view.pending.len() >= limits.queued_count_max
            || view.pending_bytes >= limits.queued_bytes_max
        {
            self.flush_tree_view(id, now);
        }
    }

    /// Sends every pending delta that is due at `now`.
    pub(super) fn flush_due_tree_views(&mut self, now: Time) {
        while let Some(id) = self.tree_views.pop_due(now) {
            self.flush_tree_view(id, now);
        }
    }

    /// The earliest time a pending delta is due.
    pub(super) fn next_tree_due(&self) -> Option<Time> {
        self.tree_views.next_due()
    }

    /// Sends the pending delta of `id` now.
    fn flush_tree_view(&mut self, id: TreeViewId, now: Time) {
        let Some(view) = self.tree_views.views.get_mut(&id) else {
            return;
        };
        let (pending, qos) = view.take_pending();
        if pending.is_empty() {
            return;
        }
        let mut tree = TreeBuilder::new();
        for (topic, change) in &pending {
            let value = match change {
                Change::Set(payload) => json::payload_to_json(payload),
                Change::Cleared => serde_json::Value::Null,
            };
            tree.insert(key_path(view.inner.as_str(), topic), value);
        }
        // The delivery QoS: the lowest of the granted QoS and the highest merged one.
        let qos = qos.min(view.qos);
        self.send_tree(id, tree, qos, Kind::Delta, now);
    }

    /// Sends the snapshot of `id`: every matching retained message in one tree. It replaces any
    /// pending delta, whose changes it already holds.
    pub(super) fn send_tree_snapshot(&mut self, id: TreeViewId, now: Time) {
        let Some(view) = self.tree_views.views.get_mut(&id) else {
            return;
        };
        view.take_pending();
        let mut tree = TreeBuilder::new();
        let inner = view.inner.as_str();
        self.retained.for_each_match(inner, |message| {
            if !message.is_expired(now) {
                let value = json::payload_to_json(&message.payload);
                tree.insert(key_path(inner, &message.topic), value);
            }
        });
        let qos = view.qos;
        self.send_tree(id, tree, qos, Kind::Snapshot, now);
    }

    fn send_tree(&mut self, id: TreeViewId, tree: TreeBuilder, qos: QoS, kind: Kind, now: Time) {
        let Some(view) = self.tree_views.views.get(&id) else {
            return;
        };
        let (key, topic, identifier) = (view.session, view.topic.clone(), view.identifier);
        let (name, value) = (tree_property(), kind_value(kind));
        let properties = PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            content_type: MqttString::new("application/json").ok(),
            user_properties: UserProperties::from_pairs([(&name, &value)]),
            ..PublishProperties::default()
        };
        let message = Message {
            id: self.next_message_id(),
            topic,
            payload: tree.to_bytes(),
            qos,
            retain: false,
            properties,
            expires_at: None,
            origin: None,
        };
        let delivery = Delivery {
            seq: 0,
            message: Arc::new(message),
            qos,
            // Like retained messages sent on subscribe, the snapshot has RETAIN set: a 3.1.1
            // client tells it from a delta by that flag.
            retain: matches!(kind, Kind::Snapshot),
            subscription_ids: SubscriptionIds::from_ids(identifier).unwrap_or_default(),
        };
        self.deliver(key, delivery, now);
    }

    /// Turns a PUBLISH into what is routed: a `$tree/` publish is spread into one PUBLISH per
    /// key, each checked as if published alone; all are refused if one is.
    pub(super) fn prepare_publish(
        &mut self,
        key: SessionKey,
        publish: Publish,
    ) -> Result<Outgoing, (ReasonCode, &'static str, TopicName)> {
        let Some(rest) = publish.topic.as_str().strip_prefix(TREE_PREFIX) else {
            return Ok(Outgoing::One(publish));
        };
        let refuse = |code, detail| (code, detail, publish.topic.clone());
        let invalid = ReasonCode::PayloadFormatInvalid;
        let levels: Vec<&str> = rest.split('/').collect();
        let pairs =
            json::spread(&levels, &publish.payload).map_err(|e| refuse(invalid, e.detail()))?;
        let mut spread = Vec::with_capacity(pairs.len());
        for (topic, payload) in pairs {
            let topic: TopicName = topic
                .parse()
                .map_err(|_| refuse(invalid, "a key makes an invalid topic name"))?;
            if topic.starts_with(TREE_PREFIX) {
                return Err(refuse(invalid, "a spread topic may not start with $tree/"));
            }
            self.check_topic(&topic)
                .map_err(|detail| refuse(invalid, detail))?;
            if !self.may_publish(key, &topic) {
                return Err(refuse(
                    ReasonCode::NotAuthorized,
                    "publish to a spread topic denied",
                ));
            }
            spread.push(Publish {
                topic,
                payload,
                properties: publish.properties.clone(),
                dup: publish.dup,
                qos: publish.qos,
                retain: publish.retain,
                packet_id: publish.packet_id,
            });
        }
        Ok(Outgoing::Spread(spread))
    }

    /// Whether the session `key` may publish to `topic`.
    fn may_publish(&self, _key: SessionKey, _topic: &TopicName) -> bool {
        true
    }
}

fn tree_property() -> MqttString {
    MqttString::new("tree").unwrap_or_default()
}

fn kind_value(kind: Kind) -> MqttString {
    let text = match kind {
        Kind::Snapshot => "snapshot",
        Kind::Delta => "delta",
    };
    MqttString::new(text).unwrap_or_default()
}
