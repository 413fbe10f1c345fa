//! The subscription index: a trie over topic levels that finds every subscription matching a
//! topic name, with `$share` groups resolved to one member each.
//!
//! It knows nothing of sessions beyond an opaque key; the broker decides what a match means.

use std::collections::HashMap;

use tern_codec::{SubscriptionOptions, TopicFilter};

use crate::tree_view::TreeViewId;

/// What a session asked for with one topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// The options from SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier from SUBSCRIBE, if any (MQTT 5).
    pub identifier: Option<u32>,
    /// For a `$tree/` subscription (held in the trie under its inner filter), its tree view. A
    /// session may hold a tree view and an ordinary subscription on the same filter.
    pub tree_view: Option<TreeViewId>,
}

impl SubscriptionInfo {
    /// Whether `self` and `other` are the same kind of subscription (ordinary or tree view).
    fn same_kind(&self, other: &Self) -> bool {
        self.tree_view.is_some() == other.tree_view.is_some()
    }
}

/// One subscription matched by a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match<K> {
    /// The subscriber.
    pub key: K,
    /// Its subscription.
    pub info: SubscriptionInfo,
    /// Whether this match comes from a shared subscription (delivered independently).
    pub shared: bool,
}

/// How ready a member of a `$share` group is to take a message: a group prefers the readiest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Readiness {
    /// May not have this message at all (kept out of its topic): never chosen.
    Excluded,
    /// Not connected: its messages wait for it to come back.
    Offline,
    /// Connected, but behind: its queue is full (flow control would hold the publisher).
    Busy,
    /// Connected and keeping up.
    Ready,
}

#[derive(Debug)]
struct SharedGroup<K> {
    name: Box<str>,
    members: Vec<(K, SubscriptionInfo)>,
    /// Round-robin position: the member after the one that got the last message.
    cursor: usize,
}

#[derive(Debug)]
struct Subscribers<K> {
    direct: Vec<(K, SubscriptionInfo)>,
    shared: Vec<SharedGroup<K>>,
}

impl<K> Default for Subscribers<K> {
    fn default() -> Self {
        Self {
            direct: Vec::new(),
            shared: Vec::new(),
        }
    }
}

impl<K> Subscribers<K> {
    fn is_empty(&self) -> bool {
        self.direct.is_empty() && self.shared.is_empty()
    }
}

#[derive(Debug)]
struct Node<K> {
    children: HashMap<Box<str>, Self>,
    plus: Option<Box<Self>>,
    /// Subscriptions whose filter ends at this node.
    here: Subscribers<K>,
    /// Subscriptions whose filter is this node followed by `#`.
    hash: Subscribers<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            plus: None,
            here: Subscribers::default(),
            hash: Subscribers::default(),
        }
    }
}

impl<K> Node<K> {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.here.is_empty()
            && self.hash.is_empty()
    }
}

/// The subscription trie, keyed by subscriber `K`.
#[derive(Debug)]
pub struct SubscriptionTree<K> {
    root: Node<K>,
    len: usize,
}

