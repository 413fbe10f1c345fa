//! The NATS side of a node, on a thread of its own: it joins NATS, makes sure the message
//! stream and the buckets exist, and then turns the core's cluster operations into NATS
//! subscriptions, publishes and session records, and what it receives into input for the core.
//!
//! - Interest: one NATS subscription per subject of the node's filters, counted, so two
//!   filters sharing a subject (`a` and `a/#`) hold one (`interest`).
//! - `$share` groups: a queue subscription per subject of the group's filter, in a NATS queue
//!   group per group and filter, so NATS hands each of its messages to one node with members.
//! - QoS 0: published on its subject under `tern.d`. NATS echoes it back to this node (a queue
//!   group may pick this node); the node's plain subscriptions drop their copy, routed here
//!   when it was published.
//! - QoS 1/2: published to the stream `TERN_MSG_0` under `tern.in0`, with the message's
//!   identity as `Nats-Msg-Id` so a retry is stored once; the stream republishes what it
//!   stored under `tern.d` to every interested node, this one included. A batch is reported
//!   through once every such message of it is acknowledged by JetStream, every session record
//!   it writes is written, and, when it changed the interest, once the server has seen the new
//!   subscriptions (a round trip on the same connection), so a SUBACK never precedes the
//!   subscription it promises.
//! - Sessions: claims, records, take-overs and the node's lease (`sessions`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{
    self, context::PublishAckFuture, context::PublishError, kv, message::PublishMessage,
};
use rustc_hash::FxHashMap;
use tern_codec::TopicFilter;
use tern_core::{ClusterBatch, ClusterInput, ClusterOp, ClusterPublish};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use crate::dispatch::{notice_subject, remote_message, Dispatcher, Handoffs};
use crate::envelope::Envelope;
use crate::exactly_once::{Inbound, QOS2_BUCKET};
use crate::groups::Groups;
use crate::interest::Interest;
use crate::joining::until_ready;
use crate::retained::{revision_headers, Retained, RETAIN_BUCKET};
use crate::sessions::{
    bucket, session_key, Bucket, Holder, Sessions, NODES_BUCKET, SESSIONS_BUCKET,
};
use crate::settings::{ClusterError, Settings};
use crate::subject::{filter_subjects, overflow_subject, topic_subject};
use crate::Counters;

/// Subjects nodes subscribe to: QoS 0 from publishers, QoS 1/2 republished by the stream.
pub(crate) const LIVE_PREFIX: &str = "tern.d";
/// Subjects the message stream captures.
pub(crate) const INGEST_PREFIX: &str = "tern.in0";
/// The message stream (one partition for now).
pub(crate) const STREAM: &str = "TERN_MSG_0";

/// Batches waiting for their acknowledgements.
const PENDING_BATCHES: usize = 1024;
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
    /// The session records.
    sessions: kv::Store,
    /// The nodes' leases.
    nodes: kv::Store,
    /// Inbound QoS 2 identifiers.
    qos2: kv::Store,
    /// The stream behind the sessions bucket.
    bucket_stream: jetstream::stream::Stream,
    /// The message stream.
    messages: jetstream::stream::Stream,
    /// The retained messages' bucket and its stream.
    retained: kv::Store,
    retained_stream: jetstream::stream::Stream,
    node_id: String,
    lease: Duration,
    /// How long the stream keeps messages.
    horizon: Duration,
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
    let stream = until_ready(&format!("stream {STREAM}"), deadline, || {
        jetstream.get_or_create_stream(config.clone())
    })
    .await?;
    let replicas = stream.cached_info().config.num_replicas;
    if replicas != settings.replicas {
        warn!(
            "stream {STREAM} exists with {replicas} replica(s), not the {} configured; it is \
             used as it is",
            settings.replicas
        );
    }
    let sessions = Bucket {
        name: SESSIONS_BUCKET,
        replicas: settings.replicas,
        max_age: Duration::ZERO,
    };
    let sessions = bucket(&jetstream, sessions, deadline).await?;
    let nodes = Bucket {
        name: NODES_BUCKET,
        replicas: settings.replicas,
        max_age: settings.lease,
    };
    let nodes = bucket(&jetstream, nodes, deadline).await?;
    // An identifier older than the stream's horizon is worth nothing: its message is gone.
    let qos2 = Bucket {
        name: QOS2_BUCKET,
        replicas: settings.replicas,
        max_age: settings.offline_horizon,
    };
    let qos2 = bucket(&jetstream, qos2, deadline).await?;
    // Retained messages stay until deleted or expired (each has its own expiry, purged by the
    // nodes): the bucket has no age limit.
    let retained = Bucket {
        name: RETAIN_BUCKET,
        replicas: settings.replicas,
        max_age: Duration::ZERO,
    };
    let retained = bucket(&jetstream, retained, deadline).await?;
    let retained_stream = until_ready(&format!("stream KV_{RETAIN_BUCKET}"), deadline, || {
        jetstream.get_stream(format!("KV_{RETAIN_BUCKET}"))
    })
    .await?;
    let bucket_stream = until_ready(&format!("stream KV_{SESSIONS_BUCKET}"), deadline, || {
        jetstream.get_stream(format!("KV_{SESSIONS_BUCKET}"))
    })
    .await?;
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
        sessions,
        nodes,
        qos2,
        bucket_stream,
        messages: stream,
        retained,
        retained_stream,
        node_id: settings.node_id.clone(),
        lease: settings.lease,
        horizon: settings.offline_horizon,
    })
}

