//! Three Tern nodes on a cluster of three `nats-server`s joined by routes on loopback, the
//! message stream and buckets kept in three replicas, each node given all three servers:
//! QoS 1 and 2 cross nodes, and no acknowledged message is lost (QoS 2: none delivered twice)
//! while the stream's leader server is killed (SIGKILL) mid-stream; nodes started all at once
//! alongside servers that have not yet elected a leader all join.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::cluster::{expect_printed, mosquitto_pub, mosquitto_sub, node_with, replicated_nodes};
use support::mqtt::{ack, publish};
use support::nats::NatsCluster;
use support::peer::{numbered, with_prefix, Peer, ELECTION_WAIT};
use support::Tern;
use tern_codec::{Packet, QoS, ReasonCode};

/// The message stream's name.
const STREAM: &str = "TERN_MSG_0";

/// Messages a publisher has in flight at each QoS at a time.
const BATCH: usize = 10;

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

/// Three nodes started at once, as soon as the servers listen (before they have a JetStream
/// leader), all join: each creates or finds the stream and buckets while the others do the
/// same and the servers elect their leaders; then QoS 1 crosses from one to another.
#[test]
fn nodes_started_together_with_the_servers_all_join() {
    let started = Instant::now();
    let cluster = NatsCluster::launch(3);
    let urls = cluster.urls();
    let nodes: Vec<Tern> = std::thread::scope(|scope| {
        let starting: Vec<_> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|id| {
                let urls = &urls;
                scope.spawn(move || node_with(urls, id, 3, ""))
            })
            .collect();
        starting
            .into_iter()
            .map(|node| node.join().expect("the node started"))
            .collect()
    });
    println!(
        "three nodes joined {:?} after the servers were started",
        started.elapsed()
    );
    let mut subscriber = Peer::connect(nodes[1].port, "together-sub");
    subscriber
        .client
        .subscribe("t/#", QoS::AtLeastOnce)
        .unwrap();
    let mut publisher = Peer::connect(nodes[0].port, "together-pub");
    for n in 0..3 {
        publisher.send("t/x", &format!("t{n}"), QoS::AtLeastOnce);
    }
    subscriber.receive_through("t2");
    assert_eq!(with_prefix(&subscriber.got, "t"), numbered("t", 3));
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
