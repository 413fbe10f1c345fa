//! What the broker core allows and advertises: every limit named, with its unit last.

use tern_codec::QoS;

use crate::tree_view::TreeConfig;

/// Broker limits and capabilities. The defaults suit a production broker on a small machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest packet accepted from a client, in bytes; advertised in CONNACK (MQTT 5).
    pub packet_size_max_bytes: u32,
    /// QoS 1/2 publishes a client may have unacknowledged towards the broker (Receive Maximum).
    pub receive_maximum: u16,
    /// Cap on QoS 1/2 publishes in flight towards one client, whatever its Receive Maximum;
    /// the window of a client that states none (docs/design/backpressure.md, "The in-flight
    /// window").
    pub inflight_count_max: u16,
    /// Bytes of QoS 1/2 messages in flight towards one client ([`crate::Message::charge`]);
    /// past it further deliveries wait in the session queue. The first always goes.
    pub inflight_bytes_max: usize,
    /// Messages waiting per session (offline, or beyond the in-flight window). Past it the
    /// newest is dropped, except for a connected subscriber under [`Overload::Backpressure`],
    /// whose publishers are held instead (docs/design/backpressure.md).
    pub queued_count_max: usize,
    /// Bytes of messages waiting per session ([`crate::Message::charge`]), with the same rule.
    pub queued_bytes_max: usize,
    /// What a connected subscriber whose queue reaches its limits does to its publishers.
    pub overload: Overload,
    /// With [`Overload::Backpressure`]: publishers held for a subscriber are let go once its
    /// queue is back to this share (in per cent) of `queued_count_max` and `queued_bytes_max`.
    pub overload_low_water_percent: u8,
    /// With [`Overload::Backpressure`]: a subscriber holding publishers that acknowledges
    /// nothing for this long (milliseconds) is stalled, and cut loose per `stalled_subscriber`.
    /// The runtime gives a socket that takes nothing the same time.
    pub stall_timeout_millis: u64,
    /// What happens to a subscriber cut loose: stalled, or more than twice `queued_bytes_max`
    /// behind.
    pub stalled_subscriber: StalledSubscriber,
    /// QoS 0 packets waiting to be written to one connection before new ones are dropped.
    pub outbox_qos0_count_max: usize,
    /// Bytes of QoS 0 messages waiting to be written to one connection before new ones are
    /// dropped ([`crate::Message::charge`]).
    pub outbox_qos0_bytes_max: usize,
    /// Bytes of messages the broker holds for all receivers together (the sum of the charges
    /// above); past it QoS 0 deliveries are dropped and the largest consumers are cut loose
    /// (docs/design/backpressure.md). 0 means no limit.
    pub memory_max_bytes: usize,
    /// Highest topic alias accepted from a client (MQTT 5); 0 disables aliases.
    pub topic_alias_max: u16,
    /// Topic aliases the broker sets towards an MQTT 5 client that accepts them (its Topic Alias
    /// Maximum in CONNECT, which also bounds them); 0 disables them.
    pub topic_alias_out_max: u16,
    /// Longest session expiry granted, in seconds.
    pub session_expiry_max_secs: u32,
    /// Longest keep alive accepted, in seconds; a client asking more (or 0) is told this value
    /// through Server Keep Alive. 0 means no cap.
    pub keep_alive_max_secs: u16,
    /// Highest QoS accepted for publishes and granted to subscriptions.
    pub qos_max: QoS,
    /// Whether retained messages are supported.
    pub retain_available: bool,
    /// Retained messages held at most (topics); a retained PUBLISH to a new topic past it is
    /// refused (MQTT 5: 0x97 Quota exceeded). 0 means no limit.
    pub retained_count_max: usize,
    /// Bytes of retained messages held at most (topic and payload of each); a retained PUBLISH
    /// that would grow them past it is refused (MQTT 5: 0x97 Quota exceeded). 0 means no limit.
    pub retained_bytes_max: usize,
    /// Retained messages sent at most for one subscription when it is made; the rest are left
    /// out, counted, and an MQTT 5 SUBACK names the filter. 0 means no cap: every matching
    /// retained message is sent, paced by the subscriber.
    pub retained_per_subscription_max: usize,
    /// Subscriptions one session may hold.
    pub subscriptions_per_session_max: usize,
    /// Longest topic name or filter, in bytes.
    pub topic_length_max_bytes: usize,
    /// Most levels in a topic name or filter.
    pub topic_levels_max: usize,
    /// Time a new connection has to send CONNECT, in milliseconds.
    pub connect_timeout_millis: u64,
    /// PUBLISH packets one client may send per second; past it the connection is closed
    /// (MQTT 5: DISCONNECT 0x96 Message rate too high). 0 means no limit.
    pub publish_rate_per_client_max: u32,
    /// Slow credential checks (password hashes) waiting for a thread; a CONNECT that would
    /// need one more is refused with Server busy (3.1.1: 0x03 Server unavailable).
    pub auth_checks_queued_max: usize,
    /// Failed logins from one source address (IPv6: one /64) within a minute before further
    /// CONNECTs from it are refused unchecked, for 10 s, doubling with each block up to 15
    /// minutes. 0 means no limit.
    pub login_failures_per_address_max: u32,
    /// The same for one user name.
    pub login_failures_per_user_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            packet_size_max_bytes: 1024 * 1024,
            receive_maximum: 1024,
            inflight_count_max: 8192,
            inflight_bytes_max: 16 * 1024 * 1024,
            queued_count_max: 10_000,
            queued_bytes_max: 64 * 1024 * 1024,
            overload: Overload::Backpressure,
            overload_low_water_percent: 50,
            stall_timeout_millis: 30_000,
            stalled_subscriber: StalledSubscriber::Disconnect,
            outbox_qos0_count_max: 10_000,
            outbox_qos0_bytes_max: 16 * 1024 * 1024,
            memory_max_bytes: 1024 * 1024 * 1024,
            topic_alias_max: 64,
            topic_alias_out_max: 64,
            session_expiry_max_secs: u32::MAX,
            keep_alive_max_secs: 0,
            qos_max: QoS::ExactlyOnce,
            retain_available: true,
            retained_count_max: 1_000_000,
            retained_bytes_max: 1024 * 1024 * 1024,
            retained_per_subscription_max: 0,
            subscriptions_per_session_max: 10_000,
            topic_length_max_bytes: usize::from(u16::MAX),
            topic_levels_max: 201,
            connect_timeout_millis: 10_000,
            publish_rate_per_client_max: 0,
            auth_checks_queued_max: 256,
            login_failures_per_address_max: 20,
            login_failures_per_user_max: 10,
        }
    }
}

