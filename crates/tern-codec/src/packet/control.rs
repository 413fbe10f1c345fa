//! DISCONNECT (3.14) and AUTH (3.15).

use super::{read_reason, require_v5, PacketType, ProtocolVersion};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{AuthProperties, DisconnectProperties};
use crate::reason::ReasonCode;
use crate::wire::{Reader, Sink};

/// DISCONNECT: the end of a connection, sent by either side (the server only in MQTT 5).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// Why the connection ends (MQTT 5; Normal disconnection in 3.1.1).
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (MQTT 5 only).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with this reason code and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let mut disconnect = Self::default();
        if version == ProtocolVersion::V5 && !r.is_empty() {
            disconnect.reason_code = read_reason(r, PacketType::Disconnect)?;
            if !r.is_empty() {
                disconnect.properties = DisconnectProperties::decode(r)?;
            }
        }
        Ok(disconnect)
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if version == ProtocolVersion::V5 {
            let has_properties = !self.properties.is_empty();
            if self.reason_code != ReasonCode::NORMAL_DISCONNECTION || has_properties {
                s.put_u8(self.reason_code.as_u8());
            }
            if has_properties {
                self.properties.encode(s)?;
            }
        }
        Ok(())
    }
}

/// AUTH: a step of MQTT 5 enhanced authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// Success, Continue authentication or Re-authenticate.
    pub reason_code: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: AuthProperties,
}

impl Auth {
    pub(super) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        require_v5(version)?;
        let mut auth = Self::default();
        if !r.is_empty() {
            auth.reason_code = read_reason(r, PacketType::Auth)?;
            if !r.is_empty() {
                auth.properties = AuthProperties::decode(r)?;
            }
        }
        Ok(auth)
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        if version != ProtocolVersion::V5 {
            return Err(EncodeError::NotInVersion);
        }
        if self.reason_code != ReasonCode::Success || !self.properties.is_empty() {
            s.put_u8(self.reason_code.as_u8());
            self.properties.encode(s)?;
        }
        Ok(())
    }
}
