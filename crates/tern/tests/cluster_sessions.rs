//! Sessions across `tern serve` nodes joined through a real `nats-server`: a client identifier
//! connecting on another node takes its session over with what was in flight; two at once end
//! with one owner; a node paused past its lease writes nothing stale when it wakes; and what a
//! node does while NATS is out of reach (strict partition mode).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::{Duration, Instant};

use support::cluster::{
    acknowledge, client, join, node, node_with, numbered, persistent, receive_until,
    refuses_while_nats_is_out_of_reach, send, three_nodes, WAIT,
};
use support::mqtt::RawClient;
use support::nats::{NatsCluster, NatsServer};
use tern_codec::{Packet, QoS, ReasonCode};

/// Reads until the broker closes `client`, which must have said 0x8E (Session taken over).
fn expect_taken_over(client: &mut RawClient) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the old connection was not closed");
        match client.recv(left) {
            Ok(Some(Packet::Disconnect(disconnect))) => {
                assert_eq!(disconnect.reason_code, ReasonCode::SessionTakenOver);
                assert!(client.recv(WAIT).is_err(), "closed after the DISCONNECT");
                return;
            }
            Ok(_) => {}
            Err(error) => panic!("closed without DISCONNECT 0x8E: {error}"),
        }
    }
}

/// The heart of a take-over across nodes: a persistent subscriber on n1 acknowledges the first
/// ten of a QoS 1 stream and leaves the next five in flight; its client identifier connects on
/// n2 while more messages are being published. The old connection gets DISCONNECT 0x8E and
/// closes; the new one finds its session, gets the five again first (DUP, same packet
/// identifiers), then every later message once, in order; nothing acknowledged comes again.
#[test]
fn a_session_taken_over_on_another_node_keeps_its_messages_in_flight() {
    let nats = NatsServer::start();
    let (n1, n2, n3) = three_nodes(&nats);
    let (mut old, _) = join(n1.port, persistent("mover", true, 5));
    old.subscribe("mv/#", QoS::AtLeastOnce).unwrap();
    let mut publisher = client(&n3, "publisher");
    for n in 0..30 {
        send(&mut publisher, "mv/t", &n.to_string(), QoS::AtLeastOnce);
    }
    let mut in_flight = Vec::new();
    while in_flight.len() < 5 {
        let packet = old.recv(WAIT).unwrap().expect("a message");
        let (n, _, packet_id) = numbered(&packet).expect("a numbered PUBLISH");
        if n < 10 {
            acknowledge(&mut old, &packet);
        } else {
            in_flight.push((n, packet_id.expect("QoS 1")));
        }
    }
    assert_eq!(
        in_flight.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [10, 11, 12, 13, 14]
    );

    // More messages while the session moves.
    let more = std::thread::spawn(move || {
        for n in 30..60 {
            send(&mut publisher, "mv/t", &n.to_string(), QoS::AtLeastOnce);
        }
    });
    let started = Instant::now();
    let (mut new, present) = join(n2.port, persistent("mover", false, 5));
    println!(
        "session taken over in {:.1} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );
    assert!(present, "the session came along");
    expect_taken_over(&mut old);

    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 50 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only got {got:?}");
        if let Some(packet) = new.recv(left).unwrap() {
            got.push(acknowledge(&mut new, &packet));
        }
    }
    more.join().unwrap();
    let resent: Vec<(u32, bool, u16)> = in_flight.iter().map(|&(n, id)| (n, true, id)).collect();
    assert_eq!(
        got[..5],
        resent[..],
        "the unacknowledged ones again, as they were"
    );
    let order: Vec<u32> = got.iter().map(|(n, _, _)| *n).collect();
    assert_eq!(order, (10..60).collect::<Vec<_>>(), "each once, in order");
    let extra = new.recv(Duration::from_millis(300)).unwrap();
    assert!(extra.is_none(), "more than expected: {extra:?}");
}