impl<K> Default for SubscriptionTree<K> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<K: Copy + Eq> SubscriptionTree<K> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of (subscriber, filter) pairs.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds or replaces `key`'s subscription to `filter`; returns the one it replaced.
    pub fn insert(
        &mut self,
        filter: &TopicFilter,
        key: K,
        info: SubscriptionInfo,
    ) -> Option<SubscriptionInfo> {
        let (group, plain) = split_shared(filter);
        let subscribers = subscribers_mut(&mut self.root, &plain);
        let list = match group {
            None => &mut subscribers.direct,
            Some(name) => {
                let index = match subscribers.shared.iter().position(|g| &*g.name == name) {
                    Some(index) => index,
                    None => {
                        subscribers.shared.push(SharedGroup {
                            name: name.into(),
                            members: Vec::new(),
                            cursor: 0,
                        });
                        subscribers.shared.len() - 1
                    }
                };
                &mut subscribers.shared[index].members
            }
        };
        if let Some(slot) = list
            .iter_mut()
            .find(|(k, i)| *k == key && i.same_kind(&info))
        {
            return Some(std::mem::replace(&mut slot.1, info));
        }
        list.push((key, info));
        self.len += 1;
        None
    }

    /// Removes `key`'s ordinary subscription to `filter`; returns it if there was one.
    pub fn remove(&mut self, filter: &TopicFilter, key: K) -> Option<SubscriptionInfo> {
        self.remove_kind(filter, key, false)
    }

    /// Removes `key`'s tree view subscription held under the inner `filter`.
    pub fn remove_tree_view(&mut self, filter: &TopicFilter, key: K) -> Option<SubscriptionInfo> {
        self.remove_kind(filter, key, true)
    }

    fn remove_kind(
        &mut self,
        filter: &TopicFilter,
        key: K,
        tree: bool,
    ) -> Option<SubscriptionInfo> {
        let (group, plain) = split_shared(filter);
        let levels: Vec<&str> = plain.split('/').collect();
        let member = Member { key, tree };
        let removed = remove_at(&mut self.root, &levels, group, member);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Appends to `out` every subscription matching `topic`. For each shared group one member is
    /// chosen, round robin, preferring the readiest as `readiness` tells.
    pub fn matches(
        &mut self,
        topic: &str,
        readiness: impl Fn(K) -> Readiness,
        out: &mut Vec<Match<K>>,
    ) {
        // Topics beginning with `$` are not matched by a filter beginning with a wildcard.
        let dollar = topic.starts_with('$');
        collect(&mut self.root, Some(topic), true, dollar, &readiness, out);
    }

    /// The member of the group of `$share` filter `shared` that takes the next message, chosen
    /// as [`SubscriptionTree::matches`] chooses; `None` for a filter that is not shared or has
    /// no member here. For a message another part of the system already matched against the
    /// group's filter (a cluster node hands a group's message to one node).
    pub fn choose_shared(
        &mut self,
        shared: &TopicFilter,
        readiness: impl Fn(K) -> Readiness,
    ) -> Option<Match<K>> {
        let (name, inner) = shared.shared()?;
        let mut node = &mut self.root;
        let mut levels = inner.as_str().split('/').peekable();
        let subscribers = loop {
            let level = levels.next()?;
            match level {
                "#" => break &mut node.hash,
                "+" => node = node.plus.as_deref_mut()?,
                _ => node = node.children.get_mut(level)?,
            }
            if levels.peek().is_none() {
                break &mut node.here;
            }
        };
        let group = subscribers.shared.iter_mut().find(|g| &*g.name == name)?;
        choose(group, &readiness)
    }
}

fn split_shared(filter: &TopicFilter) -> (Option<&str>, String) {
    match filter.shared() {
        Some((group, inner)) => (Some(group), inner.as_str().to_owned()),
        None => (None, filter.as_str().to_owned()),
    }
}

fn subscribers_mut<'a, K>(root: &'a mut Node<K>, filter: &str) -> &'a mut Subscribers<K> {
    let mut node = root;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" => return &mut node.hash,
            "+" => node = node.plus.get_or_insert_with(Box::default),
            _ => node = node.children.entry(level.into()).or_default(),
        }
        if levels.peek().is_none() {
            return &mut node.here;
        }
    }
    &mut node.here
}

/// Which entry to remove: the subscriber and the kind of subscription.
#[derive(Clone, Copy)]
struct Member<K> {
    key: K,
    tree: bool,
}

impl<K: Copy + Eq> Member<K> {
    fn is(&self, key: K, info: &SubscriptionInfo) -> bool {
        self.key == key && info.tree_view.is_some() == self.tree
    }
}

