//! Several `tern serve` nodes joined through a real `nats-server` with JetStream: messages
//! cross between nodes at QoS 0 and 1 whatever bytes their topics hold, once per matching
//! subscription, in each publisher's order, and a QoS 1 PUBACK means the message is in the
//! replicated stream.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::cli;
use support::cluster::{
    client, expect_printed, mosquitto_sub, node, receive_until, replicated_nodes, send,
    three_nodes, Seen, WAIT,
};
use support::mqtt::{publish, RawClient};
use support::nats::{NatsCluster, NatsServer};
use support::Tern;
use tern_codec::{Packet, QoS, ReasonCode};

/// Nothing more arrives: a copy that dedup let through would follow the marker that ended the
/// wait within microseconds (copies of one message are handed out together), far inside this.
fn assert_quiet(client: &mut RawClient) {
    let extra = client.recv(Duration::from_millis(300)).expect("connected");
    assert!(extra.is_none(), "more than expected: {extra:?}");
}

/// Whether both end markers (QoS 0 and QoS 1, which take different paths) have arrived.
fn ended(seen: &[Seen]) -> bool {
    let end = |qos| {
        seen.iter()
            .any(|(t, p, q)| t == "end" && p == "end" && *q == qos)
    };
    end(QoS::AtMostOnce) && end(QoS::AtLeastOnce)
}

/// Topics NATS would misread as they are (separators, wildcards, spaces), empty levels,
/// multi-byte characters, the escape character itself, and one too long to be a subject.
fn awkward_topics() -> Vec<String> {
    let mut topics: Vec<String> = [
        "a.b/c",
        "star/*/x",
        "gt/>",
        "with space/ and =/=2E",
        "/",
        "a//b/",
        "ünï/çødé/😀",
        "plain",
    ]
    .iter()
    .map(|t| (*t).to_owned())
    .collect();
    topics.push(format!("long/{}", "x.".repeat(1500)));
    topics
}

#[test]
fn messages_cross_nodes_once_whatever_bytes_their_topics_hold() {
    let nats = NatsServer::start();
    let (n1, n2, n3) = three_nodes(&nats);
    awkward_topics_cross_once(&n1, &n2, &n3);
}

/// [`messages_cross_nodes_once_whatever_bytes_their_topics_hold`] with three NATS servers
/// joined by routes, the stream in three replicas, each node given every server.
#[test]
fn messages_cross_nodes_once_whatever_bytes_their_topics_hold_on_three_servers() {
    let cluster = NatsCluster::start(3);
    let (n1, n2, n3) = replicated_nodes(&cluster, "");
    awkward_topics_cross_once(&n1, &n2, &n3);
}

/// Publishes probes to `topic` at QoS 0 and 1 from `publisher` until `subscriber` has heard
/// both, dropping every probe it gets: with several NATS servers, the publisher's server and
/// the stream leader's learn of a subscription over their routes a moment after its SUBACK,
/// and in the order the subscriptions were made.
fn until_heard(publisher: &mut RawClient, subscriber: &mut RawClient, topic: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        send(publisher, topic, "probe", QoS::AtMostOnce);
        send(publisher, topic, "probe", QoS::AtLeastOnce);
        let mut heard = Vec::new();
        while let Some(packet) = subscriber.recv(Duration::from_millis(200)).unwrap() {
            let Packet::Publish(probe) = packet else {
                panic!("unexpected {packet:?}");
            };
            assert_eq!(&probe.payload[..], b"probe", "only probes come yet");
            if let Some(id) = probe.packet_id {
                let ack = Packet::PubAck(tern_codec::Ack::new(id));
                subscriber.send(&ack).unwrap();
            }
            if probe.topic.as_str() == topic {
                heard.push(probe.qos);
            }
        }
        if heard.contains(&QoS::AtMostOnce) && heard.contains(&QoS::AtLeastOnce) {
            return;
        }
        assert!(Instant::now() < deadline, "{topic:?} never heard");
    }
}

