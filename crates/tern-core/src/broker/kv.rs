//! Key/value over retained messages (the HTTP bridge's `/v1/kv`, docs/http.md): a KV entry
//! *is* a topic's retained message, set and read by MQTT and HTTP alike, and its ETag is the
//! message's id, which only grows. What this adds to the retained messages is a memory of
//! deletions (tombstones), so a device can ask what changed under a prefix since an ETag,
//! deletions included, and an id is never given twice, across restarts too.
//!
//! A tombstone is kept in the store as a retained record with an empty payload (which no
//! retained message has: an empty one deletes); at most [`TOMBSTONES_MAX`] are kept, and the
//! highest id of those let go (the horizon) is kept too: a listing since an ETag below it
//! cannot tell every deletion, and is answered in full instead.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{PublishProperties, QoS, TopicName};

use super::request::{RequestClient, RequestRefusal};
use super::Broker;
use crate::authz::Access;
use crate::store::StoreOp;
use crate::types::{Message, SharedMessage, Time};

/// Deletions remembered at most; past it the oldest is let go (and the horizon rises).
pub const TOMBSTONES_MAX: usize = 100_000;

/// Entries one listing gives at most (`more` says the rest follows: ask again since its ETag).
pub const LISTING_MAX: usize = 1000;

/// The deletions remembered: topic, by id and by topic.
#[derive(Debug, Default)]
pub(super) struct Tombstones {
    by_id: BTreeMap<u64, TopicName>,
    by_topic: HashMap<TopicName, u64>,
    /// The highest id of a deletion let go: listings since below it are answered in full.
    horizon: u64,
}

impl Tombstones {
    fn insert(&mut self, topic: TopicName, id: u64) {
        if let Some(old) = self.by_topic.insert(topic.clone(), id) {
            self.by_id.remove(&old);
        }
        self.by_id.insert(id, topic);
    }

    fn remove(&mut self, topic: &TopicName) -> Option<u64> {
        let id = self.by_topic.remove(topic)?;
        self.by_id.remove(&id);
        Some(id)
    }

    /// Lets the oldest go while over the limit; returns their topics.
    fn trim(&mut self) -> Vec<TopicName> {
        let mut gone = Vec::new();
        while self.by_id.len() > TOMBSTONES_MAX {
            let Some((id, topic)) = self.by_id.pop_first() else {
                break;
            };
            self.by_topic.remove(&topic);
            self.horizon = self.horizon.max(id);
            gone.push(topic);
        }
        gone
    }
}

/// What a listing found under a prefix.
#[derive(Debug, Clone, Default)]
pub struct KvListing {
    /// Entries set after `since` (all, without it), by ETag.
    pub changed: Vec<SharedMessage>,
    /// Keys deleted after `since`, with the ETag of their deletion.
    pub deleted: Vec<(TopicName, u64)>,
    /// The ETag to ask from next time: the last one this listing covers.
    pub etag: u64,
    /// The whole subtree (no `since`, or one older than the deletions remembered): the device
    /// should drop what it holds that is not in it.
    pub full: bool,
    /// More follows: ask again since `etag`.
    pub more: bool,
}

/// What a write expects of the entry it replaces (`If-Match`, `If-None-Match: *`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Whatever is there.
    Any,
    /// The entry with this ETag.
    Etag(u64),
    /// An entry, whatever its ETag.
    Present,
    /// No entry.
    Absent,
}

/// Why a KV write was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvRefusal {
    /// What the request expected is not there; the current ETag, if any.
    Precondition(Option<u64>),
    /// The key has no entry (a delete).
    Missing,
    /// As for any request.
    Request(RequestRefusal),
}

impl From<RequestRefusal> for KvRefusal {
    fn from(refusal: RequestRefusal) -> Self {
        Self::Request(refusal)
    }
}

impl Broker {
    /// The highest message id given so far: an ETag later changes are above.
    pub fn kv_etag(&self) -> u64 {
        self.next_message_id.saturating_sub(1)
    }

