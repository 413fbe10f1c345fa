//! A Tern node killed (SIGKILL) while it holds sessions: a survivor adopts them, their wills go
//! out once, and their clients find them, queue included, on another node; an offline
//! session's queue is its cursor into the message stream, read back on any node.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::{Duration, Instant};

use support::cli;
use support::cluster::{
    acknowledge, client, join, node_with, node_with_env, numbered, persistent, receive_until, send,
    with_will, WAIT,
};
use support::mqtt::RawClient;
use support::nats::NatsServer;
use tern_codec::QoS;

/// Leases short enough for a node's death to be noticed within a test.
const SHORT_LEASE: &str = "lease_secs = 2";

/// Receives until `count` numbered QoS 1 messages came, acknowledging each; returns them.
fn numbers(client: &mut RawClient, count: usize) -> Vec<u32> {
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while got.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only got {} of {count}: {got:?}",
            got.len()
        );
        if let Some(packet) = client.recv(left).unwrap() {
            got.push(acknowledge(client, &packet).0);
        }
    }
    got
}

/// The heart of a node's death: a persistent subscriber on n2 with a will has acknowledged
/// some of a QoS 1 stream and holds more unacknowledged when n2 is killed. A survivor adopts
/// its session and publishes its will exactly once; the client, reconnecting to n3, finds
/// its session and every message it had not acknowledged, in order, and those published
/// since.
#[test]
fn a_killed_nodes_session_is_adopted_its_will_published_once_and_its_queue_kept() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, SHORT_LEASE);
    let n2 = node_with(&urls, "n2", 1, SHORT_LEASE);
    let n3 = node_with(&urls, "n3", 1, SHORT_LEASE);
    let mut watcher = client(&n1, "watcher");
    watcher.subscribe("will/#", QoS::AtLeastOnce).unwrap();

    let connect = with_will(persistent("victim", true, 5));
    let (mut victim, _) = join(n2.port, connect);
    victim.subscribe("q/#", QoS::AtLeastOnce).unwrap();
    let mut publisher = client(&n3, "publisher");
    for n in 0..20 {
        send(&mut publisher, "q/t", &n.to_string(), QoS::AtLeastOnce);
    }
    // The first ten acknowledged, the next five in flight, the rest queued on n2.
    let mut in_flight = 0;
    while in_flight < 5 {
        let packet = victim.recv(WAIT).unwrap().expect("a message");
        let (n, _, _) = numbered(&packet).expect("a numbered PUBLISH");
        if n < 10 {
            acknowledge(&mut victim, &packet);
        } else {
            in_flight += 1;
        }
    }

    // The session's record (and its cursor) is written with each change of its subscriptions,
    // so the cursor now stands at the first message not acknowledged.
    victim.subscribe("elsewhere", QoS::AtLeastOnce).unwrap();

    n2.kill();
    let killed_at = Instant::now();
    for n in 20..30 {
        send(&mut publisher, "q/t", &n.to_string(), QoS::AtLeastOnce);
    }
    let will = receive_until(&mut watcher, |seen| !seen.is_empty());
    println!(
        "will published {:.0} ms after the node was killed",
        killed_at.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(will[0].1, "gone");

    let reconnect_at = Instant::now();
    let (mut back, present) = join(n3.port, persistent("victim", false, 100));
    assert!(present, "the session was adopted");
    let got = numbers(&mut back, 20);
    println!(
        "queue back {:.0} ms after reconnecting",
        reconnect_at.elapsed().as_secs_f64() * 1000.0
    );
    // Every message not acknowledged, in order; none acknowledged came again, nothing twice.
    assert_eq!(got, (10..30).collect::<Vec<_>>());
    let extra = back.recv(Duration::from_millis(300)).unwrap();
    assert!(extra.is_none(), "more than expected: {extra:?}");

    // The will went out once: a marker published after it comes next.
    send(&mut publisher, "will/marker", "marker", QoS::AtLeastOnce);
    let after = receive_until(&mut watcher, |seen| !seen.is_empty());
    assert_eq!(after[0].1, "marker", "the will came again: {after:?}");
}

