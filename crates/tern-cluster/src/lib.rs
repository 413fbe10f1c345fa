//! Tern's cluster layer: several broker nodes joined as one through NATS JetStream.
//!
//! The core stays deterministic and single-node: it emits what the other nodes must hear
//! (`tern_core::ClusterOp`) as output, and takes messages from them as input, as it does with
//! its store. This crate does the NATS side of that on a thread of its own, and meets the
//! network runtime only through two channels of the core's types, which the binary connects.
//! See ARCHITECTURE.md ("Cluster over NATS JetStream") for what is built and what is planned.
//!
//! # Layout
//! - [`subject`]: MQTT topics and filters as NATS subjects, and back.
//! - [`envelope`]: a message as it crosses NATS.
//! - [`dedup`]: one copy of each message, however many subscriptions matched it.
//! - [`handoff`]: what nodes tell each other about sessions, as bytes.
//! - [`settings`]: how a node joins NATS.
//! - `node`: the NATS client's side, on its own thread; `dispatch`: what it receives, in the
//!   stream's order; `interest`: its subscriptions; `sessions`: sessions across nodes (claims,
//!   take-overs, fencing); `handover`: sessions sent between nodes; `lease`: the node's lease
//!   and the death of others; `adopt`: a dead node's sessions adopted, queues read back from
//!   the stream; `exactly_once`: inbound QoS 2 identifiers, so a PUBLISH sent again to
//!   another node is stored once; `groups`: `$share` groups' QoS 1/2 messages from a
//!   JetStream consumer per group; `retained`: retained messages in a KV bucket, and each
//!   node's copy of them.
#![warn(missing_docs)]

mod adopt;
pub mod dedup;
mod dispatch;
pub mod envelope;
mod exactly_once;
mod groups;
pub mod handoff;
mod handover;
mod interest;
mod joining;
mod lease;
mod node;
mod retained;
mod sessions;
pub mod settings;
pub mod subject;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use tern_core::{ClusterBatch, ClusterInput};
use tokio::sync::mpsc;

pub use settings::{ClusterError, NatsAuth, NatsTls, Settings};

/// Batches of messages from the cluster waiting for the broker thread; past it the NATS
/// subscriptions' own queues fill, and NATS drops (counted as slow-consumer events).
const INPUT_QUEUE: usize = 64;

/// What went wrong without stopping the node, counted; and the node's load.
#[derive(Debug, Default)]
pub struct Counters {
    dropped: AtomicU64,
    undecodable: AtomicU64,
    slow_consumer: AtomicU64,
    fenced: AtomicU64,
    connections: AtomicU64,
    sessions: AtomicU64,
}

impl Counters {
    /// This node's connections and sessions, as the broker last reported them (written with
    /// its lease, for the cluster view).
    pub(crate) fn load(&self) -> (u64, u64) {
        let connections = self.connections.load(Ordering::Relaxed);
        (connections, self.sessions.load(Ordering::Relaxed))
    }

    pub(crate) fn set_load(&self, connections: u64, sessions: u64) {
        self.connections.store(connections, Ordering::Relaxed);
        self.sessions.store(sessions, Ordering::Relaxed);
    }

    /// QoS 0 messages that could not be handed to NATS.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages from NATS that were not a Tern envelope.
    pub fn undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Times NATS dropped messages this node read too slowly.
    pub fn slow_consumer(&self) -> u64 {
        self.slow_consumer.load(Ordering::Relaxed)
    }

    /// Writes of a session's record refused because another node holds the session now.
    pub fn fenced(&self) -> u64 {
        self.fenced.load(Ordering::Relaxed)
    }

    pub(crate) fn count_fenced(&self) {
        self.fenced.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_undecodable(&self) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_slow_consumer(&self) {
        self.slow_consumer.fetch_add(1, Ordering::Relaxed);
    }
}

/// The broker thread's ends of the channels to a node.
#[derive(Debug)]
pub struct Link {
    /// Where the broker thread sends the core's cluster operations.
    pub batches: mpsc::UnboundedSender<ClusterBatch>,
    /// What the cluster tells the broker thread.
    pub inputs: mpsc::Receiver<ClusterInput>,
}

/// A node joined to NATS, running on its own thread.
#[derive(Debug)]
pub struct ClusterNode {
    thread: Option<JoinHandle<()>>,
    /// The largest message the NATS servers take, in bytes.
    pub max_payload: usize,
    /// What went wrong without stopping the node.
    pub counters: Arc<Counters>,
}

impl ClusterNode {
    /// Joins NATS as `settings` say and starts the node's thread; returns once joined (with
    /// the broker thread's ends of the link), or with why it could not.
    pub fn start(settings: Settings) -> Result<(Self, Link), ClusterError> {
        let (batches_tx, batches_rx) = mpsc::unbounded_channel();
        let (inputs_tx, inputs_rx) = mpsc::channel(INPUT_QUEUE);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("tern-cluster".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx.send(Err(ClusterError::Thread(error.to_string())));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let joined = match node::join(
                        &settings,
                        Arc::clone(&thread_counters),
                        inputs_tx.clone(),
                    )
                    .await
                    {
                        Ok(joined) => joined,
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                            return;
                        }
                    };
                    let max_payload = joined.client.server_info().max_payload;
                    let _ = ready_tx.send(Ok(max_payload));
                    node::run(joined, batches_rx, inputs_tx, thread_counters).await;
                });
            })
            .map_err(|error| ClusterError::Thread(error.to_string()))?;
        let max_payload = ready_rx
            .recv()
            .map_err(|_| ClusterError::Thread("stopped while joining".to_owned()))??;
        let node = Self {
            thread: Some(thread),
            max_payload,
            counters,
        };
        let link = Link {
            batches: batches_tx,
            inputs: inputs_rx,
        };
        Ok((node, link))
    }

    /// Waits for the node's thread, once the broker thread has dropped its end of `batches`
    /// (every batch handed over is then published and acknowledged, or the node gave up).
    pub fn join(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
