//! Typed events the core reports (connects, disconnects, refusals, drops) and its counters.
//! The runtime logs them; later the status registry and console read the same stream.

use tern_codec::{DecodeError, MqttString, ProtocolVersion, ReasonCode, TopicFilter, TopicName};

use crate::authz::Access;
use crate::throttle::Throttled;
use crate::types::ConnectionId;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT (normal disconnection).
    ClientDisconnect,
    /// The client sent DISCONNECT with reason 0x04: publish the will.
    ClientDisconnectWithWill,
    /// The client sent DISCONNECT with an error reason code.
    ClientError(ReasonCode),
    /// The client broke the protocol; the detail says how.
    ProtocolViolation(ReasonCode, &'static str),
    /// A packet failed to decode.
    Malformed(DecodeError),
    /// Nothing arrived within 1.5 times the keep alive.
    KeepAliveTimeout,
    /// The credential the client authenticated with (a token) has expired.
    CredentialExpired,
    /// Another connection took the session over.
    SessionTakenOver,
    /// No CONNECT arrived in time.
    ConnectTimeout,
    /// The socket closed or failed.
    ConnectionLost,
    /// The broker is shutting down.
    ServerShutdown,
    /// An operator closed it (or banned its client identifier).
    AdministrativeAction,
    /// The broker reached its memory limit and this client's messages took the most of it.
    MemoryLimit,
    /// The client was cut loose as a subscriber that held its publishers back (see
    /// [`Event::CutLoose`]).
    CutLoose(CutReason),
    /// The CONNECT was refused.
    ConnectRefused(ReasonCode),
    /// The CONNECT was refused with Not authorized by the fleet registry, for this reason.
    FleetRefused(&'static str),
    /// The CONNECT was refused with Server busy: `auth_checks_queued_max` credential checks
    /// were already waiting.
    AuthQueueFull,
    /// The CONNECT was refused with Server busy, unchecked: too many failed logins.
    LoginThrottled(Throttled),
    /// The CONNECT was refused with Server unavailable: this cluster node cannot reach the
    /// cluster (strict partition mode), or could not claim the client's session there.
    ClusterUnavailable,
}

/// What changed of a device of the fleet ([`Event::FleetChanged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetChange {
    /// Its connection was accepted.
    Online,
    /// Its connection ended (not taken over by its next one).
    Offline,
    /// It was added to the registry.
    Added,
    /// Its registry entry changed (disabled, enabled).
    Changed,
    /// It was deleted.
    Deleted,
}

impl FleetChange {
    /// Its name in events and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Deleted => "deleted",
        }
    }
}

/// Why a subscriber was cut loose (docs/design/backpressure.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    /// Its queue held publishers back and it acknowledged nothing, and took no message to
    /// write, for the stall timeout.
    Stalled,
    /// Its socket took nothing of a pending write for the stall timeout (the runtime's check).
    SocketStalled,
    /// Its queue grew past twice `queued_bytes_max`: further behind than the windows of the
    /// publishers it holds explain.
    OverBudget,
}

/// Why a message was not delivered to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session's queue was full (count or bytes).
    QueueFull,
    /// Too many QoS 0 packets were waiting for a slow connection.
    OutboxFull,
    /// The message expired before it could be sent.
    Expired,
    /// The packet would exceed the client's Maximum Packet Size.
    TooLargeForClient,
    /// The broker reached its memory limit (`memory_max_bytes`): a QoS 0 message, a message
    /// for the largest consumer, or one a cut-loose consumer held.
    MemoryFull,
    /// The session's connection may not receive the topic (rules changed, or another identity
    /// resumed a session recovered without an owner).
    NotAuthorized,
    /// A mailbox's dead letters passed their limit: the oldest went.
    DeadLettersFull,
    /// A mailbox was full (its class's limits): its oldest QoS 0 message went to make room,
    /// or, with none, the new message was refused.
    MailboxFull,
}

