//! Group commit: a store thread makes batches of store operations durable, while the broker
//! thread holds back every packet produced together with them until their batch is committed.
//!
//! After each input batch the runtime takes the core's store operations as one numbered batch
//! and sends it to the store thread. The store thread takes every batch waiting, applies them
//! as one write and one sync, and reports the highest number committed. A connection that got
//! packets in a batch with operations records a gate: "the first N packets of my outbox need
//! batch S". The connection writes only the packets whose gates are committed, so PUBACK,
//! PUBREC, SUBACK, CONNACK (and deliveries of messages not yet durable) never reach a socket
//! before the state they acknowledge. The broker keeps routing while a sync is in flight.

use std::cell::{Cell, RefCell};
use std::sync::mpsc;
use std::thread::JoinHandle;

use tern_core::{ConnectionId, Store, StoreOp};
use tokio::sync::watch;
use tracing::error;

use crate::hold::Holds;

/// What the store thread reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Every batch up to and including this number is durable.
    Through(u64),
    /// The store failed; nothing more will be committed.
    Failed(String),
}

struct Batch {
    seq: u64,
    ops: Vec<StoreOp>,
}

/// The broker thread's side of group commit.
pub(crate) struct Committer {
    sender: RefCell<Option<mpsc::Sender<Batch>>>,
    thread: RefCell<Option<JoinHandle<()>>>,
    last_sent: Cell<u64>,
    /// The packets held back until their batch commits (their commit gates).
    gates: Holds,
    closing: Cell<bool>,
    /// How long each group commit took (filled by the store thread).
    pub(crate) latency: std::sync::Arc<crate::latency::CommitLatency>,
}

impl Committer {
    /// Starts the store thread; `receiver` hears about commits.
    pub(crate) fn start<S>(mut store: S) -> (Self, watch::Receiver<Commit>)
    where
        S: Store + Send + 'static,
    {
        let (sender, batches) = mpsc::channel::<Batch>();
        let (report, receiver) = watch::channel(Commit::Through(0));
        let latency = std::sync::Arc::<crate::latency::CommitLatency>::default();
        let timed = std::sync::Arc::clone(&latency);
        let thread = std::thread::Builder::new()
            .name("tern-store".to_owned())
            .spawn(move || {
                let mut ops = Vec::new();
                while let Ok(first) = batches.recv() {
                    // Everything waiting shares one write and one sync.
                    let mut last = first.seq;
                    ops.extend(first.ops);
                    while let Ok(next) = batches.try_recv() {
                        last = next.seq;
                        ops.extend(next.ops);
                    }
                    let started = std::time::Instant::now();
                    if let Err(error) = store.apply(&ops) {
                        let _ = report.send(Commit::Failed(error.to_string()));
                        return;
                    }
                    timed.record(started.elapsed());
                    ops.clear();
                    let _ = report.send(Commit::Through(last));
                }
            });
        let (sender, thread) = match thread {
            Ok(thread) => (Some(sender), Some(thread)),
            Err(error) => {
                error!("cannot start the store thread: {error}");
                (None, None)
            }
        };
        let committer = Self {
            sender: RefCell::new(sender),
            thread: RefCell::new(thread),
            last_sent: Cell::new(0),
            gates: Holds::default(),
            closing: Cell::new(false),
            latency,
        };
        (committer, receiver)
    }

    pub(crate) fn unregister(&self, id: ConnectionId) {
        self.gates.forget(id);
    }

    /// Sends `ops` as the next batch and gates the packets now in the outboxes of `woken`
    /// (`pending` gives each outbox's length) behind it.
    pub(crate) fn submit(
        &self,
        ops: Vec<StoreOp>,
        woken: &[ConnectionId],
        pending: impl Fn(ConnectionId) -> usize,
    ) {
        let seq = self.last_sent.get() + 1;
        self.last_sent.set(seq);
        let sent = self
            .sender
            .borrow()
            .as_ref()
            .is_some_and(|sender| sender.send(Batch { seq, ops }).is_ok());
        if !sent {
            // The store thread has stopped (it failed, or shutdown closed it): nothing more
            // may be acknowledged, so the gate is never opened.
            error!("store batch {seq} could not be handed to the store");
        }
        for &id in woken {
            self.gates.hold(id, pending(id), seq);
        }
    }