    /// The entry of `key` (its retained message), if `client` may read it.
    pub fn kv_get(
        &self,
        client: &RequestClient,
        key: &str,
    ) -> Result<Option<SharedMessage>, RequestRefusal> {
        // As any request: a banned client, or one whose identifier is another identity's.
        self.request_session(client)?;
        if !self.request_allows(client, Access::Subscribe, key) {
            return Err(RequestRefusal::NotAuthorized);
        }
        Ok(self.retained.tree().get(key).cloned())
    }

    /// The entries under `prefix` (a topic prefix: `a/b/` is `a/b/#`, an empty one is
    /// everything), set or deleted after `since` (all, without it), by ETag, at most
    /// [`LISTING_MAX`]: as for a subscription to `prefix#`, which `client` must be allowed,
    /// and only the topics it may receive.
    pub fn kv_list(
        &self,
        client: &RequestClient,
        prefix: &str,
        since: Option<u64>,
    ) -> Result<KvListing, RequestRefusal> {
        self.request_session(client)?;
        if !(prefix.is_empty() || prefix.ends_with('/')) {
            return Err(RequestRefusal::FilterInvalid("a key prefix ends in /"));
        }
        let filter = format!("{prefix}#");
        if !self.request_allows(client, Access::Subscribe, &filter) {
            return Err(RequestRefusal::NotAuthorized);
        }
        let full = since.is_some_and(|since| since < self.tombstones.horizon);
        let since = if full { None } else { since };
        let after = since.unwrap_or(0);
        let readable = |topic: &str| {
            topic.starts_with(prefix) && self.request_allows(client, Access::Subscribe, topic)
        };
        let mut changed = Vec::new();
        self.retained.tree().for_each_match(&filter, |message| {
            if message.id > after && readable(&message.topic) {
                changed.push(Arc::clone(message));
            }
        });
        changed.sort_by_key(|message| message.id);
        let deleted: Vec<(TopicName, u64)> = match since {
            None => Vec::new(),
            Some(since) => self
                .tombstones
                .by_id
                .range(since + 1..)
                .filter(|(_, topic)| readable(topic))
                .map(|(id, topic)| (topic.clone(), *id))
                .collect(),
        };
        let mut listing = KvListing {
            etag: self.kv_etag(),
            full: since.is_none(),
            ..KvListing::default()
        };
        // Merged by ETag, cut at the limit: the ETag answered is the last one given.
        let (mut set, mut gone) = (
            changed.into_iter().peekable(),
            deleted.into_iter().peekable(),
        );
        while listing.changed.len() + listing.deleted.len() < LISTING_MAX {
            let next_set = set.peek().map(|message| message.id);
            let next_gone = gone.peek().map(|(_, id)| *id);
            match (next_set, next_gone) {
                (None, None) => break,
                (Some(a), b) if b.is_none_or(|b| a < b) => listing.changed.extend(set.next()),
                _ => listing.deleted.extend(gone.next()),
            }
        }
        if set.peek().is_some() || gone.peek().is_some() {
            listing.more = true;
            let last_set = listing.changed.last().map(|message| message.id);
            let last_gone = listing.deleted.last().map(|(_, id)| *id);
            listing.etag = last_set.max(last_gone).unwrap_or(after);
        }
        Ok(listing)
    }

    /// Sets (or with an empty payload, deletes) `key` from `client` as a retained QoS 1
    /// PUBLISH, if what is there is what `expect` says; returns the entry's new ETag.
    pub fn kv_write(
        &mut self,
        client: &RequestClient,
        mut publish: tern_codec::Publish,
        expect: Expect,
        now: Time,
    ) -> Result<u64, KvRefusal> {
        let current = self.retained.tree().get(&publish.topic).map(|m| m.id);
        match (expect, current) {
            (Expect::Etag(want), Some(have)) if want != have => {
                return Err(KvRefusal::Precondition(Some(have)))
            }
            (Expect::Etag(_) | Expect::Present, None) => return Err(KvRefusal::Precondition(None)),
            (Expect::Absent, Some(have)) => return Err(KvRefusal::Precondition(Some(have))),
            _ => {}
        }
        if publish.payload.is_empty() && current.is_none() {
            return Err(KvRefusal::Missing);
        }
        publish.retain = true;
        let topic = publish.topic.clone();
        let deleting = publish.payload.is_empty();
        let outcome = self.publish_for(client, vec![publish], false, now);
        if let Some(Err(refusal)) = outcome.into_iter().next() {
            return Err(KvRefusal::Request(refusal));
        }
        let etag = match deleting {
            true => self.tombstones.by_topic.get(&topic).copied(),
            false => self.retained.tree().get(&topic).map(|m| m.id),
        };
        Ok(etag.unwrap_or_else(|| self.kv_etag()))
    }

