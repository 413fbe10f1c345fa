//! QoS 2 across the nodes of a cluster: a QoS 2 PUBLISH is stored once in the message stream
//! even when its publisher sends it again to another node after the first one died, a PUBREL
//! sent again to another node completes the exchange there, and a subscriber whose node died
//! mid-stream gets every message exactly once on another node.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::HashSet;
use std::time::Instant;

use support::cluster::{
    client, expect_printed, join, mosquitto_pub, mosquitto_sub, node, node_with, node_with_env,
    persistent, receive_until, Seen, WAIT,
};
use support::mqtt::{ack, pid, publish, RawClient};
use support::nats::NatsServer;
use tern_codec::{Packet, PacketId, QoS, ReasonCode};

/// Leases short enough for a node's death to be noticed within a test.
const SHORT_LEASE: &str = "lease_secs = 2";

/// The next packet from `client`, which must come within [`WAIT`].
fn next(client: &mut RawClient) -> Packet {
    client.recv(WAIT).unwrap().expect("a packet")
}

/// Expects the PUBREC for `id`, with Success.
fn expect_pubrec(client: &mut RawClient, id: PacketId) {
    match next(client) {
        Packet::PubRec(rec) if rec.packet_id == id => {
            assert_eq!(rec.reason_code, ReasonCode::Success);
        }
        other => panic!("expected the PUBREC for {id:?}, got {other:?}"),
    }
}

/// Releases `id` and expects its PUBCOMP.
fn release(client: &mut RawClient, id: PacketId) {
    client.send(&Packet::PubRel(ack(id))).unwrap();
    match next(client) {
        Packet::PubComp(comp) if comp.packet_id == id => {}
        other => panic!("expected the PUBCOMP for {id:?}, got {other:?}"),
    }
}

/// Publishes `payload` on `topic` at QoS 2 under `id`, the whole exchange.
fn exchange(client: &mut RawClient, topic: &str, payload: &str, id: u16) {
    let id = pid(id);
    let packet = publish(topic, payload.into(), QoS::ExactlyOnce, false, Some(id));
    client.send(&packet).unwrap();
    expect_pubrec(client, id);
    release(client, id);
}

/// The payloads `watcher` receives until `last` comes.
fn payloads_until(watcher: &mut RawClient, last: &str) -> Vec<String> {
    let done = |seen: &[Seen]| seen.last().is_some_and(|(_, payload, _)| payload == last);
    let seen = receive_until(watcher, done);
    seen.into_iter().map(|(_, payload, _)| payload).collect()
}

