//! Three Tern nodes on a cluster of three `nats-server`s joined by routes on loopback, the
//! message stream and buckets kept in three replicas, each node given all three servers:
//! QoS 1 and 2 cross nodes, and no acknowledged message is lost (QoS 2: none delivered twice)
//! while the stream's leader server is killed (SIGKILL) mid-stream.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::cluster::{expect_printed, mosquitto_pub, mosquitto_sub, replicated_nodes};
use support::mqtt::{ack, publish, RawClient};
use support::nats::NatsCluster;
use support::Tern;
use tern_codec::{Packet, QoS, ReasonCode};

/// The message stream's name.
const STREAM: &str = "TERN_MSG_0";

/// Messages a publisher has in flight at each QoS at a time.
const BATCH: usize = 10;

/// How long a publisher may wait for an acknowledgement: through a leader's election.
const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// A client that sends and receives at QoS 1 and 2, answering every acknowledgement it owes.
struct Peer {
    client: RawClient,
    /// Payloads received, a QoS 2 message once (a resend under an identifier still held is
    /// the same message).
    got: Vec<String>,
    held: HashSet<u16>,
}

impl Peer {
    fn connect(port: u16, id: &str) -> Self {
        let (client, connack) = RawClient::connect(port, id, true, 0).expect("connects");
        assert_eq!(connack.reason_code, ReasonCode::Success);
        Self {
            client,
            got: Vec::new(),
            held: HashSet::new(),
        }
    }

    /// Answers `packet` if it is a message or a release; returns whether it was.
    fn take(&mut self, packet: &Packet) -> bool {
        match packet {
            Packet::Publish(p) => {
                let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                match (p.qos, p.packet_id) {
                    (QoS::ExactlyOnce, Some(id)) => {
                        if self.held.insert(id.get()) {
                            self.got.push(payload);
                        }
                        self.client.send(&Packet::PubRec(ack(id))).unwrap();
                    }
                    (_, Some(id)) => {
                        self.got.push(payload);
                        self.client.send(&Packet::PubAck(ack(id))).unwrap();
                    }
                    (_, None) => self.got.push(payload),
                }
                true
            }
            Packet::PubRel(rel) => {
                self.held.remove(&rel.packet_id.get());
                self.client
                    .send(&Packet::PubComp(ack(rel.packet_id)))
                    .unwrap();
                true
            }
            _ => false,
        }
    }

    /// Receives until `last` has come, within [`ELECTION_WAIT`].
    fn receive_through(&mut self, last: &str) {
        let deadline = Instant::now() + ELECTION_WAIT;
        while !self.got.iter().any(|p| p == last) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{last:?} never came; got {:?}", self.got);
            if let Some(packet) = self.client.recv(left).unwrap() {
                assert!(self.take(&packet), "unexpected {packet:?}");
            }
        }
    }

    /// Publishes `payload` to `topic` at `qos` (1 or 2) and completes the exchange; every
    /// acknowledgement must say Success.
    fn send(&mut self, topic: &str, payload: &str, qos: QoS) {
        let id = self.client.fresh_id();
        let packet = publish(topic, payload.into(), qos, false, Some(id));
        self.client.send(&packet).unwrap();
        let expected = |packet: &Packet| match packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) if a.packet_id == id => {
                assert_eq!(a.reason_code, ReasonCode::Success, "{packet:?}");
                true
            }
            _ => false,
        };
        let next = |peer: &mut Self| {
            let packet = peer.client.recv(ELECTION_WAIT).unwrap();
            packet.unwrap_or_else(|| panic!("no acknowledgement of {payload:?}"))
        };
        let first = next(self);
        assert!(
            expected(&first),
            "expected an acknowledgement, got {first:?}"
        );
        if qos == QoS::ExactlyOnce {
            self.client.send(&Packet::PubRel(ack(id))).unwrap();
            let complete = next(self);
            assert!(
                matches!(complete, Packet::PubComp(_)) && expected(&complete),
                "expected the PUBCOMP, got {complete:?}"
            );
        }
    }
}

