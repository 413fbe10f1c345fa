//! The bridge task: the HTTP bridge's side on the broker thread. HTTP tasks (on their own
//! threads) verify a request's signature and read its body, then send it here over a bounded
//! channel; this task takes every request waiting, checks its nonce, acts on all of them in one
//! input to the core (as a connection hands over a read batch) and answers each once its
//! effect and its spent nonce are durable (the nonce's record goes to the store in the same
//! input as the effect, so a request answered is never accepted again, even after a crash).
//! No lock is taken: the core is called on its own thread, with one routing path for MQTT and
//! HTTP alike.

use std::cell::RefCell;
use std::rc::Rc;

use tern_codec::{MqttString, QoS};
use tern_core::{ConnectionId, GuardRecord, Permissions};
use tern_net::BrokerHandle;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::admin_ops::{self, AdminOp, OperatorEnvelope};
use crate::answers::published;
pub(crate) use crate::answers::{json, refused};
use crate::error::ApiError;
use crate::events::{Observe, Watchers};
use crate::kv::KvOp;
use crate::longpoll::{self, Waiters};
use crate::mailbox::{self, MailboxOp, MailboxSettings, Outcome};
use crate::metrics::CoreFigures;
use crate::publish::Item;
use crate::replay::{Admission, Answer, Change, Nonce, ReplayGuard, ReplayLimits};
use crate::sync::SyncOp;

/// Requests taken from the channel for one input to the core, at most.
const REQUESTS_PER_INPUT_MAX: usize = 256;

/// A verified request on its way to the broker thread.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) request: Request,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// A verified request: who, under which nonce, doing what.
#[derive(Debug)]
pub(crate) struct Request {
    /// The key and client, as nonces are counted.
    pub(crate) principal: String,
    pub(crate) nonce: Nonce,
    pub(crate) signature: [u8; 32],
    /// `Tern-Time`; `None` for `-`.
    pub(crate) time: Option<u64>,
    pub(crate) credential: tern_auth::Credential,
    pub(crate) op: Op,
    /// What a sync answers besides its messages, worked out before it waited for them.
    pub(crate) first: Option<serde_json::Value>,
}

/// What a request does.
#[derive(Debug)]
pub(crate) enum Op {
    /// Publish one message (`batch` false) or several.
    Publish {
        items: Vec<Item>,
        atomic: bool,
        batch: bool,
    },
    /// Something done to the client's mailbox.
    Mailbox(MailboxOp),
    /// `POST /v1/sync`: a wake's whole exchange.
    Sync(SyncOp),
    /// Something done to a key/value entry.
    Kv(KvOp),
    /// `POST /v1/fleet/register`: a fleet device's registration (the body).
    Register(bytes::Bytes),
    /// `GET /v1/fleet/firmware/{id}`: may the device read this release's file.
    Firmware(String),
}

impl Op {
    /// Whether the request is exactly-once (answered again, never applied twice, on retry).
    fn exactly_once(&self) -> bool {
        match self {
            Self::Publish { items, .. } => items.iter().any(|item| {
                item.publish
                    .as_ref()
                    .is_some_and(|p| p.qos == QoS::ExactlyOnce)
            }),
            Self::Mailbox(_) => false,
            // A wake's exchange, and a write that a lost answer must not turn into a conflict.
            Self::Sync(_) => true,
            Self::Kv(op) => op.writes(),
            // Recording it again is harmless, and the offer may have changed since.
            Self::Register(_) | Self::Firmware(_) => false,
        }
    }
}

/// The bridge's state on the broker thread.
struct Bridge {
    handle: BrokerHandle,
    /// The connection identifier the core names the bridge by.
    edge: ConnectionId,
    guard: Rc<RefCell<ReplayGuard>>,
    mailboxes: MailboxSettings,
    waiters: RefCell<Waiters>,
    /// Open event streams (`events.rs`).
    watchers: RefCell<Watchers>,
}

/// What makes the bridge look at waiting long polls again.
#[derive(Debug, Clone, Copy)]
enum Look {
    /// The core noted deliveries queued to watched mailboxes.
    Ready,
    /// Deadlines and lease ends came.
    Due,
}

