//! Scenario harness for the broker core: a `Broker` driven by a fake clock, clients whose packets
//! go through the codec both ways (so every packet is one that could cross the wire), and
//! builders for the packets the scenarios send and expect.
#![allow(dead_code)] // Each test file uses part of the harness.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::{Bytes, BytesMut};
use tern_codec::{
    parse_frame, Ack, ConnAck, Connect, ConnectProperties, DecodeError, Disconnect, FilterList,
    MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling,
    SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionList, SubscriptionOptions,
    TopicFilter, TopicName, UnsubAck, Unsubscribe, UnsubscribeProperties, Will, WillProperties,
    PACKET_SIZE_MAX,
};
use tern_core::{
    Broker, ClaimOutcome, ClusterOp, Config, ConnectionId, DropReason, Event, Limits, Stats, Time,
    Transmit,
};

mod fleet;
mod keys;
#[allow(unused_imports)] // Only the fleet scenarios use them.
pub(crate) use fleet::{device, AsFleet, Everything, RulesAllowingAll};
#[allow(unused_imports)] // Only the request and mailbox scenarios use them.
pub(crate) use keys::{key_identity, AsKey};

#[allow(unused_imports)] // V31 only where MQTT 3.1 clients are tested
pub(crate) use ProtocolVersion::{V31, V311, V5};
pub(crate) use QoS::{AtLeastOnce as Q1, AtMostOnce as Q0, ExactlyOnce as Q2};

/// Both protocol levels, for scenarios that hold for each.
pub(crate) const VERSIONS: [ProtocolVersion; 2] = [V311, V5];

/// What a test client asks for in CONNECT.
#[derive(Debug, Clone)]
pub(crate) struct Opts {
    pub(crate) clean_start: bool,
    pub(crate) keep_alive: u16,
    pub(crate) session_expiry: Option<u32>,
    pub(crate) receive_maximum: Option<u16>,
    pub(crate) maximum_packet_size: Option<u32>,
    pub(crate) topic_alias_maximum: Option<u16>,
    pub(crate) will: Option<Will>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            clean_start: true,
            keep_alive: 0,
            session_expiry: None,
            receive_maximum: None,
            maximum_packet_size: None,
            topic_alias_maximum: None,
            will: None,
        }
    }
}

impl Opts {
    /// Clean start (clean session), no keep alive, no session expiry, no will.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Clean Start / Clean Session 0.
    pub(crate) fn resume(mut self) -> Self {
        self.clean_start = false;
        self
    }

    pub(crate) fn keep_alive(mut self, secs: u16) -> Self {
        self.keep_alive = secs;
        self
    }

    /// Session Expiry Interval (MQTT 5).
    pub(crate) fn expiry(mut self, secs: u32) -> Self {
        self.session_expiry = Some(secs);
        self
    }

    pub(crate) fn receive_maximum(mut self, max: u16) -> Self {
        self.receive_maximum = Some(max);
        self
    }

    pub(crate) fn max_packet_size(mut self, max: u32) -> Self {
        self.maximum_packet_size = Some(max);
        self
    }

    /// Topic Alias Maximum (MQTT 5): the broker may send topic aliases up to it.
    pub(crate) fn topic_alias_maximum(mut self, max: u16) -> Self {
        self.topic_alias_maximum = Some(max);
        self
    }

    pub(crate) fn will(mut self, will: Will) -> Self {
        self.will = Some(will);
        self
    }
}

/// A connected test client.
#[derive(Debug, Clone)]
pub(crate) struct TestClient {
    pub(crate) id: ConnectionId,
    pub(crate) version: ProtocolVersion,
    /// The client identifier in force (assigned by the broker when the client sent none).
    pub(crate) client_id: String,
    /// The CONNACK the broker answered with.
    pub(crate) connack: ConnAck,
}

#[derive(Debug, Default)]
struct Wire {
    /// Largest packet the client accepts (its Maximum Packet Size).
    packet_size_max: Option<u32>,
    /// Packets received but not yet handed to the test.
    pending: VecDeque<Packet>,
    closed: bool,
}