fn remove_at<K: Copy + Eq>(
    node: &mut Node<K>,
    levels: &[&str],
    group: Option<&str>,
    key: Member<K>,
) -> Option<SubscriptionInfo> {
    let (subscribers, done) = match levels {
        ["#"] => (Some(&mut node.hash), true),
        [] => (Some(&mut node.here), true),
        _ => (None, false),
    };
    if done {
        return subscribers.and_then(|s| remove_member(s, group, key));
    }
    let (level, rest) = (levels[0], &levels[1..]);
    let removed;
    if level == "+" {
        let child = node.plus.as_deref_mut()?;
        removed = remove_at(child, rest, group, key);
        if child.is_empty() {
            node.plus = None;
        }
    } else {
        let child = node.children.get_mut(level)?;
        removed = remove_at(child, rest, group, key);
        if child.is_empty() {
            node.children.remove(level);
        }
    }
    removed
}

fn remove_member<K: Copy + Eq>(
    subscribers: &mut Subscribers<K>,
    group: Option<&str>,
    key: Member<K>,
) -> Option<SubscriptionInfo> {
    match group {
        None => {
            let index = subscribers.direct.iter().position(|(k, i)| key.is(*k, i))?;
            Some(subscribers.direct.swap_remove(index).1)
        }
        Some(name) => {
            let group_index = subscribers.shared.iter().position(|g| &*g.name == name)?;
            let members = &mut subscribers.shared[group_index].members;
            let index = members.iter().position(|(k, i)| key.is(*k, i))?;
            // `remove` keeps the round-robin order of the others stable.
            let (_, info) = members.remove(index);
            if members.is_empty() {
                subscribers.shared.swap_remove(group_index);
            }
            Some(info)
        }
    }
}

/// Walks the levels of `remaining` (`None` once every level is consumed) without allocating.
fn collect<K: Copy>(
    node: &mut Node<K>,
    remaining: Option<&str>,
    at_root: bool,
    dollar: bool,
    readiness: &impl Fn(K) -> Readiness,
    out: &mut Vec<Match<K>>,
) {
    let wildcard_allowed = !(dollar && at_root);
    if wildcard_allowed {
        emit(&mut node.hash, readiness, out);
    }
    let Some(remaining) = remaining else {
        emit(&mut node.here, readiness, out);
        return;
    };
    let (level, rest) = match remaining.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (remaining, None),
    };
    if let Some(child) = node.children.get_mut(level) {
        collect(child, rest, false, dollar, readiness, out);
    }
    if wildcard_allowed {
        if let Some(child) = node.plus.as_deref_mut() {
            collect(child, rest, false, dollar, readiness, out);
        }
    }
}

fn emit<K: Copy>(
    subscribers: &mut Subscribers<K>,
    readiness: &impl Fn(K) -> Readiness,
    out: &mut Vec<Match<K>>,
) {
    out.extend(subscribers.direct.iter().map(|&(key, info)| Match {
        key,
        info,
        shared: false,
    }));
    for group in &mut subscribers.shared {
        out.extend(choose(group, readiness));
    }
}

/// The member of `group` that takes the next message: the first ready member from the cursor
/// on, else the first busy one, else the first offline one; none when every member is kept out
/// of the message.
fn choose<K: Copy>(
    group: &mut SharedGroup<K>,
    readiness: &impl Fn(K) -> Readiness,
) -> Option<Match<K>> {
    let count = group.members.len();
    if count == 0 {
        return None;
    }
    let start = group.cursor % count;
    let mut chosen = (start, Readiness::Excluded);
    for index in (0..count).map(|offset| (start + offset) % count) {
        let readiness = readiness(group.members[index].0);
        if readiness > chosen.1 {
            chosen = (index, readiness);
            if readiness == Readiness::Ready {
                break;
            }
        }
    }
    if chosen.1 == Readiness::Excluded {
        return None;
    }
    let chosen = chosen.0;
    group.cursor = chosen + 1;
    let (key, info) = group.members[chosen];
    Some(Match {
        key,
        info,
        shared: true,
    })
}

#[cfg(test)]
mod tests {
    use tern_codec::QoS;

    use super::*;

