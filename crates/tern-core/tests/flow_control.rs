//! Flow control (docs/design/backpressure.md) proves that a subscriber whose queue reaches its
//! limits holds back its publishers' PUBACK/PUBREC, in order, until it drains to the low-water
//! mark, at both protocol levels and QoS 1 and 2, losing nothing; that a publisher held past its
//! window is no longer read (unless its own queue needs its acknowledgements); that `$share`
//! groups route around a congested member before holding anyone; and that a stalled subscriber,
//! or one too far behind, is cut loose and its publishers let go at once.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use tern_codec::{Packet, ProtocolVersion, QoS, ReasonCode};
use tern_core::{CutReason, DropReason, Event, Limits, StalledSubscriber};

use support::*;

/// Queues of 4 messages (low-water mark 2) behind a window of one.
fn small_queues() -> Limits {
    Limits {
        queued_count_max: 4,
        inflight_count_max: 1,
        ..Limits::default()
    }
}

/// Takes the one delivery waiting for `client` and completes its exchange (PUBACK; or PUBREC,
/// PUBREL, PUBCOMP); returns its payload, or `None` if nothing was waiting.
fn take_one(tb: &mut TestBroker, client: &TestClient) -> Option<String> {
    let packets = tb.recv(client);
    let publish = publishes(&packets).first().map(|p| (*p).clone())?;
    assert_eq!(publishes(&packets).len(), 1, "a window of one: {packets:?}");
    let id = publish.packet_id.expect("QoS 1 or 2").get();
    match publish.qos {
        QoS::ExactlyOnce => {
            tb.send(client, pubrec(id));
            assert_eq!(tb.recv(client), [pubrel(id)]);
            tb.send(client, pubcomp(id));
        }
        _ => tb.send(client, puback(id)),
    }
    Some(String::from_utf8_lossy(&publish.payload).into_owned())
}

/// The packet identifiers of the acknowledgements among `packets`.
fn ack_ids(packets: &[Packet]) -> Vec<u16> {
    packets.iter().map(packet_id).collect()
}

/// The `CutLoose` events among `events`, as (client, reason, disconnected).
fn cut_loose(events: &[Event]) -> Vec<(String, CutReason, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::CutLoose {
                client_id,
                reason,
                disconnected,
                ..
            } => Some((client_id.to_string(), *reason, *disconnected)),
            _ => None,
        })
        .collect()
}

/// The acknowledgement the broker answers a `qos` PUBLISH with.
fn expected_ack(version: ProtocolVersion, qos: QoS, id: u16, matched: bool) -> Packet {
    match (qos, version, matched) {
        (QoS::ExactlyOnce, _, _) => pubrec(id),
        (_, V5, false) => Packet::PubAck(ack(id, ReasonCode::NoMatchingSubscribers)),
        _ => puback(id),
    }
}

#[test]
fn acknowledgements_are_held_in_order_until_the_subscriber_drains() {
    for version in VERSIONS {
        for qos in [Q1, Q2] {
            let case = format!("{version:?} {qos:?}");
            let mut tb = TestBroker::with_limits(small_queues());
            let subscriber = tb.connect("s", version, Opts::new());
            tb.subscribe(&subscriber, "t", qos);
            let publisher = tb.connect("p", version, Opts::new());
            // m1 goes out, m2..m5 fill the queue: m5 reaches its limit and holds the publisher;
            // m6, m7 and a message nobody subscribes to wait behind it.
            for n in 1..=7u16 {
                tb.send(&publisher, publish("t", &format!("m{n}"), qos, n));
            }
            tb.send(&publisher, publish("elsewhere", "x", qos, 8));
            assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2, 3, 4], "{case}");
            let stats = tb.stats();
            assert_eq!(
                (stats.publishers_held, stats.subscribers_congested),
                (1, 1),
                "{case}"
            );
            // Six queued; three taken leave three, still above the low-water mark (2).
            let mut got = Vec::new();
            for _ in 0..3 {
                got.extend(take_one(&mut tb, &subscriber));
                tb.expect_silent(&publisher);
            }
            // The fourth brings it to the mark: everything held goes, in order.
            got.extend(take_one(&mut tb, &subscriber));
            let released: Vec<Packet> = (5..=8)
                .map(|n| expected_ack(version, qos, n, n != 8))
                .collect();
            assert_eq!(tb.recv(&publisher), released, "{case}");
            while let Some(payload) = take_one(&mut tb, &subscriber) {
                got.push(payload);
            }
            let all: Vec<String> = (1..=7).map(|n| format!("m{n}")).collect();
            assert_eq!(got, all, "{case}: every message, in order");
            assert!(drops(&tb.events()).is_empty(), "{case}: nothing dropped");
            let stats = tb.stats();
            assert_eq!(stats.acks_held, 4, "{case}");
            assert_eq!(
                (stats.publishers_held, stats.subscribers_congested),
                (0, 0),
                "{case}"
            );
            if qos == Q2 {
                // The publisher's exchanges complete as usual.
                for n in 1..=8 {
                    tb.send(&publisher, pubrel(n));
                    assert_eq!(tb.recv(&publisher), [pubcomp(n)], "{case}");
                }
            }
        }
    }
}