    /// Whether the next packet in `id`'s outbox may be written now.
    pub(crate) fn may_transmit(&self, id: ConnectionId) -> bool {
        self.gates.may_transmit(id)
    }

    /// Notes that a packet was taken from `id`'s outbox.
    pub(crate) fn transmitted(&self, id: ConnectionId) {
        self.gates.transmitted(id);
    }

    /// Records that batches up to `seq` are durable; returns the connections that may now
    /// write more.
    pub(crate) fn committed(&self, seq: u64, out: &mut Vec<ConnectionId>) {
        self.gates.done(seq, out);
    }

    /// The number of the last batch handed to the store thread.
    pub(crate) fn last_sent(&self) -> u64 {
        self.last_sent.get()
    }

    /// The number of the last batch the store thread reported durable.
    pub(crate) fn last_committed(&self) -> u64 {
        self.gates.done_through()
    }

    /// Whether [`Committer::close`] was called (the store thread ending is then expected).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Stops taking batches and waits until the store thread has committed those sent.
    pub(crate) fn close(&self) {
        self.closing.set(true);
        self.sender.borrow_mut().take();
        if let Some(thread) = self.thread.borrow_mut().take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use tern_core::MemoryStore;

    use super::*;

    #[test]
    fn packets_wait_for_their_own_batch_and_no_later_one() {
        let (committer, _commits) = Committer::start(MemoryStore::default());
        let (a, b) = (ConnectionId(1), ConnectionId(2));
        // Batch 1 leaves two packets for `a`; batch 2 one more for `a` and one for `b`.
        committer.submit(Vec::new(), &[a], |_| 2);
        committer.submit(Vec::new(), &[a, b], |id| if id == a { 3 } else { 1 });
        assert!(!committer.may_transmit(a));
        assert!(!committer.may_transmit(b));

        let mut ready = Vec::new();
        committer.committed(1, &mut ready);
        assert_eq!(ready, [a]);
        for _ in 0..2 {
            assert!(committer.may_transmit(a));
            committer.transmitted(a);
        }
        assert!(!committer.may_transmit(a), "the third needs batch 2");
        assert!(!committer.may_transmit(b));

        ready.clear();
        committer.committed(2, &mut ready);
        ready.sort();
        assert_eq!(ready, [a, b]);
        assert!(committer.may_transmit(a));
        committer.transmitted(a);
        assert!(committer.may_transmit(b));
        // Nothing gated remains: later packets produced without store operations go at once,
        // and no gate is left for a commit to visit.
        assert!(committer.may_transmit(a));
        assert!(committer.gates.is_empty());
        committer.unregister(a);
        committer.close();
    }

    #[test]
    fn a_gate_counts_from_its_first_batch_and_goes_when_drained() {
        let (committer, _commits) = Committer::start(MemoryStore::default());
        let a = ConnectionId(1);
        // Packets written before any batch need no gate.
        for _ in 0..3 {
            assert!(committer.may_transmit(a));
            committer.transmitted(a);
        }
        // A batch that leaves nothing in the outbox gates nothing.
        committer.submit(Vec::new(), &[a], |_| 0);
        assert!(committer.gates.is_empty());
        // Two packets wait for batch 2; a third arrives with batch 3.
        committer.submit(Vec::new(), &[a], |_| 2);
        committer.submit(Vec::new(), &[a], |_| 3);
        let mut ready = Vec::new();
        committer.committed(2, &mut ready);
        assert_eq!(ready, [a]);
        for _ in 0..2 {
            assert!(committer.may_transmit(a));
            committer.transmitted(a);
        }
        assert!(!committer.may_transmit(a), "the third needs batch 3");
        ready.clear();
        committer.committed(3, &mut ready);
        assert_eq!(ready, [a]);
        assert!(committer.may_transmit(a));
        committer.transmitted(a);
        assert!(committer.gates.is_empty());
        committer.close();
    }
}
