//! Retained messages for a new subscription are all delivered, paced by the subscriber: by its
//! window at QoS 1/2 and by its outbox draining at QoS 0, never cut by a queue limit; with the
//! subscription's options, expiry, replacement and clearing meanwhile, unsubscribe, session end
//! and resumption, re-subscription, and the optional cap per subscription.

mod support;

use tern_codec::RetainHandling::{DoNotSend, SendAtSubscribe, SendIfNew};
use tern_codec::{Packet, Publish, QoS, ReasonCode, SubscriptionOptions};
use tern_core::{
    Broker, Config, DropReason, Event, Limits, MemoryStore, Store, StoreOp,
    RETAINED_CAPPED_PROPERTY,
};

use support::*;

/// The topic of retained message `n` under `root`, numbered so topic order is number order.
fn numbered(root: &str, n: usize) -> String {
    format!("{root}/{n:05}")
}

/// Publishes `count` retained messages `<root>/00000`, ... at `qos`, each carrying its number.
fn retain_many(tb: &mut TestBroker, root: &str, count: usize, qos: QoS) {
    let publisher = tb.connect("retainer", V5, Opts::new());
    for n in 0..count {
        let id = if qos == Q0 {
            0
        } else {
            (n % 60_000 + 1) as u16
        };
        tb.send(
            &publisher,
            retained(&numbered(root, n), &n.to_string(), qos, id),
        );
    }
    tb.recv(&publisher);
    tb.disconnect(&publisher);
}

/// The topics of the PUBLISH packets among `packets`.
fn topics(packets: &[Packet]) -> Vec<String> {
    publishes(packets)
        .iter()
        .map(|p| p.topic.to_string())
        .collect()
}

fn expected_topics(root: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| numbered(root, n)).collect()
}

/// With the default limits (10,000 messages in a session queue or a QoS 0 outbox), a QoS 1
/// subscriber to 12,000 retained topics gets every one, in topic order, RETAIN set: no more
/// than its Receive Maximum at a time, each acknowledgement letting the next one out, nothing
/// queued or dropped on the way.
#[test]
fn every_retained_message_reaches_a_qos1_subscriber_paced_by_its_window() {
    const COUNT: usize = 12_000;
    const WINDOW: usize = 100;
    let mut tb = TestBroker::new();
    retain_many(&mut tb, "site", COUNT, Q1);
    let opts = Opts::new().receive_maximum(WINDOW as u16);
    let s = tb.connect("s", V5, opts);
    tb.subscribe(&s, "site/#", Q1);
    let first = tb.recv(&s);
    assert_eq!(topics(&first), expected_topics("site", WINDOW));
    let held = tb.broker.session_held_bytes("s").expect("session");
    assert_eq!(held.queued, 0, "nothing waits in the queue: {held:?}");
    // One acknowledgement, one more message.
    tb.send(&s, puback(packet_id(&first[0])));
    let next = tb.recv(&s);
    assert_eq!(topics(&next), [numbered("site", WINDOW)]);
    for packet in first[1..].iter().chain(&next) {
        tb.send(&s, puback(packet_id(packet)));
    }
    let (rest, batch_max) = tb.read_all(&s);
    assert!(batch_max <= WINDOW, "{batch_max} sent at once");
    let all: Vec<Packet> = first.into_iter().chain(next).chain(rest).collect();
    assert_eq!(topics(&all), expected_topics("site", COUNT));
    assert!(publishes(&all).iter().all(|p| p.retain && p.qos == Q1));
    assert_eq!(tb.stats().publish_dropped, 0);
    assert!(drops(&tb.events()).is_empty());
    assert_eq!(tb.broker.held_bytes(), 0);
}

