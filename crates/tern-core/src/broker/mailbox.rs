//! Mailboxes: a session read by polling, through an edge (the HTTP bridge) rather than a
//! connection. The mailbox of a client identifier *is* its MQTT persistent session: the same
//! subscriptions, queue, sequence numbers and store records, whether the client comes over
//! MQTT or polls over HTTP (never both at once: a poll of a connected session is refused).
//!
//! A poll hands out queued and in-flight deliveries in sequence order, without moving them, and
//! leases what it hands out; an acknowledgement by sequence number (cumulative: everything up
//! to it) completes them as a PUBACK would, a `nack` ends a lease at once, a `reject` makes a
//! dead letter, kept (durably) until re-queued. Every poll meets the client's permissions as
//! they are now, as a resumed MQTT session does: subscriptions it may no longer make go, and
//! deliveries on topics it may no longer receive are dropped, not handed out.
//! Sequence numbers only grow, across restarts too
//! (the session record keeps the next one), so an acknowledgement never settles a delivery
//! its poller has not seen. A long poll asks to be told when a delivery is queued
//! ([`Broker::take_ready_mailboxes`]).

use tern_codec::{MqttString, ProtocolVersion, QoS, RetainHandling, SubscriptionIds};
use tern_codec::{SubscriptionOptions, TopicFilter};

use super::publish::Feed;
use super::request::{RequestClient, RequestRefusal};
use super::{Broker, TimerKind};
use crate::authz::Access;
use crate::events::{DropReason, Event};
use crate::mailbox::Lease;
use crate::session::{Delivery, OutgoingState, Session, EXPIRY_NEVER};
use crate::store::{DeliveryStage, StoreOp};
use crate::tree::SubscriptionInfo;
use crate::types::{SessionKey, Time};

/// What a poll asks for.
#[derive(Debug, Clone)]
pub struct Fetch {
    /// Completes every delivery up to this sequence number first (piggybacked acknowledgement).
    pub ack: Option<u64>,
    /// Deliveries handed out at most.
    pub limit: usize,
    /// Bytes handed out at most (their messages' charge); the first is handed out whatever
    /// its size.
    pub bytes_max: usize,
    /// How long what is handed out is leased.
    pub lease_millis: u64,
    /// A delivery handed out this many times without being settled becomes a dead letter.
    pub deliveries_max: u32,
    /// Dead letters kept at most; past it the oldest goes (counted as dropped).
    pub dead_max: usize,
    /// A long poll: if nothing is handed out, note the mailbox for the edge when a delivery
    /// is queued to it, and stop noting it if something is (a poll that does not wait leaves
    /// that as it was: a long poll may be waiting; [`Broker::mailbox_watch`] ends it).
    pub watch: bool,
}

/// One delivery handed out (or a dead letter listed).
#[derive(Debug, Clone)]
pub struct MailboxMessage {
    /// The delivery, with its sequence number.
    pub delivery: Delivery,
    /// How many times it was handed out, this time included.
    pub deliveries: u32,
    /// Seconds left of its Message Expiry Interval, if it has one.
    pub expires_in: Option<u32>,
}

/// What a poll handed out, and what the mailbox holds besides.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The deliveries handed out, in sequence order.
    pub messages: Vec<MailboxMessage>,
    /// Deliveries that could be handed out but passed the poll's limits.
    pub waiting: usize,
    /// Deliveries leased (handed out, not settled), these included.
    pub leased: usize,
    /// The dead letters.
    pub dead: usize,
    /// When the first lease ends (a long poll looks again then).
    pub lease_ends: Option<Time>,
}

/// How a poller settles what it was handed.
#[derive(Debug, Clone, Default)]
pub struct Settle {
    /// Completes every delivery up to this sequence number.
    pub ack: Option<u64>,
    /// Ends these leases now: handed out again on the next poll.
    pub nack: Vec<u64>,
    /// Makes these dead letters.
    pub reject: Vec<u64>,
    /// Dead letters kept at most.
    pub dead_max: usize,
}