/// An offline session's queue is its cursor into the stream: a thousand QoS 1 messages
/// published while it is away, its node killed meanwhile, all reach it on another node, in
/// order, once each.
#[test]
fn a_thousand_messages_for_an_offline_session_reach_it_on_another_node_after_its_node_dies() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, SHORT_LEASE);
    let n2 = node_with(&urls, "n2", 1, SHORT_LEASE);
    let (mut away, _) = join(n1.port, persistent("away", true, 100));
    away.subscribe("bulk/#", QoS::AtLeastOnce).unwrap();
    away.disconnect().unwrap();

    let mut publisher = client(&n2, "publisher");
    const COUNT: u32 = 1000;
    for n in 0..COUNT {
        send(&mut publisher, "bulk/t", &n.to_string(), QoS::AtLeastOnce);
    }
    n1.kill();
    let killed_at = Instant::now();
    // Logged once n2's core holds the session with its queue, its record written before any claim.
    assert!(
        n2.wait_for_log("adopted the session of \"away\"", WAIT),
        "n2 adopted the session"
    );
    println!(
        "session adopted {:.0} ms after its node was killed",
        killed_at.elapsed().as_secs_f64() * 1000.0
    );
    let reconnect_at = Instant::now();
    let (mut back, present) = join(n2.port, persistent("away", false, 100));
    assert!(present);
    let got = numbers(&mut back, COUNT as usize);
    println!(
        "{COUNT} messages back {:.0} ms after reconnecting",
        reconnect_at.elapsed().as_secs_f64() * 1000.0
    );
    assert_eq!(got, (0..COUNT).collect::<Vec<_>>());
    let extra = back.recv(Duration::from_millis(300)).unwrap();
    assert!(extra.is_none(), "more than expected: {extra:?}");
}

/// A client resuming its session on the adopting node in the very moment the adoption settles
/// (the node made to wait there until the client's claim is queued) finds the queue the
/// adoption read back from the stream, each message once: the claim reads the session's record
/// as the core wrote it, not as the adopter took it from the dead node.
#[test]
fn a_claim_as_an_adoption_settles_gets_each_message_once() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, SHORT_LEASE);
    let hook = [("TERN_CLUSTER_ADOPTION_WAITS_FOR_CLAIM", "1")];
    let n2 = node_with_env(&urls, "n2", 1, SHORT_LEASE, &hook);
    let (mut away, _) = join(n1.port, persistent("away", true, 100));
    away.subscribe("bulk/#", QoS::AtLeastOnce).unwrap();
    away.disconnect().unwrap();

    let mut publisher = client(&n2, "publisher");
    for n in 0..50 {
        send(&mut publisher, "bulk/t", &n.to_string(), QoS::AtLeastOnce);
    }
    n1.kill();
    assert!(
        n2.wait_for_log("the adoption of \"away\" waits for a claim", WAIT),
        "n2 is adopting the session"
    );
    let (mut back, present) = join(n2.port, persistent("away", false, 100));
    assert!(present);
    assert_eq!(numbers(&mut back, 50), (0..50).collect::<Vec<_>>());
    let extra = back.recv(Duration::from_millis(300)).unwrap();
    assert!(extra.is_none(), "more than expected: {extra:?}");
}

/// An offline session keeps no copy of its queue on its node: published while it is away,
/// its QoS 1 messages are read back from the stream wherever it comes back, on its own node
/// or on another one its node hands it to, each once, in order.
#[test]
fn an_offline_sessions_queue_is_read_back_from_the_stream_on_its_node_or_another() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, "");
    let n2 = node_with(&urls, "n2", 1, "");
    let mut publisher = client(&n2, "publisher");
    let (mut away, _) = join(n1.port, persistent("away", true, 100));
    away.subscribe("back/#", QoS::AtLeastOnce).unwrap();
    away.disconnect().unwrap();

    for n in 0..100 {
        send(&mut publisher, "back/t", &n.to_string(), QoS::AtLeastOnce);
    }
    let reconnect_at = Instant::now();
    let (mut same, present) = join(n1.port, persistent("away", false, 100));
    assert!(present);
    assert_eq!(numbers(&mut same, 100), (0..100).collect::<Vec<_>>());
    println!(
        "100 messages back on the same node {:.0} ms after reconnecting",
        reconnect_at.elapsed().as_secs_f64() * 1000.0
    );
    same.disconnect().unwrap();

    for n in 100..200 {
        send(&mut publisher, "back/t", &n.to_string(), QoS::AtLeastOnce);
    }
    let reconnect_at = Instant::now();
    let (mut moved, present) = join(n2.port, persistent("away", false, 100));
    assert!(present);
    let got = numbers(&mut moved, 100);
    if got != (100..200).collect::<Vec<_>>() {
        for line in n1.log_lines().iter().chain(n2.log_lines().iter()) {
            eprintln!("LOG {line}");
        }
    }
    assert_eq!(got, (100..200).collect::<Vec<_>>());
    println!(
        "100 messages back on another node {:.0} ms after reconnecting",
        reconnect_at.elapsed().as_secs_f64() * 1000.0
    );
    let extra = moved.recv(Duration::from_millis(300)).unwrap();
    assert!(extra.is_none(), "more than expected: {extra:?}");
}

