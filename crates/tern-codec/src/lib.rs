//! Tern's MQTT codec: every control packet of MQTT 3.1.1 (protocol level 4) and 5.0 (level 5),
//! their properties and reason codes, topic names and filters.
//!
//! It is sans-IO: it turns bytes into [`Packet`]s and back, and never touches sockets, tasks or
//! clocks, so the broker, the client and the benchmarks share it. It is `no_std` with `alloc`
//! when the default `std` feature is off.
//!
//! # Layout
//! - [`codec`]: framing a read buffer, refusing oversized packets from the fixed header.
//! - [`packet`]: the packet types, decode and encode.
//! - [`properties`]: MQTT 5 properties, one typed block per packet kind.
//! - [`reason`]: reason codes and where each is allowed.
//! - [`string`], [`topic`]: validated strings, topic names and filters, matching.
//!
//! Decoding slices strings and payloads out of the frame (`bytes::Bytes`), so a payload is never
//! copied; it allocates nothing in proportion to a declared length before those bytes arrive.
#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]

extern crate alloc;

pub mod codec;
pub mod error;
pub mod packet;
pub mod properties;
pub mod reason;
pub mod string;
pub mod topic;
mod wire;

pub use codec::{connect_protocol_level, parse_frame, Decoder, Frame, PACKET_SIZE_MAX};
pub use error::{DecodeError, EncodeError};
pub use packet::{
    put_with_topic_alias, set_publish_packet_id, Ack, Auth, ConnAck, Connect, Disconnect,
    FilterList, Packet, PacketId, PacketType, ProtocolVersion, Publish, PublishView, QoS,
    RetainHandling, SubAck, Subscribe, Subscription, SubscriptionList, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormat, PropertyId, PropertyOrder, PublishProperties, SubscribeProperties,
    SubscriptionIds, UnsubscribeProperties, UserProperties, WillProperties,
};
pub use reason::ReasonCode;
pub use string::{MqttString, StringError};
pub use topic::{filter_matches, TopicFilter, TopicName};
pub use wire::{decode_varint, varint_len, VARINT_MAX};
