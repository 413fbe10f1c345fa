//! State shared by the tasks of the one broker thread: the core, the wakers of connection
//! tasks, the clock, the byte counters and, with a durable store, group commit.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rustc_hash::FxHashMap;
use tern_core::{
    AuthDecision, Broker, ConnectionId, ConnectionInfo, DropReason, Event, Snapshot, StoreOp, Time,
    TrafficTotals,
};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, warn};

use crate::busy_poll::BusyPoll;
use crate::cluster::ClusterOut;
use crate::connection::{encode_queued, Stop};
use crate::durable::Committer;
use crate::encode::Encoder;
use crate::event_log::{log_event, LogBudget};
use crate::gate::{AdmissionLimits, Gate};
use crate::tcp::write_available;

/// How the core's output reaches a connection task: a flag, and the task's own waker.
///
/// Lighter than a `Notify` per connection (no allocation, no waiter in the task's state), which
/// matters with tens of thousands of idle connections.
#[derive(Default)]
struct Wake {
    pending: bool,
    waker: Option<Waker>,
    /// The write half of a plain TCP connection, for direct writes while the broker is quiet.
    direct: Option<Rc<OwnedWriteHalf>>,
    /// Set while the connection's task waits to finish a write: nothing may overtake it.
    direct_paused: bool,
}

pub(crate) struct Shared {
    pub(crate) broker: RefCell<Broker>,
    /// Encodes for every connection, so receivers of one message share its encoding.
    pub(crate) encoder: RefCell<Encoder>,
    wakers: RefCell<FxHashMap<ConnectionId, Wake>>,
    /// The listeners accepting connections, for their counts.
    pub(crate) listeners: RefCell<Vec<Rc<crate::listener::Listener>>>,
    epoch: Instant,
    next_id: Cell<u64>,
    pub(crate) bytes_received: Cell<u64>,
    pub(crate) bytes_sent: Cell<u64>,
    /// Signalled whenever a connection task ends (shutdown waits on it).
    pub(crate) closed: Notify,
    woken: RefCell<Vec<ConnectionId>>,
    /// Connections whose reading flow control let go on again: their tasks are woken to read,
    /// even when a direct write leaves them nothing to write.
    resumed: RefCell<Vec<ConnectionId>>,
    /// Admission limits at accept.
    pub(crate) gate: Rc<Gate>,
    /// When the timer task will next run the core's timers; input that moves the core's next
    /// deadline earlier wakes it through `timer_wake`.
    timer_at: Cell<Time>,
    pub(crate) timer_wake: Notify,
    /// Input seen, for busy polling.
    pub(crate) busy_poll: Rc<BusyPoll>,
    /// Wakes the checker task: the core has a credential check waiting.
    auth_wake: Notify,
    /// Checks running at once: each argon2 check holds about 19 MiB and a core for tens of
    /// milliseconds, so a burst of logins waits in the core's bounded queue (where the checks
    /// of clients that leave are dropped unrun) instead of exhausting memory.
    auth_slots: Arc<Semaphore>,
    /// Keeps a client that keeps publishing where it may not from flooding the log.
    denial_log: LogBudget,
    /// Group commit with the store thread, when state is durable.
    pub(crate) committer: Option<Committer>,
    /// The link to the cluster layer, when the broker is a cluster node.
    pub(crate) cluster: std::cell::OnceCell<ClusterOut>,
    /// Reused buffer for store operations taken from the core.
    ops: RefCell<Vec<StoreOp>>,
    /// Keeps a flood of refused connections (limits, failed handshakes, bad CONNECTs) from
    /// flooding the log.
    refusal_log: LogBudget,
    /// A subscriber whose queue overflows loses QoS 1/2 messages its publishers saw accepted,
    /// so each such drop is a warning; this keeps a flood of them readable.
    drop_log: LogBudget,
    /// When input was last read from a connection (whether the broker is quiet).
    last_read_at: Cell<Instant>,
    /// Connections opened, closed or read from so far (the timer task tells quiet spells by it).
    activity: Cell<u64>,
    /// How long after the previous read a read finds the broker quiet; its deliveries to plain
    /// TCP connections are then written at once by the reading task (saving each receiver's
    /// task a wake-up, a few microseconds at the 99th percentile of latency).
    direct_write_quiet_gap: Duration,
    /// Encoding buffer of direct writes.
    direct_buf: RefCell<BytesMut>,
    /// What direct writes could not finish, per connection, for the connection's own task.
    carries: RefCell<FxHashMap<ConnectionId, BytesMut>>,
    /// How long a connection waits on a client that does not read.
    pub(crate) timeouts: ConnectionTimeouts,
    /// Packets that could not be encoded, and sockets that failed, since start.
    encode_errors: Cell<u64>,
    socket_errors: Cell<u64>,
    /// Keeps a flood of failing sockets from flooding the log.
    error_log: LogBudget,
    /// Signalled whenever batches become durable or replicated (edges waiting on one, see
    /// `edge.rs`).
    pub(crate) durable_wake: Notify,
    /// Signalled when a watched mailbox had a delivery queued (the edge polling it, `edge.rs`).
    pub(crate) mailbox_wake: Notify,
    /// Woken when the core's tap holds something for the observer edge.
    pub(crate) tap_wake: Notify,
}