    /// The retained message of `topic` was deleted (`had` one) or expired: a durable topic's
    /// deletion is remembered, in the store too, under an id of its own.
    pub(super) fn retained_deleted(&mut self, topic: &TopicName, had: bool, durable: bool) {
        if !durable {
            return;
        }
        if !had {
            self.persist(StoreOp::RetainedClear(topic.clone()));
            return;
        }
        let id = self.next_message_id();
        self.tombstones.insert(topic.clone(), id);
        self.persist(StoreOp::RetainedSet(tombstone(topic.clone(), id)));
        let gone = self.tombstones.trim();
        if !gone.is_empty() {
            for topic in gone {
                self.persist(StoreOp::RetainedClear(topic));
            }
            self.persist(StoreOp::KvHorizon(self.tombstones.horizon));
        }
    }

    /// A retained message was set on `topic`: its deletion, if remembered, is over.
    pub(super) fn retained_set_over(&mut self, topic: &TopicName) {
        self.tombstones.remove(topic);
    }

    /// Takes back the retained messages and deletions a store kept, and the horizon; returns
    /// the highest id among them.
    pub(super) fn restore_retained(
        &mut self,
        retained: Vec<SharedMessage>,
        horizon: u64,
        now: Time,
    ) -> u64 {
        let mut last_id = horizon;
        self.tombstones.horizon = horizon;
        for message in retained {
            last_id = last_id.max(message.id);
            if message.payload.is_empty() {
                self.tombstones.insert(message.topic.clone(), message.id);
            } else if message.is_expired(now) {
                // Expired while the broker was down: a deletion like any other.
                self.retained_deleted_at(message.topic.clone(), message.id);
            } else {
                // What the store held is kept even past lowered limits: dropping it here would
                // lose messages that were accepted; new ones are refused until it is under them.
                self.retained.set(message);
            }
        }
        last_id
    }

    /// A restored message expired while the broker was down: remembered as deleted, under
    /// the id it had (no later id is known yet).
    fn retained_deleted_at(&mut self, topic: TopicName, id: u64) {
        self.tombstones.insert(topic.clone(), id);
        self.persist(StoreOp::RetainedSet(tombstone(topic, id)));
    }
}

/// The store's record of a deletion: a retained record with an empty payload.
fn tombstone(topic: TopicName, id: u64) -> SharedMessage {
    Arc::new(Message {
        id,
        topic,
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: true,
        properties: PublishProperties::default(),
        expires_at: None,
        origin: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_the_limit_the_oldest_deletions_go_and_the_horizon_rises() {
        let mut tombstones = Tombstones::default();
        let topic = |i: usize| -> TopicName {
            format!("t/{i}")
                .parse()
                .unwrap_or_else(|_| unreachable!("a topic name"))
        };
        for i in 0..=TOMBSTONES_MAX {
            tombstones.insert(topic(i), i as u64 + 1);
        }
        // Deleted again: the topic keeps one deletion, its latest.
        tombstones.insert(topic(5), 1_000_000);
        let gone = tombstones.trim();
        assert_eq!(gone, [topic(0)]);
        assert_eq!(tombstones.horizon, 1);
        assert_eq!(tombstones.by_id.len(), TOMBSTONES_MAX);
        assert_eq!(tombstones.by_topic.get(&topic(5)), Some(&1_000_000));
        assert_eq!(tombstones.remove(&topic(5)), Some(1_000_000));
        assert!(!tombstones.by_id.contains_key(&1_000_000));
    }
}
