//! Retained messages on a cluster node: the cluster keeps them (a replicated bucket), and the
//! node's retained store is its copy, fed with every change in the order of the bucket's
//! revisions and with the revision each live RETAIN message carries, the later revision of a
//! topic winning whichever comes first. A new subscription reads its retained messages only
//! once the cluster layer says the copy holds everything written before the subscription was
//! in place (see ARCHITECTURE.md, "Retained messages across nodes").

use std::sync::Arc;

use rustc_hash::FxHashMap;
use tern_codec::TopicName;

use crate::broker::Broker;
use crate::cluster::{ClusterOp, RetainedEntry};
use crate::types::{Message, SessionKey, SharedMessage, Time};

/// What the node knows of the cluster's retained messages besides the messages themselves.
#[derive(Debug, Default)]
pub(in crate::broker) struct ClusterRetained {
    /// The revision of the last change taken for each topic, deletions included, so that an
    /// older change arriving late (a live copy behind the bucket's, or the other way round)
    /// changes nothing.
    revisions: FxHashMap<TopicName, u64>,
    /// Subscriptions waiting to read retained messages, by the token they asked with.
    waiting: FxHashMap<u64, SessionKey>,
    next_token: u64,
}

impl Broker {
    /// Whether the retained copy of `message` is the cluster's to keep, not this node's: every
    /// message on a cluster node but the broker's own `$SYS` ones, whose figures are the node's.
    pub(in crate::broker) fn retained_by_cluster(&self, message: &Message) -> bool {
        self.config.cluster && !(message.origin.is_none() && message.topic.is_dollar())
    }

    /// Takes changes to the cluster's retained messages into this node's copy: a change older
    /// than the one the node holds for its topic is ignored, so that every node ends with the
    /// topic's last revision whatever order the changes came in.
    pub fn retained_from_cluster(&mut self, entries: Vec<RetainedEntry>, now: Time) {
        for entry in entries {
            let message = entry.message.and_then(|mut remote| {
                // Not a message of the log: no place in it to remember.
                remote.seq = None;
                self.message_from_cluster(remote, now)
            });
            self.take_retained(entry.topic, entry.revision, message.as_ref());
        }
    }

    /// Sets (or, with no message or an empty one, clears) the retained message of `topic` as of
    /// `revision`, unless the node holds a later revision of it.
    pub(in crate::broker) fn take_retained(
        &mut self,
        topic: TopicName,
        revision: u64,
        message: Option<&SharedMessage>,
    ) {
        let revisions = &mut self.cluster.retained.revisions;
        if revisions.get(&topic).is_some_and(|&held| held >= revision) {
            return;
        }
        match message.filter(|message| !message.payload.is_empty()) {
            Some(message) => {
                // Kept in allocations of its own, as a local retained message is.
                let mut kept = message.detached();
                kept.retain = true;
                self.retained.set(Arc::new(kept));
            }
            None => {
                self.retained.clear(&topic);
            }
        }
        revisions.insert(topic.detached(), revision);
    }

    /// A subscription of session `key` wants its retained messages: returns the token of the
    /// question put to the cluster layer, answered by [`Broker::cluster_retained_ready`].
    pub(in crate::broker) fn cluster_retained_token(&mut self, key: SessionKey) -> u64 {
        let state = &mut self.cluster.retained;
        state.next_token += 1;
        let token = state.next_token;
        state.waiting.insert(token, key);
        self.cluster
            .ops
            .push_back(ClusterOp::RetainedWanted { token });
        token
    }

    /// The subscriptions that asked with `tokens` may read their retained messages: every
    /// message retained before they were in place is in this node's copy now. What is set from
    /// here on reached them live, and is not owed.
    pub fn cluster_retained_ready(&mut self, tokens: Vec<u64>, now: Time) {
        for token in tokens {
            let Some(key) = self.cluster.retained.waiting.remove(&token) else {
                continue;
            };
            let live = self
                .sessions
                .get(key.0 as usize)
                .and_then(Option::as_ref)
                .is_some_and(|session| session.connection.is_some());
            if self.retained_feed_ready(key, token) && live {
                self.pump(key, now);
            }
        }
    }
}
