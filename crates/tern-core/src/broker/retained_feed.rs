//! Retained messages owed to a new subscription, paced by the subscriber's reading: the
//! subscription keeps a cursor over the retained trie, and its messages move into the session's
//! in-flight window (QoS 1/2) or the connection's outbox (QoS 0) as those have room, ahead of
//! the session queue and never cut by its limits (docs/design/sessions.md, "Retained messages
//! for a new subscription").

use std::collections::VecDeque;
use std::sync::Arc;

use tern_codec::{MqttString, QoS, SubscriptionIds, TopicFilter, TopicName, UserProperties};

use super::publish::Feed;
use super::Broker;
use crate::connection::{Connection, Phase};
use crate::events::{DropReason, Event};
use crate::session::{Delivery, Session};
use crate::store::StoreOp;
use crate::types::{ConnectionId, SessionKey, SharedMessage, Time};

/// Retained topics one step walks at most, as many as a tree view's snapshot lays out per call:
/// a subscription over 100,000 topics never holds the broker thread for its whole length.
const STEP_TOPICS: usize = 2_048;
/// QoS 0 retained messages a subscription keeps in its connection's outbox at most (and fewer
/// if `outbox_qos0_count_max` is lower), so its live QoS 0 messages keep their room.
const OUTBOX_AHEAD_COUNT: usize = 2_048;
/// Bytes of them, at most (the first always goes): one write batch of the runtime.
const OUTBOX_AHEAD_BYTES: usize = 256 * 1024;

/// The user property a SUBACK carries, once per filter, when `retained_per_subscription_max`
/// leaves out some of the filter's retained messages (MQTT 5, with problem information).
pub const RETAINED_CAPPED_PROPERTY: &str = "retained-capped";

/// The retained messages one subscription is still owed.
#[derive(Debug)]
pub(crate) struct RetainedFeed {
    filter: TopicFilter,
    /// Granted QoS: each message goes at the lower of its own and this.
    qos: QoS,
    identifier: Option<u32>,
    /// Messages with this identity or a later one were published after the SUBSCRIBE: they
    /// reached the subscription by routing, and their topic's older message is not owed any more.
    since: u64,
    /// Deliveries queued before the SUBSCRIBE are numbered below this: they go first, as if the
    /// retained messages had been queued behind them; those queued since wait for the feed.
    after_seq: u64,
    /// The last topic walked past; the walk resumes after it.
    cursor: Option<TopicName>,
    /// Messages it may still send (`retained_per_subscription_max`; `usize::MAX`: no cap).
    left: usize,
    /// On a cluster node, the token of the question whether the node's copy of the retained
    /// messages is complete for it: it walks nothing until answered (cluster/retained.rs).
    awaits: Option<u64>,
}

/// The feeds of one session, oldest subscription first: each is sent in full before the next.
pub(crate) type RetainedFeeds = VecDeque<RetainedFeed>;

/// What one step may still put where.
struct Room {
    /// QoS 0 messages and bytes the outbox may still take for the feed.
    outbox_count: usize,
    outbox_bytes: usize,
    /// Whether the outbox held nothing: then one message goes whatever its size.
    outbox_empty: bool,
    /// Bytes the in-flight window may still take; `None` while it is empty (then one message
    /// goes whatever its size).
    window_bytes_left: Option<usize>,
    /// Whether a QoS 1/2 message was taken: the step ends there.
    window_taken: bool,
}

/// Why a step stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Blocked {
    /// Nothing: it took all it could walk (more may remain, for the next step).
    No,
    /// The next message is QoS 0 and the outbox is full: the runtime reports when it drains.
    Outbox,
    /// The next message is QoS 1/2 and the window is full (or one was just taken), or
    /// deliveries queued before the SUBSCRIBE go first: the pump resumes it as they leave.
    Window,
}

