//! Acting on authentication decisions (including checks that finish later, off the broker
//! thread) and asking a connection's permissions before a PUBLISH, a SUBSCRIBE or a will.

use rustc_hash::FxHashSet;
use tern_codec::{Ack, Connect, Packet, ProtocolVersion, ReasonCode, TopicFilter};

use super::Broker;
use crate::auth::{AuthDecision, Identity, Method};
use crate::authz::{Access, Authorizer, Principal};
use crate::connection::Phase;
use crate::events::{CloseReason, DropReason, Event};
use crate::store::{DeliveryStage, StoreOp};
use crate::types::{ConnectionId, SessionKey, Time};

/// Packets a client may send after CONNECT while its credentials are being checked; beyond
/// this the connection is closed rather than buffered without bound.
const HELD_PACKETS_MAX: usize = 64;

impl Broker {
    /// Acts on the authenticator's answer to a CONNECT.
    pub(super) fn dispatch_connect_decision(
        &mut self,
        id: ConnectionId,
        connect: Connect,
        decision: AuthDecision,
        now: Time,
    ) {
        let version = connect.protocol_version;
        match decision {
            AuthDecision::Refuse(code) => {
                self.stats.auth_failures += 1;
                if code == ReasonCode::BadUserNameOrPassword {
                    let username = connect.username.as_ref().map(|name| name.as_str());
                    self.login_failed(id, username, now);
                }
                self.refuse_connect(id, version, code, now);
            }
            AuthDecision::Continue { data } => self.begin_enhanced_auth(id, connect, data, now),
            AuthDecision::Accept { data } => {
                let certified = self
                    .connections
                    .get(&id)
                    .is_some_and(|c| c.info.use_identity_as_username);
                let identity = identity_from_connect(&connect, certified);
                self.complete_connect(id, connect, data, identity, now);
            }
            AuthDecision::AcceptAs { data, identity } => {
                self.complete_connect(id, connect, data, identity, now);
            }
            AuthDecision::Pending(job) => self.queue_auth_check(id, connect, job, now),
        }
    }

