//! Per-connection state: protocol level, negotiated limits, topic aliases both ways, keep alive,
//! and the queue of packets waiting to be written.

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU16;

use crate::alias::{OutboundAliases, TopicAlias};
use crate::auth::Identity;
use crate::authz::Permissions;

use tern_codec::{
    Packet, PacketId, ProtocolVersion, Publish, PublishView, QoS, SubscriptionIds, TopicName,
};

use crate::types::{SessionKey, SharedMessage, Time};

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The socket is open; CONNECT has not arrived.
    AwaitingConnect,
    /// CONNECT arrived with an Authentication Method; AUTH packets are being exchanged.
    Authenticating,
    /// CONNECT arrived and its credentials are being checked off the broker thread; packets
    /// that follow it are held until the answer comes.
    Verifying,
    /// CONNECT accepted; attached to a session.
    Active(SessionKey),
    /// The broker has decided to close it; only queued packets are still written.
    Closing,
}

/// Something for the runtime to do on a connection's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Encode and write a PUBLISH forwarding a shared message. Fan-out queues one of these per
    /// receiver: a reference and a few fields, not a packet.
    Publish(OutgoingPublish),
    /// Encode and write this packet; boxed, so the queue's slots stay the size of a PUBLISH.
    Packet(Box<Packet>),
    /// Flush what was written, then close the socket.
    Close,
}

impl Transmit {
    /// The packet this writes, if any, a forwarded PUBLISH built out in full.
    pub fn into_packet(self) -> Option<Packet> {
        match self {
            Self::Publish(publish) => Some(Packet::Publish(publish.to_publish())),
            Self::Packet(packet) => Some(*packet),
            Self::Close => None,
        }
    }
}

/// A PUBLISH forwarding a shared message to one receiver, with what is the receiver's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingPublish {
    /// The message (topic, payload and the properties forwarded with it).
    pub message: SharedMessage,
    /// QoS it is delivered with.
    pub qos: QoS,
    /// RETAIN flag as sent to this receiver.
    pub retain: bool,
    /// DUP flag: a resend.
    pub dup: bool,
    /// Present exactly when QoS > 0.
    pub packet_id: Option<PacketId>,
    /// What remains of the Message Expiry Interval, in seconds (MQTT-3.3.2-6).
    pub message_expiry_interval: Option<u32>,
    /// Identifiers of the receiver's subscriptions it matched.
    pub subscription_ids: SubscriptionIds,
    /// The topic alias it is sent with, chosen as it leaves the outbox (see
    /// [`crate::Broker::poll_transmit`] and [`Self::topic_alias`]). Kept as two small fields
    /// rather than an `Option<TopicAlias>`, which would make every outbox slot 8 bytes larger.
    pub alias: Option<NonZeroU16>,
    /// With `alias`: whether the topic is left out, the alias standing for it.
    pub alias_only: bool,
}

/// The name of a PUBLISH whose topic travels as an alias.
static NO_TOPIC: TopicName = TopicName::empty();

impl OutgoingPublish {
    /// How it names its topic by alias, if it does.
    pub fn topic_alias(&self) -> Option<TopicAlias> {
        let alias = self.alias?.get();
        Some(if self.alias_only {
            TopicAlias::Use(alias)
        } else {
            TopicAlias::Set(alias)
        })
    }

    /// Sends it with `alias` (0 is no alias).
    pub fn set_topic_alias(&mut self, alias: Option<TopicAlias>) {
        self.alias = alias.and_then(|alias| NonZeroU16::new(alias.value()));
        self.alias_only = self.alias.is_some() && alias.is_some_and(TopicAlias::omits_topic);
    }

    /// The PUBLISH as a view, to encode without building it.
    pub fn view(&self) -> PublishView<'_> {
        let message = &self.message;
        let omit_topic = self.alias.is_some() && self.alias_only;
        PublishView {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: if omit_topic {
                &NO_TOPIC
            } else {
                &message.topic
            },
            packet_id: self.packet_id,
            properties: &message.properties,
            topic_alias: self.alias.map(NonZeroU16::get),
            message_expiry_interval: self.message_expiry_interval,
            subscription_identifiers: &self.subscription_ids,
            payload: &message.payload,
        }
    }

    /// The PUBLISH built out in full.
    pub fn to_publish(&self) -> Publish {
        let message = &self.message;
        let mut properties = message.properties.clone();
        properties.message_expiry_interval = self.message_expiry_interval;
        properties.subscription_identifiers = self.subscription_ids.clone();
        properties.topic_alias = self.alias.map(NonZeroU16::get);
        let omit_topic = self.alias.is_some() && self.alias_only;
        Publish {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: if omit_topic {
                TopicName::empty()
            } else {
                message.topic.clone()
            },
            packet_id: self.packet_id,
            properties,
            payload: message.payload.clone(),
        }
    }
}

