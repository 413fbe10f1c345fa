//! What the caller chooses: identity, session, keep-alive, reconnect timing, queue limits and
//! persistence. Plain data with defaults; validated when the client starts.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use tern_codec::{ProtocolVersion, QoS, UserProperties, WillProperties};

/// A will message: published by the broker if the link ends without DISCONNECT.
#[derive(Debug, Clone)]
pub struct LastWill {
    /// Topic of the will.
    pub topic: String,
    /// Payload of the will.
    pub payload: Bytes,
    /// QoS of the will.
    pub qos: QoS,
    /// Whether the will is retained.
    pub retain: bool,
    /// MQTT 5 will properties (delay, expiry, content type, ...).
    pub properties: WillProperties,
}

/// What happens to a publish made when the offline queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueuePolicy {
    /// Refuse the new message: its publish fails with `PublishError::QueueFull`.
    #[default]
    RejectNew,
    /// Drop the oldest queued message (its publish fails with `PublishError::Dropped`).
    DropOldest,
}

/// How the client connects, reconnects and queues.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Client identifier; empty asks the broker to assign one (MQTT 5) and forces a clean session.
    pub client_id: String,
    /// Protocol version to speak.
    pub version: ProtocolVersion,
    /// Clean start on the first connection. Reconnections always resume the session.
    pub clean_start: bool,
    /// MQTT 5 session expiry (seconds) sent in CONNECT; 0 ends the session with the link.
    pub session_expiry_secs: u32,
    /// Keep-alive (zero disables it, and with it the dead-link detection). The broker is told
    /// whole seconds, rounded up; the client pings at this exact interval, so tests and fast
    /// links can detect an outage in well under a second.
    pub keep_alive: Duration,
    /// How long a PINGREQ may wait for any packet from the broker before the link is declared
    /// dead. `None`: the keep-alive interval.
    pub ping_timeout: Option<Duration>,
    /// How long the transport connect plus CONNECT/CONNACK may take.
    pub connect_timeout: Duration,
    /// After an outage the link stays down this long, so every hop notices, before reconnecting.
    pub quiet_period: Duration,
    /// First reconnect backoff; doubles per failed attempt up to `backoff_max`, with jitter.
    pub backoff_min: Duration,
    /// Largest reconnect backoff.
    pub backoff_max: Duration,
    /// Whether to reconnect at all after an outage.
    pub reconnect: bool,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will message.
    pub will: Option<LastWill>,
    /// Receive Maximum the client announces (QoS 1/2 deliveries the broker may have in flight).
    pub receive_maximum: u16,
    /// Topic Alias Maximum the client announces (aliases the broker may use towards us).
    pub topic_alias_maximum: u16,
    /// Largest number of topic aliases the client uses towards the broker (capped by the
    /// broker's Topic Alias Maximum).
    pub outgoing_topic_aliases: u16,
    /// Largest packet the client accepts, in bytes.
    pub maximum_packet_size: u32,
    /// User properties sent in CONNECT.
    pub connect_user_properties: UserProperties,
    /// MQTT 5 Request Response Information sent in CONNECT (absent: the broker's default, no).
    pub request_response_information: Option<bool>,
    /// MQTT 5 Request Problem Information sent in CONNECT (absent: the broker's default, yes).
    pub request_problem_information: Option<bool>,
    /// Publishes waiting for a free in-flight slot or for the link (the offline queue).
    pub queue_count_max: usize,
    /// Policy when that queue is full.
    pub queue_policy: QueuePolicy,
    /// Messages buffered per subscription receiver before the connection stalls.
    pub subscription_buffer_count: usize,
    /// Directory for on-disk persistence of queued and in-flight QoS 1/2 publishes.
    pub store_dir: Option<PathBuf>,
    /// Whether each store write is flushed to disk (fsync) before the publish is sent.
    pub store_sync: bool,
}

impl ClientOptions {
    /// Defaults for this client identifier: MQTT 5, clean start, keep-alive 30 s.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            version: ProtocolVersion::V5,
            clean_start: true,
            session_expiry_secs: 0,
            keep_alive: Duration::from_secs(30),
            ping_timeout: None,
            connect_timeout: Duration::from_secs(10),
            quiet_period: Duration::from_secs(1),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            reconnect: true,
            username: None,
            password: None,
            will: None,
            receive_maximum: 65_535,
            topic_alias_maximum: 16,
            outgoing_topic_aliases: 16,
            maximum_packet_size: 1024 * 1024,
            connect_user_properties: UserProperties::new(),
            request_response_information: None,
            request_problem_information: None,
            queue_count_max: 10_000,
            queue_policy: QueuePolicy::RejectNew,
            subscription_buffer_count: 1024,
            store_dir: None,
            store_sync: true,
        }
    }

    /// The time without traffic after which a PINGREQ is unanswered for too long.
    pub(crate) fn ping_timeout(&self) -> Duration {
        self.ping_timeout.unwrap_or(self.keep_alive)
    }
}