/// What the HTTP tasks send the bridge: devices' signed requests and operators' requests.
#[derive(Debug)]
pub(crate) struct Channels {
    pub(crate) requests: mpsc::Receiver<Envelope>,
    pub(crate) operator: mpsc::Receiver<OperatorEnvelope>,
    /// Event streams opened and metrics scrapes, and what the streams count.
    pub(crate) observe: mpsc::Receiver<Observe>,
    pub(crate) stream_counts: std::sync::Arc<crate::events::StreamCounts>,
}

/// Runs the bridge on the broker thread until every HTTP task is gone; `restored` is what the
/// store kept of the request guard, `bans` the bans kept in the data directory.
pub(crate) async fn run(
    handle: BrokerHandle,
    channels: Channels,
    limits: ReplayLimits,
    restored: Vec<GuardRecord>,
    mailboxes: MailboxSettings,
    bans: Vec<(String, Option<u64>)>,
) {
    let Channels {
        mut requests,
        mut operator,
        mut observe,
        stream_counts,
    } = channels;
    let guard = Rc::new(RefCell::new(ReplayGuard::new(limits)));
    guard.borrow_mut().restore(restored, unix_now());
    let edge = handle.connection_id();
    handle.input(|broker, now| {
        for (client_id, until) in bans {
            let op = AdminOp::Ban {
                client_id,
                until_unix: until,
            };
            admin_ops::apply(broker, &op, edge, now, unix_now());
        }
    });
    let bridge = Bridge {
        edge,
        handle,
        guard,
        mailboxes,
        waiters: RefCell::default(),
        watchers: RefCell::new(Watchers::new(stream_counts)),
    };
    let mut taken = Vec::new();
    loop {
        let wake_at = bridge.waiters.borrow().next_wake();
        tokio::select! {
            received = requests.recv_many(&mut taken, REQUESTS_PER_INPUT_MAX) => {
                if received == 0 {
                    return;
                }
                bridge.take(&mut taken);
            }
            Some(envelope) = operator.recv() => bridge.operate(envelope),
            () = bridge.handle.mailboxes_ready() => bridge.look(Look::Ready),
            Some(asked) = observe.recv() => bridge.observe(asked),
            () = bridge.handle.tap_ready() => bridge.watch_tap(),
            () = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now)),
                if wake_at.is_some() => bridge.look(Look::Due),
        }
    }
}

impl Bridge {
    /// Admits the requests taken, acts on the fresh ones in one input to the core and answers
    /// them (or parks the long polls that found nothing).
    fn take(&self, taken: &mut Vec<Envelope>) {
        let now_unix = unix_now();
        let mut fresh = Vec::new();
        for envelope in taken.drain(..) {
            let request = &envelope.request;
            let admission = self.guard.borrow_mut().admit(
                &request.principal,
                &request.nonce,
                &request.signature,
                request.time,
                now_unix,
                request.op.exactly_once(),
            );
            match admission {
                Admission::Fresh => fresh.push(envelope),
                // The same request again: what it was answered, once durable, as then.
                Admission::Replay(answer) => {
                    let _ = envelope.reply.send(answer);
                }
                Admission::Refused(error) => {
                    let _ = envelope.reply.send(refused(&error));
                }
            }
        }
        if fresh.is_empty() {
            return;
        }
        let (outcomes, batch) = self.handle.input(|broker, now| {
            // The bans that ended are forgotten before the requests meet them.
            broker.bans(now);
            let outcomes = fresh
                .iter()
                .map(|envelope| {
                    let request = &envelope.request;
                    let outcome = self.apply(broker, request, (false, false), now);
                    if let Outcome::Answer(answer) = &outcome {
                        self.record_answer(request, answer);
                    }
                    outcome
                })
                .collect::<Vec<Outcome>>();
            self.hand_guard_changes(broker);
            outcomes
        });
        let mut answered = Vec::new();
        let mut concluded = Vec::new();
        for (mut envelope, outcome) in fresh.into_iter().zip(outcomes) {
            match outcome {
                Outcome::Answer(answer) => answered.push((envelope, answer)),
                Outcome::Wait {
                    client_id,
                    deadline,
                    recheck,
                    first,
                } => {
                    envelope.request.first = first;
                    let replaced = self.waiters.borrow_mut().park(
                        client_id,
                        envelope,
                        longpoll::in_(deadline),
                        recheck.map(longpoll::in_),
                    );
                    match replaced {
                        // A sync has taken effect: it is answered with what it has.
                        Some(older) if older.request.op.exactly_once() => concluded.push(older),
                        Some(older) => {
                            let error = ApiError::new(
                                409,
                                "poll_superseded",
                                "a newer poll of this mailbox took the place of this one",
                            );
                            answered.push((older, refused(&error)));
                        }
                        None => {}
                    }
                }
            }
        }
        self.answer_when_durable(batch, answered);
        if !concluded.is_empty() {
            self.conclude(concluded);
        }
    }

