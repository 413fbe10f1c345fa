//! Retained messages as a trie over topic levels, so a subscription's filter finds its retained
//! messages by walking only the matching branches, and a subtree can be enumerated.

use std::collections::HashMap;

#[derive(Debug)]
struct Node<V> {
    children: HashMap<Box<str>, Self>,
    value: Option<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Self {
            children: HashMap::new(),
            value: None,
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
            node = node.children.entry(level.into()).or_default();
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
    let child = node.children.get_mut(*level)?;
    let removed = remove_at(child, rest);
    if child.value.is_none() && child.children.is_empty() {
        node.children.remove(*level);
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
            for (name, child) in &node.children {
                if !(at_root && name.starts_with('$')) {
                    visit_all(child, f);
                }
            }
        }
        "+" => {
            for (name, child) in &node.children {
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

fn visit_all<V>(node: &Node<V>, f: &mut impl FnMut(&V)) {
    if let Some(value) = &node.value {
        f(value);
    }
    for child in node.children.values() {
        visit_all(child, f);
    }
}

fn prune<V>(node: &mut Node<V>, keep: &mut impl FnMut(&V) -> bool) -> usize {
    let mut removed = 0;
    if node.value.as_ref().is_some_and(|v| !keep(v)) {
        node.value = None;
        removed += 1;
    }
    node.children.retain(|_, child| {
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
