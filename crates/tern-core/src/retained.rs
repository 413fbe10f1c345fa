//! Retained messages as a trie over topic levels, so a subscription's filter finds its retained
//! messages by walking only the matching branches, and a subtree can be enumerated.
//!
//! Children are kept in order, so a walk can stop after so many matches and resume later
//! after the last topic it gave (a large tree snapshot is built that way, in rounds).

use std::collections::{btree_map, BTreeMap};
use std::ops::Bound;

#[derive(Debug)]
struct Node<V> {
    children: Children<Self>,
    value: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: Children::Few(Vec::new()),
            value: None,
        }
    }
}

/// Most levels have one or a few children (`site/a/temp` has one below `a`): those are a sorted
/// vector sized to fit, and only a level past [`FEW_MAX`] children becomes a `BTreeMap`, whose
/// smallest node holds eleven entries.
#[derive(Debug)]
enum Children<N> {
    Few(Vec<(Box<str>, N)>),
    Many(BTreeMap<Box<str>, N>),
}

const FEW_MAX: usize = 32;

/// Children in order, without allocating.
enum ChildIter<'a, N> {
    Few(std::slice::Iter<'a, (Box<str>, N)>),
    Many(btree_map::Range<'a, Box<str>, N>),
}

impl<'a, N> Iterator for ChildIter<'a, N> {
    type Item = (&'a str, &'a N);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Few(iter) => iter.next().map(|(name, node)| (&**name, node)),
            Self::Many(iter) => iter.next().map(|(name, node)| (&**name, node)),
        }
    }
}

impl<N: Default> Children<N> {
    fn get(&self, level: &str) -> Option<&N> {
        match self {
            Self::Few(few) => few
                .binary_search_by(|(name, _)| (**name).cmp(level))
                .ok()
                .map(|index| &few[index].1),
            Self::Many(many) => many.get(level),
        }
    }

    fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match self {
            Self::Few(few) => few
                .binary_search_by(|(name, _)| (**name).cmp(level))
                .ok()
                .map(|index| &mut few[index].1),
            Self::Many(many) => many.get_mut(level),
        }
    }

    fn get_or_default(&mut self, level: &str) -> &mut N {
        if let Self::Few(few) = self {
            if few.len() >= FEW_MAX && few.binary_search_by(|(n, _)| (**n).cmp(level)).is_err() {
                *self = Self::Many(std::mem::take(few).into_iter().collect());
            }
        }
        match self {
            Self::Few(few) => {
                let index = match few.binary_search_by(|(name, _)| (**name).cmp(level)) {
                    Ok(index) => index,
                    Err(index) => {
                        if few.len() == few.capacity() {
                            // Grow by one while small: most levels keep one or two children.
                            let extra = if few.len() < 4 { 1 } else { few.len() };
                            few.reserve_exact(extra);
                        }
                        few.insert(index, (level.into(), N::default()));
                        index
                    }
                };
                &mut few[index].1
            }
            Self::Many(many) => many.entry(level.into()).or_default(),
        }
    }

    fn remove(&mut self, level: &str) {
        match self {
            Self::Few(few) => {
                if let Ok(index) = few.binary_search_by(|(name, _)| (**name).cmp(level)) {
                    few.remove(index);
                }
            }
            Self::Many(many) => {
                many.remove(level);
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Few(few) => few.is_empty(),
            Self::Many(many) => many.is_empty(),
        }
    }

    /// The children from `first` on (all without it), in order.
    fn from(&self, first: Option<&str>) -> ChildIter<'_, N> {
        match self {
            Self::Few(few) => {
                let start =
                    first.map_or(0, |level| few.partition_point(|(name, _)| &**name < level));
                ChildIter::Few(few[start..].iter())
            }
            Self::Many(many) => ChildIter::Many(match first {
                Some(level) => many.range::<str, _>((Bound::Included(level), Bound::Unbounded)),
                None => many.range::<str, _>(..),
            }),
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&mut N) -> bool) {
        match self {
            Self::Few(few) => few.retain_mut(|(_, node)| keep(node)),
            Self::Many(many) => many.retain(|_, node| keep(node)),
        }
    }
}