/// At QoS 2 the window frees at PUBCOMP; a session queue limit of 5 cuts nothing.
#[test]
fn qos2_retained_messages_are_paced_by_the_window_past_a_small_queue_limit() {
    const COUNT: usize = 50;
    let mut tb = TestBroker::with_limits(Limits {
        queued_count_max: 5,
        ..Limits::default()
    });
    retain_many(&mut tb, "q2", COUNT, Q2);
    let s = tb.connect("s", V5, Opts::new().receive_maximum(10));
    tb.subscribe(&s, "q2/#", Q2);
    let first = tb.recv(&s);
    assert_eq!(topics(&first), expected_topics("q2", 10));
    tb.send(&s, pubrec(packet_id(&first[0])));
    // PUBREC answered with PUBREL; the window frees only at PUBCOMP.
    assert_eq!(tb.recv(&s), [pubrel(packet_id(&first[0]))]);
    tb.send(&s, pubcomp(packet_id(&first[0])));
    let next = tb.recv(&s);
    assert_eq!(topics(&next), [numbered("q2", 10)]);
    for packet in first[1..].iter().chain(&next) {
        tb.send(&s, pubrec(packet_id(packet)));
    }
    let (rest, _) = tb.read_all(&s);
    let all: Vec<Packet> = first.into_iter().chain(next).chain(rest).collect();
    assert_eq!(topics(&all), expected_topics("q2", COUNT));
    assert!(publishes(&all).iter().all(|p| p.retain && p.qos == Q2));
    assert_eq!(tb.stats().publish_dropped, 0);
}

/// At QoS 0 the retained messages wait for the connection to take what its outbox holds (the
/// runtime reports it after each write): a subscriber that does not read is given no more,
/// and one that reads gets all 12,000 with the default limits.
#[test]
fn qos0_retained_messages_follow_the_outbox_as_it_drains() {
    const COUNT: usize = 12_000;
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        retain_many(&mut tb, "site", COUNT, Q0);
        let s = tb.connect("s", version, Opts::new());
        tb.send(&s, subscribe(1, &[("site/#", Q0)]));
        // The SUBACK and the subscription's share of the outbox.
        let waiting = tb.broker.pending_transmits(s.id);
        assert!(
            (2..=2_049).contains(&waiting),
            "{waiting} packets in the outbox at once"
        );
        let held = tb.broker.session_held_bytes("s").expect("session");
        // Timers run, nothing is read: nothing more is queued.
        tb.advance(10);
        assert_eq!(tb.broker.pending_transmits(s.id), waiting);
        assert_eq!(tb.broker.session_held_bytes("s"), Some(held));
        assert!(!tb.broker.retained_feeds_ready());
        let (all, batch_max) = tb.read_all(&s);
        assert!(batch_max < waiting, "{batch_max} in one batch");
        assert_eq!(all[0], suback(1, &[granted(Q0)]));
        assert_eq!(topics(&all), expected_topics("site", COUNT), "{version:?}");
        assert!(publishes(&all).iter().all(|p| p.retain && p.qos == Q0));
        assert_eq!(tb.stats().publish_dropped, 0, "{version:?}");
        assert_eq!(tb.broker.held_bytes(), 0);
    }
}