/// Every awkward topic crosses from `n1` to subscribers on `n2` and `n3` at QoS 0 and 1, once
/// per subscription; `#` and `+/b` leave `$` topics alone.
fn awkward_topics_cross_once(n1: &Tern, n2: &Tern, n3: &Tern) {
    let mut everything = client(n2, "everything");
    everything.subscribe("#", QoS::AtLeastOnce).unwrap();
    let mut dollar = client(n3, "dollar");
    dollar.subscribe("$x/#", QoS::AtLeastOnce).unwrap();
    dollar.subscribe("+/b", QoS::AtLeastOnce).unwrap();
    let mut publisher = client(n1, "publisher");
    // The last filter of each, as each client's filters reach the other servers in order.
    until_heard(&mut publisher, &mut dollar, "probe/b");
    until_heard(&mut publisher, &mut everything, "probe");

    let topics = awkward_topics();
    let mut expected = Vec::new();
    for (n, topic) in topics.iter().enumerate() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let payload = format!("{n}:{qos:?}");
            send(&mut publisher, topic, &payload, qos);
            expected.push((topic.clone(), payload, qos));
        }
    }
    // `#` never matches a topic starting with `$`, nor does `+/b` (MQTT-4.7.2-1).
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        send(&mut publisher, "$x/b", "dollar", qos);
        send(&mut publisher, "end", "end", qos);
        expected.push(("end".to_owned(), "end".to_owned(), qos));
    }

    let mut seen = receive_until(&mut everything, |seen| {
        ended(seen) && seen.len() >= expected.len()
    });
    assert_quiet(&mut everything);
    seen.sort();
    expected.sort();
    assert_eq!(seen, expected);

    let seen = receive_until(&mut dollar, |seen| seen.len() >= 2);
    assert_eq!(
        seen,
        [
            ("$x/b".to_owned(), "dollar".to_owned(), QoS::AtMostOnce),
            ("$x/b".to_owned(), "dollar".to_owned(), QoS::AtLeastOnce),
        ]
    );
    assert_quiet(&mut dollar);
}

#[test]
fn overlapping_subscriptions_get_one_copy_in_each_publishers_order_on_every_node() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2) = (node(&urls, "n1", 1), node(&urls, "n2", 1));
    // Four NATS subscriptions of n2 match `o/b/c`: `o`, `o.>`, `o.*.c`, `o.b.c`.
    let mut overlapping = client(&n2, "overlapping");
    for filter in ["o/#", "o/+/c", "o/b/c", "end"] {
        overlapping.subscribe(filter, QoS::AtLeastOnce).unwrap();
    }
    // On the publisher's own node, QoS 1 comes back from the stream like everywhere else.
    let mut local = client(&n1, "local");
    local.subscribe("o/b/c", QoS::AtLeastOnce).unwrap();
    local.subscribe("end", QoS::AtLeastOnce).unwrap();
    let mut publisher = client(&n1, "publisher");

    const COUNT: usize = 50;
    for n in 0..COUNT {
        send(&mut publisher, "o/b/c", &format!("{n}"), QoS::AtMostOnce);
        send(&mut publisher, "o/b/c", &format!("{n}"), QoS::AtLeastOnce);
    }
    send(&mut publisher, "end", "end", QoS::AtMostOnce);
    send(&mut publisher, "end", "end", QoS::AtLeastOnce);

    for subscriber in [&mut overlapping, &mut local] {
        let seen = receive_until(subscriber, |seen| ended(seen) && seen.len() >= 2 * COUNT);
        assert_quiet(subscriber);
        let mut by_qos: BTreeMap<QoS, Vec<String>> = BTreeMap::new();
        for (topic, payload, qos) in seen.into_iter().filter(|(t, _, _)| t != "end") {
            assert_eq!(topic, "o/b/c");
            by_qos.entry(qos).or_default().push(payload);
        }
        let in_order: Vec<String> = (0..COUNT).map(|n| n.to_string()).collect();
        assert_eq!(by_qos.get(&QoS::AtMostOnce), Some(&in_order), "QoS 0");
        assert_eq!(by_qos.get(&QoS::AtLeastOnce), Some(&in_order), "QoS 1");
    }
    drop((n1, n2));
}

/// Real clients: mosquitto_sub on one node, `tern pub` on another.
#[test]
fn real_clients_exchange_messages_across_nodes() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2) = (node(&urls, "n1", 1), node(&urls, "n2", 1));
    let topics = ["spaces and.dots/*/>", "ünï/😀", "a//b", "$app/x"];
    let (mut sub, _) = mosquitto_sub(n2.port, QoS::AtLeastOnce, &["#", "$app/#"]);
    let port = n1.port.to_string();
    for (n, topic) in topics.iter().enumerate() {
        let payload = format!("m{n}");
        let (status, _, errors) = cli::run(
            &[
                "pub",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                &payload,
            ],
            b"",
        );
        assert!(status.success(), "tern pub to {topic:?}: {errors}");
    }
    expect_printed(&mut sub, &topics);
    sub.kill();
}

