//! Sessions across the nodes of a cluster. A CONNECT claims its client identifier's session
//! cluster-wide before it is answered, and takes what the node that held it handed over; a
//! node whose session another node took hands it over (its connection closed with 0x8E), or,
//! when it finds out only because a write of the session was refused, lets it go; and the
//! record the other nodes read is kept as the session changes.
//!
//! Everything here is inert unless [`crate::Config::cluster`] is on. Times in the sessions that
//! cross are relative to the moment they cross (see [`crate::cluster`]).

use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{Connect, MqttString, ReasonCode};

use super::{Broker, TimerKind};
use crate::auth::Identity;
use crate::cluster::{ClaimOutcome, ClusterOp, OutboundQos2, RemoteMessage, SessionClaim};
use crate::connection::Phase;
use crate::events::CloseReason;
use crate::session::{Delivery, Inflight, OutgoingState, Session, EXPIRY_NEVER};
use crate::store::{DeliveryStage, SessionRecord, StoreOp, StoredSession};
use crate::tree::Match;
use crate::types::{ConnectionId, Message, SessionKey, SharedMessage, Time};

/// A CONNECT waiting for its claim, with what completing it takes.
#[derive(Debug)]
pub(super) struct PendingClaim {
    connect: Connect,
    auth_data: Option<Bytes>,
    identity: Identity,
}

impl Broker {
    /// On a cluster node, parks an authenticated CONNECT (as a credential check does: packets
    /// after it are held, the CONNECT deadline runs) and asks the cluster layer to claim its
    /// session; gives the CONNECT back when it is to be completed now: on a single node, once
    /// its claim is settled, and for an identifier the broker assigns (new by construction).
    pub(super) fn claim_first(
        &mut self,
        id: ConnectionId,
        connect: Connect,
        auth_data: Option<Bytes>,
        identity: Identity,
    ) -> Option<(Connect, Option<Bytes>, Identity)> {
        let settled = self.cluster.settling == Some(id);
        if !self.config.cluster || settled || connect.client_id.is_empty() {
            return Some((connect, auth_data, identity));
        }
        let connection = self.connections.get_mut(&id)?;
        connection.version = connect.protocol_version;
        connection.phase = Phase::Verifying;
        let claim = SessionClaim {
            connection: id,
            // The claim outlives the CONNECT's read buffer.
            client_id: connect.client_id.detached(),
            clean_start: connect.clean_start,
        };
        self.cluster.ops.push_back(ClusterOp::Claim(claim));
        let pending = PendingClaim {
            connect,
            auth_data,
            identity,
        };
        self.cluster.claims.insert(id, pending);
        None
    }

    /// The claim of `id`'s CONNECT is settled. Owned: the session handed over (if any) replaces
    /// whatever this node held of it, the backlog is delivered to it alone, and the CONNECT
    /// completes as on a single node (resuming that session unless the client asked for a clean
    /// start). Unavailable: the CONNECT is refused with Server unavailable. A session handed
    /// over to a connection that has gone meanwhile is kept all the same, disconnected.
    pub fn claim_settled(&mut self, id: ConnectionId, outcome: ClaimOutcome, now: Time) {
        let pending = self.cluster.claims.remove(&id);
        let waiting = self
            .connections
            .get(&id)
            .is_some_and(|c| c.phase == Phase::Verifying);
        match (pending, outcome) {
            (Some(pending), ClaimOutcome::Unavailable) if waiting => {
                let version = pending.connect.protocol_version;
                let reason = CloseReason::ClusterUnavailable;
                self.refuse_connect_because(
                    id,
                    version,
                    ReasonCode::ServerUnavailable,
                    reason,
                    now,
                );
            }
            (
                Some(pending),
                ClaimOutcome::Owned {
                    handed_over,
                    backlog,
                    outbound,
                },
            ) => {
                let client_id = pending.connect.client_id.clone();
                if let Some(&key) = self.session_ids.get(&client_id) {
                    // Resuming, the backlog (what the log kept for it) is its own again;
                    // starting afresh, the session ends.
                    match pending.connect.clean_start {
                        false => self.unpark(key),
                        true => self.forget_parked(key),
                    }
                }
                if let Some(session) = handed_over {
                    // The connection claiming it cancels the will of the one it replaces
                    // (MQTT-3.1.3-9).
                    self.adopt_session(*session, false, now);
                }
                if let Some(&key) = self.session_ids.get(&client_id) {
                    for remote in backlog {
                        if let Some(message) = self.message_from_cluster(remote, now) {
                            self.deliver_to_session(key, &message, now);
                        }
                    }
                    self.resume_outbound(key, &outbound);
                }
                if waiting {
                    self.complete_claimed(id, pending, now);
                } else if !self.session_ids.contains_key(&client_id) {
                    // Claimed for a client that left, with nothing to keep: the record goes.
                    self.cluster_session_ended(&client_id);
                }
            }
            _ => {}
        }
        self.cluster
            .ops
            .push_back(ClusterOp::ClaimDone { connection: id });
        self.close_oversized(now);
    }