/// Two CONNECTs for one client identifier on two nodes at once, while its session (with QoS 1
/// messages waiting) is on a third: both may be answered, but one of them is then taken over
/// (0x8E), and the survivor gets every message, none lost; nothing was acknowledged by the
/// loser, so everything is the survivor's.
#[test]
fn two_connects_for_one_client_on_two_nodes_at_once_end_with_one_owner() {
    let nats = NatsServer::start();
    let (n1, n2, n3) = three_nodes(&nats);
    let (first, _) = join(n3.port, persistent("racer", true, 100));
    let mut first = first;
    first.subscribe("race/#", QoS::AtLeastOnce).unwrap();
    first.disconnect().unwrap();
    let mut publisher = client(&n3, "publisher");
    for n in 0..10 {
        send(&mut publisher, "race/t", &n.to_string(), QoS::AtLeastOnce);
    }
    let ports = [n1.port, n2.port];
    let start = std::sync::Arc::new(std::sync::Barrier::new(2));
    let racers: Vec<_> = ports
        .into_iter()
        .map(|port| {
            let start = std::sync::Arc::clone(&start);
            std::thread::spawn(move || {
                start.wait();
                RawClient::connect_with(port, persistent("racer", false, 100)).unwrap()
            })
        })
        .collect();
    let mut clients: Vec<(RawClient, bool)> = racers
        .into_iter()
        .map(|racer| {
            let (client, connack) = racer.join().unwrap();
            assert_eq!(connack.reason_code, ReasonCode::Success);
            (client, connack.session_present)
        })
        .collect();
    assert!(clients.iter().any(|(_, present)| *present));
    // Messages that come before the loser is told are kept, unacknowledged, until it is known
    // whose they are.
    let mut early: [Vec<Packet>; 2] = Default::default();
    let deadline = Instant::now() + WAIT;
    let loser = loop {
        assert!(
            Instant::now() < deadline,
            "two owners: nobody was taken over"
        );
        let mut closed = None;
        for (n, (client, _)) in clients.iter_mut().enumerate() {
            match client.recv(Duration::from_millis(50)) {
                Ok(Some(Packet::Disconnect(disconnect))) => {
                    assert_eq!(disconnect.reason_code, ReasonCode::SessionTakenOver);
                    closed = Some(n);
                }
                Ok(Some(packet)) => early[n].push(packet),
                Ok(None) => {}
                Err(error) => panic!("closed without 0x8E: {error}"),
            }
        }
        if let Some(n) = closed {
            break n;
        }
    };
    let (mut survivor, _) = clients.remove(1 - loser);
    let (mut gone, _) = clients.remove(0);
    assert!(gone.recv(WAIT).is_err(), "the loser is closed");
    send(&mut publisher, "race/t", "10", QoS::AtLeastOnce);
    let mut got = std::collections::BTreeSet::new();
    for packet in &early[1 - loser] {
        got.insert(acknowledge(&mut survivor, packet).0);
    }
    let deadline = Instant::now() + WAIT;
    while got.len() < 11 {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only got {got:?}");
        if let Some(packet) = survivor.recv(left).unwrap() {
            got.insert(acknowledge(&mut survivor, &packet).0);
        }
    }
    assert_eq!(got, (0..=10).collect());
    println!("the race ended with node n{} as the owner", 2 - loser);
}

/// A node paused (SIGSTOP) past its lease while its session moves to another node writes
/// nothing stale when it wakes: the old client, unaware, subscribes once more on its old
/// connection, which the woken node reads; the session's record still says what the new owner
/// wrote. Checked by taking the session a third time with its new owner dead, so that only the
/// record can say what it subscribed to.
#[test]
fn a_node_paused_past_its_lease_writes_nothing_stale_when_it_wakes() {
    let nats = NatsServer::start();
    paused_node_writes_nothing_stale(&[nats.url()], 1);
}

/// [`a_node_paused_past_its_lease_writes_nothing_stale_when_it_wakes`] with three NATS servers
/// joined by routes, the buckets in three replicas, each node given every server.
#[test]
fn a_node_paused_past_its_lease_writes_nothing_stale_on_three_replicated_servers() {
    let cluster = NatsCluster::start(3);
    paused_node_writes_nothing_stale(&cluster.urls(), 3);
}