/// `mosquitto_sub` as a persistent MQTT 5 client `away` of the node on `port`, with `extra`.
fn mosquitto_sub(port: u16, extra: &[&str]) -> cli::Running {
    let port = port.to_string();
    let mut command = std::process::Command::new("mosquitto_sub");
    command
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
        .args(["-c", "-x", "600", "-i", "away", "-t", "real/#"])
        .args(extra);
    cli::spawn(&mut command)
}

/// Real clients through a node's death: `mosquitto_sub` subscribes persistently on n1 and
/// leaves, `mosquitto_pub` publishes 200 QoS 1 messages on n2, n1 is killed; the same
/// `mosquitto_sub` client identifier on n2 gets all 200, in order.
#[test]
fn mosquitto_clients_find_their_queue_after_their_node_is_killed() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, SHORT_LEASE);
    let n2 = node_with(&urls, "n2", 1, SHORT_LEASE);
    let (status, _, errors) = mosquitto_sub(n1.port, &["-E"]).finish(WAIT);
    assert!(status.success(), "mosquitto_sub -E: {errors}");

    let port = n2.port.to_string();
    let mut publish = cli::spawn(
        std::process::Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
            .args(["-t", "real/t", "-l"]),
    );
    let lines: String = (0..200).map(|n| format!("{n}\n")).collect();
    std::io::Write::write_all(&mut publish.stdin(), lines.as_bytes()).unwrap();
    let (status, _, errors) = publish.finish(WAIT);
    assert!(status.success(), "mosquitto_pub -l: {errors}");

    n1.kill();
    let killed_at = Instant::now();
    assert!(
        n2.wait_for_log("adopted the session of \"away\"", WAIT),
        "n2 adopted the session"
    );
    let count = "200".to_owned();
    let wait = WAIT.as_secs().to_string();
    let (status, out, errors) =
        mosquitto_sub(n2.port, &["-C", &count, "-W", &wait]).finish(WAIT + WAIT);
    println!(
        "mosquitto_sub had its 200 messages {:.0} ms after the node was killed",
        killed_at.elapsed().as_secs_f64() * 1000.0
    );
    assert!(status.success(), "mosquitto_sub -C: {errors}");
    let got: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (0..200).map(|n| n.to_string()).collect();
    assert_eq!(got, expected);
}

/// A node paused (SIGSTOP) past its lease while its client has a will: the survivor adopts the
/// session and publishes the will; the client's connection ends meanwhile, so the node, woken,
/// publishes the will too, under the same identity: it reaches subscribers once.
#[test]
fn a_will_published_by_the_adopter_and_by_the_woken_node_reaches_subscribers_once() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node_with(&urls, "n1", 1, SHORT_LEASE);
    let n2 = node_with(&urls, "n2", 1, SHORT_LEASE);
    let mut watcher = client(&n2, "watcher");
    watcher.subscribe("will/#", QoS::AtLeastOnce).unwrap();
    let connect = with_will(persistent("sleeper", true, 10));
    let (sleeper, _) = join(n1.port, connect);

    support::stop_process(n1.pid());
    let paused_at = Instant::now();
    let will = receive_until(&mut watcher, |seen| !seen.is_empty());
    assert_eq!(will[0].1, "gone");
    println!(
        "will published by the adopter {:.0} ms after the node was paused",
        paused_at.elapsed().as_secs_f64() * 1000.0
    );
    // The connection ends while the node sleeps: woken, it sees it closed without DISCONNECT.
    drop(sleeper);
    support::signal_process(n1.pid(), "CONT");
    assert!(
        n1.wait_for_log("belongs to n2 now", WAIT),
        "the woken node's write of the session was refused"
    );
    // Published on n1 after anything n1 published for the closed connection.
    let mut marker = client(&n1, "marker");
    send(&mut marker, "will/marker", "marker", QoS::AtLeastOnce);
    let after = receive_until(&mut watcher, |seen| !seen.is_empty());
    assert_eq!(after[0].1, "marker", "the will came twice: {after:?}");
}