    /// The nonces spent and answers given since the last call, handed to the core: in the
    /// input that applies the requests they guard, so they are durable together.
    fn hand_guard_changes(&self, broker: &mut tern_core::Broker) {
        for change in self.guard.borrow_mut().take_changes() {
            match change {
                Change::Set(record) => broker.record_guard(record),
                Change::Forget(key) => broker.forget_guard(key),
            }
        }
    }

    /// Remembers, for the store, the answer of an exactly-once request: recorded in the input
    /// that applies it (or, for a sync that waited, that answers it).
    fn record_answer(&self, request: &Request, answer: &Answer) {
        if request.op.exactly_once() {
            self.guard.borrow_mut().record_answer(
                &request.principal,
                &request.nonce,
                &request.signature,
                answer,
                unix_now(),
            );
        }
    }

    /// Answers waiting syncs at once with what they have (a newer poll took their place).
    fn conclude(&self, envelopes: Vec<Envelope>) {
        let mut answered = Vec::new();
        let (_, batch) = self.handle.input(|broker, now| {
            for envelope in envelopes {
                if let Outcome::Answer(answer) =
                    self.apply(broker, &envelope.request, (true, true), now)
                {
                    self.record_answer(&envelope.request, &answer);
                    answered.push((envelope, answer));
                }
            }
            self.hand_guard_changes(broker);
        });
        self.answer_when_durable(batch, answered);
    }

    /// Looks again at the long polls whose mailboxes got deliveries (`Ready`) or whose time
    /// came (`Due`): each is answered with what it finds now, or at its deadline with nothing,
    /// or waits on.
    fn look(&self, look: Look) {
        let mut answered = Vec::new();
        let (_, batch) = self.handle.input(|broker, now| {
            let clients = match look {
                Look::Ready => broker.take_ready_mailboxes(),
                Look::Due => self.waiters.borrow().due(Instant::now()),
            };
            for client_id in clients {
                let Some(waiter) = self.waiters.borrow_mut().take(&client_id) else {
                    continue;
                };
                let request = &waiter.envelope.request;
                let gone = waiter.envelope.reply.is_closed();
                if gone && !request.op.exactly_once() {
                    // Its client went away: nobody to answer.
                    broker.mailbox_watch(&client_id, false);
                    continue;
                }
                // A sync whose client went away is answered all the same: its answer is kept
                // for the retry.
                let last = gone || Instant::now() >= waiter.deadline;
                match self.apply(broker, request, (true, last), now) {
                    Outcome::Answer(answer) => {
                        // No poll waits on the mailbox any more.
                        broker.mailbox_watch(&client_id, false);
                        self.record_answer(request, &answer);
                        answered.push((waiter.envelope, answer));
                    }
                    Outcome::Wait { recheck, .. } => {
                        let recheck = recheck.map(longpoll::in_);
                        self.waiters.borrow_mut().park(
                            client_id,
                            waiter.envelope,
                            waiter.deadline,
                            recheck,
                        );
                    }
                }
            }
            self.hand_guard_changes(broker);
        });
        self.answer_when_durable(batch, answered);
    }