/// The broker under test with a fake clock.
#[derive(Debug)]
pub(crate) struct TestBroker {
    pub(crate) broker: Broker,
    pub(crate) now: Time,
    next_connection: u64,
    next_packet_id: u16,
    wires: HashMap<ConnectionId, Wire>,
    woken: HashSet<ConnectionId>,
    /// On a cluster node, whether the harness settles every session claim at once as owned
    /// and new (as for a client identifier no other node knows), as a cluster layer would.
    pub(crate) auto_claim: bool,
    /// Cluster operations taken from the broker while settling claims, for the test.
    cluster_ops: VecDeque<ClusterOp>,
}

impl Default for TestBroker {
    fn default() -> Self {
        Self::new()
    }
}

impl TestBroker {
    /// A broker with the default limits, at time 0.
    pub(crate) fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub(crate) fn with_limits(limits: Limits) -> Self {
        Self::with_config(Config {
            limits,
            assigned_id_prefix: "auto-".to_owned(),
            ..Config::default()
        })
    }

    pub(crate) fn with_config(config: Config) -> Self {
        let now = Time::from_millis(0);
        Self {
            broker: Broker::new(config, now),
            now,
            next_connection: 1,
            next_packet_id: 1,
            wires: HashMap::new(),
            woken: HashSet::new(),
            auto_claim: true,
            cluster_ops: VecDeque::new(),
        }
    }

    /// Settles the session claims the broker asked for, when the harness does.
    fn settle_claims(&mut self) {
        if !self.auto_claim || !self.broker.config().cluster {
            return;
        }
        loop {
            let mut claims = Vec::new();
            while let Some(op) = self.broker.poll_cluster_op() {
                match op {
                    ClusterOp::Claim(claim) => claims.push(claim.connection),
                    op => self.cluster_ops.push_back(op),
                }
            }
            if claims.is_empty() {
                return;
            }
            for id in claims {
                let outcome = ClaimOutcome::Owned {
                    handed_over: None,
                    backlog: Vec::new(),
                    outbound: Vec::new(),
                };
                self.broker.claim_settled(id, outcome, self.now);
            }
        }
    }

    /// The cluster operations the broker emitted since the last call, in order.
    pub(crate) fn cluster_ops(&mut self) -> Vec<ClusterOp> {
        self.settle_claims();
        let mut ops: Vec<ClusterOp> = self.cluster_ops.drain(..).collect();
        ops.extend(std::iter::from_fn(|| self.broker.poll_cluster_op()));
        ops
    }

