//! The broker as a deterministic state machine.
//!
//! The runtime feeds it events (a connection opened, a packet arrived, a connection was lost,
//! time passed) with the current [`Time`], and polls it for packets to write, connections to
//! wake and events to log. It never touches a socket, a clock or a thread, so every protocol
//! rule is testable by calling these methods directly.

mod access;
pub mod admin;
mod auth;
mod cluster;
mod cluster_session;
mod connect;
mod fleet;
mod fleet_fence;
pub mod fleet_notify;
pub mod fleet_register;
mod fleet_status;
mod flow;
pub mod history;
pub mod kv;
mod lifecycle;
pub mod mailbox;
mod mailbox_queue;
pub mod memory;
mod publish;
mod qos2;
pub mod request;
pub(crate) mod retained_feed;
mod retained_store;
mod subscribe;
pub mod sys;
pub mod tap;
mod tree_view;
mod verify;

use rustc_hash::FxHashMap;
use std::collections::{BTreeSet, HashMap, VecDeque};

use tern_codec::{
    ConnAck, ConnAckProperties, DecodeError, Disconnect, EncodeError, MqttString, Packet,
    PacketType, ProtocolVersion, ReasonCode,
};

use crate::alias::{OutboundAliases, TopicAlias};
use crate::auth::{AllowAnonymous, Authenticator};
use crate::authz::{AllowAll, Authorizer};
use crate::connection::{Connection, ConnectionInfo, OutgoingPublish, Phase, Transmit};
use crate::events::{CloseReason, Event, Stats};
use crate::session::{OutgoingState, Session, EXPIRY_NEVER};
use crate::store::{DeliveryStage, SessionRecord, Snapshot, StoreOp, StoredSession};
use crate::tree::{Match, SubscriptionTree};
use crate::types::{ConnectionId, SessionKey, SharedMessage, Time};
use crate::{config::Config, throttle::LoginThrottle, tree_view::TreeViews};

/// Timers the broker keeps for sessions without a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    /// Publish the session's will.
    Will,
    /// End the session.
    SessionExpiry,
}

/// Outbox capacity (in packets) a drained connection gives back rather than keeps.
const OUTBOX_KEEP_MAX: usize = 16;

/// Small drained outboxes kept for the next connection that gets output, so a connection that
/// gets one message at a time does not allocate and free its outbox for every message, and an
/// idle one still holds none.
const SPARE_OUTBOXES_MAX: usize = 64;

/// The broker state machine.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    /// Boxed: a hash table keeps spare slots, and a spare slot costs the value's size. Hashed
    /// with Fx: the keys are our own counters, and SipHash was a tenth of a fan-out profile.
    connections: FxHashMap<ConnectionId, Box<Connection>>,
    sessions: Vec<Option<Session>>,
    free_session_slots: Vec<u32>,
    session_ids: HashMap<MqttString, SessionKey>,
    subscriptions: SubscriptionTree<SessionKey>,
    retained: retained_store::RetainedStore,
    /// Will and expiry deadlines; an entry is stale once the session's own field disagrees.
    timers: BTreeSet<(Time, SessionKey, TimerKind)>,
    /// Connections with something new to write, each listed once.
    woken: Vec<ConnectionId>,
    events: VecDeque<Event>,
    stats: Stats,
    next_message_id: u64,
    next_assigned_id: u64,
    started_at: Time,
    /// Connections whose next reply would exceed their Maximum Packet Size, to be closed.
    oversized: Vec<ConnectionId>,
    /// Changes for the durable store, when persistence is on.
    store_ops: VecDeque<StoreOp>,
    /// When queues of disconnected sessions are next swept for expired messages.
    next_queue_sweep: Time,
    /// Decides CONNECT credentials and AUTH exchanges.
    authenticator: Box<dyn Authenticator>,
    /// Compiles what each client may publish and subscribe to.
    authorizer: Box<dyn Authorizer>,
    /// Slow credential checks waiting for the runtime to run them off the broker thread.
    auth_queue: verify::AuthQueue,
    /// Failed logins per source address and per user name.
    throttle: LoginThrottle,
    /// Reused buffer for subscription matches, so routing does not allocate.
    scratch: Vec<Match<SessionKey>>,
    /// Drained outboxes given back by their connections, for reuse (at most
    /// `SPARE_OUTBOXES_MAX`, each at most `OUTBOX_KEEP_MAX` packets).
    spare_outboxes: Vec<VecDeque<Transmit>>,
    /// `$tree/` subscriptions: their pending deltas and deadlines.
    tree_views: TreeViews,
    /// Bytes charged for every message held for receivers (see `memory.rs`).
    held_bytes: usize,
    /// Connections of sessions cut loose for the memory limit, to be closed.
    shed_connections: Vec<ConnectionId>,
    /// Flow control: congested subscribers and the publishers they hold (see `flow.rs`).
    flow: flow::FlowControl,
    /// Sessions whose retained messages can go on (see `retained_feed.rs`).
    retained_ready: Vec<SessionKey>,
    /// Reused buffer for the retained messages one step of a feed takes.
    feed_scratch: Vec<(SharedMessage, tern_codec::QoS, Option<u32>)>,
    /// Operations for the other nodes and the interest they hear of (`Config::cluster`).
    cluster: cluster::ClusterState,
    /// Watched mailboxes that had a delivery queued (see `mailbox.rs`).
    ready_mailboxes: Vec<MqttString>,
    /// The last messages of the topics `[[history]]` names (see `history.rs`).
    history: crate::history::History,
    /// Deletions of retained messages, for key/value listings (see `kv.rs`).
    tombstones: kv::Tombstones,
    /// Client identifiers refused at CONNECT and in requests (see `admin.rs`).
    bans: admin::Bans,
    /// The device fleet's owners and devices (see `fleet.rs`).
    fleet: crate::fleet::Registry,
    /// What an observer edge watches, and what waits for it (see `tap.rs`).
    tap: tap::Tap,
}

