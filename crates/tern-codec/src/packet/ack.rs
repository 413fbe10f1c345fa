//! PUBACK, PUBREC, PUBREL and PUBCOMP (3.4-3.7): one shape, four packet types.

use super::{read_reason, PacketId, PacketType, ProtocolVersion};
use crate::error::{DecodeError, EncodeError};
use crate::properties::AckProperties;
use crate::reason::ReasonCode;
use crate::wire::{Reader, Sink};

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The packet identifier of the PUBLISH this step belongs to.
    pub packet_id: PacketId,
    /// Outcome (MQTT 5; always Success in 3.1.1).
    pub reason_code: ReasonCode,
    /// Reason string and user properties (MQTT 5 only).
    pub properties: AckProperties,
}

impl Ack {
    /// A successful acknowledgement with no properties.
    pub fn new(packet_id: PacketId) -> Self {
        Self {
            packet_id,
            reason_code: ReasonCode::Success,
            properties: AckProperties::default(),
        }
    }

    pub(super) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
        packet_type: PacketType,
    ) -> Result<Self, DecodeError> {
        let packet_id = PacketId::read(r)?;
        let mut ack = Self::new(packet_id);
        if version == ProtocolVersion::V5 && !r.is_empty() {
            ack.reason_code = read_reason(r, packet_type)?;
            if !r.is_empty() {
                ack.properties = AckProperties::decode(r)?;
            }
        }
        Ok(ack)
    }

    pub(super) fn encode<S: Sink>(
        &self,
        version: ProtocolVersion,
        s: &mut S,
    ) -> Result<(), EncodeError> {
        s.put_u16(self.packet_id.get());
        if version == ProtocolVersion::V5 {
            let has_properties = !self.properties.is_empty();
            // Reason code and property length may be left out when they say nothing (3.4.2.1).
            if self.reason_code != ReasonCode::Success || has_properties {
                s.put_u8(self.reason_code.as_u8());
            }
            if has_properties {
                self.properties.encode(s)?;
            }
        }
        Ok(())
    }
}