/// The subjects the node subscribes to for `filter`. A `$share` group's are its inner
/// filter's and the overflow subject (which the node's plain subscriptions always hear, but
/// a group hears apart), all in the group's queue group.
fn interest_subjects(filter: &TopicFilter) -> Vec<String> {
    match filter.shared() {
        None => filter_subjects(LIVE_PREFIX, filter.as_str()),
        Some((_, inner)) => {
            let mut subjects = filter_subjects(LIVE_PREFIX, inner.as_str());
            subjects.push(overflow_subject(LIVE_PREFIX));
            subjects.sort();
            subjects.dedup();
            subjects
        }
    }
}

/// A batch waiting for JetStream's acknowledgements.
struct Pending {
    seq: u64,
    acks: Vec<Unacked>,
    /// Session records the batch writes.
    writes: Vec<oneshot::Receiver<()>>,
    /// Whether the batch changed the subscriptions, so it waits for the server to see them.
    sync: bool,
    /// Subscriptions of the batch that read retained messages once it is through
    /// ([`Retained::ready`]).
    retained: Vec<u64>,
}

/// A QoS 1/2 message published to the stream, not yet acknowledged.
struct Unacked {
    ack: Result<PublishAckFuture, PublishError>,
    retry: Retry,
}

/// What publishing a QoS 1/2 message again takes.
struct Retry {
    subject: String,
    message_id: String,
    payload: bytes::Bytes,
    /// A RETAIN message's revision in the bucket.
    revision: Option<u64>,
}

