//! The operator's interface: what an edge (the HTTP bridge's operator API) reads of the broker
//! and changes in it, on the broker thread, through the same functions the protocol uses.
//! Sessions and their queues, in-flight windows and dead letters, subscriptions and retained
//! messages are read in place; a kick closes a connection as the broker closes any (MQTT 5:
//! DISCONNECT 0x98 Administrative action), a deleted session ends as an expired one does, a
//! deleted retained message leaves the store as a cleared one does. Banned client identifiers
//! are refused at CONNECT (0x8A Banned) and in requests.

use std::collections::HashMap;

use tern_codec::{MqttString, ProtocolVersion, QoS, ReasonCode, TopicName};

use super::Broker;
use crate::events::CloseReason;
use crate::session::{Delivery, Session};
use crate::types::{SessionKey, SharedMessage, Time};

/// One session as the operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Its client identifier.
    pub client_id: String,
    /// The identity it belongs to, as stored (`method NUL owner NUL name`, which
    /// [`crate::auth::SessionOwner::parts_of`] splits), `None` for an unverified one.
    pub owner: Option<String>,
    /// Whether a connection is attached now.
    pub connected: bool,
    /// The protocol level of its last connection.
    pub version: ProtocolVersion,
    /// Seconds it outlives its connection (`u32::MAX`: for ever).
    pub expiry_secs: u32,
    /// Subscriptions held.
    pub subscriptions: usize,
    /// Deliveries queued (waiting for the window or a connection).
    pub queued: usize,
    /// Deliveries in flight (sent or handed out, not acknowledged).
    pub inflight: usize,
    /// Dead letters of its mailbox.
    pub dead: usize,
}

/// One session in detail: its subscriptions and the first deliveries of each of its lists.
#[derive(Debug, Clone)]
pub struct SessionDetail {
    /// The summary.
    pub summary: SessionSummary,
    /// Its subscriptions, by filter, with their QoS.
    pub subscriptions: Vec<(String, QoS)>,
    /// Queued deliveries, oldest first (at most the limit asked for).
    pub queue: Vec<Delivery>,
    /// In-flight deliveries, in the order first sent (at most the limit asked for).
    pub inflight: Vec<Delivery>,
    /// Dead letters, oldest first (at most the limit asked for).
    pub dead: Vec<Delivery>,
}

/// Client identifiers refused at CONNECT and in requests, with when each ban ends.
#[derive(Debug, Clone, Default)]
pub(super) struct Bans {
    bans: HashMap<String, Option<Time>>,
}

impl Bans {
    /// Whether `client_id` is banned (ended bans included until forgotten).
    pub(super) fn holds(&self, client_id: &str) -> bool {
        self.bans.contains_key(client_id)
    }
}

impl Broker {
    /// Every session (connected or not) whose client identifier `visible` admits, by client
    /// identifier.
    pub fn admin_sessions(&self, visible: impl Fn(&str) -> bool) -> Vec<SessionSummary> {
        let mut sessions: Vec<SessionSummary> = self
            .sessions
            .iter()
            .flatten()
            .filter(|session| visible(session.client_id.as_str()))
            .map(summary)
            .collect();
        sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        sessions
    }

    /// Deliveries held for every session: queued, in flight and dead letters (for metrics).
    pub fn queue_depths(&self) -> (usize, usize, usize) {
        self.sessions
            .iter()
            .flatten()
            .fold((0, 0, 0), |(queued, inflight, dead), session| {
                let dead_letters = session
                    .mailbox
                    .as_ref()
                    .map_or(0, |m| m.dead_letters().count());
                (
                    queued + session.queue.len(),
                    inflight + session.inflight.len(),
                    dead + dead_letters,
                )
            })
    }

    /// The session of `client_id` in detail, each list cut to `limit`.
    pub fn admin_session(&self, client_id: &str, limit: usize) -> Option<SessionDetail> {
        let key = self.admin_key(client_id)?;
        let session = self.session(key);
        let mut subscriptions: Vec<(String, QoS)> = session
            .subscriptions
            .iter()
            .map(|(filter, info)| (filter.as_str().to_owned(), info.options.qos))
            .collect();
        subscriptions.sort();
        let dead = session
            .mailbox
            .as_ref()
            .map(|m| m.dead_letters().take(limit).cloned().collect())
            .unwrap_or_default();
        Some(SessionDetail {
            summary: summary(session),
            subscriptions,
            queue: session.queue.iter().take(limit).cloned().collect(),
            inflight: session
                .inflight
                .iter()
                .take(limit)
                .map(|i| i.delivery.clone())
                .collect(),
            dead,
        })
    }

