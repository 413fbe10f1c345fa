//! Retained messages across the nodes of a cluster, kept in a replicated KV bucket: set on one
//! node and read on another (exact and wildcard filters), deleted everywhere, the same value on
//! every node after concurrent writes of one topic on two nodes, expiry honoured on every node,
//! loaded by a node started after they were written, and a subscriber that never gets an older
//! retained value after a newer live one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::cluster::{node, node_with, WAIT};
use support::mqtt::RawClient;
use support::nats::{NatsCluster, NatsServer};
use support::Tern;
use tern_codec::{Ack, Packet, Publish, PublishProperties, QoS, ReasonCode};

/// A retained message as a subscriber got it: topic, payload, whether RETAIN was set.
type Got = (String, String, bool);

/// Connects to `node`, which must offer retained messages (MQTT 5 CONNACK: Retain Available
/// absent or 1).
fn connect(node: &Tern, id: &str) -> RawClient {
    let (client, connack) = RawClient::connect(node.port, id, true, 0).expect("connects");
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert_ne!(connack.properties.retain_available, Some(false), "{id}");
    client
}

/// [`connect`], again while `node` refuses with Server unavailable (it cannot reach JetStream
/// yet, as after a NATS server's death), as a client behind a load balancer would.
fn connect_when_served(node: &Tern, id: &str) -> RawClient {
    let deadline = Instant::now() + 2 * WAIT;
    loop {
        let (client, connack) = RawClient::connect(node.port, id, true, 0).expect("connects");
        if connack.reason_code == ReasonCode::Success {
            return client;
        }
        assert_eq!(connack.reason_code, ReasonCode::ServerUnavailable, "{id}");
        assert!(Instant::now() < deadline, "{id} refused for {:?}", 2 * WAIT);
    }
}

/// Publishes a retained message at QoS 1 (Message Expiry Interval `expiry` seconds, if any) and
/// waits for its PUBACK.
fn retain(client: &mut RawClient, topic: &str, payload: &str, expiry: Option<u32>) {
    let packet_id = client.fresh_id();
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: topic.parse().unwrap(),
        packet_id: Some(packet_id),
        properties: PublishProperties {
            message_expiry_interval: expiry,
            ..PublishProperties::default()
        },
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    };
    client.send(&Packet::Publish(publish)).unwrap();
    match client.recv(WAIT).unwrap() {
        Some(Packet::PubAck(ack)) if ack.packet_id == packet_id => {
            assert_eq!(ack.reason_code, ReasonCode::Success, "{topic:?}");
        }
        other => panic!("expected the PUBACK for {topic:?}, got {other:?}"),
    }
}

/// Receives (acknowledging QoS 1) until a message on `last` came; returns what came.
fn until_topic(client: &mut RawClient, last: &str) -> Vec<Got> {
    // Four times the usual, as an upper bound only: after a NATS server's death, a node's watch
    // of the bucket may wait for two missed heartbeats, and JetStream leaves consumer creations
    // unanswered for a while (reads took up to 28 s there on a loaded machine).
    let deadline = Instant::now() + 4 * WAIT;
    let mut got: Vec<Got> = Vec::new();
    while !got.iter().any(|(topic, _, _)| topic == last) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{last:?} never came; got {got:#?}");
        if let Some(Packet::Publish(publish)) = client.recv(left).unwrap() {
            if let Some(id) = publish.packet_id {
                client.send(&Packet::PubAck(Ack::new(id))).unwrap();
            }
            let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
            got.push((publish.topic.to_string(), payload, publish.retain));
        }
    }
    got
}

/// What a new subscriber to `filter` on `node` is sent, up to the retained message of `last`
/// (the last topic in the walk's order), as topic → payload; each must have come retained.
fn read_retained(node: &Tern, id: &str, filter: &str, last: &str) -> BTreeMap<String, String> {
    read_from(connect(node, id), filter, last)
}

/// What `reader` is sent once it subscribes to `filter` (see [`read_retained`]).
fn read_from(mut reader: RawClient, filter: &str, last: &str) -> BTreeMap<String, String> {
    reader.subscribe(filter, QoS::AtLeastOnce).unwrap();
    until_topic(&mut reader, last)
        .into_iter()
        .map(|(topic, payload, retained)| {
            assert!(retained, "{topic:?} came without RETAIN");
            (topic, payload)
        })
        .collect()
}