impl Broker {
    /// A broker with no connections, sessions or retained messages.
    pub fn new(config: Config, now: Time) -> Self {
        let throttle = LoginThrottle::new(
            config.limits.login_failures_per_address_max,
            config.limits.login_failures_per_user_max,
        );
        Self {
            history: crate::history::History::new(config.history.clone()),
            tombstones: kv::Tombstones::default(),
            config,
            connections: FxHashMap::default(),
            sessions: Vec::new(),
            free_session_slots: Vec::new(),
            session_ids: HashMap::new(),
            subscriptions: SubscriptionTree::new(),
            retained: retained_store::RetainedStore::default(),
            timers: BTreeSet::new(),
            woken: Vec::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_message_id: 1,
            next_assigned_id: 1,
            started_at: now,
            store_ops: VecDeque::new(),
            next_queue_sweep: now,
            oversized: Vec::new(),
            authenticator: Box::new(AllowAnonymous),
            authorizer: Box::new(AllowAll),
            auth_queue: verify::AuthQueue::default(),
            throttle,
            scratch: Vec::new(),
            spare_outboxes: Vec::new(),
            tree_views: TreeViews::default(),
            held_bytes: 0,
            shed_connections: Vec::new(),
            flow: flow::FlowControl::default(),
            retained_ready: Vec::new(),
            feed_scratch: Vec::new(),
            cluster: cluster::ClusterState::default(),
            ready_mailboxes: Vec::new(),
            bans: admin::Bans::default(),
            fleet: crate::fleet::Registry::default(),
            tap: tap::Tap::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters since start.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.retained = self.retained.len() as u64;
        stats.retained_bytes = self.retained.bytes() as u64;
        stats.subscriptions = self.subscriptions.len() as u64;
        stats.sessions = (self.sessions.len() - self.free_session_slots.len()) as u64;
        stats.held_bytes = self.held_bytes as u64;
        self.add_flow_stats(&mut stats, None);
        stats
    }

    /// Adds the flow-control gauges and totals to `stats`; with `now`, the spans of holding
    /// and pausing still running count up to it.
    fn add_flow_stats(&self, stats: &mut Stats, now: Option<Time>) {
        let flow = self.flow_stats(now);
        stats.subscribers_congested = flow.congested;
        stats.publishers_held = flow.held;
        stats.publishers_paused = flow.paused;
        stats.held_millis = flow.held_millis;
        stats.paused_millis = flow.paused_millis;
    }

    /// Installs the authentication hook (the default lets everyone in without enhanced
    /// authentication).
    pub fn set_authenticator(&mut self, authenticator: Box<dyn Authenticator>) {
        self.authenticator = authenticator;
    }

    /// Installs the authorisation hook (the default allows everything). Clients already
    /// connected keep the permissions they were given.
    pub fn set_authorizer(&mut self, authorizer: Box<dyn Authorizer>) {
        self.authorizer = authorizer;
    }

    /// Tells the core which authentication profile applies to `id` (the runtime's listener
    /// configuration); it reaches the authenticator as [`crate::AuthRequest::profile`].
    pub fn set_auth_profile(&mut self, id: ConnectionId, profile: usize) {
        if let Some(connection) = self.connections.get_mut(&id) {
            connection.auth_profile = profile;
        }
    }

    /// A new network connection has opened.
    pub fn connection_opened(&mut self, id: ConnectionId, now: Time) {
        self.connection_opened_with(id, ConnectionInfo::default(), now);
    }

    /// A new network connection has opened, with what its transport knows of the client
    /// (a verified certificate identity, for mutual TLS).
    pub fn connection_opened_with(&mut self, id: ConnectionId, info: ConnectionInfo, now: Time) {
        let mut connection = Connection::new(now);
        connection.info = info;
        let previous = self.connections.insert(id, Box::new(connection));
        debug_assert!(previous.is_none(), "connection ids are unique");
    }

    /// A complete packet arrived on `id`.
    pub fn handle_packet(&mut self, id: ConnectionId, packet: Packet, now: Time) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        connection.last_activity = now;
        match connection.phase {
            Phase::Closing => {}
            Phase::AwaitingConnect => match packet {
                Packet::Connect(connect) => self.handle_connect(id, *connect, now),
                // The first packet must be CONNECT (MQTT-3.1.0-1): close without a reply.
                _ => {
                    let reason = CloseReason::ProtocolViolation(
                        ReasonCode::ProtocolError,
                        "first packet was not CONNECT",
                    );
                    self.refuse(id, reason, now);
                }
            },
            Phase::Authenticating => self.handle_authenticating(id, packet, now),
            Phase::Verifying => self.hold(id, packet, now),
            Phase::Active(session) => self.handle_active(id, session, packet, now),
        }
        self.close_oversized(now);
    }