    /// Delivers `message` to session `key` alone, as routing would for its subscriptions (tree
    /// views left out: their delta is every member's, and the members have had it).
    fn deliver_to_session(&mut self, key: SessionKey, message: &SharedMessage, now: Time) {
        let topic = message.topic.as_str();
        let matches: Vec<Match<SessionKey>> = self
            .session(key)
            .subscriptions
            .iter()
            // A `$share` group's messages come apart, one node and member each: not replayed.
            .filter(|(filter, info)| {
                info.tree_view.is_none() && !filter.is_shared() && filter.matches(topic)
            })
            // No Local: never back to the publishing session (MQTT-3.8.3-3).
            .filter(|(_, info)| !(info.options.no_local && message.origin == Some(key)))
            .map(|(_, info)| Match {
                key,
                info: *info,
                shared: false,
            })
            .collect();
        if !matches.is_empty() {
            self.deliver_matches(message, message.charge(), &matches, now);
        }
    }

    /// Completes a CONNECT whose claim settled, then handles the packets that came after it.
    fn complete_claimed(&mut self, id: ConnectionId, pending: PendingClaim, now: Time) {
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.phase = Phase::AwaitingConnect;
        }
        self.cluster.settling = Some(id);
        let PendingClaim {
            connect,
            auth_data,
            identity,
        } = pending;
        self.complete_connect(id, connect, auth_data, identity, now);
        self.cluster.settling = None;
        self.handle_held(id, now);
    }

    /// Another node took over the session of `client_id`. Its connection here, if any, gets
    /// DISCONNECT 0x8E and is closed (its will by the single-node rules of a take-over). With a
    /// token the claimant waits: the session is handed over ([`ClusterOp::HandedOver`]) and
    /// leaves this node, or, if the client starts afresh, ends here (its will going out).
    /// Without, this node only found out that it lost the session: it keeps what it holds,
    /// without a will (the new connection cancelled it), until the session expires or a claimant
    /// asks for it.
    pub fn session_taken_over(
        &mut self,
        client_id: &MqttString,
        clean_start: bool,
        token: Option<u64>,
        now: Time,
    ) {
        let key = self.session_ids.get(client_id).copied();
        if let Some(connection) = key.and_then(|key| self.session(key).connection) {
            let reason = CloseReason::SessionTakenOver;
            self.close(connection, reason, Some(ReasonCode::SessionTakenOver), now);
        }
        // Closing may have ended it (a session that ends with its connection).
        let key = key.filter(|key| self.session_ids.get(client_id) == Some(key));
        let mut resume_from = None;
        let session = match (key, token) {
            (None, _) => None,
            (Some(key), None) => {
                self.let_go(key, now);
                None
            }
            (Some(key), Some(_)) if clean_start => {
                self.end_session(key, now);
                None
            }
            (Some(key), Some(_)) => {
                resume_from = self.parked(key).map(|parked| parked.resume_from);
                self.forget_parked(key);
                self.hand_over(key, now).map(Box::new)
            }
        };
        if let Some(token) = token {
            self.cluster.ops.push_back(ClusterOp::HandedOver {
                token,
                client_id: client_id.clone(),
                session,
                resume_from,
            });
        }
        self.close_oversized(now);
    }

    /// Keeps a session another node owns until it expires, without its will.
    fn let_go(&mut self, key: SessionKey, now: Time) {
        let session = self.session_mut(key);
        session.will = None;
        session.will_at = None;
        let expiry_secs = session.expiry_secs;
        if session.expires_at.is_none() && expiry_secs != EXPIRY_NEVER {
            let at = now.plus_secs(expiry_secs);
            self.session_mut(key).expires_at = Some(at);
            self.timers.insert((at, key, TimerKind::SessionExpiry));
        }
    }

    /// Takes the session out of this node as the store would hold it: its record without the
    /// will (the connection taking over cancels it), its in-flight deliveries with their packet
    /// identifiers, its queue, its incoming QoS 2 identifiers.
    fn hand_over(&mut self, key: SessionKey, now: Time) -> Option<StoredSession> {
        let session = self.remove_session(key, now)?;
        // Mailbox sequence numbers stay unique on the node that takes the session.
        let next_seq = session.next_seq();
        let Session {
            client_id,
            owner,
            expiry_secs,
            subscriptions,
            inflight,
            queue,
            incoming_qos2,
            ..
        } = session;
        let in_flight = inflight.into_iter().map(|entry| {
            let stage = stage_of(&entry);
            (entry.delivery, stage)
        });
        let queued = queue
            .into_iter()
            .map(|delivery| (delivery, DeliveryStage::Queued));
        let deliveries = in_flight
            .chain(queued)
            .map(|(delivery, stage)| (expiry_relative(delivery, now), stage))
            .collect();
        let subscriptions = subscriptions
            .into_iter()
            .map(|(filter, mut info)| {
                // A `$tree/` subscription gets its tree view again where it is indexed.
                info.tree_view = None;
                (filter, info)
            })
            .collect();
        let record = SessionRecord {
            client_id,
            owner,
            expiry_secs,
            subscriptions,
            will: None,
            expires_at: None,
            will_at: None,
            next_seq,
        };
        Some(StoredSession {
            record,
            deliveries,
            incoming_qos2: incoming_qos2.into_iter().collect(),
        })
    }

    /// This node adopted the session of a node that died (the cluster layer took its record):
    /// it is taken in disconnected as of `now`, as a restart finds a session that was connected:
    /// its will goes out after its Will Delay Interval and the session expires after its expiry
    /// interval, both counted from now, unless a connection resumes it first. The backlog (the
    /// messages owed to it from its cursor on) is queued for it alone.
    pub fn session_adopted(
        &mut self,
        session: StoredSession,
        backlog: Vec<RemoteMessage>,
        outbound: Vec<OutboundQos2>,
        now: Time,
    ) {
        let client_id = session.record.client_id.clone();
        let connected = self
            .session_ids
            .get(&client_id)
            .is_some_and(|&key| self.session(key).connection.is_some());
        if !connected {
            self.adopt_session(session, true, now);
            if let Some(&key) = self.session_ids.get(&client_id) {
                self.unpark(key);
                for remote in backlog {
                    if let Some(message) = self.message_from_cluster(remote, now) {
                        self.deliver_to_session(key, &message, now);
                    }
                }
                self.resume_outbound(key, &outbound);
                // Parked from here on, and recorded so: its cursor and where it resumes.
                self.cluster_session_saved(key);
            }
        }
        self.cluster
            .ops
            .push_back(ClusterOp::AdoptDone { client_id });
        self.close_oversized(now);
    }

    /// Takes in a session another node handed over, in place of anything this node held of
    /// it: disconnected as of `now` (its expiry starts, and stops when the claiming CONNECT
    /// attaches), its deliveries as they stood there, kept in the store if it keeps sessions;
    /// its will kept (`keep_will`, pending from now) or dropped.
    fn adopt_session(&mut self, mut stored: StoredSession, keep_will: bool, now: Time) {
        if let Some(&key) = self.session_ids.get(&stored.record.client_id) {
            // Whatever is left here is older than what was handed over.
            if let Some(connection) = self.session(key).connection {
                let reason = CloseReason::SessionTakenOver;
                self.close(connection, reason, Some(ReasonCode::SessionTakenOver), now);
            }
            if self.session_ids.get(&stored.record.client_id) == Some(&key) {
                self.remove_session(key, now);
            }
        }
        if !keep_will {
            stored.record.will = None;
        }
        stored.record.will_at = None;
        stored.record.expires_at = None;
        for (delivery, _) in &mut stored.deliveries {
            let message = &delivery.message;
            let adopted = Message {
                // Message identities are this node's own.
                id: self.next_message_id(),
                expires_at: message
                    .expires_at
                    .map(|after| now.plus_millis(after.as_millis())),
                ..Message::clone(message)
            };
            delivery.message = Arc::new(adopted);
        }
        let client_id = stored.record.client_id.clone();
        self.restore_session(stored, now);
        let Some(&key) = self.session_ids.get(&client_id) else {
            return;
        };
        // Nothing of it is in this node's store yet.
        self.session_mut(key).persisted = false;
        self.store_session(key);
        if !self.config.persistence {
            return;
        }
        let session = self.session(key);
        let in_flight = session
            .inflight
            .iter()
            .map(|entry| (entry.delivery.clone(), stage_of(entry)));
        let queued = session
            .queue
            .iter()
            .map(|delivery| (delivery.clone(), DeliveryStage::Queued));
        let deliveries: Vec<_> = in_flight.chain(queued).collect();
        let incoming: Vec<u16> = session.incoming_qos2.iter().copied().collect();
        for (delivery, stage) in deliveries {
            let seq = delivery.seq;
            self.persist_for(key, |client_id| StoreOp::DeliveryQueued {
                client_id,
                delivery,
            });
            if stage != DeliveryStage::Queued {
                self.persist_for(key, |client_id| StoreOp::DeliveryStage {
                    client_id,
                    seq,
                    stage,
                });
            }
        }
        for packet_id in incoming {
            self.persist_for(key, |client_id| StoreOp::IncomingQos2 {
                client_id,
                packet_id,
                pending: true,
            });
        }
    }

    /// On a cluster node, the record of a session that outlives its connection (or has a will)
    /// goes where the other nodes read it, whenever the store would be told, with its cursor; a
    /// session without a connection is parked first (its messages left in the log), one with a
    /// connection takes its messages again.
    pub(super) fn cluster_session_saved(&mut self, key: SessionKey) {
        self.record_session(key, true);
    }

    /// [`Broker::cluster_session_saved`] for a checkpoint of the cursor: the connection's
    /// packets do not wait for it.
    pub(super) fn cluster_session_saved_quietly(&mut self, key: SessionKey) {
        self.record_session(key, false);
    }

    fn record_session(&mut self, key: SessionKey, hold: bool) {
        if !self.config.cluster {
            return;
        }
        let session = self.session(key);
        let offline = session.connection.is_none();
        // A session that ends with its connection is recorded only for its will, which a node
        // adopting it publishes should this node die.
        if session.expiry_secs == 0 && session.will.is_none() {
            return;
        }
        match offline && session.expiry_secs != 0 {
            true => self.park(key),
            false => self.unpark(key),
        }
        let session = self.session(key);
        let record = Box::new(SessionRecord {
            expires_at: None,
            will_at: None,
            ..super::session_record(session)
        });
        let connection = session.connection;
        let persistent = session.expiry_secs != 0;
        let (cursor, resume_from) = match self.parked(key) {
            Some(parked) => (parked.cursor, Some(parked.resume_from)),
            None => (self.cluster_cursor(key), None),
        };
        if connection.is_some() && persistent {
            self.cluster.written.insert(key, cursor);
        }
        let connection = connection.filter(|_| hold);
        self.cluster.ops.push_back(ClusterOp::SessionSaved {
            record,
            connection,
            cursor,
            resume_from,
        });
    }

    /// On a cluster node, a session that ended leaves the cluster's records.
    pub(super) fn cluster_session_ended(&mut self, client_id: &MqttString) {
        if self.config.cluster {
            let client_id = client_id.clone();
            self.cluster
                .ops
                .push_back(ClusterOp::SessionEnded { client_id });
        }
    }
}

/// Where an in-flight delivery stands, as the store records it.
fn stage_of(entry: &Inflight) -> DeliveryStage {
    match entry.state {
        OutgoingState::AwaitPubAck | OutgoingState::AwaitPubRec => {
            DeliveryStage::Sent(entry.packet_id)
        }
        OutgoingState::AwaitPubComp => DeliveryStage::Released(entry.packet_id),
    }
}

/// `delivery` with its message's expiry counted from `now`.
fn expiry_relative(mut delivery: Delivery, now: Time) -> Delivery {
    let message = &delivery.message;
    if let Some(at) = message.expires_at {
        let left = Time::from_millis(at.as_millis().saturating_sub(now.as_millis()));
        let relative = Message {
            expires_at: Some(left),
            ..Message::clone(message)
        };
        delivery.message = SharedMessage::new(relative);
    }
    delivery
}