/// Retained values keyed by topic name.
#[derive(Debug)]
pub struct RetainedTree<V> {
    root: Node<V>,
    len: usize,
}

impl<V> Default for RetainedTree<V> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<V> RetainedTree<V> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of retained values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the value for `topic`; returns the one it replaced.
    pub fn insert(&mut self, topic: &str, value: V) -> Option<V> {
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.get_or_default(level);
        }
        let old = node.value.replace(value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes the value for `topic`, pruning empty branches.
    pub fn remove(&mut self, topic: &str) -> Option<V> {
        let levels: Vec<&str> = topic.split('/').collect();
        let removed = remove_at(&mut self.root, &levels);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The value for `topic`.
    pub fn get(&self, topic: &str) -> Option<&V> {
        let mut node = &self.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.value.as_ref()
    }

    /// Calls `f` with every value whose topic matches the (non-shared) topic `filter`.
    ///
    /// Topics starting with `$` are not matched by a filter starting with a wildcard.
    pub fn for_each_match(&self, filter: &str, mut f: impl FnMut(&V)) {
        walk(&self.root, Some(filter), true, &mut f);
    }

    /// Calls `f` with at most `limit` values whose topic matches `filter`, in topic order (level
    /// by level), starting after the topic `after`; returns whether more remain.
    pub fn for_each_match_after(
        &self,
        filter: &str,
        after: Option<&str>,
        limit: usize,
        mut f: impl FnMut(&V),
    ) -> bool {
        self.take_matches_after(filter, after, limit, |value| {
            f(value);
            true
        })
    }

    /// Offers `take` the values whose topic matches `filter`, in topic order (level by level),
    /// starting after the topic `after`, until it has taken `limit` of them or refuses one
    /// (returns false); returns whether more remain (the refused one among them).
    pub fn take_matches_after(
        &self,
        filter: &str,
        after: Option<&str>,
        limit: usize,
        take: impl FnMut(&V) -> bool,
    ) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let cursor: Option<Vec<&str>> = after.map(|topic| topic.split('/').collect());
        let mut walk = Limited { take, left: limit };
        walk_from(&self.root, &levels, cursor.as_deref(), true, &mut walk)
    }

    /// Removes every value for which `expired` is true; returns how many went.
    pub fn retain(&mut self, mut keep: impl FnMut(&V) -> bool) -> usize {
        let removed = prune(&mut self.root, &mut keep);
        self.len -= removed;
        removed
    }
}

fn remove_at<V>(node: &mut Node<V>, levels: &[&str]) -> Option<V> {
    let Some((level, rest)) = levels.split_first() else {
        return node.value.take();
    };
    let child = node.children.get_mut(level)?;
    let removed = remove_at(child, rest);
    if child.value.is_none() && child.children.is_empty() {
        node.children.remove(level);
    }
    removed
}

fn walk<V>(node: &Node<V>, remaining: Option<&str>, at_root: bool, f: &mut impl FnMut(&V)) {
    let Some(remaining) = remaining else {
        if let Some(value) = &node.value {
            f(value);
        }
        return;
    };
    let (level, rest) = match remaining.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (remaining, None),
    };
    match level {
        "#" => {
            // `#` also matches the parent level itself ("a/#" matches "a").
            if !at_root {
                if let Some(value) = &node.value {
                    f(value);
                }
            }
            for (name, child) in node.children.from(None) {
                if !(at_root && name.starts_with('$')) {
                    visit_all(child, f);
                }
            }
        }
        "+" => {
            for (name, child) in node.children.from(None) {
                if !(at_root && name.starts_with('$')) {
                    walk(child, rest, false, f);
                }
            }
        }
        _ => {
            if let Some(child) = node.children.get(level) {
                walk(child, rest, false, f);
            }
        }
    }
}

/// A callback that takes a bounded number of values, and may refuse one to stop early.
struct Limited<F> {
    take: F,
    left: usize,
}