/// Each retained message goes at the lower of its QoS and the granted one, with RETAIN set
/// whatever Retain As Published says (5.0 3.3.1.3), the subscription identifier, and to the
/// publisher itself despite No Local; QoS 0 and QoS 1 messages keep topic order on the wire.
#[test]
fn the_feed_keeps_the_subscription_options() {
    let mut tb = TestBroker::new();
    let c = tb.connect("c", V5, Opts::new().receive_maximum(1));
    tb.send(&c, retained("o/a", "a", Q2, 1));
    tb.recv(&c);
    tb.send(&c, pubrel(1));
    tb.send(&c, retained("o/b", "b", Q0, 0));
    tb.send(&c, retained("o/c", "c", Q1, 2));
    tb.send(&c, retained("o/d", "d", Q0, 0));
    tb.recv(&c);
    let options = SubscriptionOptions {
        no_local: true,
        retain_as_published: false,
        ..opts(Q1)
    };
    tb.send(&c, subscribe_with(3, &[("o/#", options)], Some(7)));
    let packets = tb.recv(&c);
    assert_eq!(packets[0], suback(3, &[granted(Q1)]));
    // The window holds one: o/b waits behind o/a, so the wire keeps topic order.
    assert_eq!(topics(&packets[1..]), ["o/a"]);
    tb.send(&c, puback(packet_id(&packets[1])));
    let (rest, _) = tb.read_all(&c);
    let all: Vec<Packet> = packets[1..].iter().cloned().chain(rest).collect();
    let got: Vec<(String, QoS, bool, Vec<u32>)> = publishes(&all)
        .iter()
        .map(|p| (p.topic.to_string(), p.qos, p.retain, sub_ids(p)))
        .collect();
    let want = [("o/a", Q1), ("o/b", Q0), ("o/c", Q1), ("o/d", Q0)];
    let want: Vec<(String, QoS, bool, Vec<u32>)> = want
        .iter()
        .map(|&(t, q)| (t.to_owned(), q, true, vec![7]))
        .collect();
    assert_eq!(got, want);
}

/// A retained message larger than the client's Maximum Packet Size is left out and counted
/// (MQTT-3.1.2-25); the feed goes on with the next.
#[test]
fn a_retained_message_too_large_for_the_client_is_left_out_and_counted() {
    let mut tb = TestBroker::new();
    let p = tb.connect("p", V5, Opts::new());
    tb.send(&p, retained("m/1", "small", Q1, 1));
    tb.send(&p, retained("m/2", &"x".repeat(300), Q1, 2));
    tb.send(&p, retained("m/3", "small", Q1, 3));
    tb.recv(&p);
    let s = tb.connect("s", V5, Opts::new().max_packet_size(100));
    tb.subscribe(&s, "m/#", Q1);
    let (all, _) = tb.read_all(&s);
    assert_eq!(topics(&all), ["m/1", "m/3"]);
    assert_eq!(
        drops(&tb.events()),
        [("s".to_owned(), DropReason::TooLargeForClient)]
    );
}

/// MQTT-3.3.2-5: a retained message that expires while its subscription waits for room is not
/// sent (it is no longer retained: not counted as dropped); the one sent carries what is left
/// of its Message Expiry Interval.
#[test]
fn retained_messages_that_expire_in_the_feed_are_not_sent() {
    let mut tb = TestBroker::new();
    let p = tb.connect("p", V5, Opts::new());
    let expiring = |secs| move |p: &mut Publish| p.properties.message_expiry_interval = Some(secs);
    tb.send(&p, retained("e/1", "1", Q1, 1));
    let mut short = publish_with("e/2", "2", Q1, 2, expiring(5));
    let mut long = publish_with("e/3", "3", Q1, 3, expiring(60));
    for packet in [&mut short, &mut long] {
        if let Packet::Publish(publish) = packet {
            publish.retain = true;
        }
    }
    tb.send_all(&p, [short, long]);
    let s = tb.connect("s", V5, Opts::new().receive_maximum(1));
    tb.subscribe(&s, "e/#", Q1);
    let first = tb.recv(&s);
    assert_eq!(topics(&first), ["e/1"]);
    // Time passes without the timers running: e/2 is still in the retained trie, expired.
    tb.skip(6_000);
    tb.send(&s, puback(packet_id(&first[0])));
    let next = tb.recv(&s);
    assert_eq!(topics(&next), ["e/3"]);
    assert_eq!(
        publishes(&next)[0].properties.message_expiry_interval,
        Some(54)
    );
    tb.send(&s, puback(packet_id(&next[0])));
    tb.expect_silent(&s);
    assert_eq!(tb.stats().publish_dropped, 0);
}