    /// Bytes on `id` failed to decode: answer with the reason code the error names and close.
    pub fn handle_decode_error(&mut self, id: ConnectionId, error: DecodeError, now: Time) {
        let Some(connection) = self.connections.get(&id) else {
            return;
        };
        match connection.phase {
            Phase::AwaitingConnect => self.refuse_undecodable_connect(id, error, now),
            Phase::Authenticating | Phase::Verifying => {
                let code = error.reason_code();
                self.close(id, CloseReason::Malformed(error), Some(code), now);
            }
            Phase::Active(_) => {
                // Only DISCONNECT reason codes may be sent (MQTT-3.14.2-1): a CONNECT of an
                // unsupported level is, after the first, a second CONNECT (MQTT-3.1.0-2).
                let code = Some(error.reason_code())
                    .filter(|code| code.allowed_in(PacketType::Disconnect))
                    .unwrap_or(ReasonCode::ProtocolError);
                self.close(id, CloseReason::Malformed(error), Some(code), now);
            }
            Phase::Closing => {}
        }
        self.close_oversized(now);
    }

    /// Tells the core which protocol level a CONNECT that is about to fail decoding asked for
    /// (see `tern_codec::connect_protocol_level`), so the refusal can be in the client's version.
    pub fn hint_protocol_level(&mut self, id: ConnectionId, level: u8) {
        if let Some(connection) = self.connections.get_mut(&id) {
            if connection.phase == Phase::AwaitingConnect {
                connection.level_hint = Some(level);
            }
        }
    }

    /// The socket of `id` closed or failed, or the runtime finished closing it.
    pub fn connection_lost(&mut self, id: ConnectionId, now: Time) {
        let Some(connection) = self.connections.get(&id) else {
            return;
        };
        if matches!(connection.phase, Phase::Active(_)) {
            self.close(id, CloseReason::ConnectionLost, None, now);
        }
        self.drop_auth_check(id);
        if let Some(connection) = self.connections.remove(&id) {
            self.held_bytes -= connection.outbox_qos0_bytes;
        }
        self.authenticator.connection_closed(id);
        self.close_oversized(now);
    }