    /// Closes the connection of `client_id`, if it has one (MQTT 5: DISCONNECT 0x98
    /// Administrative action), as the broker closes any: its will goes out and its session
    /// lives on as its expiry says; with `discard`, the session ends too. Returns whether
    /// there was a session.
    pub fn admin_kick(&mut self, client_id: &str, discard: bool, now: Time) -> bool {
        let Some(key) = self.admin_key(client_id) else {
            return false;
        };
        if let Some(connection) = self.session(key).connection {
            self.close(
                connection,
                CloseReason::AdministrativeAction,
                Some(ReasonCode::AdministrativeAction),
                now,
            );
        }
        // A session that ended with its connection is gone already.
        if discard {
            if let Some(key) = self.admin_key(client_id) {
                self.end_session(key, now);
            }
        }
        true
    }

    /// The retained messages whose topics match `filter`, by topic, at most `limit`.
    pub fn admin_retained(&self, filter: &str, limit: usize) -> Vec<SharedMessage> {
        let mut found = Vec::new();
        self.retained.tree().for_each_match(filter, |message| {
            found.push(SharedMessage::clone(message));
        });
        found.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        found.truncate(limit);
        found
    }

    /// Deletes the retained message of `topic`, from memory and the store, as a retained
    /// PUBLISH with an empty payload would (but with nothing routed). Returns whether there
    /// was one.
    pub fn admin_retained_delete(&mut self, topic: &TopicName) -> bool {
        if self.retained.clear(topic.as_str()).is_none() {
            return false;
        }
        // A deletion key/value listings tell (kv.rs).
        self.retained_deleted(topic, true, true);
        true
    }

    /// Bans `client_id` until `until` (for ever without), closing its connection if it has
    /// one; its session stays, for when the ban ends.
    pub fn ban(&mut self, client_id: MqttString, until: Option<Time>, now: Time) {
        self.admin_kick(client_id.as_str(), false, now);
        self.bans.bans.insert(client_id.as_str().to_owned(), until);
    }

    /// Lifts the ban of `client_id`; whether there was one.
    pub fn unban(&mut self, client_id: &str) -> bool {
        self.bans.bans.remove(client_id).is_some()
    }

    /// Whether `client_id` is banned at `now` (a ban that ended is forgotten).
    pub fn is_banned(&mut self, client_id: &str, now: Time) -> bool {
        let ended = |until: &Option<Time>| until.is_some_and(|until| until <= now);
        self.bans.bans.retain(|_, until| !ended(until));
        self.bans.holds(client_id)
    }

    /// The bans in force at `now`, by client identifier.
    pub fn bans(&mut self, now: Time) -> Vec<(String, Option<Time>)> {
        let _ = self.is_banned("", now);
        let mut bans: Vec<(String, Option<Time>)> = self
            .bans
            .bans
            .iter()
            .map(|(id, until)| (id.clone(), *until))
            .collect();
        bans.sort();
        bans
    }

    fn admin_key(&self, client_id: &str) -> Option<SessionKey> {
        let id = MqttString::new(client_id).ok()?;
        self.session_ids.get(&id).copied()
    }
}

fn summary(session: &Session) -> SessionSummary {
    SessionSummary {
        client_id: session.client_id.as_str().to_owned(),
        owner: session
            .owner
            .as_stored()
            .filter(|o| !o.is_empty())
            .map(str::to_owned),
        connected: session.connection.is_some(),
        version: session.version,
        expiry_secs: session.expiry_secs,
        subscriptions: session.subscriptions.len(),
        queued: session.queue.len(),
        inflight: session.inflight.len(),
        dead: session
            .mailbox
            .as_ref()
            .map_or(0, |m| m.dead_letters().count()),
    }
}