impl Broker {
    /// Gives the subscription `filter` of `key` (made or replaced by a SUBSCRIBE, granted `qos`)
    /// the retained messages it is owed: a new feed when Retain Handling says they are sent,
    /// replacing one in progress (MQTT-3.8.4-4 re-sends them all); otherwise a feed in progress
    /// goes on under the new options, so no message is lost to the replacement. Returns whether
    /// `retained_per_subscription_max` leaves some out (counted, and reported as an event).
    pub(super) fn subscribe_retained(
        &mut self,
        key: SessionKey,
        filter: &TopicFilter,
        qos: QoS,
        identifier: Option<u32>,
        send: bool,
    ) -> bool {
        let feeds = &mut self.session_mut(key).retained_feeds;
        let existing = feeds
            .as_deref()
            .and_then(|feeds| feeds.iter().position(|feed| feed.filter == *filter));
        if !send {
            if let (Some(index), Some(feeds)) = (existing, feeds.as_deref_mut()) {
                feeds[index].qos = qos;
                feeds[index].identifier = identifier;
            }
            return false;
        }
        if let Some(index) = existing {
            self.stop_feed_at(key, index);
        }
        let tree = self.retained.tree();
        // Whether any topic matches (a walk that takes none stops at the first): most
        // subscriptions have no retained messages, and then no feed is made. A cluster node
        // cannot tell before its copy is complete.
        let cluster = self.config.cluster;
        if !cluster && !tree.take_matches_after(filter.as_str(), None, 0, |_| true) {
            return false;
        }
        let max = self.config.limits.retained_per_subscription_max;
        // Counting past the cap costs a walk of at most `max` topics: the cap bounds its check.
        let capped = max != 0 && tree.take_matches_after(filter.as_str(), None, max, |_| true);
        if capped {
            self.stats.retained_capped += 1;
            let client_id = self.session(key).client_id.clone();
            self.events.push_back(Event::RetainedCapped {
                client_id,
                filter: filter.clone(),
                max,
            });
        }
        let after_seq = self.session(key).queue.back().map_or(0, |d| d.seq + 1);
        let feed = RetainedFeed {
            filter: filter.clone(),
            qos,
            identifier,
            since: self.next_message_id,
            after_seq,
            cursor: None,
            left: if max == 0 { usize::MAX } else { max },
            awaits: cluster.then(|| self.cluster_retained_token(key)),
        };
        self.session_mut(key)
            .retained_feeds
            .get_or_insert_with(Box::default)
            .push_back(feed);
        capped
    }

    /// The subscription `filter` of `key` is gone (unsubscribed, or refused by new rules): it
    /// is owed nothing more.
    pub(super) fn stop_retained_feed(&mut self, key: SessionKey, filter: &TopicFilter) {
        let index = self
            .session(key)
            .retained_feeds
            .as_deref()
            .and_then(|feeds| feeds.iter().position(|feed| feed.filter == *filter));
        if let Some(index) = index {
            self.stop_feed_at(key, index);
        }
    }

    fn stop_feed_at(&mut self, key: SessionKey, index: usize) {
        let feeds = &mut self.session_mut(key).retained_feeds;
        if let Some(list) = feeds.as_deref_mut() {
            list.remove(index);
            if list.is_empty() {
                *feeds = None;
            }
        }
    }