/// A topic replaced or cleared while the feed is on its way reaches the subscriber once, in its
/// newest state, by ordinary routing after the feed; one replaced after the feed passed it
/// arrives old, then new. No topic ends on an older value than the broker holds.
#[test]
fn a_topic_replaced_or_cleared_during_the_feed_gets_its_newest_state() {
    let mut tb = TestBroker::new();
    let p = tb.connect("p", V5, Opts::new());
    for t in ["r/1", "r/2", "r/3", "r/4"] {
        tb.send(&p, retained(t, "old", Q1, 1));
    }
    tb.recv(&p);
    let s = tb.connect("s", V5, Opts::new().receive_maximum(1));
    tb.subscribe(&s, "r/#", Q1);
    let first = tb.recv(&s);
    assert_eq!(topics(&first), ["r/1"]);
    tb.send(&p, retained("r/3", "new", Q1, 2));
    tb.send(&p, retained("r/2", "", Q1, 3));
    tb.send(&p, retained("r/1", "new", Q1, 4));
    tb.recv(&p);
    tb.send(&s, puback(packet_id(&first[0])));
    let (rest, _) = tb.read_all(&s);
    let got: Vec<(String, String, bool)> = publishes(&rest)
        .iter()
        .map(|p| {
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            (p.topic.to_string(), payload, p.retain)
        })
        .collect();
    let want = [
        ("r/4", "old", true),
        ("r/3", "new", false),
        ("r/2", "", false),
        ("r/1", "new", false),
    ]
    .map(|(t, v, r)| (t.to_owned(), v.to_owned(), r));
    assert_eq!(got, want);
}

/// UNSUBSCRIBE ends the feed (messages already sent are completed); so does the end of the
/// session, and nothing is left charged.
#[test]
fn unsubscribe_or_session_end_stops_the_feed() {
    let mut tb = TestBroker::new();
    retain_many(&mut tb, "u", 10, Q1);
    let s = tb.connect("s", V5, Opts::new().receive_maximum(1));
    tb.subscribe(&s, "u/#", Q1);
    let first = tb.recv(&s);
    assert_eq!(topics(&first), ["u/00000"]);
    tb.send(&s, unsubscribe(9, &["u/#"]));
    assert_eq!(tb.recv(&s), [unsuback(9, &[ReasonCode::Success])]);
    tb.send(&s, puback(packet_id(&first[0])));
    tb.expect_silent(&s);

    let gone = tb.connect("gone", V5, Opts::new().receive_maximum(1));
    tb.subscribe(&gone, "u/#", Q1);
    assert_eq!(topics(&tb.recv(&gone)), ["u/00000"]);
    tb.disconnect(&gone);
    assert!(!tb.broker.retained_feeds_ready());
    assert_eq!(tb.stats().sessions, 1);
    assert_eq!(tb.broker.held_bytes(), 0);
}

/// A persistent session whose connection ends during the feed gets the rest when it resumes:
/// QoS 1 messages in flight are resent, then the feed goes on. QoS 0 messages already handed to
/// the lost connection are not sent again (at most once).
#[test]
fn a_resumed_session_gets_the_rest_of_its_retained_messages() {
    for qos in [Q0, Q1] {
        let mut tb = TestBroker::with_limits(Limits {
            outbox_qos0_count_max: 3,
            ..Limits::default()
        });
        retain_many(&mut tb, "p", 10, qos);
        let persistent = Opts::new().resume().expiry(600).receive_maximum(3);
        let s = tb.connect("s", V5, persistent.clone());
        tb.subscribe(&s, "p/#", qos);
        assert_eq!(topics(&tb.recv(&s)), expected_topics("p", 3), "{qos:?}");
        tb.lose(&s);
        let s = tb.connect("s", V5, persistent);
        let (all, _) = tb.read_all(&s);
        let start = if qos == Q0 { 3 } else { 0 };
        let want: Vec<String> = (start..10).map(|n| numbered("p", n)).collect();
        assert_eq!(topics(&all), want, "{qos:?}");
        if qos == Q1 {
            assert!(publishes(&all)[..3].iter().all(|p| p.dup));
        }
    }
}