    /// Opens a network connection that has sent nothing yet.
    pub(crate) fn open(&mut self) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        self.broker.connection_opened(id, self.now);
        self.wires.insert(id, Wire::default());
        id
    }

    /// Opens a connection whose transport reported `info` (a client certificate identity).
    pub(crate) fn open_with(&mut self, info: tern_core::ConnectionInfo) -> ConnectionId {
        let id = ConnectionId(self.next_connection);
        self.next_connection += 1;
        self.broker.connection_opened_with(id, info, self.now);
        self.wires.insert(id, Wire::default());
        id
    }

    /// Connects and expects a successful CONNACK, which the returned client holds. Packets the
    /// broker sent after the CONNACK (resent in-flight messages) wait for [`Self::recv`].
    pub(crate) fn connect(
        &mut self,
        client_id: &str,
        version: ProtocolVersion,
        opts: Opts,
    ) -> TestClient {
        let id = self.open();
        self.wires
            .get_mut(&id)
            .expect("open connection")
            .packet_size_max = opts.maximum_packet_size;
        self.send_to(
            id,
            version,
            Packet::Connect(Box::new(connect_packet(client_id, version, &opts))),
        );
        let mut packets = self.drain(id);
        assert!(!packets.is_empty(), "no CONNACK for {client_id}");
        let Packet::ConnAck(connack) = packets.remove(0) else {
            panic!("first packet to {client_id} is not CONNACK: {packets:?}");
        };
        assert_eq!(
            connack.reason_code,
            ReasonCode::Success,
            "CONNACK for {client_id}"
        );
        let wire = self.wires.get_mut(&id).expect("open connection");
        assert!(
            !wire.closed,
            "{client_id} closed after a successful CONNACK"
        );
        wire.pending.extend(packets);
        let client_id = connack
            .properties
            .assigned_client_identifier
            .as_ref()
            .map_or_else(|| client_id.to_owned(), |id| id.as_str().to_owned());
        TestClient {
            id,
            version,
            client_id,
            connack: *connack,
        }
    }

    /// Sends CONNECT on a new connection and returns everything the broker wrote, and whether
    /// it closed the connection.
    pub(crate) fn try_connect(&mut self, connect: Connect) -> (ConnectionId, Vec<Packet>, bool) {
        let id = self.open();
        let version = connect.protocol_version;
        self.send_to(id, version, Packet::Connect(Box::new(connect)));
        let packets = self.drain(id);
        let closed = self.take_closed(id);
        (id, packets, closed)
    }

    /// Sends `packet` from `client`, through the codec of its protocol level.
    pub(crate) fn send(&mut self, client: &TestClient, packet: Packet) {
        self.send_to(client.id, client.version, packet);
    }

    /// Sends several packets in order.
    pub(crate) fn send_all(
        &mut self,
        client: &TestClient,
        packets: impl IntoIterator<Item = Packet>,
    ) {
        for packet in packets {
            self.send(client, packet);
        }
    }

    /// Sends `packet` on connection `id` as a `version` client would encode it.
    pub(crate) fn send_to(&mut self, id: ConnectionId, version: ProtocolVersion, packet: Packet) {
        let packet = wire(&packet, version);
        self.broker.handle_packet(id, packet, self.now);
        self.check_held_bytes();
    }

    /// Reports bytes on `client`'s connection that did not decode.
    pub(crate) fn send_garbage(&mut self, client: &TestClient, error: DecodeError) {
        self.broker.handle_decode_error(client.id, error, self.now);
    }

    /// Everything the broker wrote to `client` since the last call; panics if it closed it.
    pub(crate) fn recv(&mut self, client: &TestClient) -> Vec<Packet> {
        let packets = self.drain(client.id);
        assert!(
            !self.wire(client.id).closed,
            "{} was closed unexpectedly after {packets:?}",
            client.client_id
        );
        packets
    }

    /// What `client` gets while it reads as fast as the broker writes and acknowledges each
    /// QoS 1/2 PUBLISH at once (PUBACK; PUBREC, then PUBCOMP for the PUBREL): its outbox is
    /// drained and, as the runtime does after each write, retained messages waiting for room
    /// go on, until nothing more comes. Returns every packet in order, and the largest number
    /// of PUBLISH packets one drain held.
    pub(crate) fn read_all(&mut self, client: &TestClient) -> (Vec<Packet>, usize) {
        let mut all = Vec::new();
        let mut batch_max = 0;
        loop {
            let packets = self.recv(client);
            if packets.is_empty() {
                if !self.broker.retained_feeds_ready() {
                    return (all, batch_max);
                }
                let now = self.now;
                self.broker.resume_retained_feeds(now);
                continue;
            }
            batch_max = batch_max.max(publishes(&packets).len());
            for packet in &packets {
                match packet {
                    Packet::Publish(p) if p.qos == QoS::AtLeastOnce => {
                        self.send(client, puback(packet_id(packet)));
                    }
                    Packet::Publish(p) if p.qos == QoS::ExactlyOnce => {
                        self.send(client, pubrec(packet_id(packet)));
                    }
                    Packet::PubRel(ack) => self.send(client, pubcomp(ack.packet_id.get())),
                    _ => {}
                }
            }
            all.extend(
                packets
                    .into_iter()
                    .filter(|p| !matches!(p, Packet::PubRel(_))),
            );
        }
    }

    /// Expects nothing written to `client`.
    pub(crate) fn expect_silent(&mut self, client: &TestClient) {
        let packets = self.recv(client);
        assert!(packets.is_empty(), "{} got {packets:?}", client.client_id);
    }

    /// Expects the broker to have closed `client`: returns the packets written before the close
    /// and finishes the close as the runtime would.
    pub(crate) fn expect_closed(&mut self, client: &TestClient) -> Vec<Packet> {
        let packets = self.drain(client.id);
        assert!(
            self.take_closed(client.id),
            "{} was not closed; got {packets:?}",
            client.client_id
        );
        packets
    }

    /// The network connection of `client` fails.
    pub(crate) fn lose(&mut self, client: &TestClient) {
        self.broker.connection_lost(client.id, self.now);
        if let Some(wire) = self.wires.get_mut(&client.id) {
            wire.closed = true;
        }
    }

    /// Sends DISCONNECT (normal disconnection) and expects the broker to close the connection
    /// without writing anything more.
    pub(crate) fn disconnect(&mut self, client: &TestClient) {
        self.send(client, disconnect(ReasonCode::NORMAL_DISCONNECTION));
        let packets = self.expect_closed(client);
        assert!(
            packets.is_empty(),
            "after DISCONNECT {} got {packets:?}",
            client.client_id
        );
    }

    /// Subscribes `client` to `filter` with `qos` and expects the SUBACK granting it. Retained
    /// messages sent for the subscription wait for [`Self::recv`].
    pub(crate) fn subscribe(&mut self, client: &TestClient, filter: &str, qos: QoS) {
        let packet_id = self.fresh_packet_id();
        self.send(client, subscribe(packet_id, &[(filter, qos)]));
        let mut packets = self.recv(client);
        assert!(!packets.is_empty(), "no SUBACK for {filter}");
        assert_eq!(
            packets.remove(0),
            suback(packet_id, &[granted(qos)]),
            "SUBACK for {filter}"
        );
        self.wire(client.id).pending.extend(packets);
    }

    /// Moves the clock on by `millis` and runs the broker's timers.
    pub(crate) fn advance(&mut self, millis: u64) {
        self.now = self.now.plus_millis(millis);
        self.broker.handle_timeout(self.now);
        self.check_held_bytes();
    }

    /// Moves the clock on by `secs` seconds and runs the broker's timers.
    pub(crate) fn advance_secs(&mut self, secs: u64) {
        self.advance(secs * 1000);
    }

    /// Moves the clock on without running any timer (as between two timer ticks of the runtime).
    pub(crate) fn skip(&mut self, millis: u64) {
        self.now = self.now.plus_millis(millis);
    }

    pub(crate) fn stats(&self) -> Stats {
        self.broker.stats()
    }

    /// Events since the last call.
    pub(crate) fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.broker.poll_event()).collect()
    }

    /// A packet identifier for SUBSCRIBE and friends, different on each call.
    pub(crate) fn fresh_packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.wrapping_add(1).max(1);
        id
    }

    fn wire(&mut self, id: ConnectionId) -> &mut Wire {
        self.wires
            .get_mut(&id)
            .expect("connection opened through the harness")
    }

    pub(crate) fn take_closed(&mut self, id: ConnectionId) -> bool {
        let closed = std::mem::take(&mut self.wire(id).closed);
        if closed {
            // The runtime finishes a close the broker asked for by reporting the socket gone.
            self.broker.connection_lost(id, self.now);
            self.wire(id).closed = true;
        }
        closed
    }

    /// Every scenario checks the memory accounts as it goes: the running total of bytes held
    /// for receivers is what summing them afresh gives.
    pub(crate) fn check_held_bytes(&self) {
        assert_eq!(
            self.broker.held_bytes(),
            self.broker.held_bytes_recounted(),
            "the running total of held bytes drifted"
        );
    }

    /// Drains `id`'s outbox through the codec of its protocol level.
    pub(crate) fn drain(&mut self, id: ConnectionId) -> Vec<Packet> {
        self.settle_claims();
        self.check_held_bytes();
        let mut woken = Vec::new();
        self.broker.take_woken(&mut woken);
        self.woken.extend(woken);
        let mut packets: Vec<Packet> = self.wire(id).pending.drain(..).collect();
        let Some(version) = self.broker.protocol_version(id) else {
            return packets;
        };
        let packet_size_max = self.wire(id).packet_size_max;
        let mut wrote = false;
        while let Some(transmit) = self.broker.poll_transmit(id) {
            wrote = true;
            assert!(!self.wire(id).closed, "{id:?}: written after the close");
            if let Transmit::Publish(publish) = &transmit {
                // A forwarded PUBLISH encodes from its view exactly as built out in full.
                let mut viewed = BytesMut::new();
                publish
                    .view()
                    .encode(version, &mut viewed)
                    .expect("encodes");
                let full = Packet::Publish(publish.to_publish());
                assert_eq!(&viewed[..], &encode(&full, version)[..], "{publish:?}");
            }
            match transmit.into_packet() {
                Some(packet) => {
                    let size = encode(&packet, version).len();
                    if let Some(max) = packet_size_max {
                        // MQTT-3.1.2-24: never more than the client's Maximum Packet Size.
                        assert!(
                            size <= max as usize,
                            "{id:?}: {size} byte packet over the client's {max}"
                        );
                    }
                    packets.push(wire(&packet, version));
                }
                None => self.wire(id).closed = true,
            }
        }
        if wrote {
            assert!(
                self.woken.remove(&id),
                "{id:?} had output but was not woken"
            );
        }
        self.check_held_bytes();
        packets
    }
}

