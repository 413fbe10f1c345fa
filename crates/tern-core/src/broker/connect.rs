//! CONNECT: protocol level, client identifier, session take-over and resumption, keep alive,
//! the will, and the CONNACK that reports what was agreed.

use tern_codec::{
    Ack, ConnAck, ConnAckProperties, Connect, DecodeError, MqttString, Packet, ProtocolVersion,
    QoS, ReasonCode, PACKET_SIZE_MAX,
};

use bytes::Bytes;

use super::Broker;
use crate::alias::OutboundAliases;
use crate::auth::{AuthDecision, AuthRequest, Identity, SessionOwner};
use crate::config::OtherIdentity;
use crate::connection::Phase;
use crate::events::{CloseReason, Event};
use crate::session::{OutgoingState, PendingWill, Session, EXPIRY_NEVER};
use crate::types::{ConnectionId, SessionKey, Time};

impl Broker {
    /// A CONNECT that did not decode: an unsupported protocol level still gets its CONNACK
    /// (MQTT-3.1.2-2: 0x01 in 3.1.1, 0x84 in 5.0); anything else closes without a reply.
    pub(super) fn refuse_undecodable_connect(
        &mut self,
        id: ConnectionId,
        error: DecodeError,
        now: Time,
    ) {
        match error {
            DecodeError::UnsupportedProtocolVersion(level) => {
                let version = if level >= 5 {
                    ProtocolVersion::V5
                } else {
                    ProtocolVersion::V311
                };
                self.refuse_connect(id, version, ReasonCode::UnsupportedProtocolVersion, now);
            }
            // An MQTT 5 client is told its CONNECT was too large (CONNACK 0x95); a 3.1.1
            // client has no such code and is closed.
            DecodeError::PacketTooLarge { .. } if self.level_hint(id) == Some(5) => {
                self.refuse_connect(id, ProtocolVersion::V5, ReasonCode::PacketTooLarge, now);
            }
            _ => self.refuse(id, CloseReason::Malformed(error), now),
        }
    }

    fn level_hint(&self, id: ConnectionId) -> Option<u8> {
        self.connections.get(&id).and_then(|c| c.level_hint)
    }

    /// Answers CONNECT with a refusing CONNACK and closes.
    pub(super) fn refuse_connect(
        &mut self,
        id: ConnectionId,
        version: ProtocolVersion,
        code: ReasonCode,
        now: Time,
    ) {
        let reason = CloseReason::ConnectRefused(code);
        self.refuse_connect_because(id, version, code, reason, now);
    }