impl<F> Limited<F> {
    /// Offers `value` to the callback; returns true (stop) if the limit was already reached or
    /// the callback refused it.
    fn emit<V>(&mut self, value: &V) -> bool
    where
        F: FnMut(&V) -> bool,
    {
        if self.left == 0 || !(self.take)(value) {
            return true;
        }
        self.left -= 1;
        false
    }
}

/// The children of `node` from the first level of `cursor` on, each with what remains of the
/// cursor for it (`None`: the whole child comes after the cursor).
fn children_from<'n, 'c, V>(
    node: &'n Node<V>,
    cursor: Option<&'c [&'c str]>,
) -> impl Iterator<Item = (&'n str, &'n Node<V>, Option<&'c [&'c str]>)> {
    let first = cursor.and_then(|c| c.first().copied());
    node.children.from(first).map(move |(name, child)| {
        let rest = match (first, cursor) {
            (Some(level), Some(c)) if level == name => Some(&c[1..]),
            _ => None,
        };
        (name, child, rest)
    })
}

/// [`walk`] in order, after `cursor` (the levels of the last topic given, below `node`; empty
/// if it was `node` itself). Returns true if it stopped at the limit.
fn walk_from<V, F: FnMut(&V) -> bool>(
    node: &Node<V>,
    filter: &[&str],
    cursor: Option<&[&str]>,
    at_root: bool,
    walk: &mut Limited<F>,
) -> bool {
    let Some((&level, rest)) = filter.split_first() else {
        return match (&node.value, cursor) {
            (Some(value), None) => walk.emit(value),
            _ => false,
        };
    };
    match level {
        "#" => {
            if let (false, Some(value), None) = (at_root, &node.value, cursor) {
                if walk.emit(value) {
                    return true;
                }
            }
            for (name, child, rest) in children_from(node, cursor) {
                if !(at_root && name.starts_with('$')) && visit_from(child, rest, walk) {
                    return true;
                }
            }
            false
        }
        "+" => {
            for (name, child, child_cursor) in children_from(node, cursor) {
                if !(at_root && name.starts_with('$'))
                    && walk_from(child, rest, child_cursor, false, walk)
                {
                    return true;
                }
            }
            false
        }
        _ => match node.children.get(level) {
            Some(child) => {
                let child_cursor =
                    cursor.and_then(|c| (c.first() == Some(&level)).then(|| &c[1..]));
                let past = cursor.is_some_and(|c| c.first().is_some_and(|&l| l > level));
                !past && walk_from(child, rest, child_cursor, false, walk)
            }
            None => false,
        },
    }
}

/// Every value of `node` and below, in order, after `cursor`.
fn visit_from<V, F: FnMut(&V) -> bool>(
    node: &Node<V>,
    cursor: Option<&[&str]>,
    walk: &mut Limited<F>,
) -> bool {
    if let (Some(value), None) = (&node.value, cursor) {
        if walk.emit(value) {
            return true;
        }
    }
    // A cursor on `node` itself: every child comes after it.
    let cursor = cursor.filter(|c| !c.is_empty());
    for (_, child, rest) in children_from(node, cursor) {
        if visit_from(child, rest, walk) {
            return true;
        }
    }
    false
}

fn visit_all<V>(node: &Node<V>, f: &mut impl FnMut(&V)) {
    if let Some(value) = &node.value {
        f(value);
    }
    for (_, child) in node.children.from(None) {
        visit_all(child, f);
    }
}

fn prune<V>(node: &mut Node<V>, keep: &mut impl FnMut(&V) -> bool) -> usize {
    let mut removed = 0;
    if node.value.as_ref().is_some_and(|v| !keep(v)) {
        node.value = None;
        removed += 1;
    }
    node.children.retain(|child| {
        removed += prune(child, keep);
        child.value.is_some() || !child.children.is_empty()
    });
    removed
}

#[cfg(test)]
mod tests {
    use tern_codec::filter_matches;

    use super::*;