/// The packet as the peer decodes it after `version` encoding.
pub(crate) fn wire(packet: &Packet, version: ProtocolVersion) -> Packet {
    let bytes = Bytes::from(encode(packet, version));
    let frame = parse_frame(&bytes, PACKET_SIZE_MAX)
        .expect("frame")
        .expect("complete frame");
    assert_eq!(frame.total_len, bytes.len(), "one packet");
    Packet::decode(bytes[0], bytes.slice(frame.header_len..), version)
        .unwrap_or_else(|e| panic!("{packet:?} does not decode as {version:?}: {e}"))
}

/// The bytes of `packet` encoded for `version`.
pub(crate) fn encode(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet
        .encode(version, &mut buf)
        .unwrap_or_else(|e| panic!("{packet:?} does not encode as {version:?}: {e}"));
    buf.to_vec()
}

pub(crate) fn mstr(s: &str) -> MqttString {
    MqttString::new(s).expect("valid MQTT string")
}

pub(crate) fn topic(s: &str) -> TopicName {
    s.parse().expect("valid topic name")
}

pub(crate) fn filter(s: &str) -> TopicFilter {
    s.parse().expect("valid topic filter")
}

pub(crate) fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet identifier")
}

/// The CONNECT a client sends.
pub(crate) fn connect_packet(client_id: &str, version: ProtocolVersion, opts: &Opts) -> Connect {
    let properties = ConnectProperties {
        session_expiry_interval: opts.session_expiry,
        receive_maximum: opts.receive_maximum,
        maximum_packet_size: opts.maximum_packet_size,
        topic_alias_maximum: opts.topic_alias_maximum,
        ..ConnectProperties::default()
    };
    Connect {
        protocol_version: version,
        clean_start: opts.clean_start,
        keep_alive: opts.keep_alive,
        properties,
        client_id: mstr(client_id),
        will: opts.will.clone(),
        username: None,
        password: None,
    }
}

