//! The seam to the cluster layer: the core's cluster operations leave the broker thread in
//! numbered batches, as store operations do, and the acknowledgements produced with a QoS 1/2
//! message wait until the cluster layer reports it replicated; messages from other nodes come
//! back and are routed by the core.
//!
//! The cluster layer (`tern-cluster`) is known here only by two channels carrying the core's
//! types, which the binary connects; without them nothing of this runs.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use tern_core::{ClusterBatch, ClusterInput, ClusterOp, ConnectionId};
use tokio::sync::mpsc;
use tracing::error;

use crate::hold::Holds;
use crate::shared::Shared;

/// The two channels to and from the cluster layer.
#[derive(Debug)]
pub struct ClusterLink {
    /// Where batches of the core's cluster operations go.
    pub batches: mpsc::UnboundedSender<ClusterBatch>,
    /// What the cluster layer says: messages from other nodes, batches through, failure.
    pub inputs: mpsc::Receiver<ClusterInput>,
}

/// The broker thread's side of the link.
#[derive(Debug)]
pub(crate) struct ClusterOut {
    batches: mpsc::UnboundedSender<ClusterBatch>,
    last_sent: Cell<u64>,
    /// Acknowledgements held until their message is replicated.
    holds: Holds,
    /// Reused buffer for the operations taken from the core.
    ops: RefCell<Vec<ClusterOp>>,
}

impl ClusterOut {
    pub(crate) fn new(batches: mpsc::UnboundedSender<ClusterBatch>) -> Self {
        Self {
            batches,
            last_sent: Cell::new(0),
            holds: Holds::default(),
            ops: RefCell::new(Vec::new()),
        }
    }

    /// Takes what the core queued for the cluster (`poll` gives it).
    pub(crate) fn take_ops(&self, poll: impl FnMut() -> Option<ClusterOp>) {
        self.ops.borrow_mut().extend(std::iter::from_fn(poll));
    }

    /// Sends the operations taken as the next batch, and holds until the batch is through the
    /// packets now in the outbox (`pending` gives its length) of each connection that
    /// published a QoS 1/2 message in it and, when the batch changes the node's interest, of
    /// every connection that got packets with it (`woken`): a SUBACK then goes only once the
    /// NATS server has the subscription, so a message published elsewhere right after it is
    /// not missed.
    pub(crate) fn submit(&self, woken: &[ConnectionId], pending: impl Fn(ConnectionId) -> usize) {
        let mut ops = self.ops.borrow_mut();
        if ops.is_empty() {
            return;
        }
        let seq = self.last_sent.get() + 1;
        self.last_sent.set(seq);
        let interest = ops
            .iter()
            .any(|op| matches!(op, ClusterOp::Interest { .. }));
        let mut held: Vec<ConnectionId> = ops
            .iter()
            .filter_map(|op| match op {
                ClusterOp::Publish(publish) => publish.acknowledges,
                ClusterOp::Interest { .. } => None,
            })
            .collect();
        if interest {
            held.extend_from_slice(woken);
        }
        held.sort_unstable();
        held.dedup();
        for id in held {
            self.holds.hold(id, pending(id), seq);
        }
        let batch = ClusterBatch {
            seq,
            ops: std::mem::take(&mut *ops),
        };
        if self.batches.send(batch).is_err() {
            // The cluster layer is gone: nothing it was to replicate may be acknowledged, so
            // the holds are never released (the input task stops the server).
            error!("cluster batch {seq} could not be handed to the cluster layer");
        }
    }

    pub(crate) fn may_transmit(&self, id: ConnectionId) -> bool {
        self.holds.may_transmit(id)
    }

    pub(crate) fn transmitted(&self, id: ConnectionId) {
        self.holds.transmitted(id);
    }

    pub(crate) fn through(&self, seq: u64, out: &mut Vec<ConnectionId>) {
        self.holds.done(seq, out);
    }

    pub(crate) fn forget(&self, id: ConnectionId) {
        self.holds.forget(id);
    }
}

/// Hears from the cluster layer: routes messages from other nodes, releases acknowledgements
/// whose messages are replicated, and returns why the cluster layer stopped.
pub(crate) async fn input_loop(
    shared: Rc<Shared>,
    mut inputs: mpsc::Receiver<ClusterInput>,
) -> String {
    while let Some(input) = inputs.recv().await {
        match input {
            ClusterInput::Deliver(messages) => {
                let now = shared.now();
                let mut broker = shared.broker.borrow_mut();
                for message in messages {
                    broker.deliver_from_cluster(message, now);
                }
                drop(broker);
                shared.after_input();
            }
            ClusterInput::Through(seq) => shared.cluster_through(seq),
            ClusterInput::Failed(message) => return message,
        }
    }
    "the cluster layer stopped".to_owned()
}