/// Runs until the broker thread drops its end of `batches`.
pub(crate) async fn run(
    joined: Joined,
    mut batches: mpsc::UnboundedReceiver<ClusterBatch>,
    inputs: mpsc::Sender<ClusterInput>,
    counters: Arc<Counters>,
) {
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    let (pending_tx, pending_rx) = mpsc::channel(PENDING_BATCHES);
    let handoffs = Arc::new(Mutex::new(Handoffs::default()));
    let dispatcher = Dispatcher::new(
        inputs.clone(),
        joined.boot,
        Arc::clone(&counters),
        Arc::clone(&handoffs),
    );
    let dispatcher = tokio::spawn(dispatcher.run(commands_rx));
    let interest = Arc::new(Interest::new(
        joined.client.clone(),
        joined.boot,
        commands_tx.clone(),
    ));
    let groups = Groups::new(
        joined.messages.clone(),
        inputs.clone(),
        Arc::clone(&counters),
        joined.horizon,
    );
    let sessions = Arc::new(Sessions::new(
        joined.sessions,
        joined.nodes,
        joined.jetstream.clone(),
        joined.client.clone(),
        joined.node_id.clone(),
        joined.boot,
        joined.lease,
        Arc::clone(&interest),
        commands_tx,
        inputs.clone(),
        handoffs,
        Arc::clone(&counters),
        joined.bucket_stream,
        joined.messages,
        joined.qos2.clone(),
    ));
    let retained = Arc::new(Retained::new(
        joined.retained,
        joined.jetstream.clone(),
        joined.retained_stream,
    ));
    let acker = tokio::spawn(acknowledge(
        pending_rx,
        inputs.clone(),
        joined.client.clone(),
        joined.jetstream.clone(),
        joined.boot,
        Arc::clone(&retained),
    ));
    let mut background = vec![
        tokio::spawn(Arc::clone(&sessions).hold_lease()),
        tokio::spawn(Arc::clone(&retained).watch(inputs.clone(), Arc::clone(&counters))),
        tokio::spawn(Arc::clone(&retained).purge_expired()),
    ];
    match joined.client.subscribe(sessions.reply_subject()).await {
        Ok(replies) => background.push(tokio::spawn(Arc::clone(&sessions).take_replies(replies))),
        Err(error) => warn!("cannot take hand-overs of sessions: {error}"),
    }
    let max_payload = joined.client.server_info().max_payload;
    let mut inbound = Inbound::new(joined.qos2, joined.boot);
    let mut node = Node {
        client: joined.client.clone(),
        jetstream: joined.jetstream,
        boot: joined.boot,
        counter: 0,
        counters,
        retained,
        inputs,
    };
    // Topics too long to be a subject may match any wildcard filter: always heard. So are the
    // notices of nodes taking sessions from this one.
    interest.hold(overflow_subject(LIVE_PREFIX)).await;
    interest
        .hold(notice_subject(LIVE_PREFIX, &joined.node_id))
        .await;
    while let Some(batch) = batches.recv().await {
        let mut pending = Pending {
            seq: batch.seq,
            acks: Vec::new(),
            writes: Vec::new(),
            sync: false,
            retained: Vec::new(),
        };
        // The identities of its QoS 2 messages are recorded before any of them is stored.
        let mut identities = match Inbound::concerns(&batch.ops) {
            true => {
                let (identities, recorded) = inbound.settle(&batch.ops).await;
                sessions.note_outbound(recorded);
                identities
            }
            false => Default::default(),
        };
        // Every message encoded first, so the retained ones can be written, side by side,
        // before any is published live: whoever misses a live copy finds it retained.
        let mut prepared: Vec<Option<Prepared>> = batch
            .ops
            .iter()
            .map(|op| match op {
                ClusterOp::Publish(publish) => node.prepare(publish),
                _ => None,
            })
            .collect();
        let revisions = node.write_retained(&batch.ops, &prepared).await;
        for (index, op) in batch.ops.into_iter().enumerate() {
            match op {
                ClusterOp::Interest { filter, present } => {
                    let shared = filter.shared().map(|_| &filter);
                    for subject in interest_subjects(&filter) {
                        if let Some(shared) = shared {
                            match present {
                                true => groups.hold(shared, &subject).await,
                                false => groups.release(shared, &subject).await,
                            }
                        }
                        match present {
                            true => interest.hold_for(subject, shared).await,
                            false => interest.release_for(&subject, shared).await,
                        }
                    }
                    pending.sync = true;
                }
                ClusterOp::Publish(publish) => {
                    let message_id = identities.remove(&index).or_else(|| {
                        publish
                            .publisher
                            .as_ref()
                            .filter(|_| publish.will)
                            .and_then(|client_id| sessions.will_message_id(client_id))
                    });
                    let Some(ready) = prepared.get_mut(index).and_then(Option::take) else {
                        continue;
                    };
                    let revision = revisions.get(&index).copied();
                    if let Some(unacked) = node.publish(publish, ready, message_id, revision).await
                    {
                        pending.acks.push(unacked);
                    }
                }
                ClusterOp::RetainedWanted { token } => {
                    // Read once the batch's subscriptions are in place.
                    pending.retained.push(token);
                    pending.sync = true;
                }
                ClusterOp::Claim(claim) => sessions.claim(claim),
                ClusterOp::ClaimDone { connection } => sessions.release_claim(connection).await,
                ClusterOp::AdoptDone { client_id } => {
                    let key = session_key(&client_id);
                    sessions.core_took(&key);
                    sessions.release(Holder::Adoption(key)).await;
                }
                ClusterOp::SessionSaved {
                    record,
                    cursor,
                    resume_from,
                    ..
                } => {
                    let (done, written) = oneshot::channel();
                    sessions.save(record, cursor, resume_from.unwrap_or(0), done);
                    pending.writes.push(written);
                }
                ClusterOp::SessionEnded { client_id } => sessions.end(client_id),
                ClusterOp::Load {
                    connections,
                    sessions,
                } => node.counters.set_load(connections, sessions),
                // Recorded before the batch's other operations (`settle`).
                ClusterOp::Released { .. } | ClusterOp::Outbound { .. } => {}
                ClusterOp::HandedOver {
                    token,
                    client_id,
                    session,
                    resume_from,
                } => {
                    let resume_from = resume_from.unwrap_or(0);
                    sessions
                        .hand_over(
                            token,
                            &client_id,
                            session.as_deref(),
                            resume_from,
                            max_payload,
                        )
                        .await;
                }
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
    interest.clear().await;
    dispatcher.abort();
    for task in background {
        task.abort();
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, joined.client.flush()).await;
}

/// A message of a batch, encoded for the cluster.
struct Prepared {
    envelope: Envelope,
    payload: bytes::Bytes,
}

struct Node {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    boot: u64,
    counter: u64,
    counters: Arc<Counters>,
    retained: Arc<Retained>,
    /// For a QoS 0 RETAIN message of this node, which reaches its subscribers here only once
    /// retained (the connection never hears its own QoS 0 messages back).
    inputs: mpsc::Sender<ClusterInput>,
}

impl Node {
    /// Encodes a message accepted on this node for the cluster; `None` (counted) if it cannot
    /// be.
    fn prepare(&mut self, publish: &ClusterPublish) -> Option<Prepared> {
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
        Some(Prepared { envelope, payload })
    }

    /// Writes the retained messages among `ops` (encoded as `prepared`) to the bucket; returns
    /// their revisions, by the index of their operation.
    async fn write_retained(
        &self,
        ops: &[ClusterOp],
        prepared: &[Option<Prepared>],
    ) -> FxHashMap<usize, u64> {
        let writes: Vec<(usize, &str, Option<&bytes::Bytes>)> = ops
            .iter()
            .zip(prepared)
            .enumerate()
            .filter_map(|(index, (op, prepared))| match (op, prepared) {
                (ClusterOp::Publish(publish), Some(prepared)) if publish.message.retain => {
                    // An empty one deletes.
                    let value =
                        Some(&prepared.payload).filter(|_| !publish.message.payload.is_empty());
                    Some((index, publish.message.topic.as_str(), value))
                }
                _ => None,
            })
            .collect();
        if writes.is_empty() {
            return FxHashMap::default();
        }
        let values: Vec<(&str, Option<&bytes::Bytes>)> = writes
            .iter()
            .map(|&(_, topic, value)| (topic, value))
            .collect();
        let revisions = self.retained.write_all(&values).await;
        writes
            .iter()
            .map(|&(index, _, _)| index)
            .zip(revisions)
            .collect()
    }

    /// Publishes a message accepted on this node, encoded as `prepared` (a will or a QoS 2
    /// message under `message_id`, its identity in the stream wherever it is published; a
    /// RETAIN one with its `revision` in the bucket, written before); for QoS 1/2, returns
    /// what awaits JetStream's acknowledgement.
    async fn publish(
        &mut self,
        publish: ClusterPublish,
        prepared: Prepared,
        message_id: Option<String>,
        revision: Option<u64>,
    ) -> Option<Unacked> {
        let message = &publish.message;
        let Prepared { envelope, payload } = prepared;
        let counter = envelope.counter;
        if message.qos == tern_codec::QoS::AtMostOnce {
            if let Some(revision) = revision {
                let mut own = remote_message(envelope, None);
                own.retained_revision = Some(revision);
                let _ = self.inputs.send(ClusterInput::Deliver(vec![own])).await;
            }
            let subject = topic_subject(LIVE_PREFIX, message.topic.as_str());
            let published = match revision {
                Some(revision) => {
                    let headers = revision_headers(revision);
                    let subject = subject.as_str().to_owned();
                    self.client
                        .publish_with_headers(subject, headers, payload)
                        .await
                }
                None => {
                    self.client
                        .publish(subject.as_str().to_owned(), payload)
                        .await
                }
            };
            if let Err(error) = published {
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
        let message_id = message_id.unwrap_or_else(|| format!("{:016x}.{counter}", self.boot));
        let ack = store_with(&self.jetstream, &subject, &payload, &message_id, revision).await;
        Some(Unacked {
            ack,
            retry: Retry {
                subject,
                message_id,
                payload,
                revision,
            },
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
    retained: Arc<Retained>,
) {
    while let Some(batch) = pending.recv().await {
        for written in batch.writes {
            // Dropped unanswered only when the node stops.
            let _ = written.await;
        }
        stored(batch.acks, &jetstream).await;
        if batch.sync {
            // Requests to a subject nobody answers come back "no responders" from the server,
            // after it has handled everything this connection sent before.
            let _ = client
                .request(format!("tern.sync.{boot:016x}"), bytes::Bytes::new())
                .await;
        }
        if !batch.retained.is_empty() {
            // Apart: catching up with the bucket must not hold the acknowledgements behind.
            let ready = Arc::clone(&retained).ready(batch.retained, inputs.clone());
            tokio::spawn(ready);
        }
        if inputs.send(ClusterInput::Through(batch.seq)).await.is_err() {
            return;
        }
    }
}

/// Returns once JetStream has acknowledged every one of `acks`, publishing again (under the
/// same `Nats-Msg-Id`) each it did not. Acknowledgements are awaited together: when the
/// stream's leader fails, every one in flight times out at once, not one after another.
async fn stored(acks: Vec<Unacked>, jetstream: &jetstream::Context) {
    let (mut futures, mut retries): (Vec<_>, Vec<_>) = acks
        .into_iter()
        .map(|unacked| (unacked.ack, unacked.retry))
        .unzip();
    loop {
        let outcomes = futures_util::future::join_all(futures.into_iter().map(|ack| async {
            match ack {
                Ok(future) => future.await.map(drop).map_err(|error| error.to_string()),
                Err(error) => Err(error.to_string()),
            }
        }))
        .await;
        let failed: Vec<Retry> = outcomes
            .into_iter()
            .zip(retries)
            .filter_map(|(outcome, retry)| {
                let error = outcome.err()?;
                warn!(
                    "JetStream did not store the message {} ({error}); publishing it again",
                    retry.message_id
                );
                Some(retry)
            })
            .collect();
        if failed.is_empty() {
            return;
        }
        tokio::time::sleep(RETRY_DELAY).await;
        futures = Vec::with_capacity(failed.len());
        for retry in &failed {
            let (subject, payload, id) = (&retry.subject, &retry.payload, &retry.message_id);
            futures.push(store_with(jetstream, subject, payload, id, retry.revision).await);
        }
        retries = failed;
    }
}

/// Publishes `payload` to the stream on `subject` under the identity `message_id` (so that a
/// retry is stored once); the future is JetStream's acknowledgement.
pub(crate) async fn store(
    jetstream: &jetstream::Context,
    subject: &str,
    payload: &bytes::Bytes,
    message_id: &str,
) -> Result<PublishAckFuture, PublishError> {
    store_with(jetstream, subject, payload, message_id, None).await
}

/// [`store`], for a RETAIN message with its `revision` in the retained messages' bucket.
async fn store_with(
    jetstream: &jetstream::Context,
    subject: &str,
    payload: &bytes::Bytes,
    message_id: &str,
    revision: Option<u64>,
) -> Result<PublishAckFuture, PublishError> {
    let mut message = PublishMessage::build()
        .payload(payload.clone())
        .message_id(message_id);
    if let Some(revision) = revision {
        message = message.header(
            crate::retained::REVISION_HEADER,
            revision.to_string().as_str(),
        );
    }
    jetstream.send_publish(subject.to_owned(), message).await
}

/// Milliseconds since the Unix epoch: what expiry is written in across nodes.
pub(crate) fn wall_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}