/// What happens when a connected subscriber's queue reaches `queued_count_max` or
/// `queued_bytes_max` (docs/design/backpressure.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overload {
    /// The message is still queued, and the acknowledgements (PUBACK, PUBREC) of the publishers
    /// feeding that subscriber are held back until its queue drains, so their own in-flight
    /// windows stop them; a publisher past its window is no longer read. Nothing acknowledged
    /// is lost to a subscriber that keeps up, however slowly.
    #[default]
    Backpressure,
    /// The newest message for that subscriber is dropped (counted, logged) and its publishers
    /// acknowledged as usual: publishers never wait for a subscriber.
    Drop,
}

/// What happens to a subscriber cut loose for holding its publishers back without progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StalledSubscriber {
    /// It is disconnected (MQTT 5: DISCONNECT 0x97 Quota exceeded); its session stays, per
    /// its expiry, with what was queued for it, as after a lost connection.
    #[default]
    Disconnect,
    /// It stays connected, holds no publisher, and its newest messages are dropped past its
    /// queue limits, until it has caught up to the low-water mark.
    Drop,
}

/// Everything the core needs to know about its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Limits and capabilities.
    pub limits: Limits,
    /// Prefix of client identifiers the broker assigns.
    pub assigned_id_prefix: String,
    /// Whether the broker emits [`crate::store::StoreOp`]s for a durable store to apply.
    pub persistence: bool,
    /// Whether the broker is a node of a cluster: it emits [`crate::ClusterOp`]s for the
    /// other nodes, routes its QoS 1/2 messages only once they come back replicated, and
    /// refuses shared subscriptions (not yet spread across nodes).
    pub cluster: bool,
    /// How `$tree/` subscriptions batch their deltas.
    pub trees: TreeConfig,
    /// What a client gets when its client identifier names a session that belongs to another
    /// identity.
    pub other_identity: OtherIdentity,
    /// Where the device fleet's topics live (`/<owner>/<udid>` unless configured).
    pub fleet: crate::fleet::FleetTopics,
    /// Topics whose last messages are kept for mailboxes to replay (`[[history]]`).
    pub history: Vec<crate::history::HistoryConfig>,
    /// Queue limits of mailboxes by client identifier (`[[http.mailbox_class]]`); a mailbox
    /// of no class has the session limits of [`Limits`].
    pub mailbox_classes: Vec<crate::mailbox::MailboxClass>,
    /// Wall-clock milliseconds since the Unix epoch at the broker's `Time` zero, for the
    /// timestamps it writes into payloads (the fleet's registration answers); 0 if unknown.
    pub wall_clock_epoch_ms: u64,
}

/// What happens when a client connects with the client identifier of a session that another
/// identity created (another user, another method, another owner's device). Either way the
/// old session never passes to the newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtherIdentity {
    /// CONNACK 0x87 Not authorized (3.1.1: 0x05); the session and its connection, if any,
    /// are left as they were.
    #[default]
    Refuse,
    /// The old session (and its connection) ends, as with clean start, and the newcomer starts
    /// a fresh one: the client identifier goes to whoever connects last.
    Fresh,
}