/// Topics a retained message may have, awkward ones included: NATS separators and wildcards,
/// an empty level, UTF-8, and one too long for a subject (a hashed key in the bucket).
fn topics() -> Vec<String> {
    let mut topics: Vec<String> = ["r/a", "r/b/c", "r/x.y*", "r//e", "r/a-ünï"]
        .iter()
        .map(|t| (*t).to_owned())
        .collect();
    topics.push(format!("r/long/{}", "x.".repeat(1500)));
    topics
}

#[test]
fn retained_messages_set_on_one_node_are_read_and_deleted_on_every_node() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2) = (node(&urls, "n1", 1), node(&urls, "n2", 1));
    let mut writer = connect(&n1, "writer");
    let mut expected = BTreeMap::new();
    for (n, topic) in topics().iter().enumerate() {
        retain(&mut writer, topic, &n.to_string(), None);
        expected.insert(topic.clone(), n.to_string());
    }
    // Last in the walk's order: once it came, everything before it did.
    retain(&mut writer, "r/zzz", "end", None);
    expected.insert("r/zzz".to_owned(), "end".to_owned());

    // Another node, wildcard and exact.
    assert_eq!(read_retained(&n2, "wild", "r/#", "r/zzz"), expected);
    let exact = read_retained(&n2, "exact", "r/b/c", "r/b/c");
    assert_eq!(
        exact.into_iter().collect::<Vec<_>>(),
        [("r/b/c".to_owned(), "1".to_owned())]
    );
    let long = topics().pop().unwrap();
    assert_eq!(read_retained(&n2, "long", &long, &long).len(), 1);

    // Deleted from the other node: gone on both, and for a node started afterwards.
    let mut deleter = connect(&n2, "deleter");
    retain(&mut deleter, "r/a", "", None);
    retain(&mut deleter, "r/x.y*", "", None);
    expected.remove("r/a");
    expected.remove("r/x.y*");
    assert_eq!(read_retained(&n1, "after-1", "r/#", "r/zzz"), expected);
    assert_eq!(read_retained(&n2, "after-2", "r/#", "r/zzz"), expected);
    let started = Instant::now();
    let n3 = node(&urls, "n3", 1);
    assert_eq!(read_retained(&n3, "late", "r/+", "r/zzz").len(), 2);
    assert_eq!(read_retained(&n3, "late-all", "r/#", "r/zzz"), expected);
    println!(
        "a node started after the writes served them {:?} after its start",
        started.elapsed()
    );
}

#[test]
fn retained_messages_outlive_the_bucket_leaders_death_on_three_nats_servers() {
    let mut cluster = NatsCluster::start(3);
    let urls = cluster.urls();
    let (n1, n2) = (node_with(&urls, "n1", 3, ""), node_with(&urls, "n2", 3, ""));
    let leader = cluster.stream_leader("KV_TERN_RETAIN");
    // Given the leader alone (it learns the others from it, as NATS clients do): its watch of
    // the bucket loses its connection with the leader, and its NATS client makes the watch's
    // consumer again by itself.
    let n3 = node_with(&urls[leader..=leader], "n3", 3, "");
    assert_eq!(cluster.serving("tern n3"), leader);
    let mut writer = connect(&n1, "writer");
    retain(&mut writer, "k/a", "before", None);
    cluster.servers[leader].kill();
    let killed = Instant::now();
    // Written again, and read on the other nodes, once the other two servers have elected a
    // new leader for the bucket.
    retain(&mut writer, "k/b", "after", None);
    let read = |node: &Tern, id: &str| read_from(connect_when_served(node, id), "k/#", "k/b");
    let want = BTreeMap::from([
        ("k/a".to_owned(), "before".to_owned()),
        ("k/b".to_owned(), "after".to_owned()),
    ]);
    assert_eq!(read(&n3, "r3"), want);
    assert_eq!(read(&n2, "r2"), want);
    println!(
        "retained messages written and read {:?} after the bucket's leader was killed",
        killed.elapsed()
    );
}

