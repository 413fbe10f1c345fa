//! Small value types shared by the core: time, identifiers and the routed message.

use std::sync::Arc;

use bytes::Bytes;
use tern_codec::{PublishProperties, QoS, TopicName};

/// A point in time in milliseconds, as given by the caller: the core never reads a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    /// The time `millis` milliseconds after the caller's epoch.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the caller's epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// This time plus `secs` seconds.
    pub fn plus_secs(self, secs: u32) -> Self {
        Self(self.0.saturating_add(u64::from(secs) * 1000))
    }

    /// This time plus `millis` milliseconds.
    pub fn plus_millis(self, millis: u64) -> Self {
        Self(self.0.saturating_add(millis))
    }

    /// Whole seconds from `self` until `later`, rounded up; 0 if `later` has passed.
    pub fn secs_until(self, later: Self) -> u32 {
        let millis = later.0.saturating_sub(self.0);
        u32::try_from(millis.div_ceil(1000)).unwrap_or(u32::MAX)
    }
}

/// Identifies one network connection; chosen by the runtime, unique for the broker's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub u64);

/// Index of a session in the broker's session table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionKey(pub(crate) u32);

/// An application message as the broker routes it: one allocation shared by every subscriber
/// it is delivered to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Stable identity of an accepted publish, unique for the broker's lifetime.
    pub id: u64,
    /// Topic name (topic aliases already resolved).
    pub topic: TopicName,
    /// The payload, shared with the buffer it arrived in.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// Whether it was published with RETAIN.
    pub retain: bool,
    /// Properties forwarded to subscribers (no topic alias, no subscription identifiers; the
    /// message expiry interval is rewritten on delivery).
    pub properties: PublishProperties,
    /// When the message expires, from its Message Expiry Interval.
    pub expires_at: Option<Time>,
    /// The session that published it, for No Local.
    pub origin: Option<SessionKey>,
}

impl Message {
    /// The same message in allocations of its own. A decoded message's topic, payload and
    /// properties are slices of the read buffer it arrived in, which a busy connection shares
    /// among every packet of a read (up to 64 KiB): a message kept long after its packet (a
    /// retained message) would keep that whole buffer alive for a few bytes of its own.
    pub fn detached(&self) -> Self {
        Self {
            topic: self.topic.detached(),
            payload: Bytes::copy_from_slice(&self.payload),
            properties: self.properties.detached(),
            ..self.clone()
        }
    }

    /// Whether the message has expired at `now`.
    pub fn is_expired(&self, now: Time) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Bytes one receiver is charged for holding this message, for the memory limits: its
    /// topic, payload and forwarded properties, in full, as if it held the only copy (see
    /// docs/design/backpressure.md).
    pub fn charge(&self) -> usize {
        let properties = &self.properties;
        self.topic.len()
            + self.payload.len()
            + properties.user_properties.wire_len()
            + properties.correlation_data.as_ref().map_or(0, Bytes::len)
            + properties
                .response_topic
                .as_ref()
                .map_or(0, |topic| topic.len())
            + properties
                .content_type
                .as_ref()
                .map_or(0, |kind| kind.len())
    }
}

/// A message shared between subscribers.
pub type SharedMessage = Arc<Message>;