    /// Takes the next thing to do on `id`'s socket.
    pub fn poll_transmit(&mut self, id: ConnectionId) -> Option<Transmit> {
        let connection = self.connections.get_mut(&id)?;
        let Some(transmit) = connection.outbox.pop_front() else {
            // Drained. A packet is a few hundred bytes, so even a small outbox kept by every
            // idle connection adds up: give it back (a busy connection's large one is kept).
            if connection.outbox.capacity() <= OUTBOX_KEEP_MAX {
                let drained = std::mem::take(&mut connection.outbox);
                if drained.capacity() > 0 && self.spare_outboxes.len() < SPARE_OUTBOXES_MAX {
                    self.spare_outboxes.push(drained);
                }
            }
            return None;
        };
        let mut transmit = transmit;
        if let Transmit::Publish(publish) = &mut transmit {
            self.stats.sent(publish.qos);
            fleet_status::count_sent(&mut self.fleet, connection);
            // A sign of progress for flow control's stall check.
            connection.publishes_taken = connection.publishes_taken.wrapping_add(1);
            if publish.packet_id.is_none() {
                let bytes = publish.message.charge();
                connection.outbox_qos0 -= 1;
                connection.outbox_qos0_bytes -= bytes;
                self.held_bytes -= bytes;
                retained_feed::outbox_taken(&mut self.retained_ready, connection);
            }
            // Chosen here, as the PUBLISH leaves for the socket in the order it is written: an
            // alias is set by the first PUBLISH on the wire that carries it, whatever was queued.
            let (version, size_max) = (connection.version, connection.client_packet_size_max);
            if let Some(aliases) = connection.aliases_out.as_deref_mut() {
                alias_topic(aliases, version, size_max, publish);
            }
        }
        Some(transmit)
    }

    /// The next thing to do on `id`'s socket, left in place.
    pub fn peek_transmit(&self, id: ConnectionId) -> Option<&Transmit> {
        self.connections.get(&id)?.outbox.front()
    }

    /// Connections that have something new to write since the last call; each appears once.
    pub fn take_woken(&mut self, out: &mut Vec<ConnectionId>) {
        for id in self.woken.drain(..) {
            if let Some(connection) = self.connections.get_mut(&id) {
                connection.woken = false;
                out.push(id);
            }
        }
    }

    /// The next change for the durable store (only with `Config::persistence`). The runtime
    /// applies them in order and writes the packets produced alongside only once they are
    /// durable.
    pub fn poll_store_op(&mut self) -> Option<StoreOp> {
        self.store_ops.pop_front()
    }

    /// The protocol level `id` speaks, for encoding its packets.
    pub fn protocol_version(&self, id: ConnectionId) -> Option<ProtocolVersion> {
        self.connections.get(&id).map(|c| c.version)
    }

    /// Transmits waiting in `id`'s outbox. The runtime uses it to tell which packets were
    /// produced together with store operations and must wait until those are durable.
    pub fn pending_transmits(&self, id: ConnectionId) -> usize {
        self.connections.get(&id).map_or(0, |c| c.outbox.len())
    }

    /// Number of open connections, in any phase.
    pub fn connection_count(&self) -> usize {
        self.connections.len()
    }

    /// Tells every client the server is going away (MQTT 5: DISCONNECT 0x8B) and closes it.
    pub fn shutdown(&mut self, now: Time) {
        let mut ids: Vec<ConnectionId> = self.connections.keys().copied().collect();
        // In connection order, so that wills go out in the same order on every run.
        ids.sort_unstable();
        for id in ids {
            self.close(
                id,
                CloseReason::ServerShutdown,
                Some(ReasonCode::ServerShuttingDown),
                now,
            );
        }
        self.close_oversized(now);
    }

    // ---- internals shared by the submodules ----

    fn session(&self, key: SessionKey) -> &Session {
        match self.sessions.get(key.0 as usize) {
            Some(Some(session)) => session,
            _ => unreachable!("session keys held by the broker are live"),
        }
    }

    fn session_mut(&mut self, key: SessionKey) -> &mut Session {
        match self.sessions.get_mut(key.0 as usize) {
            Some(Some(session)) => session,
            _ => unreachable!("session keys held by the broker are live"),
        }
    }

    fn insert_session(&mut self, session: Session) -> SessionKey {
        let client_id = session.client_id.clone();
        let key = match self.free_session_slots.pop() {
            Some(slot) => {
                self.sessions[slot as usize] = Some(session);
                SessionKey(slot)
            }
            None => {
                let slot = u32::try_from(self.sessions.len()).unwrap_or(u32::MAX);
                self.sessions.push(Some(session));
                SessionKey(slot)
            }
        };
        self.session_ids.insert(client_id, key);
        key
    }

