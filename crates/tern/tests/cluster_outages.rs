//! Three Tern nodes on three `nats-server`s joined by routes (the stream and buckets in three
//! replicas, each node given every server) through outages: the server a node is connected to
//! stopped (SIGSTOP) for 20 s, all three servers down for 30 s, and a Tern node stopped for
//! 20 s. The node carries on through the other servers, or, with none, refuses new connections
//! (strict partition mode) and resumes by itself; a stopped node's sessions are adopted and it
//! writes nothing when it wakes; no acknowledged message is lost. Each test prints its recovery
//! times.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use support::cluster::{
    client, join, persistent, receive_until, refuses_while_nats_is_out_of_reach, replicated_nodes,
    send, with_will, WAIT,
};
use support::mqtt::{publish, RawClient};
use support::nats::NatsCluster;
use support::peer::{with_prefix, Peer};
use support::Tern;
use tern_codec::{
    Packet, QoS, ReasonCode, Subscribe, SubscribeProperties, Subscription, SubscriptionList,
    SubscriptionOptions,
};

/// How long the server under a node is stopped.
const PAUSE: Duration = Duration::from_secs(20);
/// How long every server is down.
const OUTAGE: Duration = Duration::from_secs(30);
/// How long the nodes may take to come back once the servers are: the servers elect their
/// JetStream leaders again from their stores, and a client's reconnection attempts are spaced
/// up to 4 s apart by then.
const RESUME_WAIT: Duration = Duration::from_secs(60);

/// The payloads of `got` starting with `prefix`, each at its first arrival (QoS 1 may bring a
/// message again).
fn first_arrivals<'a>(got: &'a [String], prefix: &str) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    with_prefix(got, prefix)
        .into_iter()
        .filter(|payload| seen.insert(*payload))
        .collect()
}

/// The server n1 is connected to is stopped (SIGSTOP) for 20 s while a client on n1 publishes
/// QoS 1 messages to a subscriber on n2, one at a time, each acknowledged and received before
/// the next. n1 notices the silence, connects to another server (giving up the stopped one
/// should it try it again: it accepts connections and never greets), and messages keep
/// crossing while the server sleeps; every acknowledged message arrives, in order.
#[test]
fn a_nats_server_stopped_under_a_node_for_20_s_does_not_stop_it() {
    let cluster = NatsCluster::start(3);
    let (n1, n2, _n3) = replicated_nodes(&cluster, "");
    let mut subscriber = Peer::connect(n2.port, "subscriber");
    subscriber
        .client
        .subscribe("p/#", QoS::AtLeastOnce)
        .unwrap();
    let mut publisher = Peer::connect(n1.port, "publisher");
    let stopped = cluster.serving("tern n1");

    let mut paused_at: Option<Instant> = None;
    let (mut longest, mut crossed_while_stopped, mut n) = (Duration::ZERO, 0, 0);
    loop {
        if n == 5 {
            cluster.servers[stopped].pause();
            paused_at = Some(Instant::now());
        }
        let started = Instant::now();
        let payload = format!("p{n}");
        publisher.send("p/x", &payload, QoS::AtLeastOnce);
        subscriber.receive_through(&payload);
        n += 1;
        let Some(paused_at) = paused_at else {
            continue;
        };
        longest = longest.max(started.elapsed());
        if paused_at.elapsed() >= PAUSE {
            break;
        }
        crossed_while_stopped += 1;
    }
    cluster.servers[stopped].signal("CONT");
    println!(
        "server {} stopped under n1 for {:.0} s: the longest a message waited to be \
         acknowledged and delivered was {:.1} s; {crossed_while_stopped} crossed while it was \
         stopped",
        cluster.servers[stopped].name,
        PAUSE.as_secs_f64(),
        longest.as_secs_f64()
    );
    assert!(
        crossed_while_stopped > 0,
        "nothing crossed while the server was stopped"
    );
    // Nor did n1 lose its lease meanwhile, which would have the others adopt its sessions
    // (and publish their wills) while their clients are connected.
    let lapsed = n1
        .log_lines()
        .into_iter()
        .find(|l| l.contains("lease lapsed"));
    assert!(lapsed.is_none(), "{lapsed:?}");
    for _ in 0..3 {
        let payload = format!("p{n}");
        publisher.send("p/x", &payload, QoS::AtLeastOnce);
        subscriber.receive_through(&payload);
        n += 1;
    }
    let expected: Vec<String> = (0..n).map(|n| format!("p{n}")).collect();
    assert_eq!(first_arrivals(&subscriber.got, "p"), expected);
    println!(
        "QoS 1 copies delivered again: {}",
        subscriber.got.len() - expected.len()
    );
}