/// The publisher's node dies after the stream stored its QoS 2 message, before the PUBREC
/// reached the client: the client sends the PUBLISH again (DUP) to another node, which finds
/// the message's identity recorded and stores nothing new; the subscriber gets it once. Then a
/// node dies between PUBREC and PUBREL: the PUBREL goes to another node, which completes the
/// exchange, and the message is not delivered again.
#[test]
fn a_qos2_message_sent_again_to_another_node_after_its_node_died_is_delivered_once() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, SHORT_LEASE);
    let n2 = node_with(&urls, "n2", 1, SHORT_LEASE);
    let n3 = node_with(&urls, "n3", 1, SHORT_LEASE);
    let mut watcher = client(&n3, "watcher");
    watcher.subscribe("e/#", QoS::AtLeastOnce).unwrap();

    let (mut publisher, _) = join(n1.port, persistent("pub", true, 10));
    exchange(&mut publisher, "e/t", "0", 1);
    // Stored once it reached the subscriber; its PUBREC is left unread.
    let resent = publish("e/t", b"1".to_vec(), QoS::ExactlyOnce, false, Some(pid(2)));
    publisher.send(&resent).unwrap();
    assert_eq!(payloads_until(&mut watcher, "1"), ["0", "1"]);

    n1.kill();
    let killed_at = Instant::now();
    let (mut publisher, present) = join(n2.port, persistent("pub", false, 10));
    assert!(present, "the session moved to n2");
    let Packet::Publish(mut resent) = resent else {
        unreachable!()
    };
    resent.dup = true;
    publisher.send(&Packet::Publish(resent)).unwrap();
    expect_pubrec(&mut publisher, pid(2));
    release(&mut publisher, pid(2));
    println!(
        "resent PUBLISH completed on n2 {:.0} ms after n1 was killed",
        killed_at.elapsed().as_secs_f64() * 1000.0
    );
    // Identifier 2 is free again, for a new message.
    exchange(&mut publisher, "e/t", "2", 2);
    assert_eq!(payloads_until(&mut watcher, "2"), ["2"], "\"1\" came twice");

    // PUBREC had, PUBREL not yet sent: then n2 dies.
    let id = pid(3);
    let packet = publish("e/t", b"3".to_vec(), QoS::ExactlyOnce, false, Some(id));
    publisher.send(&packet).unwrap();
    expect_pubrec(&mut publisher, id);
    assert_eq!(payloads_until(&mut watcher, "3"), ["3"]);
    n2.kill();
    let killed_at = Instant::now();
    let (mut publisher, present) = join(n3.port, persistent("pub", false, 10));
    assert!(present, "the session moved to n3");
    release(&mut publisher, id);
    println!(
        "resent PUBREL completed on n3 {:.0} ms after n2 was killed",
        killed_at.elapsed().as_secs_f64() * 1000.0
    );
    exchange(&mut publisher, "e/t", "4", 3);
    assert_eq!(payloads_until(&mut watcher, "4"), ["4"], "\"3\" came twice");
}

/// Real clients at QoS 2 across nodes: mosquitto_pub on one node, mosquitto_sub on another
/// at QoS 2, topics NATS would misread included.
#[test]
fn mosquitto_clients_exchange_qos2_messages_across_nodes() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2) = (node(&urls, "n1", 1), node(&urls, "n2", 1));
    let topics = ["x.y/*/>", "a b/=/ü", "c//d"];
    let (mut sub, granted) = mosquitto_sub(n2.port, QoS::ExactlyOnce, &["#"]);
    assert!(granted.ends_with(": 2"), "QoS 2 granted: {granted}");
    for (n, topic) in topics.iter().enumerate() {
        mosquitto_pub(n1.port, QoS::ExactlyOnce, topic, &format!("m{n}"));
    }
    expect_printed(&mut sub, &topics);
    sub.kill();
}

/// A QoS 2 subscriber as client libraries are (MQTT 4.3.3, the second method): a message is
/// delivered when its PUBLISH first comes, and its packet identifier is held until the PUBREL,
/// so a PUBLISH sent again under it (DUP) is not delivered twice.
#[derive(Default)]
struct Receiver {
    delivered: Vec<u32>,
    held: HashSet<u16>,
}

