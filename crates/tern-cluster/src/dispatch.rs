//! What the node's subscriptions receive, to the broker thread, in the message stream's order:
//! one copy of each message; the messages a claim settling here must deliver itself (its
//! backlog); and the notices of claimants that took a session from this node.
//!
//! Order matters for a take-over. The claimant's notice goes through the stream, so it has a
//! place in the stream's order: messages stored before it are the old holder's to hand over,
//! those stored after it the claimant's. The old holder must therefore have routed every message
//! stored before the notice when it takes the notice in. NATS gives the node's connection the
//! stream's messages in the stream's order, but async-nats hands each subscription its own
//! queue; here they are merged back by stream sequence (`Nats-Sequence`, which the stream's
//! republish adds). The connection fills the queues in its order from a task on this thread,
//! which cannot run while a drain does: a drain of every queue therefore takes everything up to
//! some point of the connection's order, and sorted it is that order. A drain must not stop
//! early, or the connection would run again and a later message could go out before an earlier
//! one still queued: tokio's budget for one task makes a queue look empty after 128 messages, so
//! drains run outside it. Messages without a sequence (QoS 0, straight from their node) keep the
//! order they came in, ahead of the round's others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::stream::SelectAll;
use futures_util::{FutureExt, Stream, StreamExt};
use tern_codec::{MqttString, QoS, TopicFilter};
use tern_core::store::StoredSession;
use tern_core::{ClaimOutcome, ClusterInput, ConnectionId, OutboundQos2, RemoteMessage};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::dedup::Recent;
use crate::envelope::Envelope;
use crate::handoff::Notice;
use crate::interest::Merged;
use crate::node::{wall_millis, LIVE_PREFIX};
use crate::subject::subject_matches;
use crate::Counters;

/// Messages handed to the broker thread in one batch at most.
const DELIVER_BATCH_MAX: usize = 256;

/// What the rest of the node tells the dispatcher.
pub(crate) enum Command {
    /// A subscription to merge (it ends when its last holder lets go).
    Subscribe(Merged),
    /// A claim starts (or, again, says which subjects it waits on): keep the QoS 1/2 messages on
    /// `subjects` (NATS patterns) for it, and hold back a notice that this node must give the
    /// session up until the claim settles.
    Open {
        claim: u64,
        client_id: MqttString,
        subjects: Vec<String>,
    },
    /// The stream stored the claim's notice at `seq`: its backlog is what was stored after.
    Boundary { claim: u64, seq: u64 },
    /// What the stream held for the claim's session from its cursor `from` on: its backlog is
    /// that, and what was stored after.
    Replayed {
        claim: u64,
        from: u64,
        messages: Vec<(u64, RemoteMessage)>,
        /// The QoS 2 deliveries a node recorded for the session.
        outbound: Vec<OutboundQos2>,
    },
    /// The claim (of a CONNECT on `connection`, or an adoption) is settled.
    Settle {
        claim: u64,
        connection: Option<ConnectionId>,
        outcome: Settlement,
    },
}

/// How a claim settled, before its backlog is added.
pub(crate) enum Settlement {
    /// Owned, with what was handed over.
    Owned(Option<Box<StoredSession>>),
    /// Adopted from a node that died.
    Adopted(Box<StoredSession>),
    /// Not claimed.
    Unavailable,
}

/// Notices this node answers, by the token the core echoes in its answer.
#[derive(Debug, Default)]
pub(crate) struct Handoffs {
    next: u64,
    waiting: HashMap<u64, Notice>,
}

impl Handoffs {
    fn register(&mut self, notice: Notice) -> u64 {
        self.next += 1;
        self.waiting.insert(self.next, notice);
        self.next
    }

    /// The notice answered with `token`.
    pub(crate) fn take(&mut self, token: u64) -> Option<Notice> {
        self.waiting.remove(&token)
    }
}