/// Between the marks a congested subscriber still holds whoever feeds it: a second publisher
/// that arrives while its queue drains from the high-water mark towards the low one waits too,
/// and is let go with the first once the queue is down to the low-water mark.
#[test]
fn a_congested_subscriber_holds_new_publishers_until_the_low_water_mark() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 6,
        inflight_count_max: 1,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    let first = tb.connect("p1", V5, Opts::new());
    // m1 in flight, m2..m7 queued: the queue is at its limit (6) and p1 held from m7.
    for n in 1..=7u16 {
        tb.send(&first, publish("t", &format!("m{n}"), Q1, n));
    }
    assert_eq!(ack_ids(&tb.recv(&first)), [1, 2, 3, 4, 5, 6]);
    // Two taken: four queued, under the high-water mark but above the low one (3).
    let mut got = Vec::new();
    for _ in 0..2 {
        got.extend(take_one(&mut tb, &subscriber));
    }
    let second = tb.connect("p2", V5, Opts::new());
    tb.send(&second, publish("t", "n1", Q1, 1));
    tb.expect_silent(&second);
    tb.expect_silent(&first);
    // Five queued; two more taken bring it to the mark: both publishers are let go.
    got.extend(take_one(&mut tb, &subscriber));
    tb.expect_silent(&second);
    got.extend(take_one(&mut tb, &subscriber));
    assert_eq!(ack_ids(&tb.recv(&first)), [7]);
    assert_eq!(ack_ids(&tb.recv(&second)), [1]);
    while let Some(payload) = take_one(&mut tb, &subscriber) {
        got.push(payload);
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "n1"]);
    assert_eq!(tb.stats().acks_held, 2);
}

/// A 3.1.1 publisher that keeps more in flight than the Receive Maximum is no longer read until
/// its subscriber drains; keep alive does not count the time it was not read.
#[test]
fn a_publisher_held_past_its_window_is_not_read() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        receive_maximum: 3,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V311, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V311, Opts::new().keep_alive(10));
    // m3 fills the queue (2): held from there on. Three held acknowledgements are within the
    // window; the fourth is past it.
    for n in 1..=5u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    assert!(!tb.broker.reading_paused(publisher.id));
    tb.send(&publisher, publish("t", "m6", Q1, 6));
    assert!(tb.broker.any_reading_paused() && tb.broker.reading_paused(publisher.id));
    assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2]);
    assert_eq!(tb.stats().publishers_paused, 1);
    // Past 1.5 times its keep alive with nothing read: not closed, the broker stopped reading.
    tb.advance_secs(16);
    tb.expect_silent(&publisher);
    // Five queued; draining to the low-water mark (1) takes four.
    let mut resumed = Vec::new();
    for _ in 0..4 {
        tb.broker.take_resumed(&mut resumed);
        assert!(resumed.is_empty(), "{resumed:?}");
        take_one(&mut tb, &subscriber);
    }
    assert_eq!(ack_ids(&tb.recv(&publisher)), [3, 4, 5, 6]);
    assert!(!tb.broker.any_reading_paused());
    // The runtime is told to read it again (and wakes its task), once.
    tb.broker.take_resumed(&mut resumed);
    assert_eq!(resumed, [publisher.id]);
    tb.broker.take_resumed(&mut resumed);
    assert_eq!(resumed, [publisher.id]);
    let stats = tb.stats();
    assert_eq!((stats.publishers_held, stats.publishers_paused), (0, 0));
    assert!(stats.paused_millis >= 16_000, "{stats:?}");
    assert!(stats.held_millis >= stats.paused_millis, "{stats:?}");
}