impl Receiver {
    /// Takes `packet`; returns the answer the client owes (PUBREC, PUBCOMP) and the number of
    /// the message it is about.
    fn take(&mut self, packet: Packet) -> (Packet, Option<u32>) {
        match packet {
            Packet::Publish(publish) => {
                let id = publish.packet_id.expect("QoS 2");
                assert_eq!(publish.qos, QoS::ExactlyOnce);
                let n: u32 = std::str::from_utf8(&publish.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                if self.held.insert(id.get()) {
                    self.delivered.push(n);
                }
                (Packet::PubRec(ack(id)), Some(n))
            }
            Packet::PubRel(rel) => {
                self.held.remove(&rel.packet_id.get());
                (Packet::PubComp(ack(rel.packet_id)), None)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A persistent QoS 2 subscriber on n2 has completed some of a stream, released two more
/// (their PUBCOMP lost), holds two without having sent their PUBREC, and has more queued,
/// when n2 is killed. Reconnecting to n3 it gets the two PUBRELs, the two PUBLISHes again
/// under their packet identifiers (DUP), then the rest: every message delivered exactly once,
/// in order.
#[test]
fn a_qos2_subscriber_whose_node_died_gets_every_message_exactly_once_on_another_node() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, SHORT_LEASE);
    let n2 = node_with(&urls, "n2", 1, SHORT_LEASE);
    let n3 = node_with(&urls, "n3", 1, SHORT_LEASE);
    let (mut sub, _) = join(n2.port, persistent("sub", true, 4));
    sub.subscribe("x/#", QoS::ExactlyOnce).unwrap();
    let mut publisher = client(&n1, "publisher");
    for n in 0..20u16 {
        exchange(&mut publisher, "x/t", &n.to_string(), n + 1);
    }

    let mut receiver = Receiver::default();
    let mut released_lost = 0;
    // 0 to 3 completed, 4 and 5 released (PUBCOMP lost), 6 and 7 held (PUBREC lost).
    while receiver.delivered.len() < 8 || released_lost < 2 {
        let (answer, n) = receiver.take(next(&mut sub));
        match (n, &answer) {
            (Some(6..), _) => continue,
            (None, Packet::PubComp(_)) if receiver.delivered.len() > 4 => {
                released_lost += 1;
                continue;
            }
            _ => sub.send(&answer).unwrap(),
        }
    }
    assert_eq!(receiver.delivered, (0..8).collect::<Vec<_>>());

    n2.kill();
    let killed_at = Instant::now();
    let (mut sub, present) = join(n3.port, persistent("sub", false, 4));
    assert!(present, "the session moved to n3");
    exchange(&mut publisher, "x/t", "20", 21);
    complete(&mut receiver, &mut sub, 21);
    println!(
        "all 21 messages delivered on n3 {:.0} ms after n2 was killed",
        killed_at.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(receiver.delivered, (0..=20).collect::<Vec<_>>());
}

/// Completes `receiver`'s exchanges on `sub` until it has had `count` messages and holds none.
fn complete(receiver: &mut Receiver, sub: &mut RawClient, count: usize) {
    while receiver.delivered.len() < count || !receiver.held.is_empty() {
        let (answer, _) = receiver.take(next(sub));
        sub.send(&answer).unwrap();
    }
}

/// The records of completed QoS 2 deliveries leave the bucket once the session's cursor passes
/// them: a persistent QoS 2 subscriber completes ten messages and leaves (its record written
/// with its cursor past them), three more come while it is away; resuming, its node reads the
/// three from the stream and no delivery record with them, and the client gets each once.
#[test]
fn completed_qos2_delivery_records_are_purged_once_the_cursor_passes_them() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let debug = [("RUST_LOG", "info,tern_cluster=debug")];
    let n1 = node_with_env(&urls, "n1", 1, "", &debug);
    let n2 = node(&urls, "n2", 1);
    let (mut sub, _) = join(n1.port, persistent("sub", true, 4));
    sub.subscribe("p/#", QoS::ExactlyOnce).unwrap();
    let mut publisher = client(&n2, "publisher");
    for n in 0..10u16 {
        exchange(&mut publisher, "p/t", &n.to_string(), n + 1);
    }
    let mut receiver = Receiver::default();
    complete(&mut receiver, &mut sub, 10);
    sub.disconnect().unwrap();

    for n in 10..13u16 {
        exchange(&mut publisher, "p/t", &n.to_string(), n + 1);
    }
    let (mut sub, present) = join(n1.port, persistent("sub", false, 4));
    assert!(present);
    complete(&mut receiver, &mut sub, 13);
    assert_eq!(receiver.delivered, (0..13).collect::<Vec<_>>());
    let read = n1
        .wait_for_log_line("QoS 2 delivery records of \"sub\"", WAIT)
        .expect("the resume read the session's delivery records");
    assert!(
        read.contains("read 0 QoS 2 delivery records") && read.contains("with 3 messages"),
        "{read}"
    );
}