    /// Queues a packet for `id` and marks the connection to be woken.
    fn send(&mut self, id: ConnectionId, packet: Packet) {
        // Nothing larger than the client's Maximum Packet Size may reach it (MQTT-3.1.2-24).
        // PUBLISH packets are checked (and dropped) by their callers; any other packet that
        // does not fit cannot be left out without breaking the exchange, so the connection
        // is closed once the current input is handled.
        let oversized = self.connections.get(&id).is_some_and(|connection| {
            connection.phase != Phase::Closing && !fits(connection, &packet)
        });
        if oversized {
            self.oversized.push(id);
            return;
        }
        self.queue(id, Transmit::Packet(Box::new(packet)));
    }

    /// [`Broker::send`], at `position` in the outbox rather than at its end: where the packet
    /// would have gone had it been sent before what was queued since.
    fn send_at(&mut self, id: ConnectionId, packet: Packet, position: usize) {
        let end = self.pending_transmits(id);
        self.send(id, packet);
        if let Some(connection) = self.connections.get_mut(&id) {
            if position < end && connection.outbox.len() == end + 1 {
                if let Some(sent) = connection.outbox.pop_back() {
                    connection.outbox.insert(position, sent);
                }
            }
        }
    }

    /// Queues a PUBLISH its caller has checked against the client's Maximum Packet Size.
    fn send_publish(&mut self, id: ConnectionId, publish: OutgoingPublish) {
        self.queue(id, Transmit::Publish(publish));
    }

    /// Puts `transmit` in the outbox of `id` (unless it is closing) and notes it for waking.
    fn queue(&mut self, id: ConnectionId, transmit: Transmit) {
        if let Some(connection) = self.connections.get_mut(&id) {
            if connection.phase == Phase::Closing {
                return;
            }
            if connection.outbox.capacity() == 0 {
                if let Some(spare) = self.spare_outboxes.pop() {
                    connection.outbox = spare;
                }
            }
            connection.outbox.push_back(transmit);
            wake(&mut self.woken, id, connection);
        }
    }

    /// Closes the connections whose next reply would have exceeded their Maximum Packet Size,
    /// and those of sessions cut loose for the memory limit: after the input that decided it,
    /// so no session goes while a message is being routed.
    fn close_oversized(&mut self, now: Time) {
        // A will published by one of these closes may cut another session loose.
        loop {
            self.close_shed(now);
            self.close_cut_loose(now);
            let Some(id) = self.oversized.pop() else {
                return;
            };
            let reason = CloseReason::ProtocolViolation(
                ReasonCode::ImplementationSpecificError,
                "a reply would exceed the client's Maximum Packet Size",
            );
            self.close(
                id,
                reason,
                Some(ReasonCode::ImplementationSpecificError),
                now,
            );
        }
    }

    /// Closes `id`: optionally sends DISCONNECT (MQTT 5 only), detaches its session and queues
    /// the close. Idempotent.
    fn close(
        &mut self,
        id: ConnectionId,
        reason: CloseReason,
        disconnect: Option<ReasonCode>,
        now: Time,
    ) {
        let Some(connection) = self.connections.get_mut(&id) else {
            return;
        };
        let session = match connection.phase {
            Phase::Closing => return,
            Phase::Active(session) => Some(session),
            Phase::AwaitingConnect | Phase::Authenticating | Phase::Verifying => None,
        };
        if let (Some(code), ProtocolVersion::V5) = (disconnect, connection.version) {
            // Before CONNACK only CONNACK may say why (MQTT-3.2.0-1); after it, DISCONNECT.
            let farewell = match connection.phase {
                Phase::Active(_) => Some(Packet::Disconnect(Disconnect::new(code))),
                Phase::Authenticating | Phase::Verifying => {
                    let code = Some(code)
                        .filter(|c| c.allowed_in(PacketType::ConnAck))
                        .unwrap_or(ReasonCode::ProtocolError);
                    let connack = ConnAck {
                        session_present: false,
                        reason_code: code,
                        properties: ConnAckProperties::default(),
                    };
                    Some(Packet::ConnAck(Box::new(connack)))
                }
                _ => None,
            };
            if let Some(packet) = farewell.filter(|p| fits(connection, p)) {
                connection
                    .outbox
                    .push_back(Transmit::Packet(Box::new(packet)));
            }
        }
        connection.phase = Phase::Closing;
        connection.outbox.push_back(Transmit::Close);
        wake(&mut self.woken, id, connection);
        // Acknowledgements held for it go with it: its client sends those PUBLISH packets
        // again when it reconnects.
        self.end_hold(id, now);
        self.drop_auth_check(id);
        if matches!(
            reason,
            CloseReason::ProtocolViolation(..) | CloseReason::Malformed(_)
        ) {
            self.stats.protocol_errors += 1;
        }
        match session {
            Some(key) => self.detach(key, id, reason, now),
            None => self.events.push_back(Event::Refused {
                connection: id,
                reason,
            }),
        }
    }