/// A publisher whose own queue is congested is held but still read: its acknowledgements are
/// what drains that queue.
#[test]
fn a_publisher_is_read_while_its_own_queue_needs_it() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        receive_maximum: 3,
        ..Limits::default()
    });
    let client = tb.connect("loop", V311, Opts::new());
    tb.subscribe(&client, "t", Q1);
    for n in 1..=6u16 {
        tb.send(&client, publish("t", &format!("m{n}"), Q1, n));
    }
    assert!(!tb.broker.reading_paused(client.id));
    let packets = tb.recv(&client);
    // Its first delivery, and the acknowledgements before its queue filled.
    assert_eq!(payloads(&packets), ["m1"]);
    let mut got = vec!["m1".to_owned()];
    tb.send(&client, puback(packet_id(&packets[0])));
    // From here each delivery comes with whatever was let go meanwhile.
    let mut acks = ack_ids(&packets[1..]);
    // Each round hands over at least one delivery; more rounds than messages means it stopped.
    for _ in 0..6 {
        let packets = tb.recv(&client);
        for packet in &packets {
            match packet {
                Packet::Publish(publish) => {
                    got.push(String::from_utf8_lossy(&publish.payload).into_owned());
                    tb.send(&client, puback(packet_id(packet)));
                }
                other => acks.push(packet_id(other)),
            }
        }
    }
    acks.extend(ack_ids(&tb.recv(&client)));
    assert_eq!(acks, [1, 2, 3, 4, 5, 6]);
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6"]);
}

/// A `$share` group passes over a member whose queue is full; the publisher is held only once
/// every member is.
#[test]
fn shared_groups_route_around_a_congested_member() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        ..Limits::default()
    });
    let stuck = tb.connect("a", V5, Opts::new());
    tb.subscribe(&stuck, "$share/g/t", Q1);
    let keeping_up = tb.connect("b", V5, Opts::new());
    tb.subscribe(&keeping_up, "$share/g/t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    let mut b_got = Vec::new();
    for n in 1..=10u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
        assert_eq!(
            tb.recv(&publisher),
            [puback(n)],
            "m{n} acknowledged at once"
        );
        b_got.extend(take_one(&mut tb, &keeping_up));
    }
    // Round robin until a's queue filled with m5; then everything went to b.
    assert_eq!(b_got, ["m2", "m4", "m6", "m7", "m8", "m9", "m10"]);
    assert_eq!(tb.stats().acks_held, 0);
    // Once b falls behind too, a message finds every member busy and holds its publisher.
    for n in 11..=14u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    assert_eq!(ack_ids(&tb.recv(&publisher)), [11, 12, 13]);
    assert_eq!(tb.stats().acks_held, 1);
    assert!(drops(&tb.events()).is_empty());
}

/// A congested subscriber that acknowledges nothing for the stall timeout is disconnected
/// (0x97), its publishers let go at once; its session keeps its queue, per its expiry. Another
/// subscriber on the same topic loses nothing.
#[test]
fn a_stalled_subscriber_is_cut_loose_and_its_publishers_let_go() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        ..Limits::default()
    });
    let stalled = tb.connect("stalled", V5, Opts::new().expiry(600));
    tb.subscribe(&stalled, "t", Q1);
    let fast = tb.connect("fast", V5, Opts::new());
    tb.subscribe(&fast, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    let mut fast_got = Vec::new();
    for n in 1..=5u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
        fast_got.extend(take_one(&mut tb, &fast));
    }
    assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2]);
    // Not a moment before the stall timeout (30 s by default).
    tb.advance(29_999);
    assert_eq!(tb.stats().subscribers_cut_loose, 0);
    tb.expect_silent(&publisher);
    tb.advance(1);
    assert_eq!(ack_ids(&tb.recv(&publisher)), [3, 4, 5]);
    assert_eq!(
        cut_loose(&tb.events()),
        [("stalled".to_owned(), CutReason::Stalled, true)]
    );
    let packets = tb.expect_closed(&stalled);
    assert_eq!(payloads(&packets), ["m1"]);
    assert_eq!(packets.last(), Some(&disconnect(ReasonCode::QuotaExceeded)));
    let stats = tb.stats();
    assert_eq!((stats.subscribers_cut_loose, stats.publishers_held), (1, 0));
    // The publisher goes on at full speed; the fast subscriber has lost nothing.
    tb.send(&publisher, publish("t", "m6", Q1, 6));
    assert_eq!(tb.recv(&publisher), [puback(6)]);
    fast_got.extend(take_one(&mut tb, &fast));
    assert_eq!(fast_got, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    // Its session kept what was queued (m6 found the offline queue full: dropped, counted).
    assert_eq!(
        drops(&tb.events()),
        [("stalled".to_owned(), DropReason::QueueFull)]
    );
    let back = tb.connect("stalled", V5, Opts::new().resume().expiry(600));
    let mut got = Vec::new();
    while let Some(payload) = take_one(&mut tb, &back) {
        got.push(payload);
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5"]);
}

/// Each acknowledgement (and each PUBLISH its connection takes for writing) starts the stall
/// timeout again: a slow subscriber is never cut loose.
#[test]
fn a_slow_subscriber_that_moves_is_not_stalled() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        stall_timeout_millis: 1_000,
        ..Limits::default()
    });
    let slow = tb.connect("slow", V311, Opts::new());
    tb.subscribe(&slow, "t", Q2);
    let publisher = tb.connect("p", V311, Opts::new());
    for n in 1..=6u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    let mut got = Vec::new();
    for _ in 0..6 {
        tb.advance(900);
        got.extend(take_one(&mut tb, &slow));
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2, 3, 4, 5, 6]);
    assert_eq!(tb.stats().subscribers_cut_loose, 0);
    assert!(drops(&tb.events()).is_empty());
}