/// What settling did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settled {
    /// Deliveries completed.
    pub acked: usize,
    /// Leases ended.
    pub nacked: usize,
    /// Dead letters made.
    pub rejected: usize,
}

impl Broker {
    /// Subscribes the mailbox of `client` to `filter` at `qos` (at most the broker's), making
    /// the mailbox (a persistent session of `expiry_secs`, within the broker's maximum) if the
    /// client identifier has no session. With `retained`, the retained messages of QoS 1 and 2
    /// that match are queued, as for an MQTT subscription. Returns the QoS granted.
    pub fn mailbox_subscribe(
        &mut self,
        client: &RequestClient,
        filter: &str,
        qos: QoS,
        retained: bool,
        expiry_secs: u32,
        now: Time,
    ) -> Result<QoS, RequestRefusal> {
        let filter = self.mailbox_filter(filter)?;
        if !self.request_allows(client, Access::Subscribe, filter.as_str()) {
            self.subscribe_denied(client, &filter);
            return Err(RequestRefusal::NotAuthorized);
        }
        let key = self.open_mailbox(client, expiry_secs)?;
        let limits = &self.config.limits;
        let session = self.session(key);
        let is_new = !session.subscriptions.contains_key(&filter);
        if is_new && session.subscriptions.len() >= limits.subscriptions_per_session_max {
            return Err(RequestRefusal::QuotaExceeded(
                "subscriptions_per_session_max",
            ));
        }
        let qos = qos.min(limits.qos_max);
        let options = SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::SendAtSubscribe,
        };
        let info = SubscriptionInfo {
            options,
            identifier: None,
            tree_view: None,
        };
        let info = self
            .index_subscription(key, &filter, info)
            .map_err(RequestRefusal::FilterInvalid)?;
        self.session_mut(key)
            .subscriptions
            .insert(filter.clone(), info);
        self.touch_mailbox(key, now);
        if retained {
            let mut matching = Vec::new();
            self.retained
                .tree()
                .for_each_match(filter.as_str(), |message| matching.push(message.clone()));
            for message in matching {
                let delivery = Delivery {
                    seq: 0,
                    charge: message.charge(),
                    qos: message.qos.min(qos),
                    retain: true,
                    message,
                    subscription_ids: SubscriptionIds::new(),
                };
                if !delivery.message.is_expired(now) {
                    self.deliver(key, delivery, Feed::Broker, now);
                }
            }
        }
        Ok(qos)
    }

    /// Unsubscribes the mailbox of `client` from `filter`; returns whether it was subscribed.
    pub fn mailbox_unsubscribe(
        &mut self,
        client: &RequestClient,
        filter: &str,
        now: Time,
    ) -> Result<bool, RequestRefusal> {
        let filter = self.mailbox_filter(filter)?;
        let key = self.mailbox_session(client)?;
        let removed = self.session_mut(key).subscriptions.remove(&filter);
        if let Some(info) = &removed {
            self.unindex_subscription(key, &filter, info);
        }
        self.touch_mailbox(key, now);
        Ok(removed.is_some())
    }

    /// The subscriptions of `client`'s mailbox (its session's, whether it polls or connects).
    pub fn mailbox_subscriptions(
        &self,
        client: &RequestClient,
    ) -> Result<Vec<(TopicFilter, QoS)>, RequestRefusal> {
        let key = self
            .request_session(client)?
            .ok_or(RequestRefusal::NoMailbox)?;
        let mut subscriptions: Vec<(TopicFilter, QoS)> = self
            .session(key)
            .subscriptions
            .iter()
            .map(|(filter, info)| (filter.clone(), info.options.qos))
            .collect();
        subscriptions.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        Ok(subscriptions)
    }

    /// Polls `client`'s mailbox: acknowledges as `fetch` says, then hands out and leases the
    /// deliveries that are not leased, oldest first, within its limits. A delivery handed out
    /// `deliveries_max` times becomes a dead letter instead; an expired one, or one the client
    /// may not receive, is dropped.
    pub fn mailbox_fetch(
        &mut self,
        client: &RequestClient,
        fetch: &Fetch,
        now: Time,
    ) -> Result<Fetched, RequestRefusal> {
        let key = self.mailbox_session(client)?;
        if let Some(ack) = fetch.ack {
            self.ack_through(key, ack, Some(now));
        }
        self.prune_mailbox_subscriptions(client, key);
        let mut fetched = Fetched::default();
        let mut bytes = 0;
        let lease_until = now.plus_millis(fetch.lease_millis);
        let held = self.mailbox_deliveries(key);
        let present: Vec<u64> = held.iter().map(|delivery| delivery.seq).collect();
        for delivery in held {
            let seq = delivery.seq;
            let expired = delivery.message.is_expired(now);
            if expired
                || !self.request_allows(client, Access::Subscribe, delivery.message.topic.as_str())
            {
                self.take_delivery(key, seq);
                self.delivery_done(key, seq);
                let why = match expired {
                    true => DropReason::Expired,
                    false => DropReason::NotAuthorized,
                };
                self.dropped(key, why);
                continue;
            }
            let lease = self
                .session_mut(key)
                .mailbox_mut()
                .leases
                .get(&seq)
                .copied();
            if let Some(lease) = lease.filter(|lease| lease.until > now) {
                fetched.leased += 1;
                fetched.lease_ends =
                    Some(lease.until.min(fetched.lease_ends.unwrap_or(lease.until)));
                continue;
            }
            let handed = lease.map_or(0, |lease| lease.deliveries);
            if handed >= fetch.deliveries_max {
                self.make_dead(key, seq, fetch.dead_max);
                continue;
            }
            let full = fetched.messages.len() >= fetch.limit
                || (!fetched.messages.is_empty() && bytes + delivery.charge > fetch.bytes_max);
            if full {
                fetched.waiting += 1;
                continue;
            }
            bytes += delivery.charge;
            let lease = Lease {
                until: lease_until,
                deliveries: handed + 1,
            };
            self.session_mut(key)
                .mailbox_mut()
                .leases
                .insert(seq, lease);
            fetched.leased += 1;
            fetched.lease_ends = Some(lease_until.min(fetched.lease_ends.unwrap_or(lease_until)));
            let expires_in = delivery
                .message
                .expires_at
                .map(|at| now.secs_until(at).max(1));
            fetched.messages.push(MailboxMessage {
                delivery,
                deliveries: lease.deliveries,
                expires_in,
            });
        }
        let mailbox = self.session_mut(key).mailbox_mut();
        // Leases of deliveries settled otherwise (over MQTT, expired, dropped) go.
        mailbox
            .leases
            .retain(|seq, _| present.binary_search(seq).is_ok());
        if fetch.watch {
            mailbox.watched = fetched.messages.is_empty();
        }
        fetched.dead = mailbox.dead.len();
        self.touch_mailbox(key, now);
        let device = self.request_device(client);
        self.fleet_count_http(device, false, fetched.messages.len() as u64);
        Ok(fetched)
    }

    /// Settles what `client`'s mailbox handed out: acknowledged, given back or rejected.
    pub fn mailbox_settle(
        &mut self,
        client: &RequestClient,
        settle: &Settle,
        now: Time,
    ) -> Result<Settled, RequestRefusal> {
        let key = self.mailbox_session(client)?;
        let mut settled = Settled::default();
        if let Some(ack) = settle.ack {
            settled.acked = self.ack_through(key, ack, Some(now));
        }
        for seq in &settle.nack {
            if let Some(lease) = self.session_mut(key).mailbox_mut().leases.get_mut(seq) {
                lease.until = now;
                settled.nacked += 1;
            }
        }
        for &seq in &settle.reject {
            if self.make_dead(key, seq, settle.dead_max) {
                settled.rejected += 1;
            }
        }
        if settled.nacked > 0 {
            self.note_mailbox(key);
        }
        self.touch_mailbox(key, now);
        Ok(settled)
    }

    /// The dead letters of `client`'s mailbox, oldest first.
    pub fn mailbox_dead_letters(
        &self,
        client: &RequestClient,
        now: Time,
    ) -> Result<Vec<MailboxMessage>, RequestRefusal> {
        let key = self
            .request_session(client)?
            .ok_or(RequestRefusal::NoMailbox)?;
        let session = self.session(key);
        let dead = session.mailbox.iter().flat_map(|m| m.dead_letters());
        Ok(dead
            .filter(|d| self.request_allows(client, Access::Subscribe, d.message.topic.as_str()))
            .map(|delivery| MailboxMessage {
                delivery: delivery.clone(),
                deliveries: 0,
                expires_in: delivery.message.expires_at.map(|at| now.secs_until(at)),
            })
            .collect())
    }

    /// Queues dead letters of `client`'s mailbox again (`seqs`, or all), each under a new
    /// sequence number, while the queue has room; returns how many.
    pub fn mailbox_requeue(
        &mut self,
        client: &RequestClient,
        seqs: Option<&[u64]>,
        now: Time,
    ) -> Result<usize, RequestRefusal> {
        let key = self.mailbox_session(client)?;
        let chosen: Vec<u64> = {
            let session = self.session(key);
            let dead = session.mailbox.iter().flat_map(|m| m.dead_letters());
            dead.filter(|d| {
                self.request_allows(client, Access::Subscribe, d.message.topic.as_str())
            })
            .map(|delivery| delivery.seq)
            .filter(|seq| seqs.is_none_or(|seqs| seqs.contains(seq)))
            .collect()
        };
        let (count_max, bytes_max) = self.mailbox_limits_of(&client.client_id);
        let mut requeued = 0;
        for seq in chosen {
            let Some(charge) = self.session(key).mailbox.as_ref().and_then(|m| {
                m.dead_letters()
                    .find(|delivery| delivery.seq == seq)
                    .map(|delivery| delivery.charge)
            }) else {
                continue;
            };
            if self
                .session(key)
                .queue_refusal(charge, count_max, bytes_max)
                .is_some()
            {
                break;
            }
            let taken = self.with_session(key, |session| session.mailbox_mut().take_dead(seq));
            let Some(delivery) = taken else {
                continue;
            };
            self.delivery_done(key, seq);
            self.deliver(key, Delivery { seq: 0, ..delivery }, Feed::Broker, now);
            requeued += 1;
        }
        self.touch_mailbox(key, now);
        Ok(requeued)
    }

    /// Whether a watched mailbox had a delivery queued since [`Broker::take_ready_mailboxes`].
    pub fn mailboxes_ready(&self) -> bool {
        !self.ready_mailboxes.is_empty()
    }

    /// The client identifiers of watched mailboxes that had a delivery queued (or a lease
    /// given back) since the last call, each once.
    pub fn take_ready_mailboxes(&mut self) -> Vec<MqttString> {
        let ready = std::mem::take(&mut self.ready_mailboxes);
        for client_id in &ready {
            if let Some(&key) = self.session_ids.get(client_id) {
                if let Some(mailbox) = self.session_mut(key).mailbox.as_mut() {
                    mailbox.noted = false;
                }
            }
        }
        ready
    }

    /// Stops (or starts) noting deliveries queued to `client_id`'s mailbox.
    pub fn mailbox_watch(&mut self, client_id: &MqttString, watched: bool) {
        if let Some(&key) = self.session_ids.get(client_id) {
            if let Some(mailbox) = self.session_mut(key).mailbox.as_mut() {
                mailbox.watched = watched;
            }
        }
    }

    /// A delivery was queued to `key`: if it has no connection, a watched mailbox is noted.
    pub(super) fn note_mailbox(&mut self, key: SessionKey) {
        let session = self.session_mut(key);
        if session.connection.is_some() {
            return;
        }
        let Some(mailbox) = session.mailbox.as_mut() else {
            return;
        };
        if mailbox.watched && !mailbox.noted {
            mailbox.noted = true;
            let client_id = session.client_id.clone();
            self.ready_mailboxes.push(client_id);
        }
    }

    /// Drops the subscriptions of `key` that `client` may not make (any more), as a resumed
    /// MQTT session's are: polling never widens what a client receives.
    fn prune_mailbox_subscriptions(&mut self, client: &RequestClient, key: SessionKey) {
        let denied: Vec<TopicFilter> = self
            .session(key)
            .subscriptions
            .keys()
            .filter(|filter| !self.request_allows(client, Access::Subscribe, filter))
            .cloned()
            .collect();
        for filter in denied {
            if let Some(info) = self.session_mut(key).subscriptions.remove(&filter) {
                self.unindex_subscription(key, &filter, &info);
            }
            self.subscribe_denied(client, &filter);
        }
    }

    /// Counts and tells of a subscription `client` may not make.
    fn subscribe_denied(&mut self, client: &RequestClient, filter: &TopicFilter) {
        self.stats.subscribe_denied += 1;
        self.events.push_back(Event::Denied {
            connection: client.edge,
            client_id: client.client_id.clone(),
            access: Access::Subscribe,
            topic: filter.as_str().to_owned(),
        });
    }

    /// A filter a mailbox may subscribe with: valid, within the topic limits, and neither a
    /// shared subscription nor a tree view (those need a connection).
    fn mailbox_filter(&self, filter: &str) -> Result<TopicFilter, RequestRefusal> {
        let filter: TopicFilter = filter
            .parse()
            .map_err(|_| RequestRefusal::FilterInvalid("not a valid topic filter"))?;
        let limits = &self.config.limits;
        if filter.len() > limits.topic_length_max_bytes
            || filter.split('/').count() > limits.topic_levels_max
        {
            return Err(RequestRefusal::FilterInvalid("over the topic limits"));
        }
        if filter.is_shared() || filter.as_str().starts_with("$tree/") {
            return Err(RequestRefusal::FilterInvalid(
                "shared subscriptions and $tree/ views need an MQTT connection",
            ));
        }
        Ok(filter)
    }

    /// The session of `client`'s mailbox: its own, and not connected over MQTT now.
    pub(super) fn mailbox_session(
        &mut self,
        client: &RequestClient,
    ) -> Result<SessionKey, RequestRefusal> {
        let key = self
            .request_session(client)?
            .ok_or(RequestRefusal::NoMailbox)?;
        if self.session(key).connection.is_some() {
            return Err(RequestRefusal::MailboxInUse);
        }
        let session = self.session_mut(key);
        session.mailbox_mut();
        // A mailbox keeps the fleet's messages as an offline session does: when the rules
        // opened the fleet to the client that reads it (fleet_fence.rs).
        session.fleet_opened = !client.fleet_fenced();
        Ok(key)
    }

    /// [`Broker::mailbox_session`], made (a persistent session of `expiry_secs`) if missing.
    fn open_mailbox(
        &mut self,
        client: &RequestClient,
        expiry_secs: u32,
    ) -> Result<SessionKey, RequestRefusal> {
        if self.request_session(client)?.is_some() {
            return self.mailbox_session(client);
        }
        let mut session = Session::new(client.client_id.clone(), ProtocolVersion::V5);
        session.owner = client.identity.session_owner();
        session.expiry_secs = expiry_secs
            .min(self.config.limits.session_expiry_max_secs)
            .max(1);
        session.mailbox = Some(Box::default());
        session.fleet_opened = !client.fleet_fenced();
        Ok(self.insert_session(session))
    }

    /// A mailbox was used: its expiry counts from now, and its record (with the next sequence
    /// number) is saved.
    pub(super) fn touch_mailbox(&mut self, key: SessionKey, now: Time) {
        let session = self.session_mut(key);
        let expiry_secs = session.expiry_secs;
        if expiry_secs != EXPIRY_NEVER {
            let at = now.plus_secs(expiry_secs);
            if let Some(old) = session.expires_at.replace(at) {
                self.timers.remove(&(old, key, TimerKind::SessionExpiry));
            }
            self.timers.insert((at, key, TimerKind::SessionExpiry));
        }
        self.save_session(key);
    }

    /// The deliveries the mailbox of `key` holds, in sequence order; a QoS 2 delivery whose
    /// PUBREC came over MQTT is complete for a poller, and is completed here.
    fn mailbox_deliveries(&mut self, key: SessionKey) -> Vec<Delivery> {
        let session = self.session(key);
        let released: Vec<u64> = session
            .inflight
            .iter()
            .filter(|entry| entry.state == OutgoingState::AwaitPubComp)
            .map(|entry| entry.delivery.seq)
            .collect();
        for seq in released {
            self.take_delivery(key, seq);
            self.delivery_done(key, seq);
        }
        let session = self.session(key);
        let inflight = session.inflight.iter().map(|entry| &entry.delivery);
        let mut held: Vec<Delivery> = inflight.chain(session.queue.iter()).cloned().collect();
        held.sort_unstable_by_key(|delivery| delivery.seq);
        held
    }

    /// Takes the delivery `seq` out of `key`'s queue or window.
    fn take_delivery(&mut self, key: SessionKey, seq: u64) -> Option<Delivery> {
        let session = self.session(key);
        if let Some(index) = session.inflight.iter().position(|e| e.delivery.seq == seq) {
            return self.remove_inflight(key, index).map(|entry| entry.delivery);
        }
        self.with_session(key, |session| session.remove_queued(seq))
    }

    /// Completes every delivery of `key` up to `ack` (acknowledged by the client at `acked`,
    /// or skipped by a reset without); returns how many.
    pub(super) fn ack_through(&mut self, key: SessionKey, ack: u64, acked: Option<Time>) -> usize {
        let done: Vec<u64> = self
            .mailbox_deliveries(key)
            .into_iter()
            .map(|delivery| delivery.seq)
            .take_while(|seq| *seq <= ack)
            .collect();
        for &seq in &done {
            let taken = self.take_delivery(key, seq);
            if let (Some(delivery), Some(now)) = (taken, acked) {
                self.fleet_notify_acked(key, delivery.message.id, now);
            }
            self.delivery_done(key, seq);
            self.session_mut(key).mailbox_mut().leases.remove(&seq);
        }
        done.len()
    }

    /// Makes the delivery `seq` of `key` a dead letter (the oldest go past `dead_max`);
    /// returns whether there was such a delivery.
    fn make_dead(&mut self, key: SessionKey, seq: u64, dead_max: usize) -> bool {
        let Some(delivery) = self.take_delivery(key, seq) else {
            return false;
        };
        // A QoS 0 message is not in the store, and its dead letter is not either.
        let stored = delivery.qos != QoS::AtMostOnce;
        self.with_session(key, |session| session.mailbox_mut().push_dead(delivery));
        if stored {
            self.persist_for(key, |client_id| StoreOp::DeliveryStage {
                client_id,
                seq,
                stage: DeliveryStage::Dead,
            });
        }
        while self
            .session(key)
            .mailbox
            .as_ref()
            .is_some_and(|m| m.dead.len() > dead_max)
        {
            let oldest = self.with_session(key, |session| session.mailbox_mut().pop_dead());
            let Some(oldest) = oldest else {
                break;
            };
            self.delivery_done(key, oldest.seq);
            self.dropped(key, DropReason::DeadLettersFull);
        }
        true
    }
}