/// A will message without properties.
pub(crate) fn will(topic_name: &str, payload: &str, qos: QoS, retain: bool) -> Will {
    Will {
        topic: topic(topic_name),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        properties: WillProperties::default(),
    }
}

/// A will message with a Will Delay Interval (MQTT 5).
pub(crate) fn delayed_will(topic_name: &str, payload: &str, delay_secs: u32) -> Will {
    let mut will = will(topic_name, payload, Q0, false);
    will.properties.will_delay_interval = Some(delay_secs);
    will
}

/// The interest changes among cluster `ops`, as (filter, present).
pub(crate) fn interest(ops: &[ClusterOp]) -> Vec<(String, bool)> {
    ops.iter()
        .filter_map(|op| match op {
            ClusterOp::Interest { filter, present } => Some((filter.as_str().to_owned(), *present)),
            _ => None,
        })
        .collect()
}

/// A message from another node of a cluster, published there by client `elsewhere`.
pub(crate) fn remote_on(topic_name: &str, payload: &str, qos: QoS) -> tern_core::RemoteMessage {
    tern_core::RemoteMessage {
        topic: topic(topic_name),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain: false,
        properties: tern_codec::PublishProperties::default(),
        expiry_millis: None,
        publisher: Some(mstr("elsewhere")),
        seq: None,
        shared: None,
        retained_revision: None,
    }
}

