//! MQTT 5 enhanced authentication (section 4.12): the AUTH exchange before CONNACK, and
//! re-authentication of a connected client, both decided by the installed [`Authenticator`].
//!
//! [`Authenticator`]: crate::auth::Authenticator

use bytes::Bytes;
use tern_codec::{Auth, AuthProperties, Connect, MqttString, Packet, ProtocolVersion, ReasonCode};

use super::Broker;
use crate::auth::{AuthDecision, AuthRequest};
use crate::connection::Phase;
use crate::events::CloseReason;
use crate::types::{ConnectionId, Time};

impl Broker {
    /// The authenticator wants another round: keep the CONNECT and send AUTH 0x18.
    pub(super) fn begin_enhanced_auth(
        &mut self,
        id: ConnectionId,
        connect: Connect,
        data: Bytes,
        now: Time,
    ) {
        let version = connect.protocol_version;
        let Some(method) = connect.properties.authentication_method.clone() else {
            // Without a method there is nothing to continue: an authenticator bug, refused safely.
            self.refuse_connect(id, version, ReasonCode::NotAuthorized, now);
            return;
        };
        if version != ProtocolVersion::V5 {
            self.refuse_connect(id, version, ReasonCode::NotAuthorized, now);
            return;
        }
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.version = version;
        connection.phase = Phase::Authenticating;
        connection.auth_method = Some(method.clone());
        connection.pending_connect = Some(Box::new(connect));
        self.send(
            id,
            auth_packet(ReasonCode::ContinueAuthentication, method, Some(data)),
        );
    }

    /// A packet while enhanced authentication is in progress: only AUTH (continue) or
    /// DISCONNECT may come (MQTT-4.12.0-4/-6).
    pub(super) fn handle_authenticating(&mut self, id: ConnectionId, packet: Packet, now: Time) {
        let auth = match packet {
            Packet::Auth(auth) => auth,
            Packet::Disconnect(_) => {
                self.close(id, CloseReason::ClientDisconnect, None, now);
                return;
            }
            _ => {
                self.violation(
                    id,
                    ReasonCode::ProtocolError,
                    "packet other than AUTH during authentication",
                    now,
                );
                return;
            }
        };
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let method = connection.auth_method.clone();
        if auth.reason_code != ReasonCode::ContinueAuthentication
            || auth.properties.authentication_method.as_ref() != method.as_ref()
        {
            // The method must stay the same throughout (MQTT-4.12.0-5).
            self.violation(
                id,
                ReasonCode::ProtocolError,
                "AUTH with a different method or reason",
                now,
            );
            return;
        }
        let Some(connect) = connection.pending_connect.take() else {
            return;
        };
        let decision = self.decide_auth(
            id,
            &connect,
            method.as_ref(),
            auth.properties.authentication_data.as_deref(),
        );
        match decision {
            AuthDecision::Continue { data } => {
                if let Some(connection) = self.connections.get_mut(&id) {
                    connection.pending_connect = Some(connect);
                }
                if let Some(method) = method {
                    self.send(
                        id,
                        auth_packet(ReasonCode::ContinueAuthentication, method, Some(data)),
                    );
                }
            }
            // Steps of an AUTH exchange are decided on the broker thread; a slow check is refused.
            AuthDecision::Pending(_) => {
                self.stats.auth_failures += 1;
                self.refuse_connect(id, ProtocolVersion::V5, ReasonCode::NotAuthorized, now);
            }
            decision => self.dispatch_connect_decision(id, *connect, decision, now),
        }
    }

    /// AUTH from a connected client: re-authentication (MQTT-4.12.1-1), allowed only with the
    /// method of its CONNECT.
    pub(super) fn handle_reauth(&mut self, id: ConnectionId, auth: Auth, now: Time) {
        let method = self
            .connections
            .get(&id)
            .and_then(|c| c.auth_method.clone());
        let Some(method) = method else {
            self.violation(
                id,
                ReasonCode::ProtocolError,
                "AUTH without an authentication method",
                now,
            );
            return;
        };
        let continuing = matches!(
            auth.reason_code,
            ReasonCode::ReAuthenticate | ReasonCode::ContinueAuthentication
        );
        if !continuing || auth.properties.authentication_method.as_ref() != Some(&method) {
            self.violation(
                id,
                ReasonCode::ProtocolError,
                "AUTH with a different method or reason",
                now,
            );
            return;
        }
        let client_id = self
            .connections
            .get(&id)
            .and_then(|c| c.session())
            .map(|key| self.session(key).client_id.clone())
            .unwrap_or_default();
        let identity = self
            .connections
            .get(&id)
            .and_then(|c| c.info.certificate_identity.clone());
        let request = AuthRequest {
            connection: id,
            version: ProtocolVersion::V5,
            client_id: &client_id,
            username: None,
            password: None,
            method: Some(&method),
            data: auth.properties.authentication_data.as_deref(),
            certificate_identity: identity.as_deref(),
            profile: self.connections.get(&id).map_or(0, |c| c.auth_profile),
            fleet: crate::fleet::FleetLogin::default(),
        };
        match self.authenticator.continue_auth(&request) {
            // The connection keeps the permissions it was given at CONNECT.
            AuthDecision::Accept { data } => {
                self.send(id, auth_packet(ReasonCode::Success, method, data))
            }
            // A fresh credential brings its own expiry.
            AuthDecision::AcceptAs { data, identity } => {
                if let Some(connection) = self.connections.get_mut(&id) {
                    connection.credential_expires_at = identity
                        .valid_for_millis
                        .map(|millis| now.plus_millis(millis));
                }
                self.send(id, auth_packet(ReasonCode::Success, method, data))
            }
            AuthDecision::Continue { data } => {
                self.send(
                    id,
                    auth_packet(ReasonCode::ContinueAuthentication, method, Some(data)),
                );
            }
            decision @ (AuthDecision::Refuse(_) | AuthDecision::Pending(_)) => {
                // Re-authentication is decided on the broker thread; a slow check is refused.
                let code = match decision {
                    AuthDecision::Refuse(code) => code,
                    _ => ReasonCode::NotAuthorized,
                };
                if code == ReasonCode::BadUserNameOrPassword {
                    // A wrong proof counts against the address like a wrong password.
                    self.login_failed(id, None, now);
                }
                // Failed re-authentication ends the connection (MQTT-4.12.1-2).
                let code = if code.allowed_in(tern_codec::PacketType::Disconnect) {
                    code
                } else {
                    ReasonCode::NotAuthorized
                };
                self.close(id, CloseReason::ConnectRefused(code), Some(code), now);
            }
        }
    }

    fn decide_auth(
        &mut self,
        id: ConnectionId,
        connect: &Connect,
        method: Option<&MqttString>,
        data: Option<&[u8]>,
    ) -> AuthDecision {
        let request = AuthRequest {
            connection: id,
            version: connect.protocol_version,
            client_id: &connect.client_id,
            username: connect.username.as_ref(),
            password: connect.password.as_deref(),
            method,
            data,
            certificate_identity: self
                .connections
                .get(&id)
                .and_then(|c| c.info.certificate_identity.as_deref()),
            profile: self.connections.get(&id).map_or(0, |c| c.auth_profile),
            fleet: crate::fleet::FleetLogin::default(),
        };
        self.authenticator.continue_auth(&request)
    }
}

fn auth_packet(reason_code: ReasonCode, method: MqttString, data: Option<Bytes>) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(method),
            authentication_data: data,
            ..AuthProperties::default()
        },
    })
}