/// A claim settling on this node.
struct OpenClaim {
    client_id: MqttString,
    subjects: Vec<String>,
    boundary: Option<u64>,
    /// A later claimant's notice came at this sequence: what follows is theirs.
    frozen_at: Option<u64>,
    backlog: Vec<(u64, RemoteMessage)>,
    /// The session's QoS 2 deliveries as recorded, when it was read from the stream.
    outbound: Vec<OutboundQos2>,
    notices: Vec<Notice>,
}

impl OpenClaim {
    /// The backlog: what was stored after the boundary, once each, in the stream's order.
    fn backlog(&mut self) -> Vec<RemoteMessage> {
        let boundary = self.boundary.unwrap_or(0);
        let mut backlog = std::mem::take(&mut self.backlog);
        backlog.retain(|(seq, _)| *seq > boundary);
        backlog.sort_by_key(|(seq, _)| *seq);
        backlog.dedup_by_key(|(seq, _)| *seq);
        backlog.into_iter().map(|(_, message)| message).collect()
    }

    fn offer(&mut self, seq: u64, subject: &str, message: &RemoteMessage) {
        let theirs = self.frozen_at.is_some_and(|at| seq > at);
        let handed_over = self.boundary.is_some_and(|at| seq <= at);
        if !theirs && !handed_over && self.subjects.iter().any(|p| subject_matches(p, subject)) {
            self.backlog.push((seq, message.clone()));
        }
    }
}

/// A message and its place in the stream, if it has one.
pub(crate) struct Received {
    seq: Option<u64>,
    message: async_nats::Message,
    /// The `$share` filter whose group's queue subscription took it, if one did.
    shared: Option<TopicFilter>,
}

impl Received {
    /// A message of one of the node's plain subscriptions.
    pub(crate) fn new(message: async_nats::Message) -> Self {
        // The stream's republish says where it stored the message (the constant, not a string:
        // async-nats tells a standard header from one named by a string).
        let seq = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(async_nats::header::NATS_SEQUENCE))
            .and_then(|value| value.as_str().parse().ok());
        Self {
            seq,
            message,
            shared: None,
        }
    }

    /// A message NATS handed this node, among the nodes with members of `$share` filter
    /// `shared`, for that group.
    pub(crate) fn for_group(message: async_nats::Message, shared: &TopicFilter) -> Self {
        Self {
            shared: Some(shared.clone()),
            ..Self::new(message)
        }
    }
}

/// Subscriptions merged in the stream's order (see the module's documentation).
pub(crate) struct Merge<S> {
    streams: SelectAll<S>,
}

impl<S: Stream<Item = Received> + Unpin> Merge<S> {
    pub(crate) fn new() -> Self {
        Self {
            streams: SelectAll::new(),
        }
    }

    pub(crate) fn add(&mut self, stream: S) {
        self.streams.push(stream);
    }

    /// The next message of any subscription (none while there is no subscription).
    async fn next(&mut self) -> Option<Received> {
        if self.streams.is_empty() {
            return std::future::pending().await;
        }
        self.streams.next().await
    }

    /// One round: `first` (just received) and everything else queued, in order.
    async fn round(&mut self, first: Option<Received>) -> Vec<Received> {
        let mut batch: Vec<Received> = first.into_iter().collect();
        tokio::task::unconstrained(async {
            while let Some(Some(received)) = self.streams.next().now_or_never() {
                batch.push(received);
            }
        })
        .await;
        // Stable: messages without a sequence keep the order they came in, before the others.
        batch.sort_by_key(|r| r.seq);
        batch
    }
}

/// Turns what the subscriptions receive into input for the broker thread.
pub(crate) struct Dispatcher {
    pub(crate) inputs: mpsc::Sender<ClusterInput>,
    pub(crate) boot: u64,
    pub(crate) counters: Arc<Counters>,
    pub(crate) handoffs: Arc<Mutex<Handoffs>>,
    pub(crate) recent: Recent,
    claims: HashMap<u64, OpenClaim>,
    out: Vec<RemoteMessage>,
    /// The stream sequence of the last message taken in.
    last_seq: u64,
}

/// The subject notices to `node` come to, as the stream republishes them.
pub(crate) fn notice_subject(prefix: &str, node: &str) -> String {
    format!("{prefix}.c.{node}")
}