/// PUBLISH without properties; `packet_id` 0 means none (QoS 0).
pub(crate) fn publish(topic_name: &str, payload: &str, qos: QoS, packet_id: u16) -> Packet {
    publish_with(topic_name, payload, qos, packet_id, |_| {})
}

/// PUBLISH as [`publish`] builds it, then changed by `change`.
pub(crate) fn publish_with(
    topic_name: &str,
    payload: &str,
    qos: QoS,
    packet_id: u16,
    change: impl FnOnce(&mut Publish),
) -> Packet {
    // An empty topic stands for a topic alias (MQTT 5).
    let name = if topic_name.is_empty() {
        TopicName::empty()
    } else {
        topic(topic_name)
    };
    let mut publish = Publish::new(name, Bytes::copy_from_slice(payload.as_bytes()));
    publish.qos = qos;
    publish.packet_id = PacketId::new(packet_id);
    change(&mut publish);
    Packet::Publish(publish)
}

/// PUBLISH with RETAIN set.
pub(crate) fn retained(topic_name: &str, payload: &str, qos: QoS, packet_id: u16) -> Packet {
    publish_with(topic_name, payload, qos, packet_id, |p| p.retain = true)
}

/// Subscription options with this QoS and the defaults otherwise.
pub(crate) fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

/// Subscription options with a Retain Handling (MQTT 5).
pub(crate) fn opts_rh(qos: QoS, retain_handling: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling,
        ..opts(qos)
    }
}

pub(crate) fn subscribe(packet_id: u16, filters: &[(&str, QoS)]) -> Packet {
    let with_options: Vec<(&str, SubscriptionOptions)> =
        filters.iter().map(|&(f, q)| (f, opts(q))).collect();
    subscribe_with(packet_id, &with_options, None)
}

/// SUBSCRIBE with options and, in MQTT 5, a Subscription Identifier.
pub(crate) fn subscribe_with(
    packet_id: u16,
    filters: &[(&str, SubscriptionOptions)],
    identifier: Option<u32>,
) -> Packet {
    let subscriptions: Vec<Subscription> = filters
        .iter()
        .map(|&(f, options)| Subscription {
            filter: filter(f),
            options,
        })
        .collect();
    Packet::Subscribe(Subscribe {
        packet_id: pid(packet_id),
        properties: SubscribeProperties {
            subscription_identifier: identifier,
            ..SubscribeProperties::default()
        },
        subscriptions: SubscriptionList::new(&subscriptions),
    })
}

pub(crate) fn unsubscribe(packet_id: u16, filters: &[&str]) -> Packet {
    let filters: Vec<TopicFilter> = filters.iter().map(|f| filter(f)).collect();
    Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(packet_id),
        properties: UnsubscribeProperties::default(),
        filters: FilterList::new(&filters),
    })
}

/// The SUBACK reason code granting `qos`.
pub(crate) fn granted(qos: QoS) -> ReasonCode {
    match qos {
        Q0 => ReasonCode::GRANTED_QOS_0,
        Q1 => ReasonCode::GrantedQos1,
        Q2 => ReasonCode::GrantedQos2,
    }
}

pub(crate) fn suback(packet_id: u16, codes: &[ReasonCode]) -> Packet {
    Packet::SubAck(SubAck {
        packet_id: pid(packet_id),
        properties: Default::default(),
        reason_codes: codes.to_vec(),
    })
}

/// UNSUBACK; `codes` is empty for MQTT 3.1.1.
pub(crate) fn unsuback(packet_id: u16, codes: &[ReasonCode]) -> Packet {
    Packet::UnsubAck(UnsubAck {
        packet_id: pid(packet_id),
        properties: Default::default(),
        reason_codes: codes.to_vec(),
    })
}