    /// The answer to a check handed out by [`Broker::poll_auth_job`]. A connection that closed
    /// meanwhile is ignored.
    pub fn auth_finished(&mut self, id: ConnectionId, decision: AuthDecision, now: Time) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        if connection.phase != Phase::Verifying {
            return;
        }
        let Some(connect) = connection.pending_connect.take() else {
            return;
        };
        connection.phase = Phase::AwaitingConnect;
        let accepted = matches!(
            decision,
            AuthDecision::Accept { .. } | AuthDecision::AcceptAs { .. }
        );
        self.authenticator.check_finished(id, accepted);
        let decision = match decision {
            // A check answers once; asking for another is an authenticator bug, refused safely.
            AuthDecision::Pending(_) => AuthDecision::Refuse(ReasonCode::UnspecifiedError),
            decision => decision,
        };
        self.dispatch_connect_decision(id, *connect, decision, now);
        self.handle_held(id, now);
        self.close_oversized(now);
    }

    /// Handles the packets that came after a CONNECT while it waited, once it is accepted.
    pub(super) fn handle_held(&mut self, id: ConnectionId, now: Time) {
        let held = match self.connections.get_mut(&id) {
            Some(connection) if matches!(connection.phase, Phase::Active(_)) => {
                std::mem::take(&mut connection.held)
            }
            _ => Default::default(),
        };
        for packet in held {
            self.handle_packet(id, packet, now);
        }
    }

    /// Keeps a packet that came after a CONNECT under verification.
    pub(super) fn hold(&mut self, id: ConnectionId, packet: Packet, now: Time) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        if connection.held.len() >= HELD_PACKETS_MAX {
            let reason = CloseReason::ProtocolViolation(
                ReasonCode::QuotaExceeded,
                "too many packets before CONNACK",
            );
            self.close(id, reason, Some(ReasonCode::QuotaExceeded), now);
            return;
        }
        connection.held.push_back(packet);
    }

    /// Compiles the permissions of a client being let in; refuses a will topic it may not
    /// publish to. Returns whether the CONNECT may go on.
    pub(super) fn admit(
        &mut self,
        id: ConnectionId,
        connect: &Connect,
        client_id: &tern_codec::MqttString,
        identity: &Identity,
        now: Time,
    ) -> bool {
        if self.is_banned(client_id.as_str(), now) {
            self.stats.auth_failures += 1;
            self.refuse_connect(id, connect.protocol_version, ReasonCode::Banned, now);
            return false;
        }
        let Some(connection) = self.connections.get(&id) else {
            return false;
        };
        let principal = Principal {
            connection: id,
            client_id,
            identity,
            profile: connection.auth_profile,
        };
        let permissions = self.authorizer.permissions(&principal);
        let fenced = super::fleet_fence::fenced(permissions.as_deref(), Some(identity));
        if let Some(will) = &connect.will {
            let topic = will.topic.as_str();
            let allowed = permissions
                .as_ref()
                .is_none_or(|p| p.allows(Access::Publish, topic))
                && !(fenced && self.fleet_closes(topic));
            if !allowed {
                self.stats.publish_denied += 1;
                self.stats.auth_failures += 1;
                self.events.push_back(Event::Denied {
                    connection: id,
                    client_id: client_id.clone(),
                    access: Access::Publish,
                    topic: will.topic.as_str().to_owned(),
                });
                let version = connect.protocol_version;
                self.refuse_connect(id, version, ReasonCode::NotAuthorized, now);
                return false;
            }
        }
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.permissions = permissions;
            connection.credential_expires_at = identity
                .valid_for_millis
                .map(|millis| now.plus_millis(millis));
            connection.identity =
                (*identity != Identity::default()).then(|| Box::new(identity.clone()));
        }
        true
    }

    /// Installs new authorisation rules and applies them to the clients already connected:
    /// each connection's permissions are compiled again for the identity it authenticated as,
    /// and the subscriptions the new rules deny are dropped (each a `Denied` event) with the
    /// queued messages they would not let through, as when a session is resumed. Returns how many subscriptions were dropped. A will is left as it
    /// is: it was admitted with its CONNECT.
    pub fn replace_authorizer(&mut self, authorizer: Box<dyn Authorizer>, now: Time) -> u64 {
        self.authorizer = authorizer;
        let mut active: Vec<(ConnectionId, SessionKey)> = self
            .connections
            .iter()
            .filter_map(|(&id, connection)| connection.session().map(|key| (id, key)))
            .collect();
        // In connection order, so that the Denied events come out the same on every run.
        active.sort_unstable_by_key(|&(id, _)| id);
        // What the old rules opened of the fleet to an offline session is not known to hold
        // under the new ones: it keeps the fleet's messages again from its next connection.
        for session in self.sessions.iter_mut().flatten() {
            if session.connection.is_none() {
                session.fleet_opened = false;
            }
        }
        let before = self.stats.subscribe_denied;
        for (id, key) in active {
            let client_id = self.session(key).client_id.clone();
            let Some(connection) = self.connections.get(&id) else {
                continue;
            };
            let identity = connection.identity.as_deref().cloned().unwrap_or_default();
            let principal = Principal {
                connection: id,
                client_id: &client_id,
                identity: &identity,
                profile: connection.auth_profile,
            };
            let permissions = self.authorizer.permissions(&principal);
            if let Some(connection) = self.connections.get_mut(&id) {
                connection.permissions = permissions;
            }
            self.session_mut(key).fleet_opened = !self.fleet_fenced(id);
            self.prune_subscriptions(id, key);
            if self.recheck_deliveries(id, key, true) {
                // Withdrawn in-flight messages freed send quota for queued ones.
                self.pump(key, now);
            }
        }
        self.stats.subscribe_denied - before
    }

    /// Whether the client on `id` may publish to the topic name, or subscribe with the topic
    /// filter, `topic` (a `$share/group/` or `$tree/` prefix is looked through: a tree view
    /// shows what its inner filter matches). For features that publish on a client's behalf,
    /// this is the check to make per resulting topic.
    pub fn authorize(&self, id: ConnectionId, access: Access, topic: &str) -> bool {
        let Some(connection) = self.connections.get(&id) else {
            return false;
        };
        let inner = match access {
            Access::Subscribe => inner_filter(topic),
            Access::Publish => topic,
        };
        if self.fleet_closes(inner) && self.fleet_fenced(id) {
            return false;
        }
        connection
            .permissions
            .as_ref()
            .is_none_or(|permissions| permissions.allows(access, inner))
    }

    /// Records a denial: counted, and reported as an event for the log.
    pub(super) fn denied(&mut self, id: ConnectionId, access: Access, topic: &str) {
        match access {
            Access::Publish => self.stats.publish_denied += 1,
            Access::Subscribe => self.stats.subscribe_denied += 1,
        }
        let client_id = self
            .connections
            .get(&id)
            .and_then(|c| c.session())
            .map(|key| self.session(key).client_id.clone())
            .unwrap_or_default();
        self.events.push_back(Event::Denied {
            connection: id,
            client_id,
            access,
            topic: topic.to_owned(),
        });
    }

    /// Drops the subscriptions of a resumed session that its new connection may not hold (the
    /// session may have been made by another user with the same client identifier, or under
    /// older rules), so resuming a session never widens what a client receives.
    pub(super) fn prune_subscriptions(&mut self, id: ConnectionId, key: SessionKey) {
        let denied: Vec<TopicFilter> = self
            .session(key)
            .subscriptions
            .keys()
            .filter(|filter| !self.authorize(id, Access::Subscribe, filter))
            .cloned()
            .collect();
        for filter in denied {
            if let Some(info) = self.session_mut(key).subscriptions.remove(&filter) {
                self.unindex_subscription(key, &filter, &info);
                self.stop_retained_feed(key, &filter);
            }
            self.denied(id, Access::Subscribe, &filter);
        }
    }

    /// Withdraws the queued and in-flight deliveries of a session that its connection may not
    /// receive, each counted as dropped: messages routed under other rules, or to a session
    /// recovered without an owner that another identity resumed, are not handed over. The
    /// check a subscription passed when it was made covers every later delivery, so this is
    /// needed only when a session meets new permissions (resumption, a rules reload). A QoS 2
    /// message in flight is released (PUBREL) rather than sent again, now if `release_now`,
    /// else with the in-flight messages resent after CONNACK. Returns whether any delivery was
    /// withdrawn.
    pub(super) fn recheck_deliveries(
        &mut self,
        id: ConnectionId,
        key: SessionKey,
        release_now: bool,
    ) -> bool {
        // Without permissions, only the fleet's namespaces are closed to it.
        let restricted = self
            .connections
            .get(&id)
            .is_some_and(|c| c.permissions.is_some());
        if !restricted && self.fleet.owners_empty() {
            return false;
        }
        let session = self.session(key);
        let refused: FxHashSet<u64> = session
            .queue
            .iter()
            .chain(session.inflight.iter().map(|entry| &entry.delivery))
            .filter(|d| !self.authorize(id, Access::Subscribe, d.message.topic.as_str()))
            .map(|d| d.seq)
            .collect();
        if refused.is_empty() {
            return false;
        }
        let withdrawn = self.with_session(key, |session| {
            session.withdraw(|delivery| refused.contains(&delivery.seq))
        });
        for seq in withdrawn.dropped {
            self.persist_for(key, |client_id| StoreOp::DeliveryDone { client_id, seq });
            self.dropped(key, DropReason::NotAuthorized);
        }
        for (seq, packet_id) in withdrawn.released {
            self.persist_for(key, |client_id| StoreOp::DeliveryStage {
                client_id,
                seq,
                stage: DeliveryStage::Released(packet_id),
            });
            self.dropped(key, DropReason::NotAuthorized);
            if release_now {
                self.send(id, Packet::PubRel(Ack::new(packet_id)));
            }
        }
        true
    }

    /// Whether `id` is an MQTT 5 connection.
    pub(super) fn is_v5(&self, id: ConnectionId) -> bool {
        self.connections
            .get(&id)
            .is_some_and(|c| c.version == ProtocolVersion::V5)
    }
}

/// The identity a plain accept implies: the CONNECT user name, which nothing verified unless
/// the listener took it from the client certificate it verified.
fn identity_from_connect(connect: &Connect, certified: bool) -> Identity {
    Identity {
        method: if certified {
            Method::Certificate
        } else {
            Method::Unverified
        },
        username: connect.username.as_ref().map(|u| u.as_str().to_owned()),
        ..Identity::default()
    }
}

/// The filter inside a `$share/group/filter` or a `$tree/filter`, or the filter itself.
pub(super) fn inner_filter(filter: &str) -> &str {
    if let Some(inner) = filter.strip_prefix(crate::tree_view::TREE_PREFIX) {
        return inner;
    }
    filter
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(filter, |(_, inner)| inner)
}