impl Dispatcher {
    pub(crate) fn new(
        inputs: mpsc::Sender<ClusterInput>,
        boot: u64,
        counters: Arc<Counters>,
        handoffs: Arc<Mutex<Handoffs>>,
    ) -> Self {
        Self {
            inputs,
            boot,
            counters,
            handoffs,
            recent: Recent::default(),
            claims: HashMap::new(),
            out: Vec::new(),
            last_seq: 0,
        }
    }

    /// Runs until the broker thread or the rest of the node is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut merge: Merge<Merged> = Merge::new();
        loop {
            let first = tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => {
                        if self.command(command, &mut merge).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    None => return,
                },
                message = merge.next() => message,
            };
            // Subscriptions made meanwhile join before the round.
            while let Ok(command) = commands.try_recv() {
                if self.command(command, &mut merge).await.is_err() {
                    return;
                }
            }
            for received in merge.round(first).await {
                if self.received(received).await.is_err() {
                    return;
                }
            }
            if self.flush().await.is_err() {
                return;
            }
        }
    }

    async fn command(&mut self, command: Command, merge: &mut Merge<Merged>) -> Result<(), ()> {
        match command {
            Command::Subscribe(stream) => merge.add(stream),
            Command::Open {
                claim,
                client_id,
                subjects,
            } => {
                let open = self.claims.entry(claim).or_insert_with(|| OpenClaim {
                    client_id,
                    subjects: Vec::new(),
                    boundary: None,
                    frozen_at: None,
                    backlog: Vec::new(),
                    outbound: Vec::new(),
                    notices: Vec::new(),
                });
                open.subjects = subjects;
            }
            Command::Boundary { claim, seq } => {
                if let Some(open) = self.claims.get_mut(&claim) {
                    open.boundary = Some(seq);
                }
            }
            Command::Replayed {
                claim,
                from,
                messages,
                outbound,
            } => {
                if let Some(open) = self.claims.get_mut(&claim) {
                    open.boundary = Some(from.saturating_sub(1));
                    open.backlog.extend(messages);
                    open.outbound = outbound;
                }
            }
            Command::Settle {
                claim,
                connection,
                outcome,
            } => {
                // What the connection has delivered so far is taken in first: a message the
                // claim read from the stream may be among it, and is then kept once.
                for received in merge.round(None).await {
                    self.received(received).await?;
                }
                self.settle(claim, connection, outcome).await?;
            }
        }
        Ok(())
    }

    /// Hands the broker thread a settled claim, with the messages stored after its notice that
    /// came meanwhile, then the notices of claimants that came after it.
    async fn settle(
        &mut self,
        claim: u64,
        connection: Option<ConnectionId>,
        outcome: Settlement,
    ) -> Result<(), ()> {
        self.flush().await?;
        let mut open = self.claims.remove(&claim);
        let backlog = open.as_mut().map(OpenClaim::backlog).unwrap_or_default();
        let outbound = open
            .as_mut()
            .map(|open| std::mem::take(&mut open.outbound))
            .unwrap_or_default();
        debug!("claim {claim} settled with a backlog of {}", backlog.len());
        let settled = match (outcome, connection) {
            (Settlement::Adopted(session), _) => Some(ClusterInput::Adopted {
                session,
                backlog,
                outbound,
            }),
            (Settlement::Unavailable, Some(connection)) => Some(ClusterInput::ClaimSettled {
                connection,
                outcome: ClaimOutcome::Unavailable,
            }),
            (Settlement::Owned(handed_over), Some(connection)) => {
                Some(ClusterInput::ClaimSettled {
                    connection,
                    outcome: ClaimOutcome::Owned {
                        handed_over,
                        backlog,
                        outbound,
                    },
                })
            }
            (_, None) => None,
        };
        if let Some(settled) = settled {
            self.inputs.send(settled).await.map_err(|_| ())?;
        }
        for notice in open.map(|o| o.notices).unwrap_or_default() {
            self.take_over(notice).await?;
        }
        Ok(())
    }

    async fn received(&mut self, received: Received) -> Result<(), ()> {
        let Received {
            seq,
            message,
            shared,
        } = received;
        if let Some(shared) = shared {
            // Its group's QoS 0 copy, apart from the node's other subscriptions: NATS gives
            // each to one node per group, this node's own included (echo), and no claim's
            // backlog takes it (a group's messages are not replayed).
            let Some(mut remote) = open_group_copy(message, seq, &self.counters) else {
                return Ok(());
            };
            if remote.qos != QoS::AtMostOnce {
                // The group's QoS 1/2 messages come from its consumer (`groups`).
                return Ok(());
            }
            remote.shared = Some(shared);
            self.out.push(remote);
            if self.out.len() >= DELIVER_BATCH_MAX {
                self.flush().await?;
            }
            return Ok(());
        }
        if message
            .subject
            .as_str()
            .starts_with(&format!("{LIVE_PREFIX}.c."))
        {
            let notice = match Notice::decode(message.payload) {
                Ok(notice) => notice,
                Err(error) => {
                    self.counters.count_undecodable();
                    warn!(
                        "take-over notice on {} does not read: {error}",
                        message.subject
                    );
                    return Ok(());
                }
            };
            return self.notice(notice, seq.unwrap_or(u64::MAX)).await;
        }
        let subject = message.subject.clone();
        let Some(remote) = open_envelope(message, seq, &mut self.recent, self.boot, &self.counters)
        else {
            return Ok(());
        };
        if let Some(seq) = seq {
            self.last_seq = seq;
        }
        if let Some(seq) = seq.filter(|_| remote.qos != QoS::AtMostOnce) {
            for open in self.claims.values_mut() {
                open.offer(seq, subject.as_str(), &remote);
            }
        }
        self.out.push(remote);
        if self.out.len() >= DELIVER_BATCH_MAX {
            self.flush().await?;
        }
        Ok(())
    }

    /// A claimant took a session this node held (or was claiming itself, in which case it gives
    /// it up once its own claim settles).
    async fn notice(&mut self, notice: Notice, seq: u64) -> Result<(), ()> {
        debug!(
            "notice of node {} for {:?} at stream sequence {seq} (last routed {})",
            notice.claimant, notice.client_id, self.last_seq
        );
        if let Some(open) = self
            .claims
            .values_mut()
            .find(|open| open.client_id == notice.client_id)
        {
            open.frozen_at.get_or_insert(seq);
            open.notices.push(notice);
            return Ok(());
        }
        self.take_over(notice).await
    }

    async fn take_over(&mut self, notice: Notice) -> Result<(), ()> {
        self.flush().await?;
        info!(
            "node {} takes over the session of {:?}",
            notice.claimant, notice.client_id
        );
        let client_id = notice.client_id.clone();
        let clean_start = notice.clean_start;
        let token = match self.handoffs.lock() {
            Ok(mut handoffs) => handoffs.register(notice),
            Err(_) => return Err(()),
        };
        let input = ClusterInput::TakenOver {
            client_id,
            clean_start,
            token: Some(token),
        };
        self.inputs.send(input).await.map_err(|_| ())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.out);
        self.inputs
            .send(ClusterInput::Deliver(out))
            .await
            .map_err(|_| ())
    }
}

