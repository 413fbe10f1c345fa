//! The NATS side of a node, on a thread of its own: it joins NATS, makes sure the message
//! stream exists, and then turns the core's cluster operations into NATS subscriptions and
//! publishes, and what its subscriptions receive into messages for the core.
//!
//! - Interest: one NATS subscription per subject of the node's filters, counted, so two
//!   filters sharing a subject (`a` and `a/#`) hold one.
//! - QoS 0: published on its subject under `tern.d` (the connection has `no_echo`: the node
//!   never hears its own back).
//! - QoS 1/2: published to the stream `TERN_MSG_0` under `tern.in0`, with the message's
//!   identity as `Nats-Msg-Id` so a retry is stored once; the stream republishes what it
//!   stored under `tern.d` to every interested node, this one included. A batch is reported
//!   through once every such message of it is acknowledged by JetStream and, when it changed
//!   the interest, once the server has seen the new subscriptions (a round trip on the same
//!   connection), so a SUBACK never precedes the subscription it promises.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{
    self, context::PublishAckFuture, context::PublishError, message::PublishMessage,
};
use futures_util::StreamExt;
use tern_core::{
    ClaimOutcome, ClusterBatch, ClusterInput, ClusterOp, ClusterPublish, RemoteMessage,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::dedup::Recent;
use crate::envelope::Envelope;
use crate::settings::{ClusterError, Settings};
use crate::subject::{filter_subjects, overflow_subject, topic_subject};
use crate::Counters;

/// Subjects nodes subscribe to: QoS 0 from publishers, QoS 1/2 republished by the stream.
pub(crate) const LIVE_PREFIX: &str = "tern.d";
/// Subjects the message stream captures.
pub(crate) const INGEST_PREFIX: &str = "tern.in0";
/// The message stream (one partition for now).
pub(crate) const STREAM: &str = "TERN_MSG_0";

/// Messages from the subscriptions waiting for the dispatcher.
const RECEIVED_QUEUE: usize = 4096;
/// Messages handed to the broker thread in one batch at most.
const DELIVER_BATCH_MAX: usize = 256;
/// Batches waiting for their acknowledgements.
const PENDING_BATCHES: usize = 1024;
/// Wait between attempts to find or create the stream while NATS forms.
const STREAM_RETRY_DELAY: Duration = Duration::from_millis(250);
/// How long a node stopping waits for NATS to take what it was handed.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Wait before publishing again a QoS 1/2 message JetStream did not acknowledge.
const RETRY_DELAY: Duration = Duration::from_millis(500);

/// What a node holds once joined.
pub(crate) struct Joined {
    pub(crate) client: async_nats::Client,
    pub(crate) jetstream: jetstream::Context,
    /// This process's identity in the cluster, random per start.
    pub(crate) boot: u64,
}

/// Connects to NATS and makes sure the message stream exists.
pub(crate) async fn join(
    settings: &Settings,
    counters: Arc<Counters>,
    inputs: mpsc::Sender<ClusterInput>,
) -> Result<Joined, ClusterError> {
    let options = settings.connect_options(counters, inputs)?;
    let client = options
        .connect(settings.nats.clone())
        .await
        .map_err(|error| ClusterError::Connect(settings.nats.join(", "), error.to_string()))?;
    let jetstream = jetstream::new(client.clone());
    let config = jetstream::stream::Config {
        name: STREAM.to_owned(),
        subjects: vec![format!("{INGEST_PREFIX}.>")],
        republish: Some(jetstream::stream::Republish {
            source: format!("{INGEST_PREFIX}.>"),
            destination: format!("{LIVE_PREFIX}.>"),
            headers_only: false,
        }),
        num_replicas: settings.replicas,
        max_age: settings.offline_horizon,
        storage: jetstream::stream::StorageType::File,
        allow_direct: true,
        ..Default::default()
    };
    // A NATS cluster that is still forming (servers starting together) refuses to place a
    // replicated stream until enough of its servers have joined: try again until the deadline.
    let deadline = tokio::time::Instant::now() + settings.connect_timeout;
    let stream = loop {
        match jetstream.get_or_create_stream(config.clone()).await {
            Ok(stream) => break stream,
            Err(error) if tokio::time::Instant::now() < deadline => {
                info!("stream {STREAM} not ready yet ({error}); trying again");
                tokio::time::sleep(STREAM_RETRY_DELAY).await;
            }
            Err(error) => return Err(ClusterError::Stream(error.to_string())),
        }
    };
    let replicas = stream.cached_info().config.num_replicas;
    if replicas != settings.replicas {
        warn!(
            "stream {STREAM} exists with {replicas} replica(s), not the {} configured; it is \
             used as it is",
            settings.replicas
        );
    }
    let boot = fastrand::u64(..);
    info!(
        "cluster node {:?} joined NATS at {} (boot {boot:016x})",
        settings.node_id,
        client.server_info().host
    );
    Ok(Joined {
        client,
        jetstream,
        boot,
    })
}

/// A subscription and the task that forwards what it receives.
struct Subscribed {
    count: u32,
    task: JoinHandle<()>,
}

/// A batch waiting for JetStream's acknowledgements.
struct Pending {
    seq: u64,
    acks: Vec<Unacked>,
    /// Whether the batch changed the subscriptions, so it waits for the server to see them.
    sync: bool,
}

/// A QoS 1/2 message published to the stream, not yet acknowledged.
struct Unacked {
    ack: Result<PublishAckFuture, PublishError>,
    subject: String,
    message_id: String,
    payload: bytes::Bytes,
}

/// Runs until the broker thread drops its end of `batches`.
pub(crate) async fn run(
    joined: Joined,
    mut batches: mpsc::UnboundedReceiver<ClusterBatch>,
    inputs: mpsc::Sender<ClusterInput>,
    counters: Arc<Counters>,
) {
    let (received_tx, received_rx) = mpsc::channel(RECEIVED_QUEUE);
    let (pending_tx, pending_rx) = mpsc::channel(PENDING_BATCHES);
    let dispatcher = tokio::spawn(dispatch(
        received_rx,
        inputs.clone(),
        joined.boot,
        Arc::clone(&counters),
    ));
    let claims = inputs.clone();
    let acker = tokio::spawn(acknowledge(
        pending_rx,
        inputs,
        joined.client.clone(),
        joined.jetstream.clone(),
        joined.boot,
    ));
    let mut node = Node {
        client: joined.client.clone(),
        jetstream: joined.jetstream,
        boot: joined.boot,
        counter: 0,
        subjects: HashMap::new(),
        received: received_tx,
        counters,
    };
    // Topics too long to be a subject may match any wildcard filter: always heard.
    node.hold(overflow_subject(LIVE_PREFIX), true).await;
    while let Some(batch) = batches.recv().await {
        let mut pending = Pending {
            seq: batch.seq,
            acks: Vec::new(),
            sync: false,
        };
        for op in batch.ops {
            match op {
                ClusterOp::Interest { filter, present } => {
                    for subject in filter_subjects(LIVE_PREFIX, filter.as_str()) {
                        node.hold(subject, present).await;
                    }
                    pending.sync = true;
                }
                ClusterOp::Publish(publish) => {
                    if let Some(unacked) = node.publish(publish).await {
                        pending.acks.push(unacked);
                    }
                }
                // Sessions stay on their node: each is this node's as soon as it is claimed.
                ClusterOp::Claim(claim) => {
                    let outcome = ClaimOutcome::Owned {
                        handed_over: None,
                        backlog: Vec::new(),
                    };
                    let settled = ClusterInput::ClaimSettled {
                        connection: claim.connection,
                        outcome,
                    };
                    if claims.send(settled).await.is_err() {
                        break;
                    }
                }
                ClusterOp::ClaimDone { .. }
                | ClusterOp::SessionSaved { .. }
                | ClusterOp::SessionEnded { .. }
                | ClusterOp::HandedOver { .. } => {}
            }
        }
        if pending_tx.send(pending).await.is_err() {
            break;
        }
    }
    // The broker is stopping: what it handed over is finished if NATS lets it be soon; a
    // message not stored by then was never acknowledged to its client.
    drop(pending_tx);
    let abort = acker.abort_handle();
    if tokio::time::timeout(SHUTDOWN_GRACE, acker).await.is_err() {
        abort.abort();
        warn!("NATS did not store every message before shutdown; none of those was acknowledged");
    }
    for (_, subscribed) in node.subjects.drain() {
        subscribed.task.abort();
    }
    dispatcher.abort();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, joined.client.flush()).await;
}

