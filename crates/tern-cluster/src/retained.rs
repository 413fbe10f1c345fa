//! Retained messages across nodes: the replicated KV bucket `TERN_RETAIN` holds one value per
//! topic (the message's envelope, topic and expiry inside), written before the message's live
//! publish, and every node keeps a copy in its core's retained store, fed by a watch of the
//! bucket from its start; the revision each change got travels with the live message too
//! (header [`REVISION_HEADER`]), so a node takes whichever copy reaches it first and the later
//! revision of a topic wins everywhere.
//!
//! A new subscription reads its retained messages only once the node's subscriptions are in
//! place and its copy holds every revision the bucket had by then ([`Retained::ready`]): a
//! message retained before that is in the copy, and one retained after reaches the
//! subscription live. Expired values are deleted from the bucket by whichever node's timer
//! comes first (a delete that expects the expired revision, so a newer value stays).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use tern_core::{ClusterInput, RetainedEntry};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::dispatch::remote_message;
use crate::envelope::Envelope;
use crate::node::wall_millis;
use crate::subject::{topic_subject, TopicSubject};
use crate::Counters;

/// The bucket of retained messages.
pub(crate) const RETAIN_BUCKET: &str = "TERN_RETAIN";
/// The header of a live RETAIN message that carries its revision in the bucket.
pub(crate) const REVISION_HEADER: &str = "Tern-Retained-Revision";
/// Changes handed to the core at most in one input.
const ENTRIES_PER_INPUT: usize = 1024;
/// Wait before asking NATS again (a write, a watch, the bucket's state) when it did not answer.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// The key of `topic` in the bucket: its levels escaped as in a subject, or a hash of a topic
/// too long for one (the topic is inside the value, and inside a deletion's payload).
pub(crate) fn retained_key(topic: &str) -> String {
    match topic_subject("r", topic) {
        TopicSubject::Exact(key) => key,
        TopicSubject::Overflow(_) => {
            let hash = xxhash_rust::xxh3::xxh3_128(topic.as_bytes());
            format!("h.{hash:032x}")
        }
    }
}

/// The node's side of the bucket.
pub(crate) struct Retained {
    store: kv::Store,
    jetstream: jetstream::Context,
    /// The bucket's stream, for its last revision.
    stream: jetstream::stream::Stream,
    /// The highest revision handed to the core so far.
    seen: watch::Receiver<u64>,
    seen_tx: watch::Sender<u64>,
    /// Values that expire, by wall-clock millisecond: (when, revision, key, topic).
    expiring: std::sync::Mutex<BTreeSet<(u64, u64, String, String)>>,
    /// Wakes the purge task when an earlier expiry comes.
    expiry_added: tokio::sync::Notify,
}

impl Retained {
    pub(crate) fn new(
        store: kv::Store,
        jetstream: jetstream::Context,
        stream: jetstream::stream::Stream,
    ) -> Self {
        let (seen_tx, seen) = watch::channel(0);
        Self {
            store,
            jetstream,
            stream,
            seen,
            seen_tx,
            expiring: std::sync::Mutex::new(BTreeSet::new()),
            expiry_added: tokio::sync::Notify::new(),
        }
    }