/// MQTT-3.3.1-9/-10/-11 and MQTT-3.8.4-4 while a feed is on its way: a new SUBSCRIBE to the
/// same filter with Retain Handling 0 starts it again from the first topic; with 1 or 2 it goes
/// on where it was (no message is lost to the replacement), under the new options.
#[test]
fn resubscribing_restarts_or_continues_the_feed_per_retain_handling() {
    for (handling, restarts) in [
        (SendAtSubscribe, true),
        (SendIfNew, false),
        (DoNotSend, false),
    ] {
        let mut tb = TestBroker::new();
        retain_many(&mut tb, "h", 4, Q1);
        let s = tb.connect("s", V5, Opts::new().receive_maximum(1));
        tb.send(&s, subscribe_with(1, &[("h/#", opts(Q1))], Some(1)));
        let packets = tb.recv(&s);
        assert_eq!(topics(&packets[1..]), ["h/00000"]);
        tb.send(&s, puback(packet_id(&packets[1])));
        let second = tb.recv(&s);
        assert_eq!(topics(&second), ["h/00001"]);
        tb.send(
            &s,
            subscribe_with(2, &[("h/#", opts_rh(Q1, handling))], Some(2)),
        );
        assert_eq!(tb.recv(&s), [suback(2, &[granted(Q1)])], "{handling:?}");
        tb.send(&s, puback(packet_id(&second[0])));
        let (rest, _) = tb.read_all(&s);
        let from = if restarts { 0 } else { 2 };
        let want: Vec<String> = (from..4).map(|n| numbered("h", n)).collect();
        assert_eq!(topics(&rest), want, "{handling:?}");
        assert!(
            publishes(&rest).iter().all(|p| sub_ids(p) == [2]),
            "{handling:?}"
        );
    }
}

/// A shared subscription gets no retained messages, however many match (4.8.2).
#[test]
fn a_shared_subscription_gets_no_feed() {
    let mut tb = TestBroker::new();
    retain_many(&mut tb, "g", 3_000, Q0);
    let member = tb.connect("m", V5, Opts::new());
    tb.subscribe(&member, "$share/team/g/#", Q1);
    let (all, _) = tb.read_all(&member);
    assert!(all.is_empty(), "{} messages", all.len());
}

/// With `retained_per_subscription_max`, a subscription gets that many retained messages; the
/// SUBACK of an MQTT 5 client that asked for problem information names the filter in a
/// `retained-capped` user property, and each capped subscription is counted and reported.
#[test]
fn the_cap_on_retained_messages_per_subscription_is_told_and_counted() {
    let mut tb = TestBroker::with_limits(Limits {
        retained_per_subscription_max: 3,
        ..Limits::default()
    });
    retain_many(&mut tb, "c", 5, Q0);
    tb.events();
    let v5 = tb.connect("v5", V5, Opts::new());
    tb.send(&v5, subscribe(1, &[("c/#", Q0), ("c/00001", Q0)]));
    let packets = tb.recv(&v5);
    let Packet::SubAck(suback) = &packets[0] else {
        panic!("{packets:?}");
    };
    let properties: Vec<(String, String)> = suback
        .properties
        .user_properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        properties,
        [(RETAINED_CAPPED_PROPERTY.to_owned(), "c/#".to_owned())]
    );
    let (rest, _) = tb.read_all(&v5);
    let all: Vec<Packet> = packets.into_iter().skip(1).chain(rest).collect();
    let want = ["c/00000", "c/00001", "c/00002", "c/00001"];
    assert_eq!(topics(&all), want);
    assert_eq!(tb.stats().retained_capped, 1);
    assert!(tb.events().contains(&Event::RetainedCapped {
        client_id: mstr("v5"),
        filter: filter("c/#"),
        max: 3
    }));

    let v3 = tb.connect("v3", V311, Opts::new());
    tb.subscribe(&v3, "c/+", Q0);
    assert_eq!(topics(&tb.read_all(&v3).0), expected_topics("c", 3));
    assert_eq!(tb.stats().retained_capped, 2);
}

