//! State shared by the tasks of the one broker thread: the core, the wakers of connection
//! tasks, the clock, the byte counters and, with a durable store, group commit.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Instant;

use tern_core::{
    Access, AuthDecision, AuthJob, Broker, CloseReason, ConnectionId, Event, Snapshot, Time,
    TrafficTotals,
};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::durable::Committer;

pub(crate) struct Shared {
    pub(crate) broker: RefCell<Broker>,
    wakers: RefCell<HashMap<ConnectionId, Rc<Notify>>>,
    epoch: Instant,
    next_id: Cell<u64>,
    pub(crate) bytes_received: Cell<u64>,
    pub(crate) bytes_sent: Cell<u64>,
    /// Signalled whenever a connection task ends (shutdown waits on it).
    pub(crate) closed: Notify,
    woken: RefCell<Vec<ConnectionId>>,
    /// Group commit with the store thread, when state is durable.
    pub(crate) committer: Option<Committer>,
    /// Reused buffer for store operations taken from the core.
    ops: RefCell<Vec<tern_core::StoreOp>>,
    /// Slow credential checks the core handed out, waiting for the checker task.
    auth_jobs: RefCell<Vec<(ConnectionId, AuthJob)>>,
    /// Wakes the checker task.
    auth_wake: Notify,
}

impl Shared {
    /// `epoch` is the instant of `Time` zero; a `snapshot` from a store rebuilds the broker.
    pub(crate) fn new(
        config: tern_core::Config,
        epoch: Instant,
        snapshot: Option<Snapshot>,
        committer: Option<Committer>,
    ) -> Self {
        let now = Time::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
        let broker = match snapshot {
            Some(snapshot) => Broker::restore(config, now, snapshot),
            None => Broker::new(config, now),
        };
        Self {
            broker: RefCell::new(broker),
            wakers: RefCell::new(HashMap::new()),
            epoch,
            next_id: Cell::new(1),
            bytes_received: Cell::new(0),
            bytes_sent: Cell::new(0),
            closed: Notify::new(),
            woken: RefCell::new(Vec::new()),
            committer,
            ops: RefCell::new(Vec::new()),
            auth_jobs: RefCell::new(Vec::new()),
            auth_wake: Notify::new(),
        }
    }