/// The message a NATS message for a `$share` group carries.
fn open_group_copy(
    message: async_nats::Message,
    seq: Option<u64>,
    counters: &Counters,
) -> Option<RemoteMessage> {
    match Envelope::decode(message.payload) {
        Ok(envelope) => Some(remote_message(envelope, seq)),
        Err(error) => {
            counters.count_undecodable();
            warn!(
                "message on {} is not from a Tern node: {error}",
                message.subject
            );
            None
        }
    }
}

/// The message a NATS message carries, unless it is a copy already routed.
fn open_envelope(
    message: async_nats::Message,
    seq: Option<u64>,
    recent: &mut Recent,
    boot: u64,
    counters: &Counters,
) -> Option<RemoteMessage> {
    let retained_revision = crate::retained::revision_of(message.headers.as_ref());
    let envelope = match Envelope::decode(message.payload) {
        Ok(envelope) => envelope,
        Err(error) => {
            counters.count_undecodable();
            warn!(
                "message on {} is not from a Tern node: {error}",
                message.subject
            );
            return None;
        }
    };
    // Loops: QoS 0 from this node was routed here when it was published (NATS echoes it, for
    // the `$share` groups); QoS 1/2 is routed here as it comes back from the stream.
    if envelope.origin == boot && envelope.qos == QoS::AtMostOnce {
        return None;
    }
    if !recent.first_copy(envelope.origin, envelope.counter) {
        return None;
    }
    let mut remote = remote_message(envelope, seq);
    remote.retained_revision = retained_revision.filter(|_| remote.retain);
    Some(remote)
}