/// A long run of topics the feed does not owe (replaced since the SUBSCRIBE) is walked a few
/// thousand topics per step: the step stops, the session is listed to go on, and the runtime's
/// next call carries on, so one subscription never holds the broker for its whole length.
#[test]
fn a_feed_is_walked_in_bounded_steps() {
    const COUNT: usize = 6_000;
    let mut tb = TestBroker::new();
    retain_many(&mut tb, "w", COUNT, Q1);
    let s = tb.connect("s", V5, Opts::new().receive_maximum(1));
    tb.subscribe(&s, "w/#", Q1);
    let first = tb.recv(&s);
    assert_eq!(topics(&first), ["w/00000"]);
    let p = tb.connect("p", V5, Opts::new());
    for n in 1..COUNT - 1 {
        tb.send(&p, retained(&numbered("w", n), "new", Q0, 0));
        if n % 1_000 == 0 {
            // The subscriber reads the live messages as they come.
            tb.recv(&s);
        }
    }
    tb.recv(&s);
    tb.send(&s, puback(packet_id(&first[0])));
    tb.expect_silent(&s);
    let mut steps = 1;
    let mut got = Vec::new();
    while got.is_empty() && tb.broker.retained_feeds_ready() {
        let now = tb.now;
        tb.broker.resume_retained_feeds(now);
        steps += 1;
        got = tb.recv(&s);
    }
    assert!(steps >= 3, "{COUNT} topics walked in {steps} steps");
    assert_eq!(topics(&got), [numbered("w", COUNT - 1)]);
}

/// A feed to a persistent session is stored as it moves into the window, like any delivery;
/// the feed itself is not: after a restart the session gets what was in flight, and the rest
/// of its retained messages only by subscribing again.
#[test]
fn a_feed_is_not_kept_across_a_restart() {
    let config = Config {
        persistence: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..Config::default()
    };
    let mut tb = TestBroker::with_config(config.clone());
    retain_many(&mut tb, "k", 5, Q1);
    let persistent = Opts::new().resume().expiry(600).receive_maximum(1);
    let s = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&s, "k/#", Q1);
    assert_eq!(topics(&tb.recv(&s)), ["k/00000"]);
    let mut store = MemoryStore::default();
    let ops: Vec<StoreOp> = std::iter::from_fn(|| tb.broker.poll_store_op()).collect();
    assert!(ops
        .iter()
        .any(|op| matches!(op, StoreOp::DeliveryQueued { delivery, .. } if delivery.retain)));
    store.apply(&ops).expect("memory store");
    let snapshot = store.load().expect("memory store");
    tb.broker = Broker::restore(config, tb.now, snapshot);
    let s = tb.connect("s", V5, persistent);
    let (all, _) = tb.read_all(&s);
    assert_eq!(topics(&all), ["k/00000"]);
    assert!(publishes(&all)[0].dup);
}

/// The outbox limits apply to retained QoS 0 messages as to any: with no room for QoS 0 at all
/// (`outbox_qos0_count_max = 0`) each is dropped and counted, and the feed goes on to the
/// QoS 1 messages behind it rather than waiting for room that never comes.
#[test]
fn a_qos0_retained_message_with_no_room_at_all_is_dropped_not_waited_for() {
    let mut tb = TestBroker::with_limits(Limits {
        outbox_qos0_count_max: 0,
        ..Limits::default()
    });
    let p = tb.connect("p", V5, Opts::new());
    tb.send(&p, retained("z/1", "zero", Q0, 0));
    tb.send(&p, retained("z/2", "one", Q1, 1));
    tb.recv(&p);
    let s = tb.connect("s", V5, Opts::new());
    tb.subscribe(&s, "z/#", Q1);
    let (all, _) = tb.read_all(&s);
    assert_eq!(topics(&all), ["z/2"]);
    assert_eq!(
        drops(&tb.events()),
        [("s".to_owned(), DropReason::OutboxFull)]
    );
}