    #[test]
    fn wildcard_lookup_agrees_with_filter_matching() {
        let topics = [
            "a", "a/b", "a/b/c", "a/c", "b", "$SYS/x", "$SYS", "/", "/x", "a/",
        ];
        let filters = [
            "#", "+", "a/#", "a/+", "a/b", "+/b", "+/+/c", "$SYS/#", "+/#", "/+", "a/+/+",
        ];
        let mut tree = RetainedTree::new();
        for topic in topics {
            tree.insert(topic, topic.to_owned());
        }
        for filter in filters {
            let mut got = Vec::new();
            tree.for_each_match(filter, |v| got.push(v.clone()));
            got.sort();
            let mut want: Vec<String> = topics
                .iter()
                .filter(|t| filter_matches(filter, t))
                .map(|t| (*t).to_owned())
                .collect();
            want.sort();
            assert_eq!(got, want, "filter {filter}");
        }
    }

    #[test]
    fn resumable_walk_gives_every_match_once_in_order() {
        let topics = [
            "a", "a/b", "a/b/c", "a/c", "a/c/d", "b", "b/b", "$SYS/x", "/", "/x", "a/", "c/b",
        ];
        let filters = [
            "#", "+", "a/#", "a/+", "+/b", "+/+/c", "$SYS/#", "/+", "a/+/+", "a/b", "w/+", "w/#",
        ];
        let mut tree = RetainedTree::new();
        for topic in topics {
            tree.insert(topic, topic.to_owned());
        }
        // A level wide enough to change representation, filled out of order.
        for n in (0..100).rev() {
            let topic = format!("w/{n}");
            tree.insert(&topic, topic.clone());
        }
        assert_eq!(tree.remove("w/50"), Some("w/50".to_owned()));
        assert_eq!(tree.get("w/7").map(String::as_str), Some("w/7"));
        for filter in filters {
            let mut want = Vec::new();
            tree.for_each_match(filter, |v| want.push(v.clone()));
            want.sort_by(|a, b| a.split('/').cmp(b.split('/')));
            for limit in 1..4 {
                let mut got: Vec<String> = Vec::new();
                loop {
                    let after = got.last().cloned();
                    let more = tree.for_each_match_after(filter, after.as_deref(), limit, |v| {
                        got.push(v.clone())
                    });
                    if !more {
                        break;
                    }
                }
                assert_eq!(got, want, "filter {filter}, limit {limit}");
            }
        }
    }

    #[test]
    fn a_refused_value_is_where_the_walk_resumes() {
        let mut tree = RetainedTree::new();
        for topic in ["s/a", "s/b", "s/c", "s/d"] {
            tree.insert(topic, topic.to_owned());
        }
        let mut taken = Vec::new();
        // Takes until it meets s/c, which it refuses: more remain, s/c among them.
        let more = tree.take_matches_after("s/#", None, 10, |v: &String| {
            if v == "s/c" {
                return false;
            }
            taken.push(v.clone());
            true
        });
        assert!(more);
        assert_eq!(taken, ["s/a", "s/b"]);
        let mut rest = Vec::new();
        let more = tree.take_matches_after("s/#", Some("s/b"), 10, |v: &String| {
            rest.push(v.clone());
            true
        });
        assert!(!more);
        assert_eq!(rest, ["s/c", "s/d"]);
        // A limit of 0 takes nothing and says whether anything matches.
        assert!(tree.take_matches_after("s/+", None, 0, |_| true));
        assert!(!tree.take_matches_after("t/+", None, 0, |_| true));
    }

    #[test]
    fn insert_replace_remove_prune() {
        let mut tree = RetainedTree::new();
        assert_eq!(tree.insert("a/b", 1), None);
        assert_eq!(tree.insert("a/b", 2), Some(1));
        assert_eq!(tree.insert("a/c", 3), None);
        assert_eq!(tree.len(), 2);
        assert_eq!(tree.get("a/b"), Some(&2));
        assert_eq!(tree.remove("a/b"), Some(2));
        assert_eq!(tree.remove("a/b"), None);
        assert_eq!(tree.retain(|v| *v != 3), 1);
        assert!(tree.is_empty());
        assert!(tree.root.children.is_empty());
    }
}
