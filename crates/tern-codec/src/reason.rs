//! MQTT 5.0 reason codes (spec table 2-6) and which packets may carry each one.

use crate::packet::PacketType;

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, [$($packet:ident),*] );* $(;)?) => {
        /// A reason code from MQTT 5.0 table 2-6.
        ///
        /// Value 0x00 has three names in the spec (Success, Normal disconnection, Granted QoS 0);
        /// the associated constants give the packet-specific spellings.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        #[repr(u8)]
        pub enum ReasonCode {
            $( $(#[$doc])* $name = $value, )*
        }

        impl ReasonCode {
            /// Every reason code, in ascending order of value.
            pub const ALL: &'static [Self] = &[$(Self::$name),*];

            /// The reason code with this value, if the spec defines one.
            pub fn from_u8(value: u8) -> Option<Self> {
                match value {
                    $( $value => Some(Self::$name), )*
                    _ => None,
                }
            }

            /// Whether the spec allows this reason code in the given packet type.
            pub fn allowed_in(self, packet: PacketType) -> bool {
                match self {
                    $( Self::$name => matches!(packet, $(PacketType::$packet)|*), )*
                }
            }
        }
    };
}

reason_codes! {
    /// 0x00: Success, Normal disconnection or Granted QoS 0, depending on the packet.
    #[default]
    Success = 0x00, [ConnAck, PubAck, PubRec, PubRel, PubComp, UnsubAck, Auth, Disconnect, SubAck];
    /// 0x01 Granted QoS 1.
    GrantedQos1 = 0x01, [SubAck];
    /// 0x02 Granted QoS 2.
    GrantedQos2 = 0x02, [SubAck];
    /// 0x04 Disconnect with Will Message.
    DisconnectWithWillMessage = 0x04, [Disconnect];
    /// 0x10 No matching subscribers.
    NoMatchingSubscribers = 0x10, [PubAck, PubRec];
    /// 0x11 No subscription existed.
    NoSubscriptionExisted = 0x11, [UnsubAck];
    /// 0x18 Continue authentication.
    ContinueAuthentication = 0x18, [Auth];
    /// 0x19 Re-authenticate.
    ReAuthenticate = 0x19, [Auth];
    /// 0x80 Unspecified error.
    UnspecifiedError = 0x80, [ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect];
    /// 0x81 Malformed Packet.
    MalformedPacket = 0x81, [ConnAck, Disconnect];
    /// 0x82 Protocol Error.
    ProtocolError = 0x82, [ConnAck, Disconnect];
    /// 0x83 Implementation specific error.
    ImplementationSpecificError = 0x83, [ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect];
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion = 0x84, [ConnAck];
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid = 0x85, [ConnAck];
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword = 0x86, [ConnAck];
    /// 0x87 Not authorized.
    NotAuthorized = 0x87, [ConnAck, PubAck, PubRec, SubAck, UnsubAck, Disconnect];
    /// 0x88 Server unavailable.
    ServerUnavailable = 0x88, [ConnAck];
    /// 0x89 Server busy.
    ServerBusy = 0x89, [ConnAck, Disconnect];
    /// 0x8A Banned.
    Banned = 0x8A, [ConnAck];
    /// 0x8B Server shutting down.
    ServerShuttingDown = 0x8B, [Disconnect];
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod = 0x8C, [ConnAck, Disconnect];
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout = 0x8D, [Disconnect];
    /// 0x8E Session taken over.
    SessionTakenOver = 0x8E, [Disconnect];
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid = 0x8F, [SubAck, UnsubAck, Disconnect];
    /// 0x90 Topic Name invalid.
    TopicNameInvalid = 0x90, [ConnAck, PubAck, PubRec, Disconnect];
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse = 0x91, [PubAck, PubRec, SubAck, UnsubAck];
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound = 0x92, [PubRel, PubComp];
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded = 0x93, [Disconnect];
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid = 0x94, [Disconnect];
    /// 0x95 Packet too large.
    PacketTooLarge = 0x95, [ConnAck, Disconnect];
    /// 0x96 Message rate too high.
    MessageRateTooHigh = 0x96, [Disconnect];
    /// 0x97 Quota exceeded.
    QuotaExceeded = 0x97, [ConnAck, PubAck, PubRec, SubAck, Disconnect];
    /// 0x98 Administrative action.
    AdministrativeAction = 0x98, [Disconnect];
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid = 0x99, [ConnAck, PubAck, PubRec, Disconnect];
    /// 0x9A Retain not supported.
    RetainNotSupported = 0x9A, [ConnAck, Disconnect];
    /// 0x9B QoS not supported.
    QosNotSupported = 0x9B, [ConnAck, Disconnect];
    /// 0x9C Use another server.
    UseAnotherServer = 0x9C, [ConnAck, Disconnect];
    /// 0x9D Server moved.
    ServerMoved = 0x9D, [ConnAck, Disconnect];
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported = 0x9E, [SubAck, Disconnect];
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded = 0x9F, [ConnAck, Disconnect];
    /// 0xA0 Maximum connect time.
    MaximumConnectTime = 0xA0, [Disconnect];
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported = 0xA1, [SubAck, Disconnect];
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported = 0xA2, [SubAck, Disconnect];
}

impl ReasonCode {
    /// 0x00 in DISCONNECT.
    pub const NORMAL_DISCONNECTION: Self = Self::Success;
    /// 0x00 in SUBACK.
    pub const GRANTED_QOS_0: Self = Self::Success;

    /// The numeric value on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// True for values below 0x80, which the spec counts as success.
    pub fn is_success(self) -> bool {
        self.as_u8() < 0x80
    }

    /// The MQTT 3.1.1 CONNACK return code closest to this reason code (section 3.2.2.3).
    ///
    /// 3.1.1 has six return codes; every MQTT 5 refusal maps onto the one a 3.1.1 client
    /// understands best.
    pub fn to_v3_connack(self) -> u8 {
        match self {
            Self::Success => 0x00,
            Self::UnsupportedProtocolVersion => 0x01,
            Self::ClientIdentifierNotValid => 0x02,
            Self::BadUserNameOrPassword | Self::BadAuthenticationMethod => 0x04,
            Self::NotAuthorized | Self::Banned => 0x05,
            _ => 0x03,
        }
    }

    /// The reason code for an MQTT 3.1.1 CONNACK return code.
    pub fn from_v3_connack(code: u8) -> Option<Self> {
        Some(match code {
            0x00 => Self::Success,
            0x01 => Self::UnsupportedProtocolVersion,
            0x02 => Self::ClientIdentifierNotValid,
            0x03 => Self::ServerUnavailable,
            0x04 => Self::BadUserNameOrPassword,
            0x05 => Self::NotAuthorized,
            _ => return None,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code: the granted QoS, or 0x80 for any failure.
    pub fn to_v3_suback(self) -> u8 {
        match self {
            Self::Success | Self::GrantedQos1 | Self::GrantedQos2 => self.as_u8(),
            _ => 0x80,
        }
    }
}
