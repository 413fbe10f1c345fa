//! The QoS 1/2 messages of `$share` groups, from a durable JetStream consumer per group and
//! subject: the nodes with members of a group pull from its consumer, and each message is
//! acknowledged to JetStream once handed to the broker thread. A message a node pulled and
//! did not acknowledge (the node died) is given to another after the acknowledgement wait; a
//! group with no member online anywhere keeps its messages in the consumer until one comes
//! back (or the stream's horizon passes). QoS 0 messages, which the stream does not hold, go
//! through the group's NATS queue group (`interest`).

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use futures_util::{FutureExt, StreamExt};
use tern_codec::TopicFilter;
use tern_core::ClusterInput;
use tokio::sync::{mpsc, Mutex};
use tokio::task::AbortHandle;
use tracing::{debug, warn};

use crate::dispatch::remote_message;
use crate::envelope::Envelope;
use crate::node::{INGEST_PREFIX, LIVE_PREFIX};
use crate::Counters;

/// How long JetStream waits for a node's acknowledgement before giving the message to
/// another node of the group: a node acknowledges as soon as the broker thread has it.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// Messages handed to the broker thread at once at most.
const BATCH_MAX: usize = 256;
/// Wait before trying again to set up a consumer JetStream refused.
const RETRY_DELAY: Duration = Duration::from_millis(500);
/// Times a consumer's set-up is tried again (while JetStream elects a leader, say) before the
/// node gives up on it.
const SETUP_ATTEMPTS: u32 = 20;

/// One consumer pulled on this node, and how many hold it.
struct Pulling {
    count: u32,
    abort: AbortHandle,
}

/// The group consumers this node pulls from.
pub(crate) struct Groups {
    messages: Stream,
    inputs: mpsc::Sender<ClusterInput>,
    counters: std::sync::Arc<Counters>,
    /// How long a consumer nobody pulls from is kept (the stream's horizon).
    keep: Duration,
    pulling: Mutex<HashMap<String, Pulling>>,
}

/// The durable consumer of the group of `shared` on `subject` (a live subject of the group's
/// filter).
pub(crate) fn consumer_name(shared: &TopicFilter, subject: &str) -> String {
    let mut hash = xxhash_rust::xxh3::Xxh3::new();
    hash.update(shared.as_str().as_bytes());
    hash.update(&[0]);
    hash.update(subject.as_bytes());
    format!("g{:032x}", hash.digest128())
}

impl Groups {
    pub(crate) fn new(
        messages: Stream,
        inputs: mpsc::Sender<ClusterInput>,
        counters: std::sync::Arc<Counters>,
        keep: Duration,
    ) -> Self {
        Self {
            messages,
            inputs,
            counters,
            keep,
            pulling: Mutex::new(HashMap::new()),
        }
    }

    /// One more holder of the group of `shared` on `subject`; the first makes sure its
    /// consumer exists (before returning: a SUBACK waits for it, and a message stored after
    /// reaches the group) and pulls from it.
    pub(crate) async fn hold(&self, shared: &TopicFilter, subject: &str) {
        let name = consumer_name(shared, subject);
        let mut pulling = self.pulling.lock().await;
        if let Some(entry) = pulling.get_mut(&name) {
            entry.count += 1;
            return;
        }
        let Some(rest) = subject.strip_prefix(&format!("{LIVE_PREFIX}.")) else {
            return;
        };
        let config = pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: format!("{INGEST_PREFIX}.{rest}"),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            inactive_threshold: self.keep,
            ..Default::default()
        };
        let mut attempts = 0;
        let consumer = loop {
            let created = self.messages.get_or_create_consumer(&name, config.clone());
            match created.await {
                Ok(consumer) => break consumer,
                Err(error) if attempts < SETUP_ATTEMPTS => {
                    attempts += 1;
                    debug!("consumer of {shared} on {subject} not set up yet: {error}");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
                Err(error) => {
                    // Its QoS 0 messages still come (queue group); its QoS 1/2 ones to this
                    // node once a member subscribes again.
                    warn!(
                        "cannot set up the consumer of {shared} on {subject}, this node takes \
                         none of the group's QoS 1/2 messages: {error}"
                    );
                    return;
                }
            }
        };
        debug!("pulling {name} for {shared} on {subject}");
        let task = tokio::spawn(pull_loop(
            consumer,
            shared.clone(),
            self.inputs.clone(),
            std::sync::Arc::clone(&self.counters),
        ));
        let abort = task.abort_handle();
        pulling.insert(name, Pulling { count: 1, abort });
    }

    /// One holder fewer; after the last this node stops pulling (the consumer stays, for the
    /// group's other nodes and members that come back).
    pub(crate) async fn release(&self, shared: &TopicFilter, subject: &str) {
        let name = consumer_name(shared, subject);
        let mut pulling = self.pulling.lock().await;
        let Some(entry) = pulling.get_mut(&name) else {
            return;
        };
        entry.count -= 1;
        if entry.count == 0 {
            if let Some(entry) = pulling.remove(&name) {
                entry.abort.abort();
            }
        }
    }
}

/// Pulls the group's messages and hands each to the broker thread for the group, then
/// acknowledges it.
async fn pull_loop(
    consumer: PullConsumer,
    shared: TopicFilter,
    inputs: mpsc::Sender<ClusterInput>,
    counters: std::sync::Arc<Counters>,
) {
    loop {
        let mut messages = match consumer.messages().await {
            Ok(messages) => messages,
            Err(error) => {
                warn!("cannot pull the messages of {shared}: {error}");
                tokio::time::sleep(RETRY_DELAY).await;
                continue;
            }
        };
        while let Some(first) = messages.next().await {
            // What else has arrived goes with it: one hand-over to the broker thread.
            let mut batch = vec![first];
            while batch.len() < BATCH_MAX {
                match messages.next().now_or_never() {
                    Some(Some(next)) => batch.push(next),
                    _ => break,
                }
            }
            let mut remotes = Vec::with_capacity(batch.len());
            let mut taken = Vec::with_capacity(batch.len());
            for message in batch {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => {
                        debug!("pulling the messages of {shared}: {error}");
                        continue;
                    }
                };
                let seq = message.info().ok().map(|info| info.stream_sequence);
                match Envelope::decode(message.payload.clone()) {
                    Ok(envelope) => {
                        let mut remote = remote_message(envelope, seq);
                        remote.shared = Some(shared.clone());
                        remotes.push(remote);
                    }
                    Err(error) => {
                        counters.count_undecodable();
                        warn!("message {seq:?} of the stream is not from a Tern node: {error}");
                    }
                }
                taken.push(message);
            }
            if !remotes.is_empty() && inputs.send(ClusterInput::Deliver(remotes)).await.is_err() {
                return;
            }
            for message in taken {
                if let Err(error) = message.ack().await {
                    debug!("acknowledgement of a message of {shared} not sent: {error}");
                }
            }
        }
        tokio::time::sleep(RETRY_DELAY).await;
    }
}
