//! Tree views in the broker: indexing `$tree/` subscriptions in the subscription trie, the
//! snapshot after SUBACK, merging routed messages into batched deltas, and spreading a
//! `$tree/` publish into one message per key.

use std::sync::Arc;

use bytes::Bytes;

use tern_codec::{
    MqttString, PayloadFormat, Publish, PublishProperties, QoS, ReasonCode, SubscriptionIds,
    TopicFilter, TopicName, UserProperties,
};

use super::publish::Feed;
use super::Broker;
use crate::authz::Access;
use crate::session::Delivery;
use crate::tree::{Match, Readiness, SubscriptionInfo};
use crate::tree_view::json::{self, TreeBuilder, TreeWriter};
use crate::tree_view::{
    key_path, tree_inner, tree_topic, Change, Changes, Member, SnapshotJob, TreeViewId, TREE_PREFIX,
};
use crate::types::{ConnectionId, Message, SessionKey, SharedMessage, Time};

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
    /// Adds `filter` to the subscription trie for `key`: a `$tree/` filter under its inner filter,
    /// as a member of the tree view of that filter; any other filter as is. Returns the info as
    /// stored, or why the filter is refused.
    pub(super) fn index_subscription(
        &mut self,
        key: SessionKey,
        filter: &TopicFilter,
        mut info: SubscriptionInfo,
    ) -> Result<SubscriptionInfo, &'static str> {
        let Some(inner) = tree_inner(filter) else {
            info.tree_view = None;
            if self.subscriptions.insert(filter, key, info).is_none() {
                self.interest_added(filter);
            }
            return Ok(info);
        };
        let inner = inner?;
        let topic = tree_topic(filter).ok_or("tree filter cannot be spelled as a topic")?;
        let id = self.tree_views.view_for(&inner, topic);
        if let Some(view) = self.tree_views.views.get_mut(&id) {
            let member = view.members.entry(key).or_insert(Member {
                qos: info.options.qos,
                identifier: info.identifier,
                snapshot: None,
            });
            member.qos = info.options.qos;
            member.identifier = info.identifier;
        }
        info.tree_view = Some(id);
        if self.subscriptions.insert(&inner, key, info).is_none() {
            self.interest_added(&inner);
        }
        Ok(info)
    }

    /// Removes `key`'s subscription `filter` (held with `info`) from the trie and its tree view.
    pub(super) fn unindex_subscription(
        &mut self,
        key: SessionKey,
        filter: &TopicFilter,
        info: &SubscriptionInfo,
    ) {
        match info.tree_view {
            None => {
                if self.subscriptions.remove(filter, key).is_some() {
                    self.interest_removed(filter);
                }
            }
            Some(id) => {
                if let Some(inner) = self.tree_views.leave(id, key) {
                    if self.subscriptions.remove_tree_view(&inner, key).is_some() {
                        self.interest_removed(&inner);
                    }
                }
            }
        }
    }

    /// Records `message` once in each tree view among `matches` (however many sessions it has),
    /// and removes those matches; returns whether there was one.
    pub(super) fn route_to_tree_views(
        &mut self,
        message: &SharedMessage,
        matches: &mut Vec<Match<SessionKey>>,
        now: Time,
    ) -> bool {
        let mut views: Vec<TreeViewId> = matches.iter().filter_map(|m| m.info.tree_view).collect();
        if views.is_empty() {
            return false;
        }
        views.sort_unstable();
        views.dedup();
        for id in views {
            self.record_tree_change(id, message, now);
        }
        matches.retain(|m| m.info.tree_view.is_none());
        true
    }

    /// A retained message left by expiring: every tree view showing its topic gets `null` for
    /// it in the next delta, as if it had been cleared.
    pub(super) fn clear_expired_in_tree_views(&mut self, message: &SharedMessage, now: Time) {
        let mut matches = std::mem::take(&mut self.scratch);
        matches.clear();
        // Tree views keep their deltas for every member, online or not.
        self.subscriptions
            .matches(&message.topic, |_| Readiness::Ready, &mut matches);
        let mut views: Vec<TreeViewId> = matches.iter().filter_map(|m| m.info.tree_view).collect();
        self.scratch = matches;
        views.sort_unstable();
        views.dedup();
        for id in views {
            self.record_tree(id, &message.topic, Change::Cleared, message.qos, now);
        }
    }

    fn record_tree_change(&mut self, id: TreeViewId, message: &SharedMessage, now: Time) {
        let change = if message.retain && message.payload.is_empty() {
            Change::Cleared
        } else {
            Change::Set(message.payload.clone())
        };
        self.record_tree(id, &message.topic, change, message.qos, now);
    }

    fn record_tree(
        &mut self,
        id: TreeViewId,
        topic: &TopicName,
        change: Change,
        qos: QoS,
        now: Time,
    ) {
        let window = self.config.trees.window_millis;
        let limits = &self.config.limits;
        let Some(view) = self.tree_views.views.get_mut(&id) else {
            return;
        };
        if view.pending.record(topic, change, qos) {
            let at = now.plus_millis(window);
            view.due = Some(at);
            self.tree_views.due.insert((at, id));
        }
        // A pending delta is bounded like a session queue: past the limits it goes out early.
        if view.pending.len() >= limits.queued_count_max
            || view.pending.bytes >= limits.queued_bytes_max
        {
            self.flush_tree_view(id, now);
        }
    }

    /// Sends every pending delta that is due at `now`, and goes on building snapshots.
    pub(super) fn run_tree_views(&mut self, now: Time) {
        while let Some(id) = self.tree_views.pop_due(now) {
            self.flush_tree_view(id, now);
        }
        self.build_snapshots(now);
    }

    /// The earliest time tree views have work.
    pub(super) fn next_tree_due(&self) -> Option<Time> {
        self.tree_views.next_due()
    }

    /// Sends the pending delta of `id` now: built once, shared by every member; a member kept
    /// out of the fleet's namespaces gets it without their topics (built once too). A member
    /// whose snapshot is still being built gets the changes in its snapshot instead.
    fn flush_tree_view(&mut self, id: TreeViewId, now: Time) {
        let Some(view) = self.tree_views.views.get_mut(&id) else {
            return;
        };
        view.due = None;
        let pending = std::mem::take(&mut view.pending);
        if pending.is_empty() {
            return;
        }
        let outside = self.outside_fleet(&pending);
        // Per member, in the members' order: whether it is kept out of the fleet.
        let kept_out: Vec<bool> = match (&outside, self.tree_views.views.get(&id)) {
            (Some(_), Some(view)) => view
                .members
                .keys()
                .map(|&key| self.session_fleet_fenced(key))
                .collect(),
            _ => Vec::new(),
        };
        let Some(view) = self.tree_views.views.get_mut(&id) else {
            return;
        };
        let mut recipients = Vec::with_capacity(view.members.len());
        for (index, (&key, member)) in view.members.iter_mut().enumerate() {
            let fenced = kept_out.get(index).copied().unwrap_or(false);
            let changes = match (&outside, fenced) {
                (Some(outside), true) => outside,
                _ => &pending,
            };
            match &mut member.snapshot {
                Some(job) => job.late.merge(changes),
                None if changes.is_empty() => {}
                // The delivery QoS: the lowest of the granted QoS and the highest merged one.
                None => {
                    recipients.push((key, member.qos.min(changes.qos), member.identifier, fenced))
                }
            }
        }
        let inner = view.inner.as_str();
        let whole = recipients
            .iter()
            .any(|r| !r.3)
            .then(|| changes_tree(inner, &pending).to_bytes());
        let outside = outside
            .filter(|outside| !outside.is_empty() && recipients.iter().any(|r| r.3))
            .map(|outside| (changes_tree(inner, &outside).to_bytes(), outside.qos));
        let whole = whole.map(|tree| self.tree_message(id, tree, pending.qos, Kind::Delta));
        let outside = outside.map(|(tree, qos)| self.tree_message(id, tree, qos, Kind::Delta));
        for (key, qos, identifier, fenced) in recipients {
            let message = if fenced { &outside } else { &whole };
            if let Some(message) = message {
                self.deliver_tree(key, message, qos, false, identifier, now);
            }
        }
    }

    /// Starts the snapshot of view `id` for `key`: the matching retained messages, laid out as
    /// a tree in rounds; a small one is sent at once.
    pub(super) fn start_tree_snapshot(&mut self, id: TreeViewId, key: SessionKey, now: Time) {
        let Some(member) = self
            .tree_views
            .views
            .get_mut(&id)
            .and_then(|view| view.members.get_mut(&key))
        else {
            return;
        };
        member.snapshot = Some(SnapshotJob {
            cursor: None,
            tree: TreeWriter::new(),
            late: Changes::default(),
        });
        self.tree_views.building.push_back((id, key));
        self.build_snapshots(now);
    }

    /// Adds up to `snapshot_chunk_entries` retained messages to the snapshots being built,
    /// oldest first, resuming each walk of the retained trie where it stopped, and sends those
    /// that are complete. Changes after a walk passed a topic reach the snapshot through `late`.
    fn build_snapshots(&mut self, now: Time) {
        let mut budget = self.config.trees.snapshot_chunk_entries.max(1);
        while budget > 0 {
            let Some(&(id, key)) = self.tree_views.building.front() else {
                break;
            };
            // A snapshot shows nothing of the fleet's namespaces closed to its member.
            let fenced = match self.sessions.get(key.0 as usize) {
                Some(Some(_)) => self.session_fleet_fenced(key),
                _ => true,
            };
            let (fleet, fleet_topics) = (&self.fleet, &self.config.fleet);
            let Some(view) = self.tree_views.views.get_mut(&id) else {
                self.tree_views.building.pop_front();
                continue;
            };
            let inner = view.inner.as_str();
            let Some(member) = view.members.get_mut(&key) else {
                self.tree_views.building.pop_front();
                continue;
            };
            let Some(job) = member.snapshot.as_mut() else {
                self.tree_views.building.pop_front();
                continue;
            };
            let mut taken = 0;
            let mut last = None;
            let after = job.cursor.as_ref().map(|topic| topic.as_str());
            let more = self
                .retained
                .tree()
                .for_each_match_after(inner, after, budget, |message| {
                    taken += 1;
                    // The message, not its topic: cloning a topic may allocate, once per topic.
                    last = Some(Arc::clone(message));
                    let closed = fenced && fleet.closes(fleet_topics, &message.topic);
                    if !message.is_expired(now) && !closed {
                        job.tree
                            .push(&key_path(inner, &message.topic), &message.payload);
                    }
                });
            budget = budget.saturating_sub(taken);
            if let Some(message) = last {
                job.cursor = Some(message.topic.clone());
            }
            if more {
                break;
            }
            let Some(job) = member.snapshot.take() else {
                break;
            };
            let late = (!job.late.is_empty()).then(|| changes_tree(inner, &job.late));
            let (qos, identifier) = (member.qos, member.identifier);
            self.tree_views.building.pop_front();
            let message = self.tree_message(id, job.tree.finish(), qos, Kind::Snapshot);
            // Like retained messages sent on subscribe, the snapshot has RETAIN set: a 3.1.1
            // client tells it from a delta by that flag.
            self.deliver_tree(key, &message, qos, true, identifier, now);
            // What changed while it was being built follows at once, as a delta.
            if let Some(tree) = late {
                let message = self.tree_message(id, tree.to_bytes(), job.late.qos, Kind::Delta);
                let late_qos = job.late.qos.min(qos);
                self.deliver_tree(key, &message, late_qos, false, identifier, now);
            }
        }
        self.tree_views.building_since = match self.tree_views.building.is_empty() {
            true => None,
            false => Some(now),
        };
    }

    /// The message a tree view sends: its topic, the JSON tree, and (MQTT 5) what kind it is.
    fn tree_message(
        &mut self,
        id: TreeViewId,
        payload: Bytes,
        qos: QoS,
        kind: Kind,
    ) -> SharedMessage {
        let topic = self
            .tree_views
            .views
            .get(&id)
            .map(|view| view.topic.clone())
            .unwrap_or_default();
        let (name, value) = (tree_property(), kind_value(kind));
        let properties = PublishProperties {
            payload_format_indicator: Some(PayloadFormat::Utf8),
            content_type: MqttString::new("application/json").ok(),
            user_properties: UserProperties::from_pairs([(&name, &value)]),
            ..PublishProperties::default()
        };
        Arc::new(Message {
            id: self.next_message_id(),
            topic,
            payload,
            qos,
            retain: false,
            properties,
            expires_at: None,
            origin: None,
        })
    }

    fn deliver_tree(
        &mut self,
        key: SessionKey,
        message: &SharedMessage,
        qos: QoS,
        retain: bool,
        identifier: Option<u32>,
        now: Time,
    ) {
        let delivery = Delivery {
            seq: 0,
            message: Arc::clone(message),
            qos,
            retain,
            subscription_ids: SubscriptionIds::from_ids(identifier).unwrap_or_default(),
            charge: message.charge(),
        };
        self.deliver(key, delivery, Feed::Broker, now);
    }

    /// Turns a PUBLISH into what is routed: a `$tree/` publish is spread into one PUBLISH per
    /// key, each checked as if published alone; all are refused if one is.
    pub(super) fn prepare_publish(
        &mut self,
        id: ConnectionId,
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
            if !self.authorize(id, Access::Publish, &topic) {
                self.denied(id, Access::Publish, &topic);
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

/// The delta tree of `changes` under the filter `inner`.
fn changes_tree(inner: &str, changes: &Changes) -> TreeBuilder {
    let mut tree = TreeBuilder::new();
    for (topic, change) in &changes.by_topic {
        let value = match change {
            Change::Set(payload) => json::payload_to_json(payload),
            Change::Cleared => serde_json::Value::Null,
        };
        tree.insert(key_path(inner, topic), value);
    }
    tree
}