/// A PUBACK only once JetStream has stored the message: while the NATS server is stopped
/// (SIGSTOP, its sockets open) none comes; once it runs again the message is stored, the PUBACK
/// goes and the subscriber on the other node gets the message once.
#[test]
fn no_puback_before_jetstream_has_the_message() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let (n1, n2) = (node(&urls, "n1", 1), node(&urls, "n2", 1));
    let mut subscriber = client(&n2, "subscriber");
    subscriber.subscribe("held", QoS::AtLeastOnce).unwrap();
    let mut publisher = client(&n1, "publisher");
    send(&mut publisher, "held", "before", QoS::AtLeastOnce);

    nats.pause();
    let packet_id = publisher.fresh_id();
    publisher
        .send(&publish(
            "held",
            b"while stopped".to_vec(),
            QoS::AtLeastOnce,
            false,
            Some(packet_id),
        ))
        .unwrap();
    // Nothing can store it while the server is stopped, so nothing may acknowledge it.
    let early = publisher.recv(Duration::from_secs(1)).unwrap();
    assert!(
        early.is_none(),
        "acknowledged while NATS was stopped: {early:?}"
    );
    let stopped_at = Instant::now();
    nats.signal("CONT");
    match publisher.recv(WAIT).unwrap() {
        Some(Packet::PubAck(ack)) => {
            assert_eq!(ack.packet_id, packet_id);
            assert_eq!(ack.reason_code, ReasonCode::Success);
        }
        other => panic!("expected the PUBACK, got {other:?}"),
    }
    println!(
        "PUBACK {:.1} s after the NATS server resumed",
        stopped_at.elapsed().as_secs_f64()
    );
    send(&mut publisher, "held", "end", QoS::AtLeastOnce);
    let seen = receive_until(&mut subscriber, |seen| {
        seen.iter().any(|(_, p, _)| p == "end")
    });
    let payloads: Vec<&str> = seen.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(payloads, ["before", "while stopped", "end"]);
    drop((n1, n2));
}

#[test]
fn a_node_that_cannot_reach_nats_refuses_to_start() {
    // A port nothing listens on.
    let port = support::mosquitto::free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nbind = \"127.0.0.1:0\"\n[cluster]\nnats = [\"nats://127.0.0.1:{port}\"]\n\
             node_id = \"lonely\"\n"
        ),
    )
    .unwrap();
    let (status, _, errors) = cli::run(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--durability",
            "none",
        ],
        b"",
    );
    assert!(!status.success());
    assert!(errors.contains("cannot connect to NATS"), "{errors}");
    assert!(!errors.contains("listening for MQTT"), "{errors}");
}

/// Three NATS servers joined by routes, the stream replicated on all three, nodes on different
/// servers.
#[test]
fn qos1_crosses_nodes_on_different_nats_servers_with_three_replicas() {
    let cluster = NatsCluster::start(3);
    let first = [cluster.servers[0].url()];
    let third = [cluster.servers[2].url()];
    let (n1, n2) = (node(&first, "n1", 3), node(&third, "n2", 3));
    let mut subscriber = client(&n2, "subscriber");
    subscriber.subscribe("t/#", QoS::AtLeastOnce).unwrap();
    let mut publisher = client(&n1, "publisher");
    // The SUBACK means n2's NATS server has the subscription; the other servers learn of it
    // over their routes a moment later. Probe until a message gets through.
    let deadline = Instant::now() + WAIT;
    loop {
        send(&mut publisher, "t/probe", "probe", QoS::AtLeastOnce);
        if let Some(Packet::Publish(p)) = subscriber.recv(Duration::from_millis(200)).unwrap() {
            if let Some(id) = p.packet_id {
                subscriber
                    .send(&Packet::PubAck(tern_codec::Ack::new(id)))
                    .unwrap();
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "interest never reached the publisher's server"
        );
    }
    for n in 0..20 {
        send(&mut publisher, "t/seq", &n.to_string(), QoS::AtLeastOnce);
    }
    let seen = receive_until(&mut subscriber, |seen| {
        seen.iter().filter(|(t, _, _)| t == "t/seq").count() >= 20
    });
    let sequence: Vec<String> = seen
        .into_iter()
        .filter(|(t, _, _)| t == "t/seq")
        .map(|(_, p, _)| p)
        .collect();
    assert_eq!(sequence, (0..20).map(|n| n.to_string()).collect::<Vec<_>>());
    drop((n1, n2));
}