    /// Writes the retained message of `topic` (its envelope; `None` deletes it) and returns
    /// its revision, asking again until NATS stores it: the message's live publish, and its
    /// publisher's acknowledgement, come after.
    pub(crate) async fn write(&self, topic: &str, envelope: Option<&Bytes>) -> u64 {
        loop {
            match self.try_write(topic, envelope, None).await {
                Ok(revision) => return revision,
                Err(error) => {
                    warn!("retained message of {topic:?} not written ({error}); trying again");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }

    /// Writes the retained messages of a batch (see [`Retained::write`]), side by side: sent
    /// in order on one connection, JetStream stores them in that order, so two writes of one
    /// topic keep theirs. Returns their revisions, in order.
    pub(crate) async fn write_all(&self, writes: &[(&str, Option<&Bytes>)]) -> Vec<u64> {
        let mut sent = Vec::with_capacity(writes.len());
        for (topic, envelope) in writes {
            sent.push(self.send(topic, *envelope, None).await);
        }
        let outcomes = futures_util::future::join_all(sent.into_iter().map(|sent| async {
            let ack = sent?.await.map_err(|error| error.to_string())?;
            Ok::<u64, String>(ack.sequence)
        }))
        .await;
        let mut revisions = Vec::with_capacity(writes.len());
        for (index, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(revision) => revisions.push(revision),
                Err(error) => {
                    // From the first that failed on, one at a time and in order: a write of a
                    // topic written again must not end up behind an earlier one.
                    warn!("retained messages not written ({error}); writing them again");
                    for (topic, envelope) in &writes[index..] {
                        revisions.push(self.write(topic, *envelope).await);
                    }
                    break;
                }
            }
        }
        revisions
    }

    /// One write; a deletion carries the topic as its payload (a hashed key does not say it),
    /// and with `expect`, is made only if the key's value is still of that revision.
    async fn try_write(
        &self,
        topic: &str,
        envelope: Option<&Bytes>,
        expect: Option<u64>,
    ) -> Result<u64, String> {
        let ack = self.send(topic, envelope, expect).await?;
        let ack = ack.await.map_err(|error| error.to_string())?;
        Ok(ack.sequence)
    }

    /// Sends one write (see [`Retained::try_write`]); the future is JetStream's answer.
    async fn send(
        &self,
        topic: &str,
        envelope: Option<&Bytes>,
        expect: Option<u64>,
    ) -> Result<jetstream::context::PublishAckFuture, String> {
        let subject = format!("$KV.{RETAIN_BUCKET}.{}", retained_key(topic));
        let ack = match envelope {
            Some(envelope) => self.jetstream.publish(subject, envelope.clone()).await,
            None => {
                let mut headers = HeaderMap::new();
                headers.insert("KV-Operation", "DEL");
                if let Some(revision) = expect {
                    headers.insert(
                        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                        revision.to_string().as_str(),
                    );
                }
                let payload = Bytes::copy_from_slice(topic.as_bytes());
                self.jetstream
                    .publish_with_headers(subject, headers, payload)
                    .await
            }
        };
        ack.map_err(|error| error.to_string())
    }

    /// Hands every change of the bucket to the core, from its start (the last value of each
    /// key, then each change as it comes), in revisions' order, in inputs of up to
    /// [`ENTRIES_PER_INPUT`]; runs until the core is gone.
    pub(crate) async fn watch(
        self: Arc<Self>,
        inputs: mpsc::Sender<ClusterInput>,
        counters: Arc<Counters>,
    ) {
        let mut next = 0;
        let started = std::time::Instant::now();
        let mut loaded = 0_usize;
        let mut current = false;
        if let Ok(info) = self.stream.get_info().await {
            if info.state.messages == 0 {
                info!("no retained messages in the cluster yet");
                loaded = usize::MAX;
            }
        }
        loop {
            let watch = match next {
                0 => self.store.watch_with_history(">").await,
                from => self.store.watch_from_revision(">", from).await,
            };
            let watch = match watch {
                Ok(watch) => watch,
                Err(error) => {
                    warn!("cannot watch the retained messages ({error}); trying again");
                    tokio::time::sleep(RETRY_DELAY).await;
                    continue;
                }
            };
            let mut chunks = watch.ready_chunks(ENTRIES_PER_INPUT);
            let mut broken = false;
            while let Some(chunk) = chunks.next().await {
                let mut entries = Vec::with_capacity(chunk.len());
                let mut last = None;
                for entry in chunk {
                    match entry {
                        Ok(entry) if !broken => {
                            last = Some(entry.revision);
                            current |= entry.delta == 0;
                            entries.extend(self.entry(entry, &counters));
                        }
                        Ok(_) => {}
                        // Its consumer is gone (its server died, say): watched again below,
                        // from the first revision not taken, rather than waited on.
                        Err(error) => {
                            warn!("retained messages' watch: {error}");
                            broken = true;
                        }
                    }
                }
                let Some(last) = last else {
                    if broken {
                        break;
                    }
                    continue;
                };
                next = last + 1;
                if loaded != usize::MAX {
                    loaded += entries.len();
                    if current {
                        info!(
                            "{loaded} retained message(s) loaded from the cluster in {:?}",
                            started.elapsed()
                        );
                        loaded = usize::MAX;
                    }
                }
                if !entries.is_empty()
                    && inputs.send(ClusterInput::Retained(entries)).await.is_err()
                {
                    return;
                }
                // After the entries: a subscription told it may read finds them in the core.
                self.seen_tx.send_modify(|seen| *seen = (*seen).max(last));
                if broken {
                    break;
                }
            }
            warn!("the retained messages' watch stopped; watching again from revision {next}");
        }
    }

    /// The core's form of a change of the bucket; `None` if its value is not a message.
    fn entry(&self, entry: kv::Entry, counters: &Counters) -> Option<RetainedEntry> {
        if entry.operation != kv::Operation::Put {
            let topic = std::str::from_utf8(&entry.value).ok()?.parse().ok();
            return topic.map(|topic| RetainedEntry {
                revision: entry.revision,
                topic,
                message: None,
            });
        }
        let envelope = match Envelope::decode(entry.value) {
            Ok(envelope) => envelope,
            Err(error) => {
                counters.count_undecodable();
                warn!(
                    "retained value {:?} is not a Tern envelope: {error}",
                    entry.key
                );
                return None;
            }
        };
        if let Some(at) = envelope.expires_at_wall {
            let key = (at, entry.revision, entry.key, envelope.topic.to_string());
            let earliest = {
                let mut expiring = self.expiring.lock().unwrap_or_else(|e| e.into_inner());
                expiring.insert(key.clone());
                expiring.first() == Some(&key)
            };
            if earliest {
                self.expiry_added.notify_one();
            }
        }
        Some(RetainedEntry {
            revision: entry.revision,
            topic: envelope.topic.clone(),
            message: Some(remote_message(envelope, None)),
        })
    }

    /// Deletes each expired value from the bucket once its time comes, if it is still the
    /// key's value; runs for as long as the node.
    pub(crate) async fn purge_expired(self: Arc<Self>) {
        loop {
            let first = {
                let expiring = self.expiring.lock().unwrap_or_else(|e| e.into_inner());
                expiring.first().cloned()
            };
            let Some(first) = first else {
                self.expiry_added.notified().await;
                continue;
            };
            let wait = first.0.saturating_sub(wall_millis());
            if wait > 0 {
                let _ =
                    tokio::time::timeout(Duration::from_millis(wait), self.expiry_added.notified())
                        .await;
                continue;
            }
            let (_, revision, _, topic) = &first;
            match self.try_write(topic, None, Some(*revision)).await {
                Ok(_) => debug!("expired retained message of {topic:?} deleted"),
                // Another node deleted it first, or a newer value replaced it.
                Err(error) => debug!("expired retained message of {topic:?}: {error}"),
            }
            let mut expiring = self.expiring.lock().unwrap_or_else(|e| e.into_inner());
            expiring.remove(&first);
        }
    }

    /// Tells the core that the subscriptions asking with `tokens` may read their retained
    /// messages, once the core's copy holds every revision the bucket has now (the node's
    /// subscriptions for them are in place before this is called).
    pub(crate) async fn ready(
        self: Arc<Self>,
        tokens: Vec<u64>,
        inputs: mpsc::Sender<ClusterInput>,
    ) {
        let last = loop {
            match self.stream.get_info().await {
                Ok(info) => break info.state.last_sequence,
                Err(error) => {
                    warn!(
                        "cannot read the retained messages' last revision ({error}); trying again"
                    );
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        };
        let mut seen = self.seen.clone();
        if seen.wait_for(|&seen| seen >= last).await.is_err() {
            return;
        }
        let _ = inputs.send(ClusterInput::RetainedReady(tokens)).await;
    }
}

/// The revision header of a live RETAIN message.
pub(crate) fn revision_headers(revision: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(REVISION_HEADER, revision.to_string().as_str());
    headers
}

/// The revision a live message carries, if it is a RETAIN message the bucket has.
pub(crate) fn revision_of(headers: Option<&HeaderMap>) -> Option<u64> {
    headers?.get(REVISION_HEADER)?.as_str().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_topics_or_a_hash_of_one_too_long() {
        assert_eq!(retained_key("a/b.c/*"), "r.m.a.b=2Ec.=2A");
        assert_eq!(retained_key("$SYS/x"), "r.s.=24SYS.x");
        assert_eq!(retained_key("a//"), "r.m.a.=.=");
        let long = format!("t/{}", "x.".repeat(1500));
        let key = retained_key(&long);
        assert!(key.starts_with("h.") && key.len() == 34, "{key}");
        assert_ne!(key, retained_key(&format!("{long}y")));
    }
}
