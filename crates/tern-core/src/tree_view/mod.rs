//! Tree views: a `$tree/<filter>` subscription receives the matching retained messages as one
//! JSON object keyed by the levels its wildcards matched, then batched deltas of changes.
//!
//! This module holds the per-subscription state (pending delta, its deadline) and the mapping
//! between topics and key paths; `broker::tree_view` wires it into subscribe, route and publish.

pub mod json;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use tern_codec::{MqttString, QoS, TopicFilter, TopicName};

use crate::types::{SessionKey, Time};

/// Prefix of tree view filters and tree publish topics.
pub const TREE_PREFIX: &str = "$tree/";

/// Identifies one tree view subscription for the broker's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeViewId(pub(crate) u32);

/// How tree views batch their deltas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeConfig {
    /// Changes within this many milliseconds of the first pending one are merged into one delta.
    pub window_millis: u64,
}

impl Default for TreeConfig {
    fn default() -> Self {
        Self { window_millis: 10 }
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

/// One tree view subscription.
#[derive(Debug)]
pub(crate) struct TreeView {
    pub(crate) session: SessionKey,
    /// The inner filter (after `$tree/`), as matched in the subscription trie.
    pub(crate) inner: TopicFilter,
    /// The topic its messages are sent on.
    pub(crate) topic: TopicName,
    /// Granted QoS.
    pub(crate) qos: QoS,
    /// Subscription identifier (MQTT 5).
    pub(crate) identifier: Option<u32>,
    /// Changes since the last delta, last value per topic.
    pub(crate) pending: BTreeMap<TopicName, Change>,
    /// Topic and payload bytes in `pending`.
    pub(crate) pending_bytes: usize,
    /// Highest QoS among the merged changes.
    pub(crate) pending_qos: QoS,
    /// When the pending delta goes out.
    pub(crate) due: Option<Time>,
}

impl TreeView {
    /// Records a change, last value wins; returns whether it is the first pending one.
    pub(crate) fn record(&mut self, topic: &TopicName, change: Change, qos: QoS) -> bool {
        let first = self.pending.is_empty();
        let size = |c: &Change| match c {
            Change::Set(payload) => payload.len(),
            Change::Cleared => 0,
        };
        self.pending_bytes += size(&change);
        match self.pending.insert(topic.clone(), change) {
            Some(old) => self.pending_bytes -= size(&old),
            None => self.pending_bytes += topic.len(),
        }
        self.pending_qos = self.pending_qos.max(qos);
        first
    }

    /// Takes the pending changes and their QoS, leaving none.
    pub(crate) fn take_pending(&mut self) -> (BTreeMap<TopicName, Change>, QoS) {
        let qos = std::mem::replace(&mut self.pending_qos, QoS::AtMostOnce);
        self.pending_bytes = 0;
        self.due = None;
        (std::mem::take(&mut self.pending), qos)
    }
}

/// Every tree view, and when their pending deltas are due.
#[derive(Debug, Default)]
pub(crate) struct TreeViews {
    pub(crate) views: HashMap<TreeViewId, TreeView>,
    /// Pending deltas by deadline; an entry is stale once its view's `due` disagrees.
    pub(crate) due: BTreeSet<(Time, TreeViewId)>,
    next_id: u32,
}

impl TreeViews {
    pub(crate) fn insert(&mut self, view: TreeView) -> TreeViewId {
        let id = TreeViewId(self.next_id);
        self.next_id = self.next_id.wrapping_add(1);
        self.views.insert(id, view);
        id
    }

    /// The earliest pending deadline.
    pub(crate) fn next_due(&self) -> Option<Time> {
        self.due.first().map(|&(at, _)| at)
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
