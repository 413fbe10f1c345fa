//! The broker's retained messages: the topic trie, the index of those that expire, and what
//! they hold in all, kept in step so that a replaced or cleared message leaves nothing behind
//! and the count and byte limits can be checked before a message is stored.

use std::collections::BTreeSet;

use tern_codec::TopicName;

use crate::retained::RetainedTree;
use crate::types::{SharedMessage, Time};

/// Retained messages, by topic.
#[derive(Debug, Default)]
pub(super) struct RetainedStore {
    tree: RetainedTree<SharedMessage>,
    /// Messages with an expiry, by when they expire; exactly one entry per such message held.
    expiry: BTreeSet<(Time, u64, TopicName)>,
    /// [`retained_size`] of every message held.
    bytes: usize,
}

/// What a retained message counts against `retained_bytes_max`: its payload and topic.
pub(super) fn retained_size(topic: &str, payload_len: usize) -> usize {
    topic.len() + payload_len
}

/// Which limit storing a message would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RetainedLimit {
    /// `retained_count_max`.
    Count,
    /// `retained_bytes_max`.
    Bytes,
}

impl RetainedLimit {
    pub(super) fn detail(self) -> &'static str {
        match self {
            Self::Count => "retained message count at its limit (retained_count_max)",
            Self::Bytes => "retained message bytes at their limit (retained_bytes_max)",
        }
    }
}

impl RetainedStore {
    /// The trie, for lookups and walks.
    pub(super) fn tree(&self) -> &RetainedTree<SharedMessage> {
        &self.tree
    }

    pub(super) fn len(&self) -> usize {
        self.tree.len()
    }

    /// Bytes held, as the limit counts them.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether `new_topics` more topics holding `added` bytes in all, replacing messages that
    /// held `replaced` bytes, stay within `count_max` and `bytes_max` (0: no limit).
    pub(super) fn check(
        &self,
        new_topics: usize,
        added: usize,
        replaced: usize,
        count_max: usize,
        bytes_max: usize,
    ) -> Result<(), RetainedLimit> {
        if count_max != 0 && new_topics > 0 && self.len() + new_topics > count_max {
            return Err(RetainedLimit::Count);
        }
        let bytes = (self.bytes - replaced).saturating_add(added);
        if bytes_max != 0 && added > replaced && bytes > bytes_max {
            return Err(RetainedLimit::Bytes);
        }
        Ok(())
    }

    /// Whether a message of `size` bytes for `topic` fits the limits, counting what it
    /// replaces.
    pub(super) fn fits(
        &self,
        topic: &str,
        size: usize,
        count_max: usize,
        bytes_max: usize,
    ) -> Result<(), RetainedLimit> {
        let (new_topics, replaced) = match self.tree.get(topic) {
            Some(old) => (0, retained_size(&old.topic, old.payload.len())),
            None => (1, 0),
        };
        self.check(new_topics, size, replaced, count_max, bytes_max)
    }

    /// Stores `message` for its topic, replacing (and unindexing) the one before.
    pub(super) fn set(&mut self, message: SharedMessage) {
        let topic = message.topic.clone();
        let size = retained_size(&topic, message.payload.len());
        let expiry = message.expires_at.map(|at| (at, message.id, topic.clone()));
        if let Some(old) = self.tree.insert(&topic, message) {
            self.forget(&old);
        }
        self.bytes += size;
        if let Some(entry) = expiry {
            self.expiry.insert(entry);
        }
    }

    /// Removes the message of `topic`, if any.
    pub(super) fn clear(&mut self, topic: &str) -> Option<SharedMessage> {
        let old = self.tree.remove(topic)?;
        self.forget(&old);
        Some(old)
    }

    /// Removes and returns the next message that has expired at `now`, if any.
    pub(super) fn pop_expired(&mut self, now: Time) -> Option<SharedMessage> {
        let (at, _, topic) = self.expiry.first()?;
        if *at > now {
            return None;
        }
        let topic = topic.clone();
        self.clear(&topic)
    }

    /// When the next retained message expires.
    pub(super) fn next_expiry(&self) -> Option<Time> {
        self.expiry.first().map(|(at, _, _)| *at)
    }

    /// Messages in the expiry index.
    #[cfg(test)]
    fn expiring(&self) -> usize {
        self.expiry.len()
    }

    /// Takes a message that left the trie out of the index and the byte count.
    fn forget(&mut self, old: &SharedMessage) {
        if let Some(at) = old.expires_at {
            self.expiry.remove(&(at, old.id, old.topic.clone()));
        }
        self.bytes -= retained_size(&old.topic, old.payload.len());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tern_codec::{PublishProperties, QoS};

    use super::*;
    use crate::types::Message;

    fn message(
        id: u64,
        topic: &str,
        payload: &'static str,
        expires_at: Option<u64>,
    ) -> SharedMessage {
        Arc::new(Message {
            id,
            topic: topic
                .parse()
                .unwrap_or_else(|_| unreachable!("valid topic")),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: PublishProperties::default(),
            expires_at: expires_at.map(Time::from_millis),
            origin: None,
        })
    }

    #[test]
    fn the_expiry_index_holds_only_live_expiring_messages() {
        let mut store = RetainedStore::default();
        for id in 1..=100 {
            store.set(message(id, "a", "x", Some(10 + id)));
        }
        store.set(message(101, "b", "y", Some(5)));
        assert_eq!(store.expiring(), 2);
        store.set(message(102, "a", "x", None));
        assert_eq!(store.expiring(), 1);
        assert_eq!(store.next_expiry(), Some(Time::from_millis(5)));
        assert!(store.clear("b").is_some());
        assert_eq!(store.expiring(), 0);
        assert_eq!(store.next_expiry(), None);
        assert_eq!(store.len(), 1);
        assert_eq!(store.bytes(), 2);
    }

    #[test]
    fn expiry_removes_the_message_and_its_bytes() {
        let mut store = RetainedStore::default();
        store.set(message(1, "a", "xyz", Some(3)));
        store.set(message(2, "b", "xyz", Some(4)));
        assert_eq!(store.bytes(), 8);
        assert!(store.pop_expired(Time::from_millis(2)).is_none());
        assert_eq!(
            store.pop_expired(Time::from_millis(3)).map(|m| m.id),
            Some(1)
        );
        assert!(store.pop_expired(Time::from_millis(3)).is_none());
        assert_eq!((store.len(), store.bytes(), store.expiring()), (1, 4, 1));
    }

    #[test]
    fn limits_count_what_a_message_replaces() {
        let mut store = RetainedStore::default();
        store.set(message(1, "a", "1234", None));
        store.set(message(2, "b", "1234", None));
        // Two topics of 5 bytes each: a third topic breaks a count of 2, a replacement does not.
        assert_eq!(store.fits("c", 2, 2, 0), Err(RetainedLimit::Count));
        assert_eq!(store.fits("a", 2, 2, 0), Ok(()));
        // 10 bytes held: replacing 5 by 7 needs 12.
        assert_eq!(store.fits("a", 7, 0, 11), Err(RetainedLimit::Bytes));
        assert_eq!(store.fits("a", 7, 0, 12), Ok(()));
        // Shrinking is always allowed, even above the limit.
        assert_eq!(store.fits("a", 1, 0, 3), Ok(()));
    }
}
