//! Other edges on the broker thread: a task that reaches the core the way a connection task
//! does (the HTTP bridge), through a [`BrokerHandle`]. It calls the core directly, with no
//! lock, then hands the store operations it caused to group commit, and can wait until they
//! are durable before answering, as a PUBACK waits.

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

/// A batch of store operations that an edge's input caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Batch(u64);

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
    /// the store operations to the store thread. Returns the batch those operations went
    /// into, if there were any: answers that acknowledge them wait for it with
    /// [`BrokerHandle::durable`].
    pub fn input<R>(&self, input: impl FnOnce(&mut Broker, Time) -> R) -> (R, Option<Batch>) {
        let result = {
            let mut broker = self.shared.broker.borrow_mut();
            input(&mut broker, self.shared.now())
        };
        let before = self.last_sent();
        self.shared.after_input();
        let after = self.last_sent();
        (result, (after > before).then_some(Batch(after)))
    }

    /// Waits until `batch` is durable. Never returns if the store fails: the server then
    /// stops, and the task with it.
    pub async fn durable(&self, batch: Batch) {
        let Some(committer) = &self.shared.committer else {
            return;
        };
        loop {
            let woken = self.shared.durable_wake.notified();
            if committer.last_committed() >= batch.0 {
                return;
            }
            woken.await;
        }
    }

    fn last_sent(&self) -> u64 {
        self.shared.committer.as_ref().map_or(0, |c| c.last_sent())
    }
}