    /// Closes a connection that never completed CONNECT, with no reply.
    fn refuse(&mut self, id: ConnectionId, reason: CloseReason, now: Time) {
        self.close(id, reason, None, now);
    }

    /// Records a change for the durable store.
    fn persist(&mut self, op: StoreOp) {
        if self.config.persistence {
            self.store_ops.push_back(op);
        }
    }

    /// Records a change to the deliveries of `key`, if the session outlives its connection.
    fn persist_for(&mut self, key: SessionKey, op: impl FnOnce(MqttString) -> StoreOp) {
        if self.config.persistence {
            let session = self.session(key);
            if session.expiry_secs != 0 {
                let op = op(session.client_id.clone());
                self.store_ops.push_back(op);
            }
        }
    }

    /// Records the session's durable record (set if it outlives its connection, else removed),
    /// and, on a cluster node, where the other nodes read it.
    fn save_session(&mut self, key: SessionKey) {
        self.cluster_session_saved(key);
        self.store_session(key);
    }

    /// [`Broker::save_session`] for the store alone.
    fn store_session(&mut self, key: SessionKey) {
        if !self.config.persistence {
            return;
        }
        let session = self.session_mut(key);
        let op = if session.expiry_secs == 0 {
            if !session.persisted {
                return;
            }
            session.persisted = false;
            StoreOp::SessionRemove(session.client_id.clone())
        } else {
            session.persisted = true;
            StoreOp::SessionSet(session_record(session))
        };
        self.store_ops.push_back(op);
    }

    fn uptime_secs(&self, now: Time) -> u64 {
        now.as_millis().saturating_sub(self.started_at.as_millis()) / 1000
    }
}

/// The durable part of `session`.
fn session_record(session: &Session) -> SessionRecord {
    SessionRecord {
        client_id: session.client_id.clone(),
        owner: session.owner.clone(),
        expiry_secs: session.expiry_secs,
        subscriptions: session
            .subscriptions
            .iter()
            .map(|(filter, info)| (filter.clone(), *info))
            .collect(),
        will: session.will.as_deref().cloned(),
        expires_at: session.expires_at,
        will_at: session.will_at,
        next_seq: session.next_seq(),
    }
}

/// Whether `packet` fits the client's Maximum Packet Size.
fn fits(connection: &Connection, packet: &Packet) -> bool {
    within_packet_size(connection, |version| packet.encoded_len(version))
}

/// Whether a packet of `encoded_len` at the connection's level fits its client's Maximum
/// Packet Size (sized only when the client set one).
fn within_packet_size(
    connection: &Connection,
    encoded_len: impl FnOnce(ProtocolVersion) -> Result<usize, EncodeError>,
) -> bool {
    connection.client_packet_size_max == u32::MAX
        || encoded_len(connection.version)
            .is_ok_and(|len| len <= connection.client_packet_size_max as usize)
}

/// Names the topic of `publish` by alias on a connection whose client accepts them: by the alias
/// it has, or setting the next one if the PUBLISH that sets it (three bytes longer) still fits
/// the client's Maximum Packet Size; else by the topic alone.
fn alias_topic(
    aliases: &mut OutboundAliases,
    version: ProtocolVersion,
    size_max: u32,
    publish: &mut OutgoingPublish,
) {
    let Some(alias) = aliases.lookup(&publish.message.topic) else {
        return;
    };
    publish.set_topic_alias(Some(alias));
    if let TopicAlias::Set(value) = alias {
        let fits = size_max == u32::MAX
            || (publish.view().encoded_len(version)).is_ok_and(|len| len <= size_max as usize);
        if fits {
            aliases.record(&publish.message.topic, value);
        } else {
            publish.set_topic_alias(None);
        }
    }
}