    pub(crate) fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        ConnectionId(id)
    }

    pub(crate) fn register(&self, id: ConnectionId, waker: Rc<Notify>) {
        self.wakers.borrow_mut().insert(id, waker);
        if let Some(committer) = &self.committer {
            committer.register(id);
        }
        self.broker.borrow_mut().connection_opened(id, self.now());
    }

    pub(crate) fn unregister(&self, id: ConnectionId) {
        self.broker.borrow_mut().connection_lost(id, self.now());
        self.wakers.borrow_mut().remove(&id);
        if let Some(committer) = &self.committer {
            committer.unregister(id);
        }
        self.after_input();
        self.closed.notify_waiters();
    }

    pub(crate) fn connection_count(&self) -> usize {
        self.wakers.borrow().len()
    }

    /// After the core has taken input: hand its store operations to the store thread (gating
    /// the packets produced with them), wake every connection with new output, once, and log
    /// what happened.
    pub(crate) fn after_input(&self) {
        let mut woken = self.woken.borrow_mut();
        let mut broker = self.broker.borrow_mut();
        broker.take_woken(&mut woken);
        while let Some(event) = broker.poll_event() {
            log_event(&event);
        }
        if let Some(committer) = &self.committer {
            let mut ops = self.ops.borrow_mut();
            while let Some(op) = broker.poll_store_op() {
                ops.push(op);
            }
            if !ops.is_empty() {
                let batch = std::mem::take(&mut *ops);
                committer.submit(batch, &woken, |id| broker.pending_transmits(id));
            }
        }
        let mut jobs = self.auth_jobs.borrow_mut();
        while let Some(job) = broker.poll_auth_job() {
            jobs.push(job);
        }
        if !jobs.is_empty() {
            self.auth_wake.notify_one();
        }
        drop(jobs);
        drop(broker);
        let wakers = self.wakers.borrow();
        for id in woken.drain(..) {
            if let Some(waker) = wakers.get(&id) {
                waker.notify_one();
            }
        }
    }

    /// Batches up to `seq` are durable: wake the connections whose packets were waiting.
    pub(crate) fn committed(&self, seq: u64) {
        let Some(committer) = &self.committer else {
            return;
        };
        let mut ready = Vec::new();
        committer.committed(seq, &mut ready);
        let wakers = self.wakers.borrow();
        for id in ready {
            if let Some(waker) = wakers.get(&id) {
                waker.notify_one();
            }
        }
    }

    /// Runs the slow credential checks the core asks for on tokio's blocking threads, so
    /// password hashing never stalls the broker thread, and hands each answer back.
    pub(crate) async fn run_auth_checks(self: Rc<Self>) {
        loop {
            self.auth_wake.notified().await;
            let jobs = std::mem::take(&mut *self.auth_jobs.borrow_mut());
            for (id, job) in jobs {
                let shared = Rc::clone(&self);
                tokio::task::spawn_local(async move {
                    let decision = tokio::task::spawn_blocking(move || job.run())
                        .await
                        .unwrap_or(AuthDecision::Refuse(
                            tern_codec::ReasonCode::UnspecifiedError,
                        ));
                    shared
                        .broker
                        .borrow_mut()
                        .auth_finished(id, decision, shared.now());
                    shared.after_input();
                });
            }
        }
    }

    /// Whether the next packet for `id` may be written (its store operations are durable).
    pub(crate) fn may_transmit(&self, id: ConnectionId) -> bool {
        self.committer.as_ref().is_none_or(|c| c.may_transmit(id))
    }

    /// Notes that a packet for `id` was taken from the core.
    pub(crate) fn transmitted(&self, id: ConnectionId) {
        if let Some(committer) = &self.committer {
            committer.transmitted(id);
        }
    }

    pub(crate) fn handle_timeout(&self) {
        self.broker.borrow_mut().handle_timeout(self.now());
        self.after_input();
    }

    pub(crate) fn publish_sys(&self) {
        let traffic = TrafficTotals {
            bytes_received: self.bytes_received.get(),
            bytes_sent: self.bytes_sent.get(),
        };
        self.broker
            .borrow_mut()
            .publish_sys(self.now(), traffic, env!("CARGO_PKG_VERSION"));
        self.after_input();
    }

    pub(crate) fn shutdown(&self) {
        self.broker.borrow_mut().shutdown(self.now());
        self.after_input();
    }
}

fn log_event(event: &Event) {
    match event {
        Event::Connected {
            connection,
            client_id,
            version,
            session_present,
        } => {
            info!(
                conn = connection.0,
                "client {client_id:?} connected ({version:?}, session present: {session_present})"
            );
        }
        Event::Refused { connection, reason } => {
            warn!(
                conn = connection.0,
                "connection refused: {}",
                describe(reason)
            );
        }
        Event::Disconnected {
            connection,
            client_id,
            reason,
            will_triggered,
        } => {
            info!(
                conn = connection.0,
                "client {client_id:?} disconnected: {} (will triggered: {will_triggered})",
                describe(reason)
            );
        }
        Event::SessionEnded { client_id } => debug!("session of {client_id:?} ended"),
        Event::Denied {
            connection,
            client_id,
            access,
            topic,
        } => {
            let what = match access {
                Access::Publish => "publish to",
                Access::Subscribe => "subscribe to",
            };
            warn!(
                conn = connection.0,
                "client {client_id:?} denied: {what} {topic:?}"
            );
        }
        Event::Dropped { client_id, reason } => {
            debug!("message for {client_id:?} dropped: {reason:?}")
        }
    }
}

fn describe(reason: &CloseReason) -> String {
    match reason {
        CloseReason::ClientDisconnect => "client sent DISCONNECT".to_owned(),
        CloseReason::ClientDisconnectWithWill => "client sent DISCONNECT with will".to_owned(),
        CloseReason::ClientError(code) => format!("client sent DISCONNECT with {code:?}"),
        CloseReason::ProtocolViolation(code, detail) => {
            format!("protocol violation ({code:?}): {detail}")
        }
        CloseReason::Malformed(error) => format!("bad packet: {error}"),
        CloseReason::KeepAliveTimeout => "keep alive timed out".to_owned(),
        CloseReason::SessionTakenOver => "session taken over by a new connection".to_owned(),
        CloseReason::ConnectTimeout => "no CONNECT in time".to_owned(),
        CloseReason::ConnectionLost => "connection lost".to_owned(),
        CloseReason::ServerShutdown => "server shutting down".to_owned(),
        CloseReason::ConnectRefused(code) => format!("CONNECT refused with {code:?}"),
    }
}