/// How long a connection waits on a client that does not read (see [`crate::ServerConfig`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConnectionTimeouts {
    /// One batch's write.
    pub(crate) write_stall: Duration,
    /// Closing: TLS `close_notify`, a WebSocket Close frame.
    pub(crate) close: Duration,
}

/// Direct writes one read may make; the rest of a large fan-out goes through the receivers'
/// tasks, so one message to thousands of subscribers does not hold the thread for thousands of
/// system calls in a row while other connections wait.
const DIRECT_WRITES_PER_READ_MAX: usize = 16;

/// A direct-write buffer that grew past this is given back after use.
const DIRECT_BUF_KEEP_BYTES: usize = 64 * 1024;

/// Credential checks that may run at once, whatever the number of cores.
const AUTH_CHECKS_PARALLEL_MAX: usize = 4;

impl Shared {
    /// `epoch` is the instant of `Time` zero; a `snapshot` from a store rebuilds the broker,
    /// and a `committer` makes what it does durable.
    pub(crate) fn new(
        config: tern_core::Config,
        admission: AdmissionLimits,
        epoch: Instant,
        snapshot: Option<Snapshot>,
        committer: Option<Committer>,
        direct_write_quiet_gap: Duration,
        timeouts: ConnectionTimeouts,
    ) -> Self {
        let now = Time::from_millis(u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX));
        let broker = match snapshot {
            Some(snapshot) => Broker::restore(config, now, snapshot),
            None => Broker::new(config, now),
        };
        Self {
            broker: RefCell::new(broker),
            encoder: RefCell::default(),
            wakers: RefCell::new(FxHashMap::default()),
            listeners: RefCell::new(Vec::new()),
            epoch,
            next_id: Cell::new(1),
            bytes_received: Cell::new(0),
            bytes_sent: Cell::new(0),
            closed: Notify::new(),
            woken: RefCell::new(Vec::new()),
            resumed: RefCell::new(Vec::new()),
            gate: Gate::new(admission),
            timer_at: Cell::new(Time::from_millis(0)),
            timer_wake: Notify::new(),
            busy_poll: Rc::new(BusyPoll::default()),
            auth_wake: Notify::new(),
            denial_log: LogBudget::new("denials"),
            refusal_log: LogBudget::new("refused connections"),
            drop_log: LogBudget::new("dropped messages"),
            auth_slots: Arc::new(Semaphore::new(
                std::thread::available_parallelism()
                    .map_or(1, usize::from)
                    .min(AUTH_CHECKS_PARALLEL_MAX),
            )),
            committer,
            cluster: std::cell::OnceCell::new(),
            ops: RefCell::new(Vec::new()),
            last_read_at: Cell::new(epoch),
            activity: Cell::new(0),
            direct_write_quiet_gap,
            direct_buf: RefCell::new(BytesMut::new()),
            carries: RefCell::new(FxHashMap::default()),
            timeouts,
            encode_errors: Cell::new(0),
            socket_errors: Cell::new(0),
            error_log: LogBudget::new("socket and encoding errors"),
            durable_wake: Notify::new(),
            mailbox_wake: Notify::new(),
            tap_wake: Notify::new(),
        }
    }

    /// Counts and logs (at most 20 lines a second) a connection whose socket failed.
    pub(crate) fn socket_error(&self, id: ConnectionId, during: &str, error: &std::io::Error) {
        self.socket_errors.set(self.socket_errors.get() + 1);
        if self.error_log.admit(self.now()) {
            warn!(conn = id.0, "socket error on {during}: {error}");
        }
    }

    /// Counts and logs a packet the core queued that could not be encoded (a core bug: the
    /// packet is dropped, the connection kept).
    pub(crate) fn encode_error(
        &self,
        id: ConnectionId,
        transmit: &tern_core::Transmit,
        error: &tern_codec::EncodeError,
    ) {
        self.encode_errors.set(self.encode_errors.get() + 1);
        if self.error_log.admit(self.now()) {
            warn!(conn = id.0, "cannot encode {transmit:?}, dropped: {error}");
        }
    }

    pub(crate) fn now(&self) -> Time {
        self.time_at(Instant::now())
    }

    /// The core's time at `instant`.
    pub(crate) fn time_at(&self, instant: Instant) -> Time {
        let elapsed = instant.saturating_duration_since(self.epoch);
        Time::from_millis(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn next_connection_id(&self) -> ConnectionId {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        ConnectionId(id)
    }

    /// Registers a new connection; `direct` is its write half when other tasks may write it.
    pub(crate) fn register(
        &self,
        id: ConnectionId,
        info: ConnectionInfo,
        direct: Option<Rc<OwnedWriteHalf>>,
    ) {
        self.note_activity();
        let wake = Wake {
            direct,
            ..Wake::default()
        };
        self.wakers.borrow_mut().insert(id, wake);
        self.broker
            .borrow_mut()
            .connection_opened_with(id, info, self.now());
    }

    /// Whether one more refused connection may be logged now (at most 20 a second).
    pub(crate) fn log_refusal(&self) -> bool {
        self.refusal_log.admit(self.now())
    }

    /// Time a connection has for its handshakes (and, once they are done, for CONNECT).
    pub(crate) fn connect_timeout_millis(&self) -> u64 {
        self.broker.borrow().config().limits.connect_timeout_millis
    }

    pub(crate) fn packet_size_max(&self) -> u32 {
        self.broker.borrow().config().limits.packet_size_max_bytes
    }

    pub(crate) fn unregister(&self, id: ConnectionId) {
        self.note_activity();
        self.broker.borrow_mut().connection_lost(id, self.now());
        self.wakers.borrow_mut().remove(&id);
        self.carries.borrow_mut().remove(&id);
        if let Some(committer) = &self.committer {
            committer.unregister(id);
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.forget(id);
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
        self.after_input_at(None, Instant::now());
    }

    /// [`Shared::after_input`] for input read from `from` at `at` (the instant the core was
    /// given it); returns whether a connection other than `from` was woken.
    pub(crate) fn after_input_at(&self, from: Option<ConnectionId>, at: Instant) -> bool {
        self.busy_poll.note_activity(at);
        let mut woken = self.woken.borrow_mut();
        let mut broker = self.broker.borrow_mut();
        broker.take_woken(&mut woken);
        let mut resumed = self.resumed.borrow_mut();
        broker.take_resumed(&mut resumed);
        while let Some(event) = broker.poll_event() {
            let budget = match event {
                Event::Denied { .. }
                | Event::PublishRefused { .. }
                | Event::RetainedCapped { .. } => Some(&self.denial_log),
                Event::Refused { .. } => Some(&self.refusal_log),
                Event::Dropped {
                    reason: DropReason::QueueFull | DropReason::MemoryFull | DropReason::MailboxFull,
                    ..
                } => Some(&self.drop_log),
                _ => None,
            };
            if budget.is_some_and(|budget| !budget.admit(self.now())) {
                continue;
            }
            log_event(&event);
        }
        if broker
            .next_timeout()
            .is_some_and(|at| at < self.timer_at.get())
        {
            self.timer_wake.notify_one();
        }
        if broker.has_auth_job() {
            self.auth_wake.notify_one();
        }
        if broker.mailboxes_ready() {
            self.mailbox_wake.notify_one();
        }
        if broker.tap_ready() {
            self.tap_wake.notify_one();
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
        if let Some(cluster) = self.cluster.get() {
            cluster.take_ops(|| broker.poll_cluster_op());
            cluster.submit(&woken, |id| broker.pending_transmits(id));
        }
        drop(broker);
        if from.is_some() {
            self.note_activity();
        }
        let quiet = from.is_some() && {
            let quiet = self.quiet_at(at);
            self.last_read_at.set(at);
            quiet
        };
        let mut wakers = self.wakers.borrow_mut();
        let mut others = false;
        let mut direct_writes_left = if quiet { DIRECT_WRITES_PER_READ_MAX } else { 0 };
        for id in woken.drain(..) {
            let Some(wake) = wakers.get_mut(&id) else {
                continue;
            };
            if direct_writes_left > 0 && Some(id) != from && !wake.direct_paused {
                if let Some(socket) = &wake.direct {
                    direct_writes_left -= 1;
                    if self.write_directly(id, socket) {
                        continue;
                    }
                }
            }
            others |= Some(id) != from;
            wake.pending = true;
            if let Some(waker) = wake.waker.take() {
                waker.wake();
            }
        }
        for id in resumed.drain(..) {
            if let Some(wake) = wakers.get_mut(&id) {
                wake.pending = true;
                if let Some(waker) = wake.waker.take() {
                    waker.wake();
                }
            }
        }
        // A direct write may have taken a connection's outbox down far enough for the retained
        // messages owed to its session to go on: the timer task sends them.
        if self.broker.borrow().retained_feeds_ready() {
            self.timer_wake.notify_one();
        }
        others
    }

    /// Whether flow control has paused reading `id`: its task then waits for output only,
    /// leaving input in the socket (TCP flow control stops the client), until the core lets it
    /// go on and [`Shared::after_input`] wakes it.
    pub(crate) fn reading_paused(&self, id: ConnectionId) -> bool {
        let broker = self.broker.borrow();
        broker.any_reading_paused() && broker.reading_paused(id)
    }

    /// The connection `id`'s socket took nothing of a pending write for the stall timeout: the
    /// core cuts its client loose (counted, logged) and closes it.
    pub(crate) fn socket_stalled(&self, id: ConnectionId) {
        self.broker.borrow_mut().socket_stalled(id, self.now());
        self.after_input();
    }

    /// Sends more of the retained messages owed to subscriptions whose connections have taken
    /// their share out of the outbox (the core lists them as it hands those out), so a large
    /// set of retained messages goes out as fast as the subscriber reads, no faster.
    pub(crate) fn resume_retained_feeds(&self) {
        let mut broker = self.broker.borrow_mut();
        if !broker.retained_feeds_ready() {
            return;
        }
        broker.resume_retained_feeds(self.now());
        drop(broker);
        self.after_input();
    }

    fn note_activity(&self) {
        self.activity.set(self.activity.get().wrapping_add(1));
    }

    /// Connections opened, closed or read from so far.
    pub(crate) fn activity(&self) -> u64 {
        self.activity.get()
    }

    /// Whether a read at `at` would find the broker quiet: the previous read was at least the
    /// direct-write gap before it. Quiet reads write their deliveries directly.
    pub(crate) fn quiet_at(&self, at: Instant) -> bool {
        at.saturating_duration_since(self.last_read_at.get()) >= self.direct_write_quiet_gap
    }

    /// Encodes and writes what the core queued for `id` straight into its socket; returns
    /// whether that was everything (else its task must be woken for the rest).
    fn write_directly(&self, id: ConnectionId, socket: &OwnedWriteHalf) -> bool {
        let mut carries = self.carries.borrow_mut();
        if carries.contains_key(&id) {
            return false;
        }
        let mut buf = self.direct_buf.borrow_mut();
        buf.clear();
        // The close is left for the connection's task, which alone can end the connection.
        let stop = encode_queued(self, id, &mut buf, false);
        let mut done = stop == Stop::Drained;
        if !buf.is_empty() {
            match write_available(socket, &buf) {
                Ok(written) => {
                    self.bytes_sent.set(self.bytes_sent.get() + written as u64);
                    if written < buf.len() {
                        carries.insert(id, BytesMut::from(&buf[written..]));
                        done = false;
                    }
                }
                // The connection's task meets the broken socket on its next read or write, and
                // counts it then.
                Err(error) => {
                    debug!(conn = id.0, "direct write failed: {error}");
                    done = false;
                }
            }
        }
        if buf.capacity() > DIRECT_BUF_KEEP_BYTES {
            *buf = BytesMut::new();
        }
        done
    }

    /// What direct writes left unwritten for `id`, to be written before anything else.
    pub(crate) fn take_carry(&self, id: ConnectionId) -> Option<BytesMut> {
        let mut carries = self.carries.borrow_mut();
        if carries.is_empty() {
            return None;
        }
        carries.remove(&id)
    }

    /// Stops (or resumes) direct writes to `id` while its task waits to finish a write.
    pub(crate) fn pause_direct_writes(&self, id: ConnectionId, paused: bool) {
        if let Some(wake) = self.wakers.borrow_mut().get_mut(&id) {
            wake.direct_paused = paused;
        }
    }

    /// Ends direct writes to `id` (its task is closing it) and drops the write half held here.
    pub(crate) fn detach_writer(&self, id: ConnectionId) {
        if let Some(wake) = self.wakers.borrow_mut().get_mut(&id) {
            wake.direct = None;
        }
    }

    /// Whether the core has new output for `id`; if not, the task is woken when it has.
    pub(crate) fn poll_woken(&self, id: ConnectionId, cx: &Context<'_>) -> bool {
        let mut wakers = self.wakers.borrow_mut();
        let Some(wake) = wakers.get_mut(&id) else {
            return false;
        };
        if wake.pending {
            wake.pending = false;
            return true;
        }
        if !wake.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            wake.waker = Some(cx.waker().clone());
        }
        false
    }

    /// The next time the core's timers must run, at most `cap` from now; remembered so input
    /// that brings it earlier wakes the timer task.
    pub(crate) fn plan_timer(&self, cap: Duration) -> tokio::time::Instant {
        let now = self.now();
        let capped = now.plus_millis(u64::try_from(cap.as_millis()).unwrap_or(u64::MAX));
        let at = self
            .broker
            .borrow()
            .next_timeout()
            .map_or(capped, |at| at.min(capped));
        self.timer_at.set(at);
        let wait = at.as_millis().saturating_sub(now.as_millis());
        tokio::time::Instant::now() + Duration::from_millis(wait)
    }

    /// Runs the slow credential checks the core asks for on tokio's blocking threads, so
    /// password hashing never stalls the broker thread, and hands each answer back. A check is
    /// taken from the core only once a slot is free: until then it waits there, where it is
    /// dropped if its client goes away.
    pub(crate) async fn run_auth_checks(self: Rc<Self>) {
        loop {
            // The semaphore is never closed, so acquiring only waits.
            let Ok(slot) = Arc::clone(&self.auth_slots).acquire_owned().await else {
                return;
            };
            let next = self.broker.borrow_mut().poll_auth_job(self.now());
            let Some((id, job)) = next else {
                drop(slot);
                self.auth_wake.notified().await;
                continue;
            };
            // Checks refused while being taken (throttled meanwhile) have output to write.
            self.after_input();
            let shared = Rc::clone(&self);
            tokio::task::spawn_local(async move {
                let decision = tokio::task::spawn_blocking(move || job.run())
                    .await
                    .unwrap_or(AuthDecision::Refuse(
                        tern_codec::ReasonCode::UnspecifiedError,
                    ));
                drop(slot);
                shared
                    .broker
                    .borrow_mut()
                    .auth_finished(id, decision, shared.now());
                shared.after_input();
            });
        }
    }

    /// Batches up to `seq` are durable: wake the connections whose packets were waiting.
    pub(crate) fn committed(&self, seq: u64) {
        let Some(committer) = &self.committer else {
            return;
        };
        let mut ready = Vec::new();
        committer.committed(seq, &mut ready);
        self.durable_wake.notify_waiters();
        self.wake_ready(ready);
    }

    /// Wakes the tasks of connections whose held packets may now be written.
    fn wake_ready(&self, ready: Vec<ConnectionId>) {
        let mut wakers = self.wakers.borrow_mut();
        for id in ready {
            if let Some(wake) = wakers.get_mut(&id) {
                wake.pending = true;
                if let Some(waker) = wake.waker.take() {
                    waker.wake();
                }
            }
        }
    }

    /// Whether the next packet for `id` may be written (its store operations are durable, and
    /// the messages it acknowledges replicated).
    pub(crate) fn may_transmit(&self, id: ConnectionId) -> bool {
        self.committer.as_ref().is_none_or(|c| c.may_transmit(id))
            && self.cluster.get().is_none_or(|c| c.may_transmit(id))
    }

    /// Notes that a packet for `id` was taken from the core.
    pub(crate) fn transmitted(&self, id: ConnectionId) {
        if let Some(committer) = &self.committer {
            committer.transmitted(id);
        }
        if let Some(cluster) = self.cluster.get() {
            cluster.transmitted(id);
        }
    }

    /// Cluster batches up to `seq` are through: wake the connections whose acknowledgements
    /// were waiting for them.
    pub(crate) fn cluster_through(&self, seq: u64) {
        let Some(cluster) = self.cluster.get() else {
            return;
        };
        let mut ready = Vec::new();
        cluster.through(seq, &mut ready);
        self.durable_wake.notify_waiters();
        self.wake_ready(ready);
    }

    pub(crate) fn handle_timeout(&self) {
        self.broker.borrow_mut().handle_timeout(self.now());
        self.after_input();
    }

    pub(crate) fn traffic(&self) -> TrafficTotals {
        TrafficTotals {
            bytes_received: self.bytes_received.get(),
            bytes_sent: self.bytes_sent.get(),
            encode_errors: self.encode_errors.get(),
            socket_errors: self.socket_errors.get(),
        }
    }

    pub(crate) fn publish_sys(&self) {
        let traffic = self.traffic();
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