/// Connects `id` to `node` until the node takes it (bounded by [`RESUME_WAIT`] from `since`),
/// every refusal saying Server unavailable; returns the client and how many were refused.
fn connect_once_back(node: &Tern, id: &str, since: Instant) -> (RawClient, usize) {
    let mut refused = 0;
    loop {
        let (client, connack) = RawClient::connect(node.port, id, true, 0).unwrap();
        if connack.reason_code == ReasonCode::Success {
            return (client, refused);
        }
        refused += 1;
        assert_eq!(connack.reason_code, ReasonCode::ServerUnavailable);
        assert!(
            since.elapsed() < RESUME_WAIT,
            "{id} still refused {:?} after the servers came back",
            since.elapsed()
        );
    }
}

/// Every NATS server is killed and stays down for 30 s. Each node notices, refuses new
/// connections with Server unavailable (3.1.1: return code 3) and acknowledges nothing
/// published meanwhile; once the servers are back, each node reconnects, takes connections
/// again, acknowledges what was waiting, and every acknowledged message is delivered.
#[test]
fn all_nats_servers_down_for_30_s_then_everything_resumes_by_itself() {
    let mut cluster = NatsCluster::start(3);
    let (n1, n2, n3) = replicated_nodes(&cluster, "");
    let nodes = [&n1, &n2, &n3];
    let mut subscriber = Peer::connect(n2.port, "subscriber");
    subscriber
        .client
        .subscribe("d/#", QoS::AtLeastOnce)
        .unwrap();
    let mut publisher = Peer::connect(n1.port, "publisher");
    publisher.send("d/x", "d-before", QoS::AtLeastOnce);
    subscriber.receive_through("d-before");

    for server in &mut cluster.servers {
        server.kill();
    }
    let down_at = Instant::now();
    for node in nodes {
        refuses_while_nats_is_out_of_reach(node);
    }
    // Published while no server can store it: the publisher hears nothing for the rest of
    // the outage (the outage itself is this wait).
    let id = publisher.client.fresh_id();
    let during = publish(
        "d/x",
        b"d-during".to_vec(),
        QoS::AtLeastOnce,
        false,
        Some(id),
    );
    publisher.client.send(&during).unwrap();
    let early = publisher
        .client
        .recv(OUTAGE.saturating_sub(down_at.elapsed()))
        .unwrap();
    assert!(
        early.is_none(),
        "answered with every server down: {early:?}"
    );

    for server in &mut cluster.servers {
        server.restart();
    }
    let back_at = Instant::now();
    println!(
        "servers down for {:.1} s",
        back_at.duration_since(down_at).as_secs_f64()
    );
    for (node, name) in nodes.iter().zip(["n1", "n2", "n3"]) {
        assert!(
            node.wait_for_log("NATS reachable again", RESUME_WAIT),
            "{name} reconnected"
        );
        println!(
            "{name} reconnected {:.1} s after the servers were restarted",
            back_at.elapsed().as_secs_f64()
        );
    }
    match publisher.client.recv(RESUME_WAIT).unwrap() {
        Some(Packet::PubAck(puback)) if puback.packet_id == id => {
            assert_eq!(puback.reason_code, ReasonCode::Success);
        }
        other => panic!("expected the PUBACK of what was published meanwhile, got {other:?}"),
    }
    println!(
        "the message published during the outage acknowledged {:.1} s after the servers were \
         restarted",
        back_at.elapsed().as_secs_f64()
    );
    let mut clients = Vec::new();
    for (node, name) in nodes.iter().zip(["n1", "n2", "n3"]) {
        let (client, refused) = connect_once_back(node, &format!("late-{name}"), back_at);
        clients.push(client);
        println!(
            "{name} took a new connection {:.1} s after the servers were restarted ({refused} \
             refused before)",
            back_at.elapsed().as_secs_f64()
        );
    }
    drop(clients);
    let mut late = Peer::connect(n3.port, "late-publisher");
    late.send("d/x", "d-after", QoS::AtLeastOnce);
    subscriber.receive_through("d-after");
    assert_eq!(
        first_arrivals(&subscriber.got, "d-"),
        ["d-before", "d-during", "d-after"]
    );
}