    /// The pump's hook: moves the retained messages the session of `key` is owed towards its
    /// connection `id`, as far as there is room: QoS 0 ones into the outbox, and the next QoS 1/2
    /// one to the head of the session queue, where the pump takes it into the window at once.
    /// Walks at most [`STEP_TOPICS`] topics; if it stops for that, the session is listed to go
    /// on soon ([`Broker::resume_retained_feeds`]).
    pub(super) fn feed_retained(&mut self, key: SessionKey, id: ConnectionId, now: Time) {
        let Some(session) = self.sessions.get(key.0 as usize).and_then(Option::as_ref) else {
            return;
        };
        if session.retained_feeds.is_none() {
            return;
        }
        let Some(connection) = self.connections.get(&id) else {
            return;
        };
        let mut room = self.feed_room(session, connection);
        // The fleet's namespaces closed to it are owed nothing (fleet_fence.rs).
        let fenced = self.fleet_fenced(id);
        let mut taken = std::mem::take(&mut self.feed_scratch);
        taken.clear();
        let mut budget = STEP_TOPICS;
        let mut blocked = Blocked::No;
        while budget > 0 && blocked == Blocked::No {
            let session = self.session(key);
            let Some(feed) = session.retained_feeds.as_deref().and_then(VecDeque::front) else {
                break;
            };
            if feed.awaits.is_some() {
                // Until the cluster's answer: then it resumes (cluster/retained.rs).
                break;
            }
            if session
                .queue
                .front()
                .is_some_and(|d| d.seq < feed.after_seq)
            {
                // Queued before the SUBSCRIBE: the pump sends those first.
                blocked = Blocked::Window;
                break;
            }
            let mut walked = 0;
            let mut last: Option<SharedMessage> = None;
            let mut left = feed.left;
            let more = self.retained.tree().take_matches_after(
                feed.filter.as_str(),
                feed.cursor.as_ref().map(|topic| topic.as_str()),
                budget,
                |message| {
                    // Published after the SUBSCRIBE, or expired: not owed (MQTT-3.3.2-5).
                    let owed = message.id < feed.since
                        && !message.is_expired(now)
                        && !(fenced && self.fleet.closes(&self.config.fleet, &message.topic));
                    if owed {
                        if left == 0 {
                            return false;
                        }
                        let qos = message.qos.min(feed.qos);
                        match room.admit(qos, message.charge()) {
                            Blocked::No => {}
                            stop => {
                                blocked = stop;
                                return false;
                            }
                        }
                        left -= 1;
                        taken.push((Arc::clone(message), qos, feed.identifier));
                    }
                    walked += 1;
                    last = Some(Arc::clone(message));
                    true
                },
            );
            budget -= walked;
            let finished = !more || left == 0;
            let session = self.session_mut(key);
            let Some(feeds) = session.retained_feeds.as_deref_mut() else {
                break;
            };
            if finished && blocked == Blocked::No {
                feeds.pop_front();
                if feeds.is_empty() {
                    session.retained_feeds = None;
                }
                continue;
            }
            if let Some(feed) = feeds.front_mut() {
                feed.left = left;
                if let Some(message) = last {
                    feed.cursor = Some(message.topic.clone());
                }
            }
        }
        if budget == 0 && blocked == Blocked::No && self.session(key).retained_feeds.is_some() {
            // Stopped for the step's length, not for want of room: go on after other work.
            self.retained_ready.push(key);
        }
        if blocked == Blocked::Outbox {
            if let Some(connection) = self.connections.get_mut(&id) {
                connection.retained_feed_waits = true;
            }
        }
        for (message, qos, identifier) in taken.drain(..) {
            let delivery = Delivery {
                seq: 0,
                qos,
                // Sent because of a subscription: RETAIN set (3.1.1 MQTT-3.3.1-8; 5.0 3.3.1.3).
                retain: true,
                subscription_ids: SubscriptionIds::from_ids(identifier).unwrap_or_default(),
                charge: message.charge(),
                message,
            };
            if qos == QoS::AtMostOnce {
                // Sent by the broker: it never holds a publisher (flow.rs).
                self.deliver(key, delivery, Feed::Broker, now);
            } else {
                self.queue_first(key, delivery, now);
            }
        }
        self.feed_scratch = taken;
    }

    /// What the outbox of `connection` and the window of `session` may still take for the feed.
    fn feed_room(&self, session: &Session, connection: &Connection) -> Room {
        let limits = &self.config.limits;
        let outbox_count_max = OUTBOX_AHEAD_COUNT.min(limits.outbox_qos0_count_max);
        let outbox_bytes_max = OUTBOX_AHEAD_BYTES.min(limits.outbox_qos0_bytes_max);
        let window_bytes_left = match session.inflight.is_empty() {
            true => None,
            false => Some(
                limits
                    .inflight_bytes_max
                    .saturating_sub(session.inflight_bytes()),
            ),
        };
        Room {
            outbox_count: outbox_count_max.saturating_sub(connection.outbox_qos0),
            outbox_bytes: outbox_bytes_max.saturating_sub(connection.outbox_qos0_bytes),
            outbox_empty: connection.outbox_qos0 == 0,
            window_bytes_left,
            window_taken: false,
        }
    }

    /// Puts a QoS 1/2 retained message at the head of the session queue, outside its limits:
    /// the pump takes it into the window next (the feed checked there is room for it).
    fn queue_first(&mut self, key: SessionKey, delivery: Delivery, now: Time) {
        if !self.within_memory(key, delivery.charge, delivery.qos, now) {
            self.dropped(key, DropReason::MemoryFull);
            return;
        }
        self.with_session(key, |session| {
            // Numbered like any delivery (the store keeps it by that number), then moved
            // ahead of what waits for the window.
            if session.enqueue(delivery, usize::MAX, usize::MAX).is_ok() {
                if let Some(delivery) = session.queue.pop_back() {
                    session.queue.push_front(delivery);
                }
            }
        });
        if let Some(delivery) = self.session(key).queue.front().cloned() {
            self.persist_for(key, |client_id| StoreOp::DeliveryQueued {
                client_id,
                delivery,
            });
        }
    }