/// With `stalled_subscriber = "drop"` a stalled subscriber stays connected and lets its
/// publishers go; its own newest messages are dropped past its queue limits until it catches
/// up, and then it is back to normal.
#[test]
fn the_drop_policy_keeps_a_stalled_subscriber_and_drops_only_its_messages() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        stalled_subscriber: StalledSubscriber::Drop,
        ..Limits::default()
    });
    let stalled = tb.connect("stalled", V311, Opts::new());
    tb.subscribe(&stalled, "t", Q1);
    let publisher = tb.connect("p", V311, Opts::new());
    for n in 1..=3u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2]);
    tb.advance_secs(30);
    assert_eq!(ack_ids(&tb.recv(&publisher)), [3]);
    assert_eq!(
        cut_loose(&tb.events()),
        [("stalled".to_owned(), CutReason::Stalled, false)]
    );
    // Past its queue limits its messages are dropped; the publisher is not held.
    tb.send(&publisher, publish("t", "m4", Q1, 4));
    assert_eq!(tb.recv(&publisher), [puback(4)]);
    assert_eq!(
        drops(&tb.events()),
        [("stalled".to_owned(), DropReason::QueueFull)]
    );
    // It catches up (the low-water mark is 1): held again next time its queue fills.
    let mut got = Vec::new();
    while let Some(payload) = take_one(&mut tb, &stalled) {
        got.push(payload);
    }
    assert_eq!(got, ["m1", "m2", "m3"]);
    for n in 5..=7u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    assert_eq!(ack_ids(&tb.recv(&publisher)), [5, 6]);
    assert!(drops(&tb.events()).is_empty());
}

/// A subscriber whose queue passes twice `queued_bytes_max` (more than the windows of the
/// publishers it holds explain) is cut loose, and the publisher let go.
#[test]
fn a_subscriber_past_its_budget_is_cut_loose() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_bytes_max: 300,
        inflight_count_max: 1,
        ..Limits::default()
    });
    let behind = tb.connect("behind", V5, Opts::new());
    tb.subscribe(&behind, "t", Q1);
    // A 3.1.1 publisher that does not wait for its acknowledgements.
    let publisher = tb.connect("p", V311, Opts::new());
    // 100 bytes each: one in flight, three fill the queue (the third holds the publisher),
    // three more reach the budget (600), the eighth would pass it.
    for n in 1..=8u16 {
        tb.send(&publisher, publish("t", &format!("{n:099}"), Q1, n));
    }
    assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2, 3, 4, 5, 6, 7, 8]);
    let events = tb.events();
    assert_eq!(
        cut_loose(&events),
        [("behind".to_owned(), CutReason::OverBudget, true)]
    );
    assert_eq!(
        drops(&events),
        [("behind".to_owned(), DropReason::QueueFull)]
    );
    let packets = tb.expect_closed(&behind);
    assert_eq!(packets.last(), Some(&disconnect(ReasonCode::QuotaExceeded)));
    assert_eq!(tb.stats().acks_held, 4);
}