struct Node {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    boot: u64,
    counter: u64,
    subjects: HashMap<String, Subscribed>,
    received: mpsc::Sender<async_nats::Message>,
    counters: Arc<Counters>,
}

impl Node {
    /// Counts one more (`present`) or one less holder of `subject`, subscribing on the first
    /// and unsubscribing after the last.
    async fn hold(&mut self, subject: String, present: bool) {
        if !present {
            if let Some(subscribed) = self.subjects.get_mut(&subject) {
                subscribed.count -= 1;
                if subscribed.count == 0 {
                    if let Some(subscribed) = self.subjects.remove(&subject) {
                        // Dropping the subscriber unsubscribes.
                        subscribed.task.abort();
                        debug!("unsubscribed from {subject}");
                    }
                }
            }
            return;
        }
        if let Some(subscribed) = self.subjects.get_mut(&subject) {
            subscribed.count += 1;
            return;
        }
        let mut subscriber = match self.client.subscribe(subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                warn!("cannot subscribe to {subject}: {error}");
                return;
            }
        };
        debug!("subscribed to {subject}");
        let received = self.received.clone();
        let task = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                if received.send(message).await.is_err() {
                    return;
                }
            }
        });
        self.subjects.insert(subject, Subscribed { count: 1, task });
    }

    /// Publishes a message accepted on this node; for QoS 1/2, returns what awaits
    /// JetStream's acknowledgement.
    async fn publish(&mut self, publish: ClusterPublish) -> Option<Unacked> {
        self.counter += 1;
        let message = &publish.message;
        let envelope = Envelope {
            origin: self.boot,
            counter: self.counter,
            topic: message.topic.clone(),
            payload: message.payload.clone(),
            qos: message.qos,
            retain: message.retain,
            properties: message.properties.clone(),
            expires_at_wall: publish.expiry_millis.map(|millis| wall_millis() + millis),
            publisher: publish.publisher.clone(),
        };
        let payload = match envelope.encode() {
            Ok(payload) => payload,
            Err(error) => {
                self.counters.count_dropped();
                warn!(
                    "message to {:?} not sent to the cluster: {error}",
                    message.topic
                );
                return None;
            }
        };
        if message.qos == tern_codec::QoS::AtMostOnce {
            let subject = topic_subject(LIVE_PREFIX, message.topic.as_str());
            if let Err(error) = self
                .client
                .publish(subject.as_str().to_owned(), payload)
                .await
            {
                self.counters.count_dropped();
                warn!(
                    "QoS 0 message to {:?} not sent to the cluster: {error}",
                    message.topic
                );
            }
            return None;
        }
        let subject = topic_subject(INGEST_PREFIX, message.topic.as_str())
            .as_str()
            .to_owned();
        let message_id = format!("{:016x}.{}", self.boot, self.counter);
        let ack = self
            .jetstream
            .send_publish(
                subject.clone(),
                PublishMessage::build()
                    .payload(payload.clone())
                    .message_id(message_id.clone()),
            )
            .await;
        Some(Unacked {
            ack,
            subject,
            message_id,
            payload,
        })
    }
}