/// A Tern node holding a session with a will is stopped (SIGSTOP) for 20 s, its lease 2 s: a
/// live node adopts the session and publishes the will (once); the client resumes on another
/// node with what was published for it meanwhile. Woken, the node closes the old connection
/// with 0x8E without writing the session's record: the new owner's next write, which expects
/// the revision it last wrote, goes through.
#[test]
fn a_tern_node_stopped_for_20_s_has_its_session_adopted_and_writes_nothing_when_it_wakes() {
    let cluster = NatsCluster::start(3);
    let (n1, n2, n3) = replicated_nodes(&cluster, "lease_secs = 2");
    let mut watcher = client(&n3, "watcher");
    watcher.subscribe("will/#", QoS::AtLeastOnce).unwrap();
    let (mut old, _) = join(n1.port, with_will(persistent("sleeper", true, 10)));
    old.subscribe("z/#", QoS::AtLeastOnce).unwrap();
    let mut publisher = client(&n3, "publisher");

    support::stop_process(n1.pid());
    let paused_at = Instant::now();
    for n in 0..5 {
        send(&mut publisher, "z/x", &n.to_string(), QoS::AtLeastOnce);
    }
    let will = receive_until(&mut watcher, |seen| !seen.is_empty());
    assert_eq!(will[0].1, "gone");
    println!(
        "n1 stopped: session adopted, its will out {:.1} s after",
        paused_at.elapsed().as_secs_f64()
    );
    let (mut new, present) = join(n2.port, persistent("sleeper", false, 10));
    assert!(present, "the adopted session");
    let queued = receive_until(&mut new, |seen| seen.len() >= 5);
    let payloads: Vec<&str> = queued.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(payloads, ["0", "1", "2", "3", "4"]);
    println!(
        "the client resumed on n2 with its queue {:.1} s after n1 stopped",
        paused_at.elapsed().as_secs_f64()
    );
    // The rest of the 20 s: the stopped node sends nothing on the old connection.
    let quiet = old.recv(PAUSE.saturating_sub(paused_at.elapsed())).unwrap();
    assert!(quiet.is_none(), "a stopped node spoke: {quiet:?}");
    // Read by n1 as it wakes: a write of the session's record, were it let through.
    let stale = Subscribe {
        packet_id: old.fresh_id(),
        properties: SubscribeProperties::default(),
        subscriptions: SubscriptionList::new([&Subscription {
            filter: "stale".parse().unwrap(),
            options: SubscriptionOptions::qos(QoS::AtLeastOnce),
        }]),
    };
    old.send(&Packet::Subscribe(stale)).unwrap();
    support::signal_process(n1.pid(), "CONT");
    let woke_at = Instant::now();
    loop {
        match old.recv(WAIT) {
            Ok(Some(Packet::Disconnect(disconnect))) => {
                assert_eq!(disconnect.reason_code, ReasonCode::SessionTakenOver);
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the old connection was not closed"),
            Err(_) => break,
        }
    }
    println!(
        "n1 woke after {:.1} s and closed the old connection {:.0} ms later",
        woke_at.duration_since(paused_at).as_secs_f64(),
        woke_at.elapsed().as_secs_f64() * 1000.0
    );
    assert!(n1.wait_for_log("lease lapsed", WAIT), "n1 knew it slept");
    // n2 writes the record again, expecting its own last revision, and keeps the client.
    new.subscribe("z2", QoS::AtLeastOnce).unwrap();
    send(&mut publisher, "z2", "after", QoS::AtLeastOnce);
    let after = receive_until(&mut new, |seen| !seen.is_empty());
    assert_eq!(after[0].1, "after");
    assert!(
        !n2.log_lines().iter().any(|line| line.contains("fenced")),
        "n2 lost the session to a stale write"
    );
    // The will came once: a marker published after it is the next thing the watcher gets.
    send(&mut publisher, "will/marker", "marker", QoS::AtLeastOnce);
    let next = receive_until(&mut watcher, |seen| !seen.is_empty());
    assert_eq!(next[0].1, "marker", "the will came twice: {next:?}");
}