/// A held publisher that goes away takes its held acknowledgements with it (it sends those
/// PUBLISH packets again when it reconnects); what it published stays queued.
#[test]
fn a_held_publisher_that_leaves_is_forgotten() {
    let mut tb = TestBroker::with_limits(small_queues());
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    for n in 1..=6u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    assert_eq!(tb.stats().publishers_held, 1);
    tb.lose(&publisher);
    assert_eq!(tb.stats().publishers_held, 0);
    let mut got = Vec::new();
    while let Some(payload) = take_one(&mut tb, &subscriber) {
        got.push(payload);
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    assert!(tb.stats().held_millis == 0 && tb.stats().subscribers_congested == 0);
}

/// Retained messages for a new subscription are the broker's own: a congested subscriber gets
/// all of them, more than its queue holds, once what was queued before its SUBSCRIBE has gone;
/// they hold no publisher while they go, and none is dropped.
#[test]
fn a_retained_feed_holds_nobody_and_is_not_cut_by_the_queue_limit() {
    let mut tb = TestBroker::with_limits(small_queues());
    let retainer = tb.connect("r", V5, Opts::new());
    for n in 1..=10u16 {
        tb.send(&retainer, retained(&format!("r/{n:02}"), "x", Q1, n));
    }
    assert_eq!(ack_ids(&tb.recv(&retainer)).len(), 10);
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    // m1 in flight, m2..m5 fill the queue: p is held from m5.
    for n in 1..=5u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2, 3, 4]);
    let first = tb.recv(&subscriber);
    assert_eq!(payloads(&first), ["m1"]);
    tb.subscribe(&subscriber, "r/#", Q1);
    tb.send(&subscriber, puback(packet_id(&first[0])));
    let mut got = vec!["m1".to_owned()];
    let mut acks = Vec::new();
    let mut live = Vec::new();
    while let Some(payload) = take_one(&mut tb, &subscriber) {
        got.push(payload);
        acks.extend(ack_ids(&tb.recv(&publisher)));
        // Once the queue has drained, the publisher feeds the subscriber a live message now
        // and then while the retained messages go: acknowledged at once.
        if got.len() > 5 && got.len() % 3 == 0 {
            let n = got.len() as u16;
            live.push(format!("live{n}"));
            tb.send(&publisher, publish("t", &format!("live{n}"), Q1, 100 + n));
            assert_eq!(ack_ids(&tb.recv(&publisher)), [100 + n], "{got:?}");
        }
    }
    assert_eq!(
        acks,
        [5],
        "m5's acknowledgement, let go at the low-water mark"
    );
    let retained_got = got.iter().filter(|p| *p == "x").count();
    assert_eq!(retained_got, 10, "{got:?}");
    assert_eq!(got[..5], ["m1", "m2", "m3", "m4", "m5"]);
    // The live messages wait behind the feed (they were published after the SUBSCRIBE).
    assert_eq!(got[15..], live);
    assert!(drops(&tb.events()).is_empty());
    assert_eq!(tb.stats().acks_held, 1);
}

/// An MQTT 5 publisher that sends more QoS 1 messages than the Receive Maximum while their
/// acknowledgements are held has broken MQTT-3.3.4-7 as surely as one with too many QoS 2
/// exchanges open: DISCONNECT 0x93, and the message past the window goes nowhere. Held QoS 1
/// acknowledgements and open QoS 2 exchanges count together.
#[test]
fn an_mqtt5_publisher_past_the_receive_maximum_while_held_is_disconnected() {
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 2,
        inflight_count_max: 1,
        receive_maximum: 3,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    assert_eq!(publisher.connack.properties.receive_maximum, Some(3));
    // m1 in flight, m2 queued, m3 fills the queue: held from m3 on. m3 and m4 held, and one
    // QoS 2 exchange open: three unacknowledged, the window's worth.
    for n in 1..=4u16 {
        tb.send(&publisher, publish("t", &format!("m{n}"), Q1, n));
    }
    tb.send(&publisher, publish("t", "x", Q2, 5));
    assert_eq!(ack_ids(&tb.recv(&publisher)), [1, 2]);
    tb.send(&publisher, publish("t", "m6", Q1, 6));
    assert_eq!(
        tb.expect_closed(&publisher),
        [Packet::Disconnect(tern_codec::Disconnect::new(
            ReasonCode::ReceiveMaximumExceeded
        ))]
    );
    let mut got = Vec::new();
    while let Some(payload) = take_one(&mut tb, &subscriber) {
        got.push(payload);
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4", "x"], "m6 went nowhere");
}
