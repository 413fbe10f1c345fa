//! Tree views: a `$tree/<filter>` subscription receives the matching retained messages as one
//! JSON object keyed by the levels its wildcards matched, then batched deltas of changes.
//!
//! This module holds the per-subscription state (pending delta, its deadline) and the mapping
//! between topics and key paths; `broker::tree_view` wires it into subscribe, route and publish.

pub mod json;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use bytes::Bytes;
use tern_codec::{MqttString, QoS, TopicFilter, TopicName};

use crate::types::{SessionKey, Time};

/// Prefix of tree view filters and tree publish topics.
pub const TREE_PREFIX: &str = "$tree/";

/// Identifies one tree view subscription for the broker's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeViewId(pub(crate) u32);

/// How tree views batch their deltas and build their snapshots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeConfig {
    /// Changes within this many milliseconds of the first pending one are merged into one delta.
    pub window_millis: u64,
    /// Retained messages added to snapshots per call into the core; a larger snapshot is built
    /// over several calls, so other clients' traffic runs in between.
    pub snapshot_chunk_entries: usize,
}

impl Default for TreeConfig {
    fn default() -> Self {
        Self {
            window_millis: 10,
            snapshot_chunk_entries: 2048,
        }
    }
}

/// The inner filter of a `$tree/` filter, if `filter` is one (not shared, and with no `*` or
/// `**` level, which would be ambiguous with the topics tree messages are sent on).
pub fn tree_inner(filter: &TopicFilter) -> Option<Result<TopicFilter, &'static str>> {
    let inner = filter.as_str().strip_prefix(TREE_PREFIX)?;
    if inner.split('/').any(|level| level == "*" || level == "**") {
        return Some(Err("`*` and `**` levels are not allowed in a tree filter"));
    }
    Some(inner.parse().map_err(|_| "invalid filter after $tree/"))
}

/// The topic a tree view's messages are sent on: the filter with `+` spelled `*` and `#`
/// spelled `**`, so it is a legal topic name that the client's own filter matches.
pub fn tree_topic(filter: &TopicFilter) -> Option<TopicName> {
    let spelled: Vec<&str> = filter
        .as_str()
        .split('/')
        .map(|level| match level {
            "+" => "*",
            "#" => "**",
            other => other,
        })
        .collect();
    let text = MqttString::new(&spelled.join("/")).ok()?;
    TopicName::new(text).ok()
}

/// The key path of `topic` under `filter` (which it matches): the levels each `+` matched, then
/// every level `#` matched; a filter without wildcards gives its last level.
pub fn key_path<'t>(filter: &str, topic: &'t str) -> Vec<&'t str> {
    if !filter.contains(['+', '#']) {
        return topic.rsplit('/').next().into_iter().collect();
    }
    let mut path = Vec::new();
    let mut topic_levels = topic.split('/');
    for level in filter.split('/') {
        match level {
            "#" => {
                path.extend(topic_levels.by_ref());
                break;
            }
            "+" => path.extend(topic_levels.next()),
            _ => {
                topic_levels.next();
            }
        }
    }
    path
}

/// A change waiting to go out in the next delta.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// The topic's new payload.
    Set(Bytes),
    /// The retained message was cleared: `null`.
    Cleared,
}

/// Changes by topic, last value wins, with their size and highest QoS.
#[derive(Debug)]
pub(crate) struct Changes {
    pub(crate) by_topic: BTreeMap<TopicName, Change>,
    /// Topic and payload bytes held.
    pub(crate) bytes: usize,
    /// Highest QoS among the merged messages.
    pub(crate) qos: QoS,
}

impl Default for Changes {
    fn default() -> Self {
        Self {
            by_topic: BTreeMap::new(),
            bytes: 0,
            qos: QoS::AtMostOnce,
        }
    }
}

impl Changes {
    /// Records a change; returns whether it is the first one held.
    pub(crate) fn record(&mut self, topic: &TopicName, change: Change, qos: QoS) -> bool {
        let first = self.by_topic.is_empty();
        let size = |c: &Change| match c {
            Change::Set(payload) => payload.len(),
            Change::Cleared => 0,
        };
        self.bytes += size(&change);
        match self.by_topic.insert(topic.clone(), change) {
            Some(old) => self.bytes -= size(&old),
            None => self.bytes += topic.len(),
        }
        self.qos = self.qos.max(qos);
        first
    }

    /// Merges `other` in after the changes held (its values win).
    pub(crate) fn merge(&mut self, other: &Self) {
        for (topic, change) in &other.by_topic {
            self.record(topic, change.clone(), other.qos);
        }
    }

    /// The changes of the topics `keep` admits, at the same QoS.
    pub(crate) fn only(&self, keep: impl Fn(&TopicName) -> bool) -> Self {
        let mut kept = Self {
            qos: self.qos,
            ..Self::default()
        };
        for (topic, change) in self.by_topic.iter().filter(|(topic, _)| keep(topic)) {
            kept.record(topic, change.clone(), self.qos);
        }
        kept
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_topic.len()
    }
}

