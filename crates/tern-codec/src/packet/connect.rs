//! CONNECT (3.1) and CONNACK (3.2).

use bytes::Bytes;

use super::{read_reason, PacketType, ProtocolVersion, QoS};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{ConnAckProperties, ConnectProperties, WillProperties};
use crate::reason::ReasonCode;
use crate::string::MqttString;
use crate::topic::TopicName;
use crate::wire::{Reader, Sink};

const PROTOCOL_NAME: &str = "MQTT";
/// The protocol name of MQTT 3.1 (level 3).
const PROTOCOL_NAME_V31: &str = "MQIsdp";

/// A will message, published by the server when the connection ends abnormally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic the will is published to.
    pub topic: TopicName,
    /// Payload of the will message.
    pub payload: Bytes,
    /// QoS of the will message.
    pub qos: QoS,
    /// Whether the will message is retained.
    pub retain: bool,
    /// Will properties (MQTT 5 only; ignored when encoding 3.1.1).
    pub properties: WillProperties,
}

/// CONNECT: the first packet a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level the client asks for; the connection speaks it from here on.
    pub protocol_version: ProtocolVersion,
    /// Clean Start (5.0) or Clean Session (3.1.1).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// CONNECT properties (MQTT 5 only).
    pub properties: ConnectProperties,
    /// Client identifier; may be empty.
    pub client_id: MqttString,
    /// The will message, if any.
    pub will: Option<Will>,
    /// User name, if any.
    pub username: Option<MqttString>,
    /// Password, if any.
    pub password: Option<Bytes>,
}

impl Connect {
    pub(super) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.string()?;
        let level = r.u8()?;
        let protocol_version = match (name.as_str(), level) {
            (PROTOCOL_NAME_V31, 3) => ProtocolVersion::V31,
            (PROTOCOL_NAME, 4) => ProtocolVersion::V311,
            (PROTOCOL_NAME, 5) => ProtocolVersion::V5,
            (PROTOCOL_NAME | PROTOCOL_NAME_V31, _) => {
                return Err(DecodeError::UnsupportedProtocolVersion(level))
            }
            _ => return Err(DecodeError::Protocol("unknown protocol name")),
        };
        let flags = r.u8()?;
        if flags & 0x01 != 0 {
            return Err(DecodeError::Malformed("CONNECT reserved flag is set"));
        }
        let clean_start = flags & 0x02 != 0;
        let has_will = flags & 0x04 != 0;
        let will_qos =
            QoS::from_u8((flags >> 3) & 0x03).ok_or(DecodeError::Malformed("will QoS of 3"))?;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::Malformed(
                "will QoS or retain set without a will",
            ));
        }
        let v5 = protocol_version == ProtocolVersion::V5;
        if !v5 && has_password && !has_username {
            return Err(DecodeError::Malformed("password without user name"));
        }
        let keep_alive = r.u16()?;
        let properties = if v5 {
            ConnectProperties::decode(r)?
        } else {
            ConnectProperties::default()
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(DecodeError::Protocol(
                "authentication data without a method",
            ));
        }
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if v5 {
                WillProperties::decode(r)?
            } else {
                WillProperties::default()
            };
            let topic = TopicName::new(r.string()?)?;
            let payload = r.binary()?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        // MQTT 3.1 lets the remaining length win over the flags: a user name or password
        // flagged but missing at the end of the packet is absent, and the CONNECT valid.
        let lenient = protocol_version == ProtocolVersion::V31;
        let username = if has_username && !(lenient && r.is_empty()) {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password && !(lenient && r.is_empty()) {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            protocol_version,
            clean_start,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
        })
    }

    pub(super) fn encode<S: Sink>(&self, s: &mut S) -> Result<(), EncodeError> {
        let v5 = self.protocol_version == ProtocolVersion::V5;
        if !v5 && self.password.is_some() && self.username.is_none() {
            return Err(EncodeError::OutOfRange(
                "3.1.1 or 3.1 password without user name",
            ));
        }
        let name = match self.protocol_version {
            ProtocolVersion::V31 => PROTOCOL_NAME_V31,
            ProtocolVersion::V311 | ProtocolVersion::V5 => PROTOCOL_NAME,
        };
        s.put_u16(name.len() as u16);
        s.put_slice(name.as_bytes());
        s.put_u8(self.protocol_version.level());
        let mut flags = u8::from(self.clean_start) << 1;
        if let Some(will) = &self.will {
            flags |= 0x04 | ((will.qos as u8) << 3) | (u8::from(will.retain) << 5);
        }
        flags |= u8::from(self.password.is_some()) << 6;
        flags |= u8::from(self.username.is_some()) << 7;
        s.put_u8(flags);
        s.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(s)?;
        }
        s.put_string(&self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                will.properties.encode(s)?;
            }
            s.put_string(will.topic.as_mqtt_str());
            s.put_binary(&will.payload)?;
        }
        if let Some(username) = &self.username {
            s.put_string(username);
        }
        if let Some(password) = &self.password {
            s.put_binary(password)?;
        }
        Ok(())
    }
}

/// CONNACK: the server's answer to CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnAck {
    /// Whether the server resumed a session for the client.
    pub session_present: bool,
    /// Success or why the connection was refused (3.1.1 return codes map onto these).
    pub reason_code: ReasonCode,
    /// CONNACK properties (MQTT 5 only).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        // MQTT 3.1 reserves the whole byte, unused: no Session Present, nothing to check.
        let v31 = version == ProtocolVersion::V31;
        if flags & 0xFE != 0 && !v31 {
            return Err(DecodeError::Malformed("CONNACK reserved flags are set"));
        }
        let session_present = flags & 0x01 != 0 && !v31;
        let (reason_code, properties) = match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                let code = ReasonCode::from_v3_connack(r.u8()?)
                    .ok_or(DecodeError::Protocol("unknown CONNACK return code"))?;
                (code, ConnAckProperties::default())
            }
            ProtocolVersion::V5 => {
                let code = read_reason(r, PacketType::ConnAck)?;
                (code, ConnAckProperties::decode(r)?)
            }
        };
        if session_present && reason_code != ReasonCode::Success {
            return Err(DecodeError::Protocol(
                "session present on a refused connection",
            ));
        }
        Ok(Self {
            session_present,
            reason_code,
            properties,
        })
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        // MQTT 3.1 has no Session Present flag: the byte is reserved.
        s.put_u8(u8::from(
            self.session_present && version != ProtocolVersion::V31,
        ));
        match version {
            ProtocolVersion::V31 | ProtocolVersion::V311 => {
                s.put_u8(self.reason_code.to_v3_connack());
            }
            ProtocolVersion::V5 => {
                s.put_u8(self.reason_code.as_u8());
                self.properties.encode(s)?;
            }
        }
        Ok(())
    }
}
