//! The seam to the cluster layer: the core's cluster operations leave the broker thread in
//! numbered batches, as store operations do, and the acknowledgements produced with a QoS 1/2
//! message wait until the cluster layer reports it replicated; messages from other nodes come
//! back and are routed by the core.
//!
//! The cluster layer (`tern-cluster`) is known here only by two channels carrying the core's
//! types, which the binary connects; without them nothing of this runs.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use tern_codec::QoS;
use tern_core::{ClusterBatch, ClusterInput, ClusterOp, ConnectionId};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::hold::Holds;
use crate::shared::Shared;

/// The two channels to and from the cluster layer.
#[derive(Debug)]
pub struct ClusterLink {
    /// Where batches of the core's cluster operations go.
    pub batches: mpsc::UnboundedSender<ClusterBatch>,
    /// What the cluster layer says: messages from other nodes, batches through, failure.
    pub inputs: mpsc::Receiver<ClusterInput>,
    /// Bytes of QoS 0 messages that may wait for the cluster layer
    /// ([`CLUSTER_QOS0_BACKLOG_BYTES_MAX`] unless a test wants a smaller one).
    pub qos0_backlog_bytes_max: usize,
}

/// Bytes of QoS 0 messages handed to the cluster layer and not yet through: past it, further
/// QoS 0 messages for other nodes are dropped (this node's own subscribers have them already)
/// rather than queued without bound while NATS is slow or unreachable. QoS 1/2 messages are
/// never dropped here: their publishers wait for the PUBACK, so Receive Maximum bounds them.
pub const CLUSTER_QOS0_BACKLOG_BYTES_MAX: usize = 64 * 1024 * 1024;

/// The broker thread's side of the link.
#[derive(Debug)]
pub(crate) struct ClusterOut {
    batches: mpsc::UnboundedSender<ClusterBatch>,
    last_sent: Cell<u64>,
    /// Acknowledgements held until their message is replicated.
    holds: Holds,
    /// Reused buffer for the operations taken from the core.
    ops: RefCell<Vec<ClusterOp>>,
    /// QoS 0 bytes of each batch not yet through, by batch number, and their sum.
    backlog: RefCell<VecDeque<(u64, usize)>>,
    backlog_bytes: Cell<usize>,
    backlog_max: usize,
    /// QoS 0 messages not sent to other nodes because the backlog was full, since start, and
    /// since the log last said so.
    dropped: Cell<u64>,
    dropped_unlogged: Cell<u64>,
}

impl ClusterOut {
    pub(crate) fn new(batches: mpsc::UnboundedSender<ClusterBatch>, backlog_max: usize) -> Self {
        Self {
            batches,
            last_sent: Cell::new(0),
            holds: Holds::default(),
            ops: RefCell::new(Vec::new()),
            backlog: RefCell::new(VecDeque::new()),
            backlog_bytes: Cell::new(0),
            backlog_max,
            dropped: Cell::new(0),
            dropped_unlogged: Cell::new(0),
        }
    }

    /// QoS 0 messages not sent to other nodes because the backlog was full, since start.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Drops the QoS 0 messages among `ops` that would take the backlog past its limit;
    /// returns the QoS 0 bytes kept.
    fn within_backlog(&self, ops: &mut Vec<ClusterOp>) -> usize {
        let mut bytes = self.backlog_bytes.get();
        let before = bytes;
        let mut dropped = 0;
        ops.retain(|op| {
            let ClusterOp::Publish(publish) = op else {
                return true;
            };
            // A retained message reaches even this node's subscribers only through the
            // cluster: never dropped here.
            if publish.message.qos != QoS::AtMostOnce || publish.message.retain {
                return true;
            }
            let charge = publish.message.charge();
            if bytes + charge > self.backlog_max {
                dropped += 1;
                return false;
            }
            bytes += charge;
            true
        });
        if dropped > 0 {
            if self.dropped_unlogged.get() == 0 {
                warn!(
                    "the cluster layer is behind by {before} bytes of QoS 0 messages: further \
                     ones are not sent to other nodes until it catches up"
                );
            }
            self.dropped.set(self.dropped.get() + dropped);
            self.dropped_unlogged
                .set(self.dropped_unlogged.get() + dropped);
        }
        bytes - before
    }

    /// Takes what the core queued for the cluster (`poll` gives it).
    pub(crate) fn take_ops(&self, poll: impl FnMut() -> Option<ClusterOp>) {
        self.ops.borrow_mut().extend(std::iter::from_fn(poll));
    }

