//! Memory accounts prove that the bytes charged for messages held for receivers (queued, in
//! flight, QoS 0 waiting to be written) go up and down exactly, that the per-session and
//! per-connection byte limits hold, and that at the broker-wide limit QoS 0 deliveries go
//! first, then the largest consumer is cut loose, and a healthy subscriber loses nothing.
//! (Every scenario of the harness also checks the running total against a fresh sum.)
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use tern_codec::{Packet, ReasonCode};
use tern_core::{DropReason, Event, HeldBytes, Limits};

use support::*;

/// A payload that makes a message on topic `t` cost exactly 100 bytes (1 + 99).
fn payload(n: usize) -> String {
    format!("{n:099}")
}

fn held(tb: &TestBroker, client_id: &str) -> HeldBytes {
    tb.broker
        .session_held_bytes(client_id)
        .expect("the session exists")
}

/// Publishes `count` QoS 1 messages of 100 bytes on `t`, numbered from `first`.
fn publish_many(tb: &mut TestBroker, publisher: &TestClient, first: usize, count: usize) {
    for n in first..first + count {
        tb.send(publisher, publish("t", &payload(n), Q1, n as u16 + 1));
    }
}

/// Receives and acknowledges everything waiting for `client`; returns the payloads.
fn take_and_ack(tb: &mut TestBroker, client: &TestClient) -> Vec<String> {
    let packets = tb.recv(client);
    for packet in &packets {
        if let Packet::Publish(publish) = packet {
            if let Some(id) = publish.packet_id {
                tb.send(client, puback(id.get()));
            }
        }
    }
    payloads(&packets)
}

#[test]
fn held_bytes_follow_queue_window_and_outbox_exactly() {
    let mut tb = TestBroker::with_limits(Limits {
        inflight_count_max: 2,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V311, Opts::new().resume());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V311, Opts::new());
    publish_many(&mut tb, &publisher, 0, 3);
    // Two in flight (the window), one queued; nothing drained yet.
    let expected = HeldBytes {
        queued: 100,
        inflight: 200,
        outbox_qos0: 0,
    };
    assert_eq!(held(&tb, "s"), expected);
    assert_eq!(tb.broker.held_bytes(), 300);
    // Acknowledged: the queued one moves into the window.
    assert_eq!(take_and_ack(&mut tb, &subscriber).len(), 2);
    assert_eq!(held(&tb, "s").inflight, 100);
    assert_eq!(held(&tb, "s").queued, 0);
    assert_eq!(take_and_ack(&mut tb, &subscriber).len(), 1);
    assert_eq!(held(&tb, "s"), HeldBytes::default());
    assert_eq!(tb.broker.held_bytes(), 0);

    // QoS 0: held while it waits in the outbox, released as it is taken.
    tb.send(&publisher, publish("t", &payload(7), Q0, 0));
    assert_eq!(held(&tb, "s").outbox_qos0, 100);
    assert_eq!(tb.recv(&subscriber).len(), 1);
    assert_eq!(tb.broker.held_bytes(), 0);

    // Offline: queued, then released when the session ends.
    tb.lose(&subscriber);
    publish_many(&mut tb, &publisher, 10, 2);
    assert_eq!(tb.broker.held_bytes(), 200);
    let fresh = tb.connect("s", V311, Opts::new());
    tb.expect_silent(&fresh);
    assert_eq!(tb.broker.held_bytes(), 0);
}