/// The payloads of `got` that start with `prefix`.
fn with_prefix<'a>(got: &'a [String], prefix: &str) -> Vec<&'a str> {
    got.iter()
        .map(String::as_str)
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// `count` payloads `<prefix><n>`, in order.
fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n}")).collect()
}

/// QoS 1 and QoS 2 from a client on one node reach subscribers on the two others once each,
/// in order; mosquitto_pub and mosquitto_sub do the same across nodes.
#[test]
fn qos1_and_qos2_cross_nodes_on_three_replicated_servers() {
    let cluster = NatsCluster::start(3);
    let (n1, n2, n3) = replicated_nodes(&cluster, "");
    let mut at_least = Peer::connect(n2.port, "at-least");
    at_least.client.subscribe("r/#", QoS::AtLeastOnce).unwrap();
    let mut exactly = Peer::connect(n3.port, "exactly");
    exactly.client.subscribe("r/#", QoS::ExactlyOnce).unwrap();
    let (mut sub, granted) = mosquitto_sub(n2.port, QoS::ExactlyOnce, &["m/#"]);
    assert!(granted.ends_with(": 2"), "QoS 2 granted: {granted}");
    let mut publisher = Peer::connect(n1.port, "publisher");
    for n in 0..10 {
        publisher.send("r/one", &format!("a{n}"), QoS::AtLeastOnce);
        publisher.send("r/two", &format!("b{n}"), QoS::ExactlyOnce);
    }
    for peer in [&mut at_least, &mut exactly] {
        peer.receive_through("b9");
        assert_eq!(with_prefix(&peer.got, "a"), numbered("a", 10));
        assert_eq!(with_prefix(&peer.got, "b"), numbered("b", 10));
    }
    let topics = ["m/1.x", "m/2 *"];
    for (n, (topic, qos)) in topics
        .iter()
        .zip([QoS::AtLeastOnce, QoS::ExactlyOnce])
        .enumerate()
    {
        mosquitto_pub(n3.port, qos, topic, &format!("m{n}"));
    }
    expect_printed(&mut sub, &topics);
    sub.kill();
}

/// What a publisher saw while a server failed: how many messages it published at each QoS,
/// and the longest any one waited for its acknowledgement.
struct Published {
    count: usize,
    longest_wait: Duration,
}

/// Publishes `batches` batches of [`BATCH`] messages at QoS 1 (`q1-<n>` to `s/one`) and as
/// many at QoS 2 (`q2-<n>` to `s/two`), each batch sent at once, interleaved, and then
/// acknowledged; `during(b)` runs while the b-th batch is in flight.
fn publish_through(
    publisher: &mut Peer,
    batches: usize,
    mut during: impl FnMut(usize),
) -> Published {
    let mut longest_wait = Duration::ZERO;
    for batch in 0..batches {
        let started = Instant::now();
        let (mut to_ack, mut to_receive) = (HashSet::new(), HashSet::new());
        let mut packets = Vec::new();
        for n in batch * BATCH..(batch + 1) * BATCH {
            let (one, two) = (publisher.client.fresh_id(), publisher.client.fresh_id());
            let payload = format!("q1-{n}").into_bytes();
            packets.push(publish(
                "s/one",
                payload,
                QoS::AtLeastOnce,
                false,
                Some(one),
            ));
            let payload = format!("q2-{n}").into_bytes();
            packets.push(publish(
                "s/two",
                payload,
                QoS::ExactlyOnce,
                false,
                Some(two),
            ));
            to_ack.insert(one);
            to_receive.insert(two);
        }
        publisher.client.send_all(packets).unwrap();
        during(batch);
        let mut to_complete = HashSet::new();
        while !(to_ack.is_empty() && to_receive.is_empty() && to_complete.is_empty()) {
            let packet = publisher.client.recv(ELECTION_WAIT).unwrap();
            let packet = packet.unwrap_or_else(|| panic!("batch {batch} not acknowledged"));
            let acked = match &packet {
                Packet::PubAck(a) => to_ack.remove(&a.packet_id).then_some(a),
                Packet::PubRec(a) => to_receive.remove(&a.packet_id).then_some(a),
                Packet::PubComp(a) => to_complete.remove(&a.packet_id).then_some(a),
                _ => None,
            };
            let acked = acked.unwrap_or_else(|| panic!("unexpected {packet:?}"));
            assert_eq!(acked.reason_code, ReasonCode::Success, "{packet:?}");
            if let Packet::PubRec(rec) = &packet {
                publisher
                    .client
                    .send(&Packet::PubRel(ack(rec.packet_id)))
                    .unwrap();
                to_complete.insert(rec.packet_id);
            }
        }
        longest_wait = longest_wait.max(started.elapsed());
    }
    Published {
        count: batches * BATCH,
        longest_wait,
    }
}