    /// Sends the operations taken as the next batch, and holds until the batch is through the
    /// packets now in the outbox (`pending` gives its length) of each connection that
    /// published a QoS 1/2 message in it, whose session's record it writes (a SUBACK, a
    /// CONNACK) or which released a QoS 2 message (its PUBCOMP) and, when the batch changes the node's interest, of
    /// every connection that got packets with it (`woken`): a SUBACK then goes only once the
    /// NATS server has the subscription, so a message published elsewhere right after it is
    /// not missed.
    pub(crate) fn submit(&self, woken: &[ConnectionId], pending: impl Fn(ConnectionId) -> usize) {
        let mut ops = self.ops.borrow_mut();
        let qos0_bytes = self.within_backlog(&mut ops);
        if ops.is_empty() {
            return;
        }
        let seq = self.last_sent.get() + 1;
        if qos0_bytes > 0 {
            self.backlog.borrow_mut().push_back((seq, qos0_bytes));
            self.backlog_bytes
                .set(self.backlog_bytes.get() + qos0_bytes);
        }
        self.last_sent.set(seq);
        let interest = ops
            .iter()
            .any(|op| matches!(op, ClusterOp::Interest { .. }));
        let mut held: Vec<ConnectionId> = ops
            .iter()
            .filter_map(|op| match op {
                ClusterOp::Publish(publish) => publish.acknowledges,
                ClusterOp::SessionSaved { connection, .. }
                | ClusterOp::Released { connection, .. }
                | ClusterOp::Outbound { connection, .. } => *connection,
                _ => None,
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
        let mut backlog = self.backlog.borrow_mut();
        while let Some(&(batch, bytes)) = backlog.front() {
            if batch > seq {
                break;
            }
            backlog.pop_front();
            self.backlog_bytes.set(self.backlog_bytes.get() - bytes);
        }
        if backlog.is_empty() && self.dropped_unlogged.get() > 0 {
            let dropped = self.dropped_unlogged.replace(0);
            warn!("the cluster layer caught up; {dropped} QoS 0 message(s) were not sent to other nodes meanwhile");
        }
    }

    pub(crate) fn forget(&self, id: ConnectionId) {
        self.holds.forget(id);
    }

    /// The number of the last batch handed to the cluster layer.
    pub(crate) fn last_sent(&self) -> u64 {
        self.last_sent.get()
    }

    /// The number of the last batch the cluster layer reported through.
    pub(crate) fn last_through(&self) -> u64 {
        self.holds.done_through()
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
            ClusterInput::Reachable(reachable) => {
                shared.broker.borrow_mut().set_cluster_reachable(reachable);
                if reachable {
                    // Said once the broker takes connections again, not when NATS answers.
                    info!("NATS reachable again: new connections are accepted");
                }
            }
            ClusterInput::ClaimSettled {
                connection,
                outcome,
            } => {
                let now = shared.now();
                shared
                    .broker
                    .borrow_mut()
                    .claim_settled(connection, outcome, now);
                shared.after_input();
            }
            ClusterInput::TakenOver {
                client_id,
                clean_start,
                token,
            } => {
                let now = shared.now();
                shared
                    .broker
                    .borrow_mut()
                    .session_taken_over(&client_id, clean_start, token, now);
                shared.after_input();
            }
            ClusterInput::Checkpoint => {
                shared.broker.borrow_mut().cluster_checkpoint();
                shared.after_input();
            }
            ClusterInput::Adopted {
                session,
                backlog,
                outbound,
            } => {
                let now = shared.now();
                shared
                    .broker
                    .borrow_mut()
                    .session_adopted(*session, backlog, outbound, now);
                shared.after_input();
            }
            ClusterInput::Nodes(nodes) => {
                let now = shared.now();
                shared.broker.borrow_mut().cluster_nodes(nodes, now);
                shared.after_input();
            }
            ClusterInput::Retained(entries) => {
                let now = shared.now();
                shared
                    .broker
                    .borrow_mut()
                    .retained_from_cluster(entries, now);
                // Their expiries are among the timers.
                shared.after_input();
            }
            ClusterInput::RetainedReady(tokens) => {
                let now = shared.now();
                shared
                    .broker
                    .borrow_mut()
                    .cluster_retained_ready(tokens, now);
                shared.after_input();
            }
            ClusterInput::Failed(message) => return message,
        }
    }
    "the cluster layer stopped".to_owned()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use tern_codec::PublishProperties;
    use tern_core::{ClusterPublish, Message};

    use super::*;

    fn message(qos: QoS, payload: usize) -> ClusterOp {
        ClusterOp::Publish(ClusterPublish {
            message: Arc::new(Message {
                id: 1,
                topic: "t"
                    .parse()
                    .unwrap_or_else(|_| tern_codec::TopicName::empty()),
                payload: Bytes::from(vec![0; payload]),
                qos,
                retain: false,
                properties: PublishProperties::default(),
                expires_at: None,
                origin: None,
            }),
            publisher: None,
            expiry_millis: None,
            acknowledges: None,
            exactly_once: None,
            will: false,
        })
    }

    fn sent(batches: &mut mpsc::UnboundedReceiver<ClusterBatch>) -> Vec<QoS> {
        let mut qos = Vec::new();
        while let Ok(batch) = batches.try_recv() {
            for op in batch.ops {
                if let ClusterOp::Publish(publish) = op {
                    qos.push(publish.message.qos);
                }
            }
        }
        qos
    }

    #[test]
    fn qos0_past_the_backlog_is_dropped_and_counted_qos1_never() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let one = match message(QoS::AtMostOnce, 1000) {
            ClusterOp::Publish(p) => p.message.charge(),
            _ => 0,
        };
        // Room for two QoS 0 messages.
        let out = ClusterOut::new(tx, 2 * one + one / 2);
        let mut ops = vec![
            message(QoS::AtMostOnce, 1000),
            message(QoS::AtMostOnce, 1000),
            message(QoS::AtMostOnce, 1000),
            message(QoS::AtLeastOnce, 1000),
        ];
        out.take_ops(|| ops.pop());
        out.submit(&[], |_| 0);
        assert_eq!(out.dropped(), 1);
        let mut got = sent(&mut rx);
        got.sort();
        assert_eq!(got, [QoS::AtMostOnce, QoS::AtMostOnce, QoS::AtLeastOnce]);
        // Still full until the batch is through.
        let mut more = vec![message(QoS::AtMostOnce, 1000)];
        out.take_ops(|| more.pop());
        out.submit(&[], |_| 0);
        assert_eq!(out.dropped(), 2);
        out.through(1, &mut Vec::new());
        let mut more = vec![message(QoS::AtMostOnce, 1000)];
        out.take_ops(|| more.pop());
        out.submit(&[], |_| 0);
        assert_eq!(out.dropped(), 2);
        assert_eq!(sent(&mut rx), [QoS::AtMostOnce]);
    }
}