    /// [`Broker::refuse_connect`], with the reason the log gives.
    pub(super) fn refuse_connect_because(
        &mut self,
        id: ConnectionId,
        version: ProtocolVersion,
        code: ReasonCode,
        reason: CloseReason,
        now: Time,
    ) {
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.version = version;
        }
        let connack = ConnAck {
            session_present: false,
            reason_code: code,
            properties: ConnAckProperties::default(),
        };
        self.send(id, Packet::ConnAck(Box::new(connack)));
        self.close(id, reason, None, now);
    }

    pub(super) fn handle_connect(&mut self, id: ConnectionId, mut connect: Connect, now: Time) {
        // A will or session expiry that fell due since the last timer tick applies before this
        // client can resume the session (MQTT-3.1.2-8, MQTT-4.1.0-2).
        self.run_due_timers(now);
        let version = connect.protocol_version;
        let v5 = version == ProtocolVersion::V5;
        if self.refuse_while_partitioned(id, version, now) {
            return;
        }
        if let Some(will) = &connect.will {
            if will.qos > self.config.limits.qos_max {
                self.refuse_connect(id, version, ReasonCode::QosNotSupported, now);
                return;
            }
            if will.retain && !self.config.limits.retain_available {
                self.refuse_connect(id, version, ReasonCode::RetainNotSupported, now);
                return;
            }
        }
        let assigned = connect.client_id.is_empty();
        // A 3.1.1 client without an identifier must ask for a clean session (MQTT-3.1.3-8); an
        // MQTT 3.1 client must always send one (its spec knows no assigned identifiers). Longer
        // identifiers than the 23 bytes 3.1 promises are taken, as in 3.1.1.
        if assigned && (version == ProtocolVersion::V31 || (!v5 && !connect.clean_start)) {
            self.refuse_connect(id, version, ReasonCode::ClientIdentifierNotValid, now);
            return;
        }
        let info = self
            .connections
            .get(&id)
            .map(|c| c.info.clone())
            .unwrap_or_default();
        if info.use_identity_as_username {
            // The verified certificate names the user; CONNECT's user name is ignored.
            match info.certificate_identity.as_deref().map(MqttString::new) {
                Some(Ok(name)) => connect.username = Some(name),
                _ => {
                    self.refuse_connect(id, version, ReasonCode::NotAuthorized, now);
                    return;
                }
            }
        }
        let request = AuthRequest {
            connection: id,
            version,
            client_id: &connect.client_id,
            username: connect.username.as_ref(),
            password: connect.password.as_deref(),
            method: connect.properties.authentication_method.as_ref(),
            data: connect.properties.authentication_data.as_deref(),
            certificate_identity: info.certificate_identity.as_deref(),
            profile: self.connections.get(&id).map_or(0, |c| c.auth_profile),
            fleet: self.fleet.login(
                connect.client_id.as_str(),
                connect.username.as_ref().map(|u| u.as_str()),
            ),
        };
        let decision = self.authenticator.authenticate(&request);
        // Too many failed logins from this address or for this user: what would need a slow
        // check (a password hash) or start an exchange a guesser could repeat (SCRAM) is
        // refused unchecked. What the authenticator settles at once (a login it verified
        // recently, a token, a device key) still gets in, so a fleet behind one address is not
        // locked out by a few of its devices with stale passwords.
        let guessable = matches!(
            decision,
            AuthDecision::Pending(_) | AuthDecision::Continue { .. }
        );
        if guessable && self.refuse_if_throttled(id, &connect, now) {
            return;
        }
        self.dispatch_connect_decision(id, connect, decision, now);
    }

    /// Accepts a CONNECT whose client is authenticated: attaches or creates its session and
    /// answers CONNACK.
    pub(super) fn complete_connect(
        &mut self,
        id: ConnectionId,
        connect: Connect,
        auth_data: Option<Bytes>,
        identity: Identity,
        now: Time,
    ) {
        let (version, client_id) = (connect.protocol_version, connect.client_id.as_str());
        if !self.fleet_admits(id, version, client_id, &identity, now) {
            return;
        }
        // On a cluster node the session is claimed across the cluster first.
        let Some((connect, auth_data, identity)) =
            self.claim_first(id, connect, auth_data, identity)
        else {
            return;
        };
        let version = connect.protocol_version;
        let v5 = version == ProtocolVersion::V5;
        let own_will = connect.will.is_some();
        let assigned = connect.client_id.is_empty();
        let client_id = if assigned {
            self.assign_client_id()
        } else {
            // The session outlives the CONNECT: keep its own copy, not the read buffer.
            connect.client_id.detached()
        };
        let owner = identity.session_owner();
        let Some(clean_start) = self.session_claim(id, &connect, &client_id, &identity, &owner)
        else {
            self.refuse_connect(id, version, ReasonCode::NotAuthorized, now);
            return;
        };
        if !self.admit(id, &connect, &client_id, &identity, now) {
            return;
        }

        let limits = &self.config.limits;
        let requested_expiry = match version {
            ProtocolVersion::V5 => connect.properties.session_expiry_interval.unwrap_or(0),
            ProtocolVersion::V31 | ProtocolVersion::V311 if connect.clean_start => 0,
            ProtocolVersion::V31 | ProtocolVersion::V311 => EXPIRY_NEVER,
        };
        let expiry_secs = requested_expiry.min(limits.session_expiry_max_secs);
        let (keep_alive, server_keep_alive) =
            negotiate_keep_alive(connect.keep_alive, limits.keep_alive_max_secs, v5);

        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.version = version;
        connection.auth_method = connect.properties.authentication_method.clone();
        connection.keep_alive_grace_millis = u64::from(keep_alive) * 1500;
        connection.client_receive_maximum = connect.properties.receive_maximum.unwrap_or(u16::MAX);
        connection.client_packet_size_max =
            connect.properties.maximum_packet_size.unwrap_or(u32::MAX);
        // Topic aliases towards the client, when it takes them (3.3.2.3.4, MQTT-3.3.2-11).
        let alias_out_max = connect
            .properties
            .topic_alias_maximum
            .unwrap_or(0)
            .min(limits.topic_alias_out_max);
        connection.aliases_out =
            (v5 && alias_out_max > 0).then(|| Box::new(OutboundAliases::new(alias_out_max)));
        connection.problem_information = connect
            .properties
            .request_problem_information
            .unwrap_or(true);

        let existing = self.session_ids.get(&client_id).copied();
        if let Some(key) = existing {
            if let Some(old) = self.session(key).connection {
                // Session take-over (MQTT-3.1.4-3): the older connection goes.
                self.close(
                    old,
                    CloseReason::SessionTakenOver,
                    Some(ReasonCode::SessionTakenOver),
                    now,
                );
            }
        }
        // The take-over may have ended the session; look again.
        let existing = self.session_ids.get(&client_id).copied();
        let (key, session_present) = match existing {
            Some(key) if !clean_start => (key, true),
            Some(key) => {
                self.end_session(key, now);
                (
                    self.insert_session(Session::new(client_id.clone(), version)),
                    false,
                )
            }
            None => (
                self.insert_session(Session::new(client_id.clone(), version)),
                false,
            ),
        };

        let fleet_opened = !self.fleet_fenced(id);
        let session = self.session_mut(key);
        // A new session takes its creator's identity; a recovered one of unknown owner is
        // claimed by the first identity to resume it.
        session.owner = owner;
        session.connection = Some(id);
        session.fleet_opened = fleet_opened;
        session.version = version;
        session.expiry_secs = expiry_secs;
        session.expires_at = None;
        // A new connection before the will delay has passed cancels the old will (MQTT-3.1.3-9).
        session.will_at = None;
        // Boxed: most sessions have no will, and every session pays for the inline size.
        session.will = connect.will.map(|will| {
            Box::new(PendingWill {
                delay_secs: will.properties.will_delay_interval.unwrap_or(0),
                will,
            })
        });
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.phase = Phase::Active(key);
        }
        if session_present {
            self.prune_subscriptions(id, key);
            self.recheck_deliveries(id, key, false);
        }
        self.save_session(key);
        self.stats.clients_connected += 1;

        let mut properties = ConnAckProperties::default();
        if v5 {
            self.fill_connack_properties(&mut properties);
            if assigned {
                properties.assigned_client_identifier = Some(client_id.clone());
            }
            if expiry_secs != requested_expiry {
                properties.session_expiry_interval = Some(expiry_secs);
            }
            properties.server_keep_alive = server_keep_alive;
            if let Some(method) = connect.properties.authentication_method.clone() {
                properties.authentication_method = Some(method);
                properties.authentication_data = auth_data;
            }
        }
        let connack = ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties,
        };
        self.send(id, Packet::ConnAck(Box::new(connack)));
        self.fleet_online(id, client_id.as_str(), own_will, now);
        self.events.push_back(Event::Connected {
            connection: id,
            client_id,
            version,
            session_present,
        });
        if session_present {
            self.resend_inflight(id, key, now);
            self.mailbox_qos0_to_connection(key, now);
        }
        self.pump(key, now);
    }

    /// Whether the client may have the session of its client identifier. A session belongs to
    /// the identity that created it: another identity (another user, method or device owner)
    /// is refused, or with [`OtherIdentity::Fresh`] starts a fresh session, and never resumes
    /// the old one. Returns the clean start to apply, `None` to refuse.
    fn session_claim(
        &mut self,
        id: ConnectionId,
        connect: &Connect,
        client_id: &MqttString,
        identity: &Identity,
        owner: &SessionOwner,
    ) -> Option<bool> {
        let Some(&key) = self.session_ids.get(client_id) else {
            return Some(connect.clean_start);
        };
        let current = &self.session(key).owner;
        if current == owner || current.is_unknown() {
            return Some(connect.clean_start);
        }
        match self.config.other_identity {
            OtherIdentity::Fresh => Some(true),
            OtherIdentity::Refuse => {
                self.stats.auth_failures += 1;
                self.events.push_back(Event::SessionRefused {
                    connection: id,
                    client_id: client_id.clone(),
                    identity: identity.describe(),
                });
                None
            }
        }
    }

    fn fill_connack_properties(&self, properties: &mut ConnAckProperties) {
        let limits = &self.config.limits;
        if limits.receive_maximum != u16::MAX {
            properties.receive_maximum = Some(limits.receive_maximum);
        }
        if limits.packet_size_max_bytes < PACKET_SIZE_MAX {
            properties.maximum_packet_size = Some(limits.packet_size_max_bytes);
        }
        if limits.topic_alias_max > 0 {
            properties.topic_alias_maximum = Some(limits.topic_alias_max);
        }
        if !limits.retain_available {
            properties.retain_available = Some(false);
        }
        if limits.qos_max < QoS::ExactlyOnce {
            properties.maximum_qos = Some(limits.qos_max);
        }
    }

    /// A client identifier no session uses, for a client that sent an empty one.
    fn assign_client_id(&mut self) -> MqttString {
        loop {
            let candidate = format!(
                "{}{}",
                self.config.assigned_id_prefix, self.next_assigned_id
            );
            self.next_assigned_id += 1;
            if let Ok(id) = MqttString::new(&candidate) {
                if !self.session_ids.contains_key(&id) {
                    return id;
                }
            }
        }
    }

    /// After a resumed CONNECT, re-sends PUBREL packets and unacknowledged PUBLISH packets with
    /// DUP set, in their original order (MQTT-4.4.0-1). PUBLISH packets wait for the new
    /// connection's send quota (MQTT-4.9.0-1/-2); PUBREL packets do not (MQTT-3.3.4-10).
    fn resend_inflight(&mut self, id: ConnectionId, key: SessionKey, now: Time) {
        let Some(window) = self.send_window(id) else {
            return;
        };
        self.session_mut(key).reset_quota();
        let mut index = 0;
        while let Some(entry) = self.session(key).inflight.get(index) {
            if entry.state == OutgoingState::AwaitPubComp {
                let packet_id = entry.packet_id;
                self.send(id, Packet::PubRel(Ack::new(packet_id)));
            } else if self.session(key).quota_used() < window
                && !self.resend_publish(id, key, index, now)
            {
                // Discarded: the next entry has moved to `index`.
                continue;
            }
            index += 1;
        }
    }
}

/// The keep alive to enforce and, for MQTT 5, the Server Keep Alive to announce when it differs
/// from the client's.
fn negotiate_keep_alive(requested: u16, max: u16, v5: bool) -> (u16, Option<u16>) {
    if max == 0 || !v5 || (requested != 0 && requested <= max) {
        return (requested, None);
    }
    (max, Some(max))
}