/// An acknowledgement body with a reason code.
pub(crate) fn ack(packet_id: u16, reason_code: ReasonCode) -> Ack {
    Ack {
        reason_code,
        ..Ack::new(pid(packet_id))
    }
}

pub(crate) fn puback(packet_id: u16) -> Packet {
    Packet::PubAck(Ack::new(pid(packet_id)))
}

pub(crate) fn pubrec(packet_id: u16) -> Packet {
    Packet::PubRec(Ack::new(pid(packet_id)))
}

pub(crate) fn pubrel(packet_id: u16) -> Packet {
    Packet::PubRel(Ack::new(pid(packet_id)))
}

pub(crate) fn pubcomp(packet_id: u16) -> Packet {
    Packet::PubComp(Ack::new(pid(packet_id)))
}

pub(crate) fn disconnect(code: ReasonCode) -> Packet {
    Packet::Disconnect(Disconnect::new(code))
}

/// DISCONNECT carrying a Session Expiry Interval (MQTT 5).
pub(crate) fn disconnect_with_expiry(code: ReasonCode, expiry_secs: u32) -> Packet {
    let mut disconnect = Disconnect::new(code);
    disconnect.properties.session_expiry_interval = Some(expiry_secs);
    Packet::Disconnect(disconnect)
}

/// The PUBLISH packets among `packets`.
pub(crate) fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .collect()
}

/// The payloads of the PUBLISH packets among `packets`, as text.
pub(crate) fn payloads(packets: &[Packet]) -> Vec<String> {
    publishes(packets)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

/// The subscription identifiers of a PUBLISH, sorted (their order is not significant).
pub(crate) fn sub_ids(publish: &Publish) -> Vec<u32> {
    let mut ids: Vec<u32> = publish.properties.subscription_identifiers.iter().collect();
    ids.sort_unstable();
    ids
}

/// The packet identifier of a PUBLISH (0 for QoS 0) or an acknowledgement.
pub(crate) fn packet_id(packet: &Packet) -> u16 {
    match packet {
        Packet::Publish(publish) => publish.packet_id.map_or(0, PacketId::get),
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            ack.packet_id.get()
        }
        other => panic!("{other:?} has no packet identifier"),
    }
}

/// What the broker wrote on a connection, a forwarded PUBLISH built out in full: what tests
/// match on.
// Unboxed, so tests can match slices of them by pattern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sent {
    /// A packet.
    Packet(Packet),
    /// The close after the packets.
    Close,
}

impl From<Transmit> for Sent {
    fn from(transmit: Transmit) -> Self {
        transmit.into_packet().map_or(Self::Close, Self::Packet)
    }
}

/// The `Dropped` events among `events`, as (client, reason).
pub(crate) fn drops(events: &[Event]) -> Vec<(String, DropReason)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Dropped { client_id, reason } => Some((client_id.to_string(), *reason)),
            _ => None,
        })
        .collect()
}

/// Checks "alice"/"secret" in a job the runtime runs later, as a password hash would be, and
/// lets "alice"/"cached" in at once, as a login verified recently would be; counts how often
/// it is asked.
#[derive(Debug, Default)]
pub(crate) struct Deferred {
    pub(crate) asked: std::rc::Rc<std::cell::Cell<u32>>,
}

impl tern_core::Authenticator for Deferred {
    fn authenticate(&mut self, request: &tern_core::AuthRequest<'_>) -> tern_core::AuthDecision {
        use tern_core::{AuthDecision, AuthJob};
        self.asked.set(self.asked.get() + 1);
        let alice = request.username.map(|u| u.as_str()) == Some("alice");
        if alice && request.password == Some(&b"cached"[..]) {
            return AuthDecision::Accept { data: None };
        }
        let good = alice && request.password == Some(&b"secret"[..]);
        AuthDecision::Pending(AuthJob::new(move || {
            if good {
                AuthDecision::Accept { data: None }
            } else {
                AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
            }
        }))
    }

    fn continue_auth(&mut self, _request: &tern_core::AuthRequest<'_>) -> tern_core::AuthDecision {
        tern_core::AuthDecision::Refuse(ReasonCode::NotAuthorized)
    }
}