    fn info(qos: QoS) -> SubscriptionInfo {
        SubscriptionInfo {
            options: SubscriptionOptions::qos(qos),
            identifier: None,
            tree_view: None,
        }
    }

    fn filter(s: &str) -> TopicFilter {
        s.parse().unwrap()
    }

    fn keys(tree: &mut SubscriptionTree<u32>, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        tree.matches(topic, |_| Readiness::Ready, &mut out);
        let mut keys: Vec<u32> = out.iter().map(|m| m.key).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn agrees_with_filter_matching() {
        let filters = [
            "#", "+", "a/#", "a/+", "a/b", "+/b", "+/+/c", "a/b/#", "$SYS/#", "$SYS/+", "+/#", "/",
            "/+",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "b/b", "$SYS/x", "$SYS", "/", "/x", "a/", "x/y/c",
        ];
        let mut tree = SubscriptionTree::new();
        for (key, f) in filters.iter().enumerate() {
            tree.insert(&filter(f), key as u32, info(QoS::AtMostOnce));
        }
        for topic in topics {
            let want: Vec<u32> = filters
                .iter()
                .enumerate()
                .filter(|(_, f)| filter(f).matches(topic))
                .map(|(k, _)| k as u32)
                .collect();
            assert_eq!(keys(&mut tree, topic), want, "topic {topic}");
        }
    }

    #[test]
    fn replace_and_remove() {
        let mut tree = SubscriptionTree::new();
        assert!(tree
            .insert(&filter("a/+"), 1, info(QoS::AtMostOnce))
            .is_none());
        assert_eq!(
            tree.insert(&filter("a/+"), 1, info(QoS::ExactlyOnce)),
            Some(info(QoS::AtMostOnce))
        );
        assert_eq!(tree.len(), 1);
        assert_eq!(tree.remove(&filter("a/+"), 1), Some(info(QoS::ExactlyOnce)));
        assert_eq!(tree.remove(&filter("a/+"), 1), None);
        assert!(tree.is_empty());
        assert!(tree.root.is_empty(), "empty branches are pruned");
    }

    #[test]
    fn shared_groups_round_robin_and_prefer_online() {
        let mut tree = SubscriptionTree::new();
        for key in 1..=3 {
            tree.insert(&filter("$share/g/s/+"), key, info(QoS::AtLeastOnce));
        }
        tree.insert(&filter("s/+"), 9, info(QoS::AtMostOnce));
        let mut seen = Vec::new();
        for _ in 0..6 {
            let mut out = Vec::new();
            tree.matches("s/x", |_| Readiness::Ready, &mut out);
            assert_eq!(out.len(), 2, "one direct, one group member");
            seen.push(out.iter().find(|m| m.shared).unwrap().key);
        }
        assert_eq!(seen, [1, 2, 3, 1, 2, 3]);
        let mut out = Vec::new();
        let online = |k| match k {
            3 => Readiness::Ready,
            _ => Readiness::Offline,
        };
        tree.matches("s/x", online, &mut out);
        assert_eq!(out.iter().find(|m| m.shared).unwrap().key, 3);
        // A busy member is passed over for a ready one, and taken before an offline one.
        let busy = |k| match k {
            1 => Readiness::Busy,
            2 => Readiness::Ready,
            _ => Readiness::Offline,
        };
        let mut chosen = Vec::new();
        for _ in 0..3 {
            out.clear();
            tree.matches("s/x", busy, &mut out);
            chosen.push(out.iter().find(|m| m.shared).unwrap().key);
        }
        assert_eq!(chosen, [2, 2, 2]);
        out.clear();
        tree.matches(
            "s/x",
            |k| {
                if k == 1 {
                    Readiness::Busy
                } else {
                    Readiness::Offline
                }
            },
            &mut out,
        );
        assert_eq!(out.iter().find(|m| m.shared).unwrap().key, 1);
        assert_eq!(
            tree.remove(&filter("$share/g/s/+"), 2),
            Some(info(QoS::AtLeastOnce))
        );
        assert_eq!(tree.len(), 3);
    }
}
