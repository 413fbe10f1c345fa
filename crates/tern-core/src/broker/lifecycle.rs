//! The life of connections and sessions after CONNECT: packet dispatch, DISCONNECT, detaching a
//! session when its connection ends, wills and their delay, session expiry, keep alive.

use std::sync::Arc;

use tern_codec::{Disconnect, Packet, ProtocolVersion, ReasonCode};

use super::{Broker, TimerKind};
use crate::connection::Phase;
use crate::events::{CloseReason, DropReason, Event};
use crate::session::{FlowState, PendingWill, Session, EXPIRY_NEVER};
use crate::store::StoreOp;
use crate::types::{ConnectionId, Message, SessionKey, Time};

/// How often queues of disconnected sessions are swept for expired messages.
const QUEUE_SWEEP_INTERVAL_MILLIS: u64 = 60_000;

impl Broker {
    pub(super) fn handle_active(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        packet: Packet,
        now: Time,
    ) {
        match packet {
            Packet::Publish(publish) => self.handle_publish(id, key, publish, now),
            Packet::PubAck(ack) => self.handle_puback(key, ack, now),
            Packet::PubRec(ack) => self.handle_pubrec(id, key, ack, now),
            Packet::PubRel(ack) => self.handle_pubrel(id, key, ack),
            Packet::PubComp(ack) => self.handle_pubcomp(key, ack, now),
            Packet::Subscribe(subscribe) => self.handle_subscribe(id, key, subscribe, now),
            Packet::Unsubscribe(unsubscribe) => self.handle_unsubscribe(id, key, unsubscribe),
            Packet::PingReq => self.send(id, Packet::PingResp),
            Packet::Disconnect(disconnect) => self.handle_disconnect(id, key, disconnect, now),
            Packet::Connect(_) => {
                // A second CONNECT is a protocol violation (MQTT-3.1.0-2).
                self.violation(id, ReasonCode::ProtocolError, "second CONNECT", now);
            }
            Packet::Auth(auth) => self.handle_reauth(id, auth, now),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                self.violation(
                    id,
                    ReasonCode::ProtocolError,
                    "packet only a server may send",
                    now,
                );
            }
        }
    }

    /// Closes `id` for a protocol violation, telling an MQTT 5 client why.
    pub(super) fn violation(
        &mut self,
        id: ConnectionId,
        code: ReasonCode,
        detail: &'static str,
        now: Time,
    ) {
        self.close(
            id,
            CloseReason::ProtocolViolation(code, detail),
            Some(code),
            now,
        );
    }

    fn handle_disconnect(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        disconnect: Disconnect,
        now: Time,
    ) {
        let version = self.connections.get(&id).map(|c| c.version);
        if let (Some(ProtocolVersion::V5), Some(expiry)) =
            (version, disconnect.properties.session_expiry_interval)
        {
            if self.session(key).expiry_secs == 0 && expiry != 0 {
                // A session that was to end with its connection cannot be extended (MQTT-3.14.2-2).
                self.violation(
                    id,
                    ReasonCode::ProtocolError,
                    "session expiry set on DISCONNECT after 0",
                    now,
                );
                return;
            }
            let granted = expiry.min(self.config.limits.session_expiry_max_secs);
            self.session_mut(key).expiry_secs = granted;
            self.save_session(key);
        }
        let reason = match disconnect.reason_code {
            ReasonCode::NORMAL_DISCONNECTION => CloseReason::ClientDisconnect,
            ReasonCode::DisconnectWithWillMessage => CloseReason::ClientDisconnectWithWill,
            code => CloseReason::ClientError(code),
        };
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.disconnected_normally = reason == CloseReason::ClientDisconnect;
        }
        self.close(id, reason, None, now);
    }

    /// Detaches `key` from its ending connection `id`: triggers or discards the will and starts
    /// the session's expiry.
    pub(super) fn detach(
        &mut self,
        key: SessionKey,
        id: ConnectionId,
        reason: CloseReason,
        now: Time,
    ) {
        self.stats.clients_connected = self.stats.clients_connected.saturating_sub(1);
        let session = self.session_mut(key);
        if session.connection == Some(id) {
            session.connection = None;
        }
        // Without a connection it holds no publisher: those it held go on at once.
        if session.flow != FlowState::Clear {
            self.settle_flow(key, now);
        }
        let session = self.session_mut(key);
        let client_id = session.client_id.clone();
        // A normal DISCONNECT deletes the will without publishing it (MQTT-3.1.2-10).
        let forget_will = reason == CloseReason::ClientDisconnect && session.will.is_some();
        if forget_will {
            session.will = None;
        }
        let expiry_secs = session.expiry_secs;
        if forget_will {
            self.save_session(key);
        }
        let session = self.session(key);
        // An MQTT 5 take-over of a session that goes on is a new connection to it before the Will
        // Delay Interval has passed, which starts only now (MQTT-3.1.2-8, MQTT-3.1.3-9): the will
        // stays pending, replaced if the new connection resumes the session, published if it
        // starts afresh and this session ends. A 3.1.1 will belongs to its network connection
        // and goes out as for any other close (3.1.1 MQTT-3.1.2-8).
        let continued = reason == CloseReason::SessionTakenOver
            && expiry_secs != 0
            && session.version == ProtocolVersion::V5;
        let mut will_triggered = false;
        if let Some(delay) = session
            .will
            .as_ref()
            .map(|w| w.delay_secs)
            .filter(|_| !continued)
        {
            will_triggered = true;
            if delay == 0 || expiry_secs == 0 {
                self.publish_will(key, now);
            } else {
                let at = now.plus_secs(delay.min(expiry_secs));
                self.session_mut(key).will_at = Some(at);
                self.timers.insert((at, key, TimerKind::Will));
            }
        }
        if reason != CloseReason::SessionTakenOver {
            self.fleet_offline(client_id.as_str(), now);
        }
        self.events.push_back(Event::Disconnected {
            connection: id,
            client_id,
            reason,
            will_triggered,
        });
        if reason == CloseReason::SessionTakenOver && expiry_secs != 0 {
            // The connection taking over attaches to the session at once. A session that ends
            // with its connection (expiry 0, 3.1.1 clean session) is not reused (MQTT-3.1.2-6).
            return;
        }
        match expiry_secs {
            0 => self.end_session(key, now),
            EXPIRY_NEVER => {}
            secs => {
                let at = now.plus_secs(secs);
                self.session_mut(key).expires_at = Some(at);
                self.timers.insert((at, key, TimerKind::SessionExpiry));
            }
        }
        if expiry_secs != 0 && self.session(key).connection.is_none() {
            // The deadlines count from now, not from a restart: the store must know them.
            self.save_session(key);
        }
    }

    /// Publishes the session's pending will, if it has one.
    fn publish_will(&mut self, key: SessionKey, now: Time) {
        let session = self.session_mut(key);
        session.will_at = None;
        let Some(pending) = session.will.take() else {
            return;
        };
        let PendingWill { will, .. } = *pending;
        self.save_session(key);
        // Forwarded in the order the client sent them (the Will Delay Interval left out); the
        // expiry is kept as a deadline and sent as what remains of it.
        let mut properties = will.properties.to_publish();
        let expires_at = properties
            .message_expiry_interval
            .take()
            .map(|secs| now.plus_secs(secs));
        let message = Message {
            id: self.next_message_id(),
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties,
            expires_at,
            origin: Some(key),
        };
        // On a cluster node, a will has an identity of its own in the log (stored once).
        self.cluster.will_message = Some(message.id);
        self.accept_message(Arc::new(message), now);
        self.cluster.will_message = None;
    }

    /// Ends a session: its pending will goes out, its subscriptions and queues are dropped.
    pub(super) fn end_session(&mut self, key: SessionKey, now: Time) {
        if self.session(key).will.is_some() && self.session(key).connection.is_none() {
            self.publish_will(key, now);
        }
        let Some(session) = self.remove_session(key, now) else {
            return;
        };
        self.cluster_session_ended(&session.client_id);
        self.events.push_back(Event::SessionEnded {
            client_id: session.client_id,
        });
    }

    /// Takes a session out of the broker as it is (its will untouched): its subscriptions leave
    /// the index and its record the store.
    pub(super) fn remove_session(&mut self, key: SessionKey, now: Time) -> Option<Session> {
        if self.session(key).flow != FlowState::Clear {
            self.session_mut(key).connection = None;
            self.settle_flow(key, now);
        }
        let session = self
            .sessions
            .get_mut(key.0 as usize)
            .and_then(Option::take)?;
        self.held_bytes -= session.held_bytes();
        for (filter, info) in &session.subscriptions {
            self.unindex_subscription(key, filter, info);
        }
        if session.persisted {
            self.persist(StoreOp::SessionRemove(session.client_id.clone()));
        }
        self.session_ids.remove(&session.client_id);
        self.free_session_slots.push(key.0);
        Some(session)
    }

    /// Runs everything due at `now`: connect deadlines, keep alive, expired credentials, wills,
    /// session expiry.
    pub fn handle_timeout(&mut self, now: Time) {
        let connect_timeout = self.config.limits.connect_timeout_millis;
        let mut overdue = Vec::new();
        for (&id, connection) in &self.connections {
            let silent = now
                .as_millis()
                .saturating_sub(connection.last_activity.as_millis());
            match connection.phase {
                Phase::AwaitingConnect | Phase::Authenticating | Phase::Verifying
                    if now
                        .as_millis()
                        .saturating_sub(connection.opened_at.as_millis())
                        >= connect_timeout =>
                {
                    overdue.push((id, CloseReason::ConnectTimeout));
                }
                Phase::Active(_)
                    if connection.credential_expires_at.is_some_and(|at| now >= at) =>
                {
                    overdue.push((id, CloseReason::CredentialExpired));
                }
                // Keep alive: 1.5 times the interval without a packet closes the connection
                // (MQTT-3.1.2-24). Not while the broker itself does not read it.
                Phase::Active(_)
                    if connection.keep_alive_grace_millis > 0
                        && silent > connection.keep_alive_grace_millis
                        && !self.reading_paused(id) =>
                {
                    overdue.push((id, CloseReason::KeepAliveTimeout));
                }
                _ => {}
            }
        }
        // In connection order, so that wills of simultaneous timeouts go out in the same order
        // on every run.
        overdue.sort_unstable_by_key(|&(id, _)| id);
        for (id, reason) in overdue {
            let code = match reason {
                CloseReason::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
                CloseReason::CredentialExpired => Some(ReasonCode::MaximumConnectTime),
                _ => None,
            };
            self.close(id, reason, code, now);
        }
        self.run_due_timers(now);
        self.fleet_notify_due(now);
        self.run_tree_views(now);
        self.resume_retained_feeds(now);
        self.check_stalls(now);
        self.close_oversized(now);
    }

    /// Publishes the wills and ends the sessions that are due at `now`.
    pub(super) fn run_due_timers(&mut self, now: Time) {
        if now >= self.next_queue_sweep {
            self.next_queue_sweep = now.plus_millis(QUEUE_SWEEP_INTERVAL_MILLIS);
            self.purge_expired_queues(now);
        }
        // Expired retained messages leave memory and the store, not only the deliveries.
        // A cluster node's are the cluster's, which purges them: its own store keeps none.
        let durable = !self.config.cluster;
        while let Some(message) = self.retained.pop_expired(now) {
            self.clear_expired_in_tree_views(&message, now);
            self.retained_deleted(&message.topic, true, durable);
        }
        while let Some(&(at, key, kind)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let live = self
                .sessions
                .get(key.0 as usize)
                .and_then(Option::as_ref)
                .is_some_and(|s| {
                    s.connection.is_none()
                        && match kind {
                            TimerKind::Will => s.will_at == Some(at),
                            TimerKind::SessionExpiry => s.expires_at == Some(at),
                        }
                });
            if !live {
                continue;
            }
            match kind {
                TimerKind::Will => self.publish_will(key, now),
                TimerKind::SessionExpiry => self.end_session(key, now),
            }
        }
    }

    /// Drops expired messages from the queues of sessions without a connection, so they do not
    /// hold memory (and store space) until the client comes back. Connected sessions drop them
    /// as they reach the head of the queue.
    fn purge_expired_queues(&mut self, now: Time) {
        for slot in 0..self.sessions.len() {
            let key = SessionKey(slot as u32);
            let purged = match self.sessions.get(slot) {
                Some(Some(session))
                    if session.connection.is_none() && !session.queue.is_empty() =>
                {
                    self.with_session(key, |session| session.purge_expired(now))
                }
                _ => continue,
            };
            for seq in purged {
                self.persist_for(key, |client_id| StoreOp::DeliveryDone { client_id, seq });
                self.dropped(key, DropReason::Expired);
            }
        }
    }

    /// The earliest time [`Broker::handle_timeout`] has work for a will, an expiring session or
    /// retained message, a tree view delta, retained messages owed to a subscription (then at
    /// once), a congested subscriber that may have stalled, or a fleet notification to expire
    /// or forget. Connection deadlines are checked on every call; the runtime calls at least
    /// once a second.
    pub fn next_timeout(&self) -> Option<Time> {
        let session = self.timers.first().map(|&(at, _, _)| at);
        let retained = self.retained.next_expiry();
        let trees = self.next_tree_due();
        let feeds = self.retained_feeds_ready().then_some(self.started_at);
        let stalls = self.next_stall_check();
        let notifications = self.fleet.notifications.next_due_at();
        session
            .into_iter()
            .chain(retained)
            .chain(trees)
            .chain(feeds)
            .chain(stalls)
            .chain(notifications)
            .min()
    }

    pub(super) fn next_message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }
}