    /// The cluster answered `token` for a feed of session `key`: the feed reads the retained
    /// messages set until now, those set later having reached it live. Returns whether such a
    /// feed was waiting.
    pub(super) fn retained_feed_ready(&mut self, key: SessionKey, token: u64) -> bool {
        let since = self.next_message_id;
        let Some(session) = self
            .sessions
            .get_mut(key.0 as usize)
            .and_then(Option::as_mut)
        else {
            return false;
        };
        let feeds = session.retained_feeds.as_deref_mut().into_iter().flatten();
        let mut found = false;
        for feed in feeds.filter(|feed| feed.awaits == Some(token)) {
            feed.awaits = None;
            feed.since = since;
            found = true;
        }
        found
    }

    /// Whether some session's retained messages can go on: its connection took its outbox
    /// down, or its last step stopped for length. The runtime then calls
    /// [`Broker::resume_retained_feeds`] (it also runs with the timers).
    pub fn retained_feeds_ready(&self) -> bool {
        !self.retained_ready.is_empty()
    }

    /// Sends more of the retained messages owed to the sessions listed as ready.
    pub fn resume_retained_feeds(&mut self, now: Time) {
        let mut ready = std::mem::take(&mut self.retained_ready);
        ready.sort_unstable();
        ready.dedup();
        for key in ready {
            let live = self
                .sessions
                .get(key.0 as usize)
                .and_then(Option::as_ref)
                .is_some_and(|session| session.connection.is_some());
            if live {
                self.pump(key, now);
            }
        }
        self.close_oversized(now);
    }

    /// The user properties of a SUBACK that names `capped` filters, if the client on `id`
    /// takes them (MQTT 5, problem information requested).
    pub(super) fn capped_properties(
        &self,
        id: ConnectionId,
        capped: &[TopicFilter],
    ) -> Option<UserProperties> {
        let connection = self.connections.get(&id)?;
        if capped.is_empty()
            || connection.version != tern_codec::ProtocolVersion::V5
            || !connection.problem_information
        {
            return None;
        }
        let name = MqttString::new(RETAINED_CAPPED_PROPERTY).ok()?;
        let values: Vec<MqttString> = capped
            .iter()
            .filter_map(|filter| MqttString::new(filter.as_str()).ok())
            .collect();
        Some(UserProperties::from_pairs(
            values.iter().map(|value| (&name, value)),
        ))
    }
}

impl Room {
    /// Takes room for a message of `charge` bytes at `qos`, or says what stops it.
    fn admit(&mut self, qos: QoS, charge: usize) -> Blocked {
        if self.window_taken {
            // One QoS 1/2 message per step: the pump sends it before the feed goes on, so
            // nothing taken after it could overtake it.
            return Blocked::Window;
        }
        if qos == QoS::AtMostOnce {
            // Into an empty outbox one always goes (the outbox limits then apply to it as to
            // any QoS 0 message): waiting would be for a write that never comes.
            let fits = self.outbox_empty || (self.outbox_count > 0 && charge <= self.outbox_bytes);
            if !fits {
                return Blocked::Outbox;
            }
            self.outbox_count = self.outbox_count.saturating_sub(1);
            self.outbox_bytes = self.outbox_bytes.saturating_sub(charge);
            self.outbox_empty = false;
            return Blocked::No;
        }
        if self.window_bytes_left.is_some_and(|left| charge > left) {
            return Blocked::Window;
        }
        self.window_taken = true;
        Blocked::No
    }
}

/// Notes that `connection` took a QoS 0 message out of its outbox: once a waiting feed has room
/// again (half its share), its session is listed to go on.
pub(super) fn outbox_taken(ready: &mut Vec<SessionKey>, connection: &mut Connection) {
    if connection.retained_feed_waits
        && connection.outbox_qos0 <= OUTBOX_AHEAD_COUNT / 2
        && connection.outbox_qos0_bytes <= OUTBOX_AHEAD_BYTES / 2
    {
        connection.retained_feed_waits = false;
        if let Phase::Active(key) = connection.phase {
            ready.push(key);
        }
    }
}