/// Every message published reached `subscriber`: each QoS 1 message at least once, in order
/// of first arrival, each QoS 2 message exactly once, in order.
fn assert_all_delivered(subscriber: &mut Peer, published: &Published) {
    let last = format!("q2-{}", published.count - 1);
    subscriber.receive_through(&last);
    // A QoS 2 message delivered twice would follow its first copy closely.
    while let Some(packet) = subscriber.client.recv(Duration::from_millis(300)).unwrap() {
        assert!(subscriber.take(&packet), "unexpected {packet:?}");
    }
    let mut first_arrivals = Vec::new();
    for payload in with_prefix(&subscriber.got, "q1-") {
        if !first_arrivals.contains(&payload) {
            first_arrivals.push(payload);
        }
    }
    assert_eq!(first_arrivals, numbered("q1-", published.count));
    let duplicates = with_prefix(&subscriber.got, "q1-").len() - published.count;
    println!("QoS 1 copies delivered again: {duplicates}");
    assert_eq!(
        with_prefix(&subscriber.got, "q2-"),
        numbered("q2-", published.count)
    );
}

/// Nodes on `cluster`, a QoS 2 subscriber to `s/#` on n2 and a publisher on n1.
fn publisher_and_subscriber(cluster: &NatsCluster) -> ((Tern, Tern, Tern), Peer, Peer) {
    let nodes = replicated_nodes(cluster, "");
    let mut subscriber = Peer::connect(nodes.1.port, "subscriber");
    subscriber
        .client
        .subscribe("s/#", QoS::ExactlyOnce)
        .unwrap();
    let publisher = Peer::connect(nodes.0.port, "publisher");
    (nodes, subscriber, publisher)
}

/// The server leading the message stream is killed (SIGKILL) while a client publishes at
/// QoS 1 and 2: the others elect a new leader, every acknowledged message reaches the
/// subscriber on another node (QoS 2 exactly once) and publishing goes on.
#[test]
fn killing_the_stream_leader_loses_no_acknowledged_message() {
    let mut cluster = NatsCluster::start(3);
    let (_nodes, mut subscriber, mut publisher) = publisher_and_subscriber(&cluster);
    let mut killed = None;
    let published = publish_through(&mut publisher, 6, |batch| {
        if batch == 2 {
            let leader = cluster.stream_leader(STREAM);
            cluster.servers[leader].kill();
            killed = Some(leader);
        }
    });
    println!(
        "longest wait for an acknowledgement across the leader's death: {:.1} s",
        published.longest_wait.as_secs_f64()
    );
    let killed = killed.expect("a server was killed");
    let new_leader = cluster.stream_leader(STREAM);
    assert_ne!(new_leader, killed, "another server leads the stream");
    assert_all_delivered(&mut subscriber, &published);
}