/// Reports each batch through, in order, once JetStream has acknowledged its messages (a
/// message it did not acknowledge is published again, under the same `Nats-Msg-Id`, until it
/// does: nothing is acknowledged to a client that is not replicated) and the server has seen
/// its subscriptions.
async fn acknowledge(
    mut pending: mpsc::Receiver<Pending>,
    inputs: mpsc::Sender<ClusterInput>,
    client: async_nats::Client,
    jetstream: jetstream::Context,
    boot: u64,
) {
    while let Some(batch) = pending.recv().await {
        for unacked in batch.acks {
            let mut ack = unacked.ack;
            loop {
                let error = match ack {
                    Ok(future) => match future.await {
                        Ok(_) => break,
                        Err(error) => error.to_string(),
                    },
                    Err(error) => error.to_string(),
                };
                warn!(
                    "JetStream did not store the message {} ({error}); publishing it again",
                    unacked.message_id
                );
                tokio::time::sleep(RETRY_DELAY).await;
                ack = jetstream
                    .send_publish(
                        unacked.subject.clone(),
                        PublishMessage::build()
                            .payload(unacked.payload.clone())
                            .message_id(unacked.message_id.clone()),
                    )
                    .await;
            }
        }
        if batch.sync {
            // Requests to a subject nobody answers come back "no responders" from the server,
            // after it has handled everything this connection sent before.
            let _ = client
                .request(format!("tern.sync.{boot:016x}"), bytes::Bytes::new())
                .await;
        }
        if inputs.send(ClusterInput::Through(batch.seq)).await.is_err() {
            return;
        }
    }
}

/// Turns what the subscriptions receive into messages for the core: one copy of each.
async fn dispatch(
    mut received: mpsc::Receiver<async_nats::Message>,
    inputs: mpsc::Sender<ClusterInput>,
    boot: u64,
    counters: Arc<Counters>,
) {
    let mut recent = Recent::default();
    while let Some(first) = received.recv().await {
        let mut out = Vec::new();
        let mut next = Some(first);
        while let Some(message) = next {
            if let Some(remote) = open_envelope(message, &mut recent, boot, &counters) {
                out.push(remote);
            }
            next = match out.len() < DELIVER_BATCH_MAX {
                true => received.try_recv().ok(),
                false => None,
            };
        }
        if !out.is_empty() && inputs.send(ClusterInput::Deliver(out)).await.is_err() {
            return;
        }
    }
}

/// The message a NATS message carries, unless it is a copy already routed.
fn open_envelope(
    message: async_nats::Message,
    recent: &mut Recent,
    boot: u64,
    counters: &Counters,
) -> Option<RemoteMessage> {
    let envelope = match Envelope::decode(message.payload) {
        Ok(envelope) => envelope,
        Err(error) => {
            counters.count_undecodable();
            warn!(
                "message on {} is not from a Tern node: {error}",
                message.subject
            );
            return None;
        }
    };
    // Loops: QoS 0 from this node never comes back (no echo); QoS 1/2 does, from the stream.
    if envelope.origin == boot && envelope.qos == tern_codec::QoS::AtMostOnce {
        return None;
    }
    if !recent.first_copy(envelope.origin, envelope.counter) {
        return None;
    }
    Some(RemoteMessage {
        topic: envelope.topic,
        payload: envelope.payload,
        qos: envelope.qos,
        retain: envelope.retain,
        properties: envelope.properties,
        expiry_millis: envelope
            .expires_at_wall
            .map(|at| at.saturating_sub(wall_millis())),
        publisher: envelope.publisher,
    })
}

/// Milliseconds since the Unix epoch: what expiry is written in across nodes.
fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