/// What the runtime knows of a connection when it opens: facts from the transport that
/// authentication may use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The identity of the verified client certificate (mutual TLS), if one was presented.
    pub certificate_identity: Option<String>,
    /// Take `certificate_identity` as the user name, whatever CONNECT says; a connection
    /// without one is refused (0x87 Not authorized).
    pub use_identity_as_username: bool,
    /// The client's source address, which failed logins are counted against.
    pub peer_address: Option<std::net::IpAddr>,
}

/// One network connection as the core sees it.
#[derive(Debug)]
pub struct Connection {
    /// Where it is in its life.
    pub phase: Phase,
    /// Protocol level (3.1.1 until a CONNECT says otherwise).
    pub version: ProtocolVersion,
    /// When it opened.
    pub opened_at: Time,
    /// Last time a packet arrived.
    pub last_activity: Time,
    /// Silence allowed before the connection is closed, in milliseconds (1.5 x keep alive); 0: none.
    pub keep_alive_grace_millis: u64,
    /// The client's Receive Maximum: QoS 1/2 publishes it accepts unacknowledged.
    pub client_receive_maximum: u16,
    /// The client's Maximum Packet Size, in bytes.
    pub client_packet_size_max: u32,
    /// Whether the client wants reason strings and user properties on failures (MQTT 5).
    pub problem_information: bool,
    /// Topic aliases the client has set, by alias.
    pub aliases: HashMap<u16, TopicName>,
    /// Topic aliases the broker has set towards the client (MQTT 5, when it accepts them);
    /// boxed, as most connections have none.
    pub aliases_out: Option<Box<OutboundAliases>>,
    /// Packets waiting to be written, oldest first.
    pub outbox: VecDeque<Transmit>,
    /// QoS 0 PUBLISH packets in `outbox`.
    pub outbox_qos0: usize,
    /// Bytes charged for them ([`crate::Message::charge`]).
    pub outbox_qos0_bytes: usize,
    /// Whether retained messages owed to the session wait for room in `outbox` (QoS 0): taking
    /// them out lists the session to go on.
    pub retained_feed_waits: bool,
    /// Set by a normal DISCONNECT from the client: the will is not published.
    pub disconnected_normally: bool,
    /// Whether the connection is already listed for the runtime to wake.
    pub woken: bool,
    /// PUBLISH packets taken from the outbox for writing (wrapping): flow control's sign that
    /// the client's socket takes what it is sent.
    pub publishes_taken: u32,
    /// The enhanced authentication method the client chose, if any (MQTT 5).
    pub auth_method: Option<tern_codec::MqttString>,
    /// The protocol level a CONNECT that could not be decoded asked for, if it could be read.
    pub level_hint: Option<u8>,
    /// The CONNECT waiting for enhanced authentication to finish.
    pub pending_connect: Option<Box<tern_codec::Connect>>,
    /// What the transport told about the connection when it opened.
    pub info: ConnectionInfo,
    /// Start of the current one-second window of the publish rate limit.
    pub publish_window_start: Time,
    /// PUBLISH packets received in that window.
    pub publish_window_count: u32,
    /// The authentication profile of the listener it came in on.
    pub auth_profile: usize,
    /// Packets that arrived while the CONNECT was being verified, replayed once it is accepted.
    pub held: VecDeque<Packet>,
    /// What the client may publish and subscribe to; `None` allows everything.
    pub permissions: Option<Box<dyn Permissions>>,
    /// When the credential the client authenticated with runs out (see
    /// [`crate::Identity::valid_for_millis`]).
    pub credential_expires_at: Option<Time>,
    /// Who the client authenticated as, kept to compile its permissions again when the rules
    /// change; boxed, and absent for the default (anonymous) identity.
    pub identity: Option<Box<Identity>>,
}

impl Connection {
    /// A connection that has just opened.
    pub fn new(now: Time) -> Self {
        Self {
            phase: Phase::AwaitingConnect,
            version: ProtocolVersion::V311,
            opened_at: now,
            last_activity: now,
            keep_alive_grace_millis: 0,
            client_receive_maximum: u16::MAX,
            client_packet_size_max: u32::MAX,
            problem_information: true,
            aliases: HashMap::new(),
            aliases_out: None,
            outbox: VecDeque::new(),
            outbox_qos0: 0,
            outbox_qos0_bytes: 0,
            retained_feed_waits: false,
            disconnected_normally: false,
            woken: false,
            publishes_taken: 0,
            auth_method: None,
            level_hint: None,
            pending_connect: None,
            info: ConnectionInfo::default(),
            publish_window_start: now,
            publish_window_count: 0,
            auth_profile: 0,
            held: VecDeque::new(),
            permissions: None,
            credential_expires_at: None,
            identity: None,
        }
    }

    /// The session it is attached to.
    pub fn session(&self) -> Option<SessionKey> {
        match self.phase {
            Phase::Active(key) => Some(key),
            _ => None,
        }
    }
}