/// The message `envelope` carries, stored in the stream at `seq` (QoS 1/2).
pub(crate) fn remote_message(envelope: Envelope, seq: Option<u64>) -> RemoteMessage {
    RemoteMessage {
        topic: envelope.topic,
        payload: envelope.payload,
        qos: envelope.qos,
        retain: envelope.retain,
        properties: envelope.properties,
        expiry_millis: envelope
            .expires_at_wall
            .map(|at| at.saturating_sub(wall_millis())),
        publisher: envelope.publisher,
        seq: seq.filter(|_| envelope.qos != QoS::AtMostOnce),
        shared: None,
        retained_revision: None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is a failure.

    use async_nats::HeaderMap;
    use futures_util::stream::BoxStream;

    use super::*;

    fn message(subject: &str, seq: Option<u64>) -> async_nats::Message {
        let headers = seq.map(|seq| {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_SEQUENCE, seq.to_string().as_str());
            headers
        });
        async_nats::Message {
            subject: subject.into(),
            reply: None,
            payload: bytes::Bytes::new(),
            headers,
            status: None,
            description: None,
            length: 0,
        }
    }

    fn channel() -> (
        mpsc::UnboundedSender<async_nats::Message>,
        BoxStream<'static, Received>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, Box::pin(stream.map(Received::new)))
    }

    /// Many messages at once, on the broker's kind of runtime: the merge drains every queue
    /// whatever tokio's budget for one task says, or a lower sequence left in a queue would come
    /// out after a higher one.
    #[test]
    fn the_merge_keeps_the_order_past_the_runtimes_budget() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut merge = Merge::new();
            let mut senders = Vec::new();
            for _ in 0..3 {
                let (tx, stream) = channel();
                senders.push(tx);
                merge.add(stream);
            }
            for seq in 1..=1000u64 {
                let queue = (seq * 7 % 3) as usize;
                senders[queue].send(message("s", Some(seq))).unwrap();
            }
            let round = merge.round(None).await;
            let seen: Vec<u64> = round.iter().filter_map(|r| r.seq).collect();
            assert_eq!(seen, (1..=1000).collect::<Vec<_>>());
        });
    }

    /// Messages queued on several subscriptions in the stream's order come out in that order,
    /// whichever queue they wait in; those without a sequence come out as they came, first.
    #[test]
    fn the_merge_puts_subscriptions_back_in_the_streams_order() {
        let mut merge = Merge::new();
        let mut senders = Vec::new();
        for _ in 0..3 {
            let (tx, stream) = channel();
            senders.push(tx);
            merge.add(stream);
        }
        for seq in 1..=30u64 {
            let queue = (seq * 7 % 3) as usize;
            senders[queue].send(message("s", Some(seq))).unwrap();
            if seq % 10 == 0 {
                senders[0]
                    .send(message(&format!("plain {seq}"), None))
                    .unwrap();
            }
        }
        let round = merge.round(None).now_or_never().unwrap();
        let plain: Vec<&str> = round
            .iter()
            .take_while(|r| r.seq.is_none())
            .map(|r| r.message.subject.as_str())
            .collect();
        assert_eq!(plain, ["plain 10", "plain 20", "plain 30"]);
        let seen: Vec<u64> = round.iter().filter_map(|r| r.seq).collect();
        assert_eq!(seen, (1..=30).collect::<Vec<_>>());
    }
}