/// Marks `connection` to be woken once, however many packets are queued before the runtime looks.
fn wake(woken: &mut Vec<ConnectionId>, id: ConnectionId, connection: &mut Connection) {
    if !connection.woken {
        connection.woken = true;
        woken.push(id);
    }
}

impl Broker {
    /// A broker rebuilt from what a durable store kept: retained messages, and sessions with
    /// their subscriptions, queued and in-flight deliveries, incoming QoS 2 identifiers and
    /// wills. Every recovered session counts as disconnected at `now`: its will is re-armed
    /// (the broker stopped without the client's DISCONNECT) and its expiry starts again.
    pub fn restore(config: Config, now: Time, snapshot: Snapshot) -> Self {
        let mut broker = Self::new(config, now);
        let mut last_message_id =
            broker.restore_retained(snapshot.retained, snapshot.kv_horizon, now);
        broker.fleet_restore(snapshot.fleet_owners, snapshot.fleet_devices);
        broker.firmware_restore(snapshot.fleet_registrations, snapshot.firmware);
        broker.fleet_notify_restore(snapshot.fleet_notifications);
        for stored in snapshot.sessions {
            for (delivery, _) in &stored.deliveries {
                last_message_id = last_message_id.max(delivery.message.id);
            }
            broker.restore_session(stored, now);
        }
        last_message_id = last_message_id.max(broker.restore_history(snapshot.history, now));
        broker.fleet_restored(now);
        // Message identities stay unique across the restart (retained expiry relies on them).
        broker.next_message_id = last_message_id + 1;
        // Wills and sessions whose time came while the broker was down go now.
        broker.run_due_timers(now);
        broker
    }

    fn restore_session(&mut self, stored: StoredSession, now: Time) {
        let record = stored.record;
        let mut session = Session::new(record.client_id, ProtocolVersion::V5);
        session.owner = record.owner;
        session.expiry_secs = record.expiry_secs;
        session.persisted = true;
        session.will = record.will.map(Box::new);
        session.raise_next_seq(record.next_seq);
        for packet_id in stored.incoming_qos2 {
            session.incoming_qos2.insert(packet_id);
        }
        let mut expired = Vec::new();
        for (delivery, stage) in stored.deliveries {
            match stage {
                // Not yet sent and expired: never delivered (MQTT-3.3.2-5), purged.
                DeliveryStage::Queued if delivery.message.is_expired(now) => {
                    expired.push(delivery.seq);
                }
                DeliveryStage::Queued => session.restore_queued(delivery),
                DeliveryStage::Sent(packet_id) => {
                    let state = match delivery.qos {
                        tern_codec::QoS::ExactlyOnce => OutgoingState::AwaitPubRec,
                        _ => OutgoingState::AwaitPubAck,
                    };
                    session.restore_inflight(packet_id, delivery, state);
                }
                DeliveryStage::Released(packet_id) => {
                    session.restore_inflight(packet_id, delivery, OutgoingState::AwaitPubComp);
                }
                DeliveryStage::Dead => {
                    session.raise_next_seq(delivery.seq + 1);
                    session.mailbox_mut().push_dead(delivery);
                }
            }
        }
        self.held_bytes += session.held_bytes();
        let key = self.insert_session(session);
        for seq in expired {
            self.persist_for(key, |client_id| StoreOp::DeliveryDone { client_id, seq });
        }
        for (filter, info) in record.subscriptions {
            if let Ok(info) = self.index_subscription(key, &filter, info) {
                self.session_mut(key).subscriptions.insert(filter, info);
            }
        }
        // A session that was connected when the broker stopped counts as disconnected now;
        // one that was already disconnected keeps its deadlines.
        let expiry_secs = record.expiry_secs;
        if self.session(key).will.is_some() {
            let at = record.will_at.unwrap_or_else(|| {
                let delay = self.session(key).will.as_ref().map_or(0, |w| w.delay_secs);
                now.plus_secs(delay.min(expiry_secs))
            });
            self.session_mut(key).will_at = Some(at);
            self.timers.insert((at, key, TimerKind::Will));
        }
        let expires_at = match record.expires_at {
            Some(at) => Some(at),
            None if expiry_secs != EXPIRY_NEVER => Some(now.plus_secs(expiry_secs)),
            None => None,
        };
        if let Some(at) = expires_at {
            self.session_mut(key).expires_at = Some(at);
            self.timers.insert((at, key, TimerKind::SessionExpiry));
        }
    }
}