    /// Opens an event stream (and forgets those whose readers left), or reads the figures
    /// of a metrics scrape.
    fn observe(&self, asked: Observe) {
        self.handle.input(|broker, _| match asked {
            Observe::Watch(watcher) => {
                let mut watchers = self.watchers.borrow_mut();
                watchers.sweep(broker);
                watchers.watch(broker, watcher);
            }
            Observe::Metrics(reply) => {
                let _ = reply.send(CoreFigures::read(broker, &self.handle));
            }
            Observe::Event {
                client_id,
                name,
                data,
            } => {
                let mut watchers = self.watchers.borrow_mut();
                let subject = crate::events::Subject::Client(client_id);
                watchers.offer_event(broker.fleet(), &subject, name, &data);
                watchers.sweep(broker);
            }
        });
    }

    /// Hands what the core's tap holds to the event streams.
    fn watch_tap(&self) {
        self.handle.input(|broker, now| {
            let mut tapped = Vec::new();
            broker.take_tapped(&mut tapped);
            self.watchers.borrow_mut().deliver(broker, tapped, now);
        });
    }

    /// Does an operator's request in one input, answered once what it changed is durable.
    fn operate(&self, envelope: OperatorEnvelope) {
        let (answer, batch) = self.handle.input(|broker, now| {
            admin_ops::apply(broker, &envelope.op, self.edge, now, unix_now())
        });
        let handle = self.handle.clone();
        tokio::task::spawn_local(async move {
            if let Some(batch) = batch {
                handle.durable(batch).await;
            }
            let _ = envelope.reply.send(answer);
        });
    }

    /// Sends each answer once `batch` (what was done with it) is durable.
    fn answer_when_durable(
        &self,
        batch: Option<tern_net::Batch>,
        answered: Vec<(Envelope, Answer)>,
    ) {
        match batch {
            // Without a store (durability "none") nothing waits, and nothing outlives the
            // process either.
            None => {
                for (envelope, answer) in answered {
                    finish(&self.guard, envelope, answer);
                }
            }
            Some(batch) => {
                let (handle, guard) = (self.handle.clone(), Rc::clone(&self.guard));
                tokio::task::spawn_local(async move {
                    handle.durable(batch).await;
                    for (envelope, answer) in answered {
                        finish(&guard, envelope, answer);
                    }
                });
            }
        }
    }

    /// Acts on one request in the core (a long poll looked at again: `look` is (again, last))
    /// and words its answer.
    fn apply(
        &self,
        broker: &mut tern_core::Broker,
        request: &Request,
        look: (bool, bool),
        now: tern_core::Time,
    ) -> Outcome {
        let credential = &request.credential;
        let Ok(client_id) = MqttString::new(&credential.client_id) else {
            return Outcome::Answer(refused(&ApiError::bad_request(
                "the client identifier is not an MQTT string",
            )));
        };
        let restriction = credential
            .restriction
            .clone()
            .map(|acl| Box::new(acl) as Box<dyn Permissions>);
        let identity = credential.identity.clone();
        broker.fleet_seen_over_http(&credential.client_id, &identity, now);
        let client = broker.request_client(self.edge, client_id, identity, restriction);
        match &request.op {
            Op::Publish {
                items,
                atomic,
                batch,
            } => {
                let results = crate::sync::publish_items(broker, &client, items, *atomic, now);
                Outcome::Answer(published(&results, *batch, *atomic))
            }
            Op::Mailbox(op) => mailbox::apply(broker, &client, op, &self.mailboxes, look, now),
            Op::Sync(op) => {
                let first = request.first.as_ref();
                crate::sync::apply(broker, &client, op, &self.mailboxes, look, first, now)
            }
            Op::Kv(op) => Outcome::Answer(crate::kv::apply(broker, &client, op, now)),
            Op::Firmware(id) => {
                Outcome::Answer(crate::admin_firmware::file_for(broker, &client, id))
            }
            Op::Register(body) => {
                Outcome::Answer(crate::fleet_register::apply(broker, &client, body, now))
            }
        }
    }
}

/// Remembers the answer of an exactly-once request, and sends it.
fn finish(guard: &RefCell<ReplayGuard>, envelope: Envelope, answer: Answer) {
    let request = &envelope.request;
    if request.op.exactly_once() {
        guard.borrow_mut().answered(
            &request.principal,
            &request.nonce,
            answer.clone(),
            unix_now(),
        );
    }
    let _ = envelope.reply.send(answer);
}

/// Seconds since the Unix epoch by the system clock.
pub(crate) fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch by the system clock.
pub(crate) fn unix_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