/// Something that happened in the broker, for logs and observers.
// `Denied` carries its topic by value; events are rare next to packets.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A CONNECT was accepted.
    Connected {
        /// The connection.
        connection: ConnectionId,
        /// The client identifier (assigned, if the client sent none).
        client_id: MqttString,
        /// Protocol level.
        version: ProtocolVersion,
        /// Whether an existing session was resumed.
        session_present: bool,
    },
    /// A device of the fleet connected more than `FLAPPING_CONNECTS` times within a minute
    /// (reported once, when it begins).
    FleetFlapping {
        /// Its owner.
        owner: String,
        /// Its udid.
        udid: String,
        /// Connects within the minute.
        connects: usize,
    },
    /// A device of the fleet changed: it came online or went offline, or the operator added,
    /// changed or deleted it.
    FleetChanged {
        /// Its owner.
        owner: String,
        /// Its udid.
        udid: String,
        /// What changed.
        change: FleetChange,
    },
    /// An actionable notification was raised, asked, answered, delivered, expired or
    /// cancelled (`change` says which; the notification as it is now).
    FleetNotification {
        /// The notification.
        notification: Box<crate::fleet_notify::Notification>,
        /// `raised`, `asked`, `answered`, `delivered`, `expired` or `cancelled`.
        change: &'static str,
    },
    /// A notification, or an answer, published over MQTT was refused (the message was
    /// routed as any other).
    FleetNotifyRefused {
        /// The publisher.
        client_id: String,
        /// The device it concerned.
        udid: String,
        /// Why.
        reason: String,
    },
    /// A connection was refused before or at CONNECT.
    Refused {
        /// The connection.
        connection: ConnectionId,
        /// Why.
        reason: CloseReason,
    },
    /// A connected client's connection ended.
    Disconnected {
        /// The connection.
        connection: ConnectionId,
        /// Its client identifier.
        client_id: MqttString,
        /// Why it ended.
        reason: CloseReason,
        /// Whether its will was published (now) or scheduled (after its delay).
        will_triggered: bool,
    },
    /// A session ended (expired, or ended with its connection).
    SessionEnded {
        /// Its client identifier.
        client_id: MqttString,
    },
    /// The authorizer refused a PUBLISH, a SUBSCRIBE filter or a will topic.
    Denied {
        /// The connection.
        connection: ConnectionId,
        /// Its client identifier.
        client_id: MqttString,
        /// What was asked.
        access: Access,
        /// The topic name or filter.
        topic: String,
    },
    /// A CONNECT was refused because its client identifier names a session that belongs to
    /// another identity.
    SessionRefused {
        /// The connection.
        connection: ConnectionId,
        /// The client identifier it asked for.
        client_id: MqttString,
        /// Who it authenticated as (`method:name`), for the log.
        identity: String,
    },
    /// A message was not delivered to a subscriber.
    Dropped {
        /// The subscriber.
        client_id: MqttString,
        /// Why.
        reason: DropReason,
    },
    /// The broker reached its memory limit and cut this session loose: it held the most
    /// bytes of messages, and lost them all.
    Shed {
        /// Its client identifier.
        client_id: MqttString,
        /// The bytes of messages it held.
        bytes: usize,
        /// The messages it lost.
        messages: usize,
    },
    /// A subscriber was cut loose (stalled, or too far behind): the publishers it held were let
    /// go, and it was disconnected or, with `stalled_subscriber = "drop"`, has its newest
    /// messages dropped until it catches up.
    CutLoose {
        /// Its client identifier.
        client_id: MqttString,
        /// Why.
        reason: CutReason,
        /// Whether it was disconnected (else its messages are dropped).
        disconnected: bool,
        /// Messages waiting in its queue then.
        queued: usize,
        /// Bytes held for it then ([`crate::Message::charge`]).
        bytes: usize,
    },
    /// A subscription matched more retained messages than `retained_per_subscription_max`:
    /// only that many are sent.
    RetainedCapped {
        /// The subscriber.
        client_id: MqttString,
        /// The subscription's filter.
        filter: TopicFilter,
        /// The cap.
        max: usize,
    },
    /// A PUBLISH was refused without closing the connection (a `$tree/` publish whose payload
    /// does not fit its topic, or a denied topic); an MQTT 5 client got the reason code.
    PublishRefused {
        /// The publisher.
        client_id: MqttString,
        /// The topic it published to.
        topic: TopicName,
        /// The reason code.
        reason: ReasonCode,
        /// What was wrong.
        detail: &'static str,
    },
}

