//! Message history on the broker thread: messages on topics a `[[history]]` filter names are
//! kept as they are routed (`crate::history`), handed to the store, taken back at start, and
//! queued again into a mailbox on request: the last N of a new subscription's topics
//! (`replay`), or a mailbox reset to a number of messages or to a time.

use std::collections::BTreeMap;

use tern_codec::{QoS, SubscriptionIds, TopicFilter};

use super::request::{RequestClient, RequestRefusal};
use super::Broker;
use crate::authz::Access;
use crate::history::{kept_time, Kept};
use crate::session::Delivery;
use crate::store::StoreOp;
use crate::types::{SessionKey, SharedMessage, Time};

/// Where a mailbox reset puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Everything it holds is completed: it receives from now on.
    Latest,
    /// What it holds below this sequence number is completed, and the rest is handed out
    /// again from the start (leases end).
    Seq(u64),
    /// Everything it holds is completed, then the last N kept messages of its subscriptions
    /// are queued.
    Replay(usize),
    /// Everything it holds is completed, then the kept messages of its subscriptions kept at or
    /// after this time are queued (milliseconds from the core's `Time` zero; negative: before
    /// this process started).
    Since(i64),
}

/// What a reset did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResetDone {
    /// Messages completed (no longer in the mailbox).
    pub completed: usize,
    /// Messages queued from the history.
    pub queued: usize,
}

impl Broker {
    /// Keeps `message` in its topic's history, if a `[[history]]` filter names the topic.
    pub(super) fn keep_history(&mut self, message: &SharedMessage, now: Time) {
        if self.history.is_off() || message.topic.is_dollar() {
            return;
        }
        let at = kept_time(now);
        let outcome = self.history.keep(message, at, now);
        if outcome.refused {
            self.stats.history_refused += 1;
        }
        for (topic, id) in outcome.forgotten {
            self.persist(StoreOp::HistoryForget { topic, id });
        }
        if let Some(message) = outcome.kept {
            self.persist(StoreOp::HistoryKeep(Kept { at, message }));
        }
    }

    /// Takes back the history a store kept; what no filter keeps any more, or what passed
    /// the bounds, is forgotten in the store too. Returns the highest message id seen.
    pub(super) fn restore_history(&mut self, kept: Vec<Kept>, now: Time) -> u64 {
        let mut last_id = 0;
        for Kept { at, message } in kept {
            last_id = last_id.max(message.id);
            let (topic, id) = (message.topic.clone(), message.id);
            if !self.history.restore(at, message, now) {
                self.persist(StoreOp::HistoryForget { topic, id });
            }
        }
        for (topic, id) in self.history.settle_restored() {
            self.persist(StoreOp::HistoryForget { topic, id });
        }
        last_id
    }

    /// Messages kept in history, now.
    pub fn history_len(&self) -> usize {
        self.history.len()
    }

    /// The last `count` messages the history keeps of the fleet device `udid`'s own topics
    /// (its channel `<prefix><owner>/<udid>` and every topic under it: its status, its answer
    /// topic), published by it or to it, oldest first; none when no `[[history]]` filter
    /// keeps them or the device is not registered.
    pub fn fleet_recent_messages(&self, udid: &str, count: usize, now: Time) -> Vec<Kept> {
        let Some(device) = self.fleet.device(udid) else {
            return Vec::new();
        };
        if self.history.is_off() {
            return Vec::new();
        }
        let channel = self.config.fleet.device(&device.owner, &device.udid);
        match format!("{channel}/#").parse::<TopicFilter>() {
            Ok(filter) => self.history.recent(&filter, count, now),
            Err(_) => Vec::new(),
        }
    }

    /// Queues into `client`'s mailbox the last `count` kept messages whose topics match
    /// `filter` (one of its subscriptions, at its QoS), oldest first; returns how many.
    pub fn mailbox_replay(
        &mut self,
        client: &RequestClient,
        filter: &str,
        count: usize,
        now: Time,
    ) -> Result<usize, RequestRefusal> {
        let key = self.mailbox_session(client)?;
        let filter: TopicFilter = filter
            .parse()
            .map_err(|_| RequestRefusal::FilterInvalid("not a valid topic filter"))?;
        let Some(qos) = self
            .session(key)
            .subscriptions
            .get(&filter)
            .map(|info| info.options.qos)
        else {
            return Ok(0);
        };
        Ok(self.replay_into(key, client, &[(filter, qos)], Some(count), None, now))
    }

    /// Resets `client`'s mailbox (see [`Reset`]).
    pub fn mailbox_reset(
        &mut self,
        client: &RequestClient,
        reset: Reset,
        now: Time,
    ) -> Result<ResetDone, RequestRefusal> {
        let key = self.mailbox_session(client)?;
        let mut done = ResetDone::default();
        let subscriptions: Vec<(TopicFilter, QoS)> = self
            .session(key)
            .subscriptions
            .iter()
            .map(|(filter, info)| (filter.clone(), info.options.qos))
            .collect();
        match reset {
            Reset::Seq(seq) => {
                done.completed = self.ack_through(key, seq.saturating_sub(1), None);
                self.session_mut(key).mailbox_mut().leases.clear();
                self.note_mailbox(key);
            }
            Reset::Latest => done.completed = self.ack_through(key, u64::MAX, None),
            Reset::Replay(count) => {
                done.completed = self.ack_through(key, u64::MAX, None);
                done.queued = self.replay_into(key, client, &subscriptions, Some(count), None, now);
            }
            Reset::Since(at) => {
                done.completed = self.ack_through(key, u64::MAX, None);
                done.queued = self.replay_into(key, client, &subscriptions, None, Some(at), now);
            }
        }
        self.touch_mailbox(key, now);
        Ok(done)
    }

    /// Queues into the mailbox of `key` the kept messages matching `subscriptions` (each at
    /// the highest QoS of the subscriptions it matches, as an MQTT session receives
    /// overlapping subscriptions' messages), kept since `since`, the last `count` of them,
    /// oldest first; those expired or that `client` may not receive are left out.
    fn replay_into(
        &mut self,
        key: SessionKey,
        client: &RequestClient,
        subscriptions: &[(TopicFilter, QoS)],
        count: Option<usize>,
        since: Option<i64>,
        now: Time,
    ) -> usize {
        for (topic, id) in self.history.prune(now) {
            self.persist(StoreOp::HistoryForget { topic, id });
        }
        let mut found: BTreeMap<u64, (SharedMessage, QoS)> = BTreeMap::new();
        for (filter, qos) in subscriptions {
            for kept in self.history.matching(filter, since) {
                let entry = found.entry(kept.message.id).or_insert((kept.message, *qos));
                entry.1 = entry.1.max(*qos);
            }
        }
        let chosen: Vec<(SharedMessage, QoS)> = found
            .into_values()
            .filter(|(message, _)| {
                !message.is_expired(now)
                    && self.request_allows(client, Access::Subscribe, &message.topic)
            })
            .collect();
        let skip = count.map_or(0, |count| chosen.len().saturating_sub(count));
        let mut queued = 0;
        for (message, qos) in chosen.into_iter().skip(skip) {
            let delivery = Delivery {
                seq: 0,
                charge: message.charge(),
                qos: message.qos.min(qos),
                retain: false,
                message,
                subscription_ids: SubscriptionIds::new(),
            };
            if self.deliver_to_mailbox(key, delivery, now) {
                queued += 1;
            }
        }
        queued
    }
}