/// Nodes n1 and n2 on `urls`, keeping `replicas` replicas: n1, holding a session, is paused
/// while the session moves to n2; the session's record stays as n2 wrote it.
fn paused_node_writes_nothing_stale(urls: &[String], replicas: usize) {
    let lease = "lease_secs = 1";
    let (n1, n2) = (
        node_with(urls, "n1", replicas, lease),
        node_with(urls, "n2", replicas, lease),
    );
    let (mut old, _) = join(n1.port, persistent("sleeper", true, 10));
    old.subscribe("a", QoS::AtLeastOnce).unwrap();

    support::stop_process(n1.pid());
    let paused_at = Instant::now();
    let (mut new, present) = join(n2.port, persistent("sleeper", false, 10));
    assert!(present, "taken with what the record says");
    println!(
        "the client resumed on n2 {:.1} s after n1 stopped",
        paused_at.elapsed().as_secs_f64()
    );
    new.subscribe("b", QoS::AtLeastOnce).unwrap();
    let id = old.fresh_id();
    let stale = tern_codec::Subscribe {
        packet_id: id,
        properties: tern_codec::SubscribeProperties::default(),
        subscriptions: tern_codec::SubscriptionList::new([&tern_codec::Subscription {
            filter: "stale".parse().unwrap(),
            options: tern_codec::SubscriptionOptions::qos(QoS::AtLeastOnce),
        }]),
    };
    old.send(&Packet::Subscribe(stale)).unwrap();
    support::signal_process(n1.pid(), "CONT");
    println!("n1 woke after {:.1} s", paused_at.elapsed().as_secs_f64());
    expect_taken_over(&mut old);
    assert!(
        n1.wait_for_log("lease lapsed", WAIT),
        "the woken node noticed it had slept past its lease"
    );
    let mut publisher = client(&n2, "publisher");
    send(&mut publisher, "b", "to the new owner", QoS::AtLeastOnce);
    let seen = receive_until(&mut new, |seen| !seen.is_empty());
    assert_eq!(seen[0].1, "to the new owner", "n2 still holds the session");
    // The record, written again, moves the session's cursor past what was acknowledged.
    new.subscribe("c", QoS::AtLeastOnce).unwrap();

    n2.kill();
    let (mut third, present) = join(n1.port, persistent("sleeper", false, 10));
    assert!(present);
    let mut publisher = client(&n1, "publisher");
    for (topic, payload) in [("stale", "never"), ("a", "kept"), ("b", "kept too")] {
        send(&mut publisher, topic, payload, QoS::AtLeastOnce);
    }
    let seen = receive_until(&mut third, |seen| seen.len() >= 2);
    let payloads: Vec<&str> = seen.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        payloads,
        ["kept", "kept too"],
        "the record is the one n2 wrote"
    );
}

/// With NATS gone, a node refuses new connections with Server unavailable (3.1.1: return code
/// 3), logging each, so that a load balancer sends clients to a node that can serve them; once
/// NATS is back the node takes connections again by itself, and messages cross as before.
#[test]
fn while_nats_is_down_new_connections_are_refused_then_accepted_again() {
    let mut nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node(&urls, "n1", 1);
    let mut early = client(&n1, "early");
    early.subscribe("after/#", QoS::AtLeastOnce).unwrap();

    nats.kill();
    let down_at = Instant::now();
    refuses_while_nats_is_out_of_reach(&n1);

    nats.restart();
    assert!(n1.wait_for_log("NATS reachable again", WAIT));
    println!(
        "connections accepted again {:.0} ms after NATS went down",
        down_at.elapsed().as_secs_f64() * 1000.0
    );
    let mut publisher = client(&n1, "late");
    send(&mut publisher, "after/1", "back", QoS::AtLeastOnce);
    let seen = receive_until(&mut early, |seen| !seen.is_empty());
    assert_eq!(seen[0].1, "back");
}