/// Running totals since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections with an accepted CONNECT, now.
    pub clients_connected: u64,
    /// Sessions held, connected or not, now.
    pub sessions: u64,
    /// PUBLISH packets received from clients.
    pub publish_received: u64,
    /// PUBLISH packets sent to clients.
    pub publish_sent: u64,
    /// PUBLISH packets (and HTTP publishes) received, by QoS (0, 1, 2).
    pub publish_received_by_qos: [u64; 3],
    /// PUBLISH packets sent, by the QoS they were sent with.
    pub publish_sent_by_qos: [u64; 3],
    /// Of the deliveries dropped, those that expired first ([`DropReason::Expired`]).
    pub publish_expired: u64,
    /// Deliveries dropped for any [`DropReason`].
    pub publish_dropped: u64,
    /// Of those, dropped for the memory limit ([`DropReason::MemoryFull`]).
    pub publish_dropped_memory: u64,
    /// Sessions cut loose for the memory limit.
    pub sessions_shed: u64,
    /// Subscribers cut loose for holding publishers back without progress, or for falling
    /// too far behind ([`CutReason`]).
    pub subscribers_cut_loose: u64,
    /// Connected subscribers whose full queues hold publishers back, now.
    pub subscribers_congested: u64,
    /// Publishers with acknowledgements held back, now.
    pub publishers_held: u64,
    /// Of those, publishers whose sockets are not read, now.
    pub publishers_paused: u64,
    /// Acknowledgements (PUBACK, PUBREC) held back so far.
    pub acks_held: u64,
    /// Time publishers have spent with acknowledgements held back, summed over publishers, in
    /// milliseconds (spans still running count up to the last time they changed).
    pub held_millis: u64,
    /// Time publishers' sockets have spent unread, summed likewise, in milliseconds.
    pub paused_millis: u64,
    /// Bytes of messages held for receivers, now ([`crate::Message::charge`]).
    pub held_bytes: u64,
    /// Retained messages held, now.
    pub retained: u64,
    /// Bytes of retained messages held (topics and payloads), now.
    pub retained_bytes: u64,
    /// Retained PUBLISH packets refused (or, for wills, not retained) because storing them
    /// would exceed `retained_count_max` or `retained_bytes_max`.
    pub retained_refused: u64,
    /// Subscriptions sent fewer retained messages than matched, for
    /// `retained_per_subscription_max`.
    pub retained_capped: u64,
    /// Subscriptions held, now.
    pub subscriptions: u64,
    /// Connections refused or closed for a protocol violation.
    pub protocol_errors: u64,
    /// PUBLISH packets (and wills) the authorizer refused.
    pub publish_denied: u64,
    /// SUBSCRIBE filters the authorizer refused.
    pub subscribe_denied: u64,
    /// CONNECTs refused for bad or missing credentials or authorisation.
    pub auth_failures: u64,
    /// Slow credential checks handed to the runtime to run.
    pub auth_checks_run: u64,
    /// Slow credential checks dropped unrun because their connection closed first.
    pub auth_checks_skipped: u64,
    /// CONNECTs refused with Server busy because the queue of checks was full.
    pub auth_queue_full: u64,
    /// CONNECTs refused with Server busy, unchecked, after too many failed logins from their
    /// address or for their user name.
    pub logins_throttled: u64,
    /// Messages not kept in history because their filter's `max_topics` was reached.
    pub history_refused: u64,
}

impl Stats {
    /// Counts a PUBLISH received (or a message an edge published for a client).
    pub(crate) fn received(&mut self, qos: tern_codec::QoS) {
        self.publish_received += 1;
        self.publish_received_by_qos[qos as usize] += 1;
    }

    /// Counts a PUBLISH sent.
    pub(crate) fn sent(&mut self, qos: tern_codec::QoS) {
        self.publish_sent += 1;
        self.publish_sent_by_qos[qos as usize] += 1;
    }
}
