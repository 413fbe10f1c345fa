//! Other edges on the broker thread: a task that reaches the core the way a connection task
//! does (the HTTP bridge), through a [`BrokerHandle`]. It calls the core directly, with no
//! lock, then hands the store operations it caused to group commit (and, on a cluster node,
//! the messages to the cluster layer), and can wait until they are durable (and replicated)
//! before answering, as a PUBACK waits.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use tern_core::{Broker, ConnectionId, Time};

use crate::shared::Shared;

/// What an edge runs on the broker thread, started by [`crate::Server::run`]: made where the
/// edge is set up (any thread), its future then made and run on the broker thread.
pub type EdgeTask = Box<dyn FnOnce(BrokerHandle) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// A task's way to the broker core, on the broker thread.
#[derive(Clone)]
pub struct BrokerHandle {
    shared: Rc<Shared>,
}

impl std::fmt::Debug for BrokerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BrokerHandle")
    }
}

/// What an edge's input handed on: the batch of its store operations and the batch of its
/// cluster operations, each when there was one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    store: Option<u64>,
    cluster: Option<u64>,
}

impl BrokerHandle {
    pub(crate) fn new(shared: Rc<Shared>) -> Self {
        Self { shared }
    }

    /// The core's current time.
    pub fn now(&self) -> Time {
        self.shared.now()
    }

    /// A connection identifier of its own, for the core to name the edge by (in events and
    /// to the authorizer); it never belongs to a network connection.
    pub fn connection_id(&self) -> ConnectionId {
        self.shared.next_connection_id()
    }

    /// Runs `input` against the core at the current time, then does what the runtime does
    /// after every input: logs the events, wakes the connections with new output and hands
    /// the store (and cluster) operations on. Returns the batches those operations went into,
    /// if there were any: answers that acknowledge them wait for them with
    /// [`BrokerHandle::durable`].
    pub fn input<R>(&self, input: impl FnOnce(&mut Broker, Time) -> R) -> (R, Option<Batch>) {
        let result = {
            let mut broker = self.shared.broker.borrow_mut();
            input(&mut broker, self.shared.now())
        };
        let before = self.last_sent();
        self.shared.after_input();
        let after = self.last_sent();
        let newer = |before: u64, after: u64| (after > before).then_some(after);
        let batch = Batch {
            store: newer(before.0, after.0),
            cluster: newer(before.1, after.1),
        };
        let any = batch.store.is_some() || batch.cluster.is_some();
        (result, any.then_some(batch))
    }

    /// Waits until `batch` is durable, and replicated on a cluster node. Never returns if the
    /// store or the cluster layer fails: the server then stops, and the task with it.
    pub async fn durable(&self, batch: Batch) {
        loop {
            let woken = self.shared.durable_wake.notified();
            let stored = match (&self.shared.committer, batch.store) {
                (Some(committer), Some(seq)) => committer.last_committed() >= seq,
                _ => true,
            };
            let replicated = match (self.shared.cluster.get(), batch.cluster) {
                (Some(cluster), Some(seq)) => cluster.last_through() >= seq,
                _ => true,
            };
            if stored && replicated {
                return;
            }
            woken.await;
        }
    }

    /// Waits until a watched mailbox had a delivery queued (see
    /// `tern_core::Broker::take_ready_mailboxes`); one edge waits on this.
    pub async fn mailboxes_ready(&self) {
        self.shared.mailbox_wake.notified().await;
    }

    /// Waits until the core's tap holds something (see `tern_core::Broker::take_tapped`); one
    /// edge waits on this.
    pub async fn tap_ready(&self) {
        self.shared.tap_wake.notified().await;
    }

    /// The group commit times so far (`None` without a store).
    pub fn commit_latency(&self) -> Option<crate::CommitLatencySnapshot> {
        self.shared.committer.as_ref().map(|c| c.latency.snapshot())
    }

    /// Bytes read from and written to MQTT clients so far, and failures.
    pub fn traffic(&self) -> tern_core::TrafficTotals {
        self.shared.traffic()
    }

    /// Each listener's open connections, in the order of the configuration.
    pub fn listener_connections(&self) -> Vec<crate::ListenerConnections> {
        let listeners = self.shared.listeners.borrow();
        listeners.iter().map(|l| l.connections()).collect()
    }

    /// The last store batch and the last cluster batch handed on.
    fn last_sent(&self) -> (u64, u64) {
        let store = self.shared.committer.as_ref().map_or(0, |c| c.last_sent());
        let cluster = self.shared.cluster.get().map_or(0, |c| c.last_sent());
        (store, cluster)
    }
}