/// A snapshot being built in chunks, so a large one does not hold up other clients.
#[derive(Debug)]
pub(crate) struct SnapshotJob {
    /// The last retained topic laid out so far; the walk of the retained trie resumes after it.
    pub(crate) cursor: Option<TopicName>,
    pub(crate) tree: json::TreeWriter,
    /// Changes seen by the view while the snapshot was being built: sent as a delta right
    /// after it.
    pub(crate) late: Changes,
}

/// One session subscribed to a tree view.
#[derive(Debug)]
pub(crate) struct Member {
    /// Granted QoS.
    pub(crate) qos: QoS,
    /// Subscription identifier (MQTT 5).
    pub(crate) identifier: Option<u32>,
    /// Its snapshot, while it is being built; deltas wait until it is sent.
    pub(crate) snapshot: Option<SnapshotJob>,
}

/// The subscriptions of every session to one `$tree/` filter. They see the same changes, so
/// each delta is built once and shared, like an ordinary message fanned out.
#[derive(Debug)]
pub(crate) struct TreeView {
    /// The inner filter (after `$tree/`), as matched in the subscription trie.
    pub(crate) inner: TopicFilter,
    /// The topic its messages are sent on.
    pub(crate) topic: TopicName,
    /// Subscribed sessions, in key order (deliveries go out in the same order on every run).
    pub(crate) members: BTreeMap<SessionKey, Member>,
    /// Changes since the last delta.
    pub(crate) pending: Changes,
    /// When the pending delta goes out.
    pub(crate) due: Option<Time>,
}

/// Every tree view, and the work waiting on them.
#[derive(Debug, Default)]
pub(crate) struct TreeViews {
    pub(crate) views: HashMap<TreeViewId, TreeView>,
    pub(crate) by_filter: HashMap<TopicFilter, TreeViewId>,
    /// Pending deltas by deadline; an entry is stale once its view's `due` disagrees.
    pub(crate) due: BTreeSet<(Time, TreeViewId)>,
    /// Snapshots still being built, oldest first, and since when the first one waits.
    pub(crate) building: VecDeque<(TreeViewId, SessionKey)>,
    pub(crate) building_since: Option<Time>,
    next_id: u32,
}

impl TreeViews {
    /// The view for `inner`, made if there is none.
    pub(crate) fn view_for(&mut self, inner: &TopicFilter, topic: TopicName) -> TreeViewId {
        if let Some(&id) = self.by_filter.get(inner) {
            return id;
        }
        let id = TreeViewId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        let view = TreeView {
            inner: inner.clone(),
            topic,
            members: BTreeMap::new(),
            pending: Changes::default(),
            due: None,
        };
        self.views.insert(id, view);
        self.by_filter.insert(inner.clone(), id);
        id
    }

    /// Removes `key` from view `id`, and the view once it has no member; returns the inner
    /// filter if `key` was a member.
    pub(crate) fn leave(&mut self, id: TreeViewId, key: SessionKey) -> Option<TopicFilter> {
        let view = self.views.get_mut(&id)?;
        view.members.remove(&key)?;
        let inner = view.inner.clone();
        if view.members.is_empty() {
            self.views.remove(&id);
            self.by_filter.remove(&inner);
        }
        Some(inner)
    }

    /// The earliest time there is work: a pending delta, or a snapshot to go on building.
    pub(crate) fn next_due(&self) -> Option<Time> {
        let delta = self.due.first().map(|&(at, _)| at);
        delta.into_iter().chain(self.building_since).min()
    }

    /// Takes the next view whose delta is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<TreeViewId> {
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                return None;
            }
            self.due.pop_first();
            if self.views.get(&id).is_some_and(|v| v.due == Some(at)) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        s.parse().unwrap()
    }

    #[test]
    fn paths_and_topics() {
        assert_eq!(key_path("light/+/is_on", "light/bed/is_on"), ["bed"]);
        assert_eq!(key_path("light/+/+", "light/bed/is_on"), ["bed", "is_on"]);
        assert_eq!(key_path("a/#", "a/b/c"), ["b", "c"]);
        assert_eq!(key_path("a/#", "a"), Vec::<&str>::new());
        assert_eq!(key_path("a/b", "a/b"), ["b"]);
        assert_eq!(key_path("+/x/#", "p/x/q"), ["p", "q"]);
        let topic = tree_topic(&filter("$tree/light/+/#")).unwrap();
        assert_eq!(topic.as_str(), "$tree/light/*/**");
        assert!(filter("$tree/light/+/#").matches(&topic));
        assert_eq!(
            tree_inner(&filter("$tree/a/+")).map(|r| r.map(|f| f.as_str().to_owned())),
            Some(Ok("a/+".to_owned()))
        );
        assert!(tree_inner(&filter("$tree/a/*")).is_some_and(|r| r.is_err()));
        assert!(tree_inner(&filter("a/+")).is_none());
    }
}