#[test]
fn concurrent_writes_of_the_same_topics_on_two_nodes_end_with_one_value_everywhere() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2, n3) = (
        node(&urls, "n1", 1),
        node(&urls, "n2", 1),
        node(&urls, "n3", 1),
    );
    const TOPICS: usize = 20;
    const ROUNDS: usize = 10;
    let writers: Vec<_> = [(&n1, "w1"), (&n2, "w2")]
        .into_iter()
        .map(|(node, id)| {
            let mut client = connect(node, id);
            std::thread::spawn(move || {
                for round in 0..ROUNDS {
                    for topic in 0..TOPICS {
                        retain(
                            &mut client,
                            &format!("c/{topic:02}"),
                            &format!("{id}.{round}"),
                            None,
                        );
                    }
                }
                retain(&mut client, &format!("c/zz-{id}"), "end", None);
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = Instant::now();
    // Every write is acknowledged, so each node's reader is owed the last revision of each.
    let reads: Vec<BTreeMap<String, String>> = [(&n1, "r1"), (&n2, "r2"), (&n3, "r3")]
        .into_iter()
        .map(|(node, id)| read_retained(node, id, "c/#", "c/zz-w2"))
        .collect();
    println!(
        "all nodes agreed {:?} after the last write was acknowledged",
        acknowledged.elapsed()
    );
    assert_eq!(reads[0].len(), TOPICS + 2, "{:#?}", reads[0]);
    assert_eq!(reads[0], reads[1]);
    assert_eq!(reads[0], reads[2]);
    for (topic, value) in &reads[0] {
        if !topic.starts_with("c/zz") {
            // The last round of one writer or the other.
            let last = format!(".{}", ROUNDS - 1);
            assert!(value.ends_with(&last), "{topic}: {value}");
        }
    }
}

#[test]
fn an_expired_retained_message_is_served_by_no_node() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2) = (node(&urls, "n1", 1), node(&urls, "n2", 1));
    let mut writer = connect(&n1, "writer");
    let sent = Instant::now();
    retain(&mut writer, "e/short", "short", Some(2));
    retain(&mut writer, "e/zzz", "end", None);
    let written = nats.stream_last_seq("KV_TERN_RETAIN").expect("the bucket");
    let got = read_retained(&n2, "early", "e/#", "e/zzz");
    assert_eq!(got.get("e/short").map(String::as_str), Some("short"));
    // Each node forgets it when its expiry comes: new readers stop getting it.
    for (node, name) in [(&n2, "n2"), (&n1, "n1")] {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let got = read_retained(node, &format!("{name}-{attempt}"), "e/#", "e/zzz");
            if !got.contains_key("e/short") {
                break;
            }
            assert!(sent.elapsed() < WAIT, "{name} still serves it");
        }
        // Its two seconds count from the PUBLISH (a millisecond clock's rounding allowed).
        assert!(
            sent.elapsed() >= Duration::from_millis(1990),
            "{name} dropped it early"
        );
    }
    // And the bucket is purged of it: a delete marker, by whichever node's timer came first
    // (the other's delete expects the revision the marker replaced, and is refused).
    let deadline = Instant::now() + WAIT;
    while nats.stream_last_seq("KV_TERN_RETAIN") != Some(written + 1) {
        assert!(
            Instant::now() < deadline,
            "the expired value stays in the bucket"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A node started now never serves it.
    let n3 = node(&urls, "n3", 1);
    let got = read_retained(&n3, "late", "e/#", "e/zzz");
    assert_eq!(got.into_keys().collect::<Vec<_>>(), ["e/zzz"]);
}

#[test]
fn a_new_subscriber_never_gets_an_older_retained_value_after_a_newer_one() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2) = (node(&urls, "n1", 1), node(&urls, "n2", 1));
    let mut writer = connect(&n1, "writer");
    const WRITES: u32 = 200;
    let (acked_tx, acked_rx) = std::sync::mpsc::channel::<u32>();
    let writes = std::thread::spawn(move || {
        for n in 1..=WRITES {
            retain(&mut writer, "o/counter", &n.to_string(), None);
            if acked_tx.send(n).is_err() {
                break;
            }
        }
    });
    let mut acked = 0;
    let mut readers = 0;
    while acked < WRITES {
        // The subscriber reads while the writes go on: what it gets never goes back, and
        // reaches at least what was acknowledged before it subscribed.
        acked = acked_rx.try_iter().last().unwrap_or(acked);
        let floor = acked;
        readers += 1;
        let mut reader = connect(&n2, &format!("reader-{readers}"));
        reader.subscribe("o/counter", QoS::AtLeastOnce).unwrap();
        let deadline = Instant::now() + WAIT;
        let mut last = 0;
        while last < floor.max(1) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "reader {readers} stopped at {last} below {floor}"
            );
            if let Some(Packet::Publish(publish)) = reader.recv(left).unwrap() {
                if let Some(id) = publish.packet_id {
                    reader.send(&Packet::PubAck(Ack::new(id))).unwrap();
                }
                let n: u32 = std::str::from_utf8(&publish.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(n >= last, "reader {readers} got {n} after {last}");
                last = n;
            }
        }
        if let Some(n) = acked_rx.try_iter().last() {
            acked = n;
        }
    }
    writes.join().unwrap();
    println!("{readers} readers subscribed during {WRITES} writes");
}