#[test]
fn inflight_byte_limit_keeps_the_rest_queued() {
    let mut tb = TestBroker::with_limits(Limits {
        inflight_bytes_max: 250,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    publish_many(&mut tb, &publisher, 0, 4);
    assert_eq!(held(&tb, "s").inflight, 200);
    assert_eq!(held(&tb, "s").queued, 200);
    assert_eq!(take_and_ack(&mut tb, &subscriber).len(), 2);
    assert_eq!(take_and_ack(&mut tb, &subscriber).len(), 2);
    assert!(drops(&tb.events()).is_empty(), "nothing is dropped");

    // One message larger than the limit still goes, alone.
    let big = "x".repeat(400);
    tb.send(&publisher, publish("t", &big, Q1, 9));
    assert_eq!(take_and_ack(&mut tb, &subscriber), [big]);
}

#[test]
fn qos0_outbox_byte_limit_drops_the_newest() {
    let mut tb = TestBroker::with_limits(Limits {
        outbox_qos0_bytes_max: 250,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V311, Opts::new());
    tb.subscribe(&subscriber, "t", Q0);
    let publisher = tb.connect("p", V311, Opts::new());
    for n in 0..3 {
        tb.send(&publisher, publish("t", &payload(n), Q0, 0));
    }
    assert_eq!(held(&tb, "s").outbox_qos0, 200);
    assert_eq!(
        drops(&tb.events()),
        [("s".to_owned(), DropReason::OutboxFull)]
    );
    assert_eq!(payloads(&tb.recv(&subscriber)), [payload(0), payload(1)]);
    assert_eq!(tb.broker.held_bytes(), 0);
}

/// At the limit a QoS 0 delivery is dropped and nobody is cut loose for it; a QoS 1 delivery
/// to a healthy subscriber cuts loose the consumer holding the most (told 0x97 and closed), and
/// the healthy one gets every message.
#[test]
fn memory_limit_drops_qos0_then_cuts_loose_the_largest_consumer() {
    let mut tb = TestBroker::with_limits(Limits {
        memory_max_bytes: 950,
        ..Limits::default()
    });
    // Deliveries go out in this order; the healthy two hold each message until they take it.
    let stalled = tb.connect("stalled", V5, Opts::new());
    tb.subscribe(&stalled, "t", Q1);
    let good = tb.connect("good", V5, Opts::new());
    tb.subscribe(&good, "t", Q1);
    let qos0 = tb.connect("qos0", V5, Opts::new());
    tb.subscribe(&qos0, "t", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    let mut got_qos0 = Vec::new();
    let mut got_good = Vec::new();
    for n in 0..12 {
        publish_many(&mut tb, &publisher, n, 1);
        got_qos0.extend(tb.recv(&qos0).iter().map(|_| n));
        got_good.extend(take_and_ack(&mut tb, &good));
        if n == 7 {
            // 800 bytes for the stalled subscriber and 100 for the good one: the QoS 0 copy
            // did not fit, and was dropped with nobody cut loose.
            assert_eq!(tb.stats().sessions_shed, 0);
        }
    }
    // The ninth message did not fit next to the stalled subscriber's 900 bytes either: the
    // good subscriber's QoS 1 copy cut the stalled one loose.
    let expected_qos0: Vec<usize> = (0..12).filter(|&n| n != 7).collect();
    assert_eq!(got_qos0, expected_qos0);
    assert_eq!(got_good, (0..12).map(payload).collect::<Vec<_>>());
    let events = tb.events();
    assert_eq!(
        drops(&events),
        [("qos0".to_owned(), DropReason::MemoryFull)]
    );
    let shed: Vec<_> = events
        .iter()
        .filter(|e| matches!(e, Event::Shed { .. }))
        .collect();
    assert_eq!(
        shed,
        [&Event::Shed {
            client_id: mstr("stalled"),
            bytes: 900,
            messages: 9
        }]
    );
    // What was waiting for it went; it is told why and closed.
    assert_eq!(
        tb.expect_closed(&stalled),
        [disconnect(ReasonCode::QuotaExceeded)]
    );
    let stats = tb.stats();
    assert_eq!(stats.sessions_shed, 1);
    assert_eq!(stats.publish_dropped_memory, 10);
    assert_eq!(stats.publish_dropped, 10);
    assert_eq!(tb.broker.held_bytes(), 0);
}

/// When the receiver itself holds the most, its new message is refused (dropped, counted) and
/// nobody is cut loose.
#[test]
fn memory_limit_refuses_the_largest_consumer_its_new_messages() {
    let mut tb = TestBroker::with_limits(Limits {
        memory_max_bytes: 500,
        ..Limits::default()
    });
    let stalled = tb.connect("stalled", V311, Opts::new().resume());
    tb.subscribe(&stalled, "t", Q1);
    tb.disconnect(&stalled);
    let publisher = tb.connect("p", V311, Opts::new());
    publish_many(&mut tb, &publisher, 0, 7);
    assert_eq!(held(&tb, "stalled").queued, 500);
    assert_eq!(
        drops(&tb.events()),
        vec![("stalled".to_owned(), DropReason::MemoryFull); 2]
    );
    assert_eq!(tb.stats().sessions_shed, 0);
    // The publisher was acknowledged every time.
    let acks = tb.recv(&publisher);
    assert_eq!(acks.len(), 7);
    let stalled = tb.connect("stalled", V311, Opts::new().resume());
    assert_eq!(
        take_and_ack(&mut tb, &stalled),
        (0..5).map(payload).collect::<Vec<_>>()
    );
    assert_eq!(tb.broker.held_bytes(), 0);
}

/// A session cut loose while offline keeps its subscriptions but none of its messages.
#[test]
fn an_offline_session_cut_loose_keeps_its_subscriptions() {
    let mut tb = TestBroker::with_limits(Limits {
        memory_max_bytes: 500,
        ..Limits::default()
    });
    let offline = tb.connect("offline", V5, Opts::new().resume().expiry(600));
    tb.subscribe(&offline, "t", Q1);
    tb.disconnect(&offline);
    let good = tb.connect("good", V5, Opts::new());
    tb.subscribe(&good, "u", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    publish_many(&mut tb, &publisher, 0, 5);
    tb.send(&publisher, publish("u", "for the good one", Q1, 100));
    assert_eq!(take_and_ack(&mut tb, &good), ["for the good one"]);
    assert_eq!(tb.stats().sessions_shed, 1);
    tb.send(&publisher, publish("t", "after", Q1, 101));
    let offline = tb.connect("offline", V5, Opts::new().resume().expiry(600));
    assert!(offline.connack.session_present);
    assert_eq!(take_and_ack(&mut tb, &offline), ["after"]);
}

/// Stalled is not slow: at the memory limit, a subscriber that is taking its messages (it
/// acknowledged one within the last second) is neither refused its new messages nor cut loose
/// while one that has made no progress holds any: the stalled one goes first, even when the
/// moving one holds more.
#[test]
fn memory_limit_cuts_a_stalled_consumer_before_a_moving_larger_one() {
    let mut tb = TestBroker::with_limits(Limits {
        memory_max_bytes: 1000,
        ..Limits::default()
    });
    tb.advance_secs(10);
    // Each message costs 100 bytes: a 3-byte topic and 97 bytes of payload.
    let message = |n: usize| format!("{n:097}");
    let moving = tb.connect("moving", V5, Opts::new());
    tb.subscribe(&moving, "t/+", Q1);
    let stalled = tb.connect("stalled", V5, Opts::new());
    tb.subscribe(&stalled, "t/a", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t/a", &message(0), Q1, 1));
    tb.send(&publisher, publish("t/a", &message(1), Q1, 2));
    // The moving subscriber acknowledges the first and is slower with the rest.
    let first = tb.recv(&moving);
    assert_eq!(payloads(&first)[0], message(0));
    tb.send(&moving, puback(packet_id(&first[0])));
    let mut got = payloads(&first)[..1].to_vec();
    let unacknowledged = payloads(&first)[1..].to_vec();
    tb.advance(100);
    for n in 2..10 {
        tb.send(&publisher, publish("t/b", &message(n), Q1, n as u16 + 1));
    }
    // 900 bytes for the moving one, 200 for the stalled: the limit was passed on the way, and
    // the stalled one was cut loose rather than the moving one refused.
    let events = tb.events();
    assert!(drops(&events).is_empty(), "{events:?}");
    assert!(
        events.contains(&Event::Shed {
            client_id: mstr("stalled"),
            bytes: 200,
            messages: 2
        }),
        "{events:?}"
    );
    assert_eq!(
        tb.expect_closed(&stalled),
        [disconnect(ReasonCode::QuotaExceeded)]
    );
    // The rest of the first read is acknowledged now, then everything sent since.
    for packet in &first[1..] {
        tb.send(&moving, puback(packet_id(packet)));
    }
    got.extend(unacknowledged);
    while got.len() < 10 {
        let more = take_and_ack(&mut tb, &moving);
        assert!(!more.is_empty(), "got {got:?}");
        got.extend(more);
    }
    assert_eq!(got, (0..10).map(message).collect::<Vec<_>>());
}
