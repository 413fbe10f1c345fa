//! Retained messages prove set/replace/clear, the RETAIN flag on delivery (subscription-caused,
//! forwarded, Retain As Published), Retain Handling, and message expiry of retained and queued
//! messages, for MQTT 3.1.1 and 5.0.

mod support;

use tern_codec::RetainHandling::{DoNotSend, SendAtSubscribe, SendIfNew};
use tern_codec::{Packet, ReasonCode, SubscriptionOptions};
use tern_core::{DropReason, Event, TrafficTotals};

use support::*;

/// MQTT-3.3.1-5 and MQTT-3.3.1-9 (5.0), 3.1.1 MQTT-3.3.1-5/-6/-8: a retained message is stored
/// and sent to a later subscriber with RETAIN 1, at the lower of its QoS and the granted QoS.
#[test]
fn retained_message_goes_to_new_subscribers_with_retain_set() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, retained("r/a", "A", Q1, 1));
        assert_eq!(
            tb.recv(&publisher),
            [Packet::PubAck(ack(1, ReasonCode::NoMatchingSubscribers))].map(|p| wire(&p, version))
        );
        let high = tb.connect("high", version, Opts::new());
        tb.subscribe(&high, "r/a", Q2);
        assert_eq!(tb.recv(&high), [retained("r/a", "A", Q1, 1)], "{version:?}");
        let low = tb.connect("low", version, Opts::new());
        tb.subscribe(&low, "r/+", Q0);
        assert_eq!(tb.recv(&low), [retained("r/a", "A", Q0, 0)], "{version:?}");
        assert_eq!(tb.stats().retained, 1);
    }
}

/// 3.1.1 MQTT-3.3.1-7: a QoS 0 retained message replaces the previous one and is kept.
#[test]
fn retained_message_is_replaced() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, retained("r", "old", Q1, 1));
        tb.send(&publisher, retained("r", "new", Q0, 0));
        let subscriber = tb.connect("s", version, Opts::new());
        tb.subscribe(&subscriber, "r", Q2);
        assert_eq!(tb.recv(&subscriber), [retained("r", "new", Q0, 0)]);
        assert_eq!(tb.stats().retained, 1);
    }
}

/// MQTT-3.3.1-6/-7 (5.0), 3.1.1 MQTT-3.3.1-10/-11: a retained PUBLISH with an empty payload is
/// forwarded as usual, removes the retained message and is not stored itself.
#[test]
fn empty_retained_payload_clears_the_topic() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, retained("r", "kept", Q0, 0));
        let current = tb.connect("current", version, Opts::new());
        tb.subscribe(&current, "r", Q0);
        assert_eq!(tb.recv(&current), [retained("r", "kept", Q0, 0)]);
        tb.send(&publisher, retained("r", "", Q0, 0));
        assert_eq!(
            tb.recv(&current),
            [publish("r", "", Q0, 0)],
            "{version:?}: forwarded with RETAIN 0"
        );
        assert_eq!(tb.stats().retained, 0);
        let later = tb.connect("later", version, Opts::new());
        tb.subscribe(&later, "#", Q0);
        tb.expect_silent(&later);
    }
}

/// MQTT-3.3.1-8 (5.0), 3.1.1 MQTT-3.3.1-12: a PUBLISH without RETAIN neither stores, replaces
/// nor removes a retained message, whatever its payload.
#[test]
fn non_retained_publish_leaves_retained_message_alone() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, retained("r", "kept", Q0, 0));
        tb.send(&publisher, publish("r", "live", Q0, 0));
        tb.send(&publisher, publish("r", "", Q0, 0));
        tb.send(&publisher, publish("other", "x", Q0, 0));
        let subscriber = tb.connect("s", version, Opts::new());
        tb.subscribe(&subscriber, "#", Q0);
        assert_eq!(tb.recv(&subscriber), [retained("r", "kept", Q0, 0)]);
    }
}

/// 3.1.1 MQTT-3.3.1-9 and 5.0 MQTT-3.3.1-12: forwarding to an established subscription clears
/// RETAIN; MQTT-3.3.1-13: with Retain As Published it is kept as received.
#[test]
fn retain_flag_on_forwarding() {
    let mut tb = TestBroker::new();
    let v3 = tb.connect("v3", V311, Opts::new());
    tb.subscribe(&v3, "t", Q0);
    let plain = tb.connect("plain", V5, Opts::new());
    tb.subscribe(&plain, "t", Q0);
    let rap = tb.connect("rap", V5, Opts::new());
    let options = SubscriptionOptions {
        retain_as_published: true,
        ..opts(Q0)
    };
    tb.send(&rap, subscribe_with(1, &[("t", options)], None));
    tb.recv(&rap);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, retained("t", "r", Q0, 0));
    tb.send(&publisher, publish("t", "n", Q0, 0));
    assert_eq!(
        tb.recv(&v3),
        [publish("t", "r", Q0, 0), publish("t", "n", Q0, 0)]
    );
    assert_eq!(
        tb.recv(&plain),
        [publish("t", "r", Q0, 0), publish("t", "n", Q0, 0)]
    );
    assert_eq!(
        tb.recv(&rap),
        [retained("t", "r", Q0, 0), publish("t", "n", Q0, 0)]
    );
}

/// MQTT-3.3.1-9/-10/-11 and MQTT-3.8.4-4: Retain Handling 0 sends retained messages on every
/// SUBSCRIBE (re-sent when the subscription is replaced), 1 only when the subscription is new,
/// 2 never.
#[test]
fn retain_handling() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, retained("r", "kept", Q0, 0));
    for (handling, first, again) in [
        (SendAtSubscribe, 1, 1),
        (SendIfNew, 1, 0),
        (DoNotSend, 0, 0),
    ] {
        let client = tb.connect(&format!("{handling:?}"), V5, Opts::new());
        for (round, expected) in [first, again].into_iter().enumerate() {
            tb.send(
                &client,
                subscribe_with(10, &[("r", opts_rh(Q0, handling))], None),
            );
            let packets = tb.recv(&client);
            assert_eq!(packets[0], suback(10, &[ReasonCode::GRANTED_QOS_0]));
            let sent: Vec<&Packet> = packets[1..].iter().collect();
            assert_eq!(sent.len(), expected, "{handling:?}, subscribe #{round}");
            if expected == 1 {
                assert_eq!(*sent[0], retained("r", "kept", Q0, 0));
            }
        }
    }
}

/// A wildcard subscription gets every matching retained message, each with RETAIN 1, and its
/// subscription identifier (3.3.4); `#` does not get `$` topics (MQTT-4.7.2-1).
#[test]
fn wildcard_subscription_gets_every_matching_retained_message() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::new());
    for t in ["s/1", "s/2", "s/2/deep", "other", "$internal/x"] {
        tb.send(&publisher, retained(t, t, Q0, 0));
    }
    let client = tb.connect("c", V5, Opts::new());
    tb.send(
        &client,
        subscribe_with(1, &[("s/#", opts(Q0)), ("#", opts(Q0))], Some(5)),
    );
    let packets = tb.recv(&client);
    assert_eq!(
        packets[0],
        suback(1, &[ReasonCode::GRANTED_QOS_0, ReasonCode::GRANTED_QOS_0])
    );
    let delivered = publishes(&packets[1..]);
    assert!(
        delivered.iter().all(|p| p.retain && sub_ids(p) == [5]),
        "{delivered:?}"
    );
    let mut topics: Vec<&str> = delivered.iter().map(|p| p.topic.as_str()).collect();
    topics.sort_unstable();
    // s/# sends three, # sends four (no $internal/x).
    assert_eq!(
        topics,
        ["other", "s/1", "s/1", "s/2", "s/2", "s/2/deep", "s/2/deep"]
    );
}

/// 3.1.1 MQTT-3.1.2-7: retained messages are not session state and outlive the publisher's
/// session.
#[test]
fn retained_messages_outlive_sessions() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, retained("r", "kept", Q1, 1));
    assert_eq!(tb.recv(&publisher), [puback(1)]);
    tb.disconnect(&publisher);
    assert_eq!(tb.stats().sessions, 0);
    let subscriber = tb.connect("s", V311, Opts::new());
    tb.subscribe(&subscriber, "r", Q1);
    assert_eq!(tb.recv(&subscriber), [retained("r", "kept", Q1, 1)]);
}

/// MQTT-3.3.2-5 and MQTT-3.3.2-6: a retained message is sent with the Message Expiry Interval
/// reduced by the time it waited, and no longer once it has expired.
#[test]
fn retained_message_expiry() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(
        &publisher,
        publish_with("r", "x", Q0, 0, |p| {
            p.retain = true;
            p.properties.message_expiry_interval = Some(10);
        }),
    );
    tb.advance_secs(4);
    let early = tb.connect("early", V5, Opts::new());
    tb.subscribe(&early, "r", Q0);
    let expected = publish_with("r", "x", Q0, 0, |p| {
        p.retain = true;
        p.properties.message_expiry_interval = Some(6);
    });
    assert_eq!(tb.recv(&early), [expected]);
    tb.advance_secs(6);
    let late = tb.connect("late", V5, Opts::new());
    tb.subscribe(&late, "r", Q0);
    tb.expect_silent(&late);
}

/// MQTT-3.3.2-6: a message forwarded at once carries its full Message Expiry Interval; one that
/// waited in an offline session's queue carries what is left; MQTT-3.3.2-5: one that expired
/// while waiting is dropped, and counted.
#[test]
fn queued_message_expiry() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let subscriber = tb.connect("s", V5, persistent.clone());
    tb.subscribe(&subscriber, "t", Q1);
    let publisher = tb.connect("p", V5, Opts::new());
    let with_expiry =
        |secs| move |p: &mut tern_codec::Publish| p.properties.message_expiry_interval = Some(secs);
    tb.send(&publisher, publish_with("t", "now", Q1, 1, with_expiry(30)));
    assert_eq!(
        tb.recv(&subscriber),
        [publish_with("t", "now", Q1, 1, with_expiry(30))]
    );
    tb.send(&subscriber, puback(1));
    tb.disconnect(&subscriber);

    tb.send(
        &publisher,
        publish_with("t", "short", Q1, 2, with_expiry(3)),
    );
    tb.send(
        &publisher,
        publish_with("t", "long", Q1, 3, with_expiry(10)),
    );
    tb.send(&publisher, publish("t", "forever", Q1, 4));
    tb.advance_secs(4);
    tb.events();
    let dropped_before = tb.stats().publish_dropped;
    let expired_before = tb.stats().publish_expired;
    let subscriber = tb.connect("s", V5, persistent);
    let packets = tb.recv(&subscriber);
    assert_eq!(payloads(&packets), ["long", "forever"]);
    assert_eq!(
        publishes(&packets)[0].properties.message_expiry_interval,
        Some(6)
    );
    assert_eq!(
        publishes(&packets)[1].properties.message_expiry_interval,
        None
    );
    assert_eq!(tb.stats().publish_dropped, dropped_before + 1);
    assert_eq!(tb.stats().publish_expired, expired_before + 1);
    assert!(tb.events().contains(&Event::Dropped {
        client_id: mstr("s"),
        reason: DropReason::Expired
    }));
}

/// Retained messages published by the broker itself (`$SYS`) reach `$SYS/#` subscribers and not
/// `#` subscribers (MQTT-4.7.2-1).
#[test]
fn sys_topics_are_retained_and_not_matched_by_hash() {
    let mut tb = TestBroker::new();
    let hash = tb.connect("hash", V5, Opts::new());
    tb.subscribe(&hash, "#", Q0);
    let sys = tb.connect("sys", V5, Opts::new());
    tb.subscribe(&sys, "$SYS/broker/clients/connected", Q0);
    let now = tb.now;
    tb.broker.publish_sys(now, TrafficTotals::default(), "test");
    tb.expect_silent(&hash);
    assert_eq!(
        tb.recv(&sys),
        [publish("$SYS/broker/clients/connected", "2", Q0, 0)]
    );
    let later = tb.connect("later", V311, Opts::new());
    tb.subscribe(&later, "$SYS/broker/version", Q1);
    assert_eq!(
        tb.recv(&later),
        [retained("$SYS/broker/version", "test", Q0, 0)]
    );
}

/// An expired retained message leaves the broker (and the retained count) once its time has
/// passed, not only the deliveries.
#[test]
fn expired_retained_messages_are_purged() {
    // Message expiry exists in MQTT 5 only.
    let mut t = TestBroker::new();
    let publisher = t.connect("p", V5, Opts::new());
    t.send(
        &publisher,
        publish_with("gone/soon", "x", Q0, 0, |p| {
            p.retain = true;
            p.properties.message_expiry_interval = Some(2);
        }),
    );
    t.send(&publisher, retained("stays", "y", Q0, 0));
    assert_eq!(t.stats().retained, 2);
    t.advance_secs(3);
    assert_eq!(t.stats().retained, 1, "the expired one is gone");
}

/// Retained messages for a wildcard subscription arrive in topic order, the same on every run.
#[test]
fn retained_messages_for_a_wildcard_arrive_in_topic_order() {
    for version in VERSIONS {
        let mut t = TestBroker::new();
        let publisher = t.connect("p", version, Opts::new());
        for name in ["s/c", "s/a", "s/b/x", "s/b"] {
            t.send(&publisher, retained(name, name, Q0, 0));
        }
        let subscriber = t.connect("s", version, Opts::new());
        t.subscribe(&subscriber, "s/#", Q0);
        let topics: Vec<String> = t
            .recv(&subscriber)
            .iter()
            .map(|p| match p {
                Packet::Publish(p) => p.topic.to_string(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(topics, ["s/a", "s/b", "s/b/x", "s/c"], "{version:?}");
    }
}

#[test]
fn a_retained_message_keeps_nothing_of_the_buffer_it_arrived_in() {
    // A busy connection decodes many packets out of one read buffer; the retained copy of one
    // of them must not keep that buffer alive.
    let mut t = TestBroker::with_config(tern_core::Config {
        persistence: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..tern_core::Config::default()
    });
    let publisher = t.connect("p", V5, Opts::new());
    let buffer = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let within = |bytes: &[u8]| {
        let start = buffer.as_ptr() as usize;
        let at = bytes.as_ptr() as usize;
        at >= start && at < start + buffer.len()
    };
    let Packet::Publish(mut publish) = retained("status/door", "", Q1, 1) else {
        panic!("a PUBLISH");
    };
    publish.payload = buffer.slice(100..110);
    publish.properties.correlation_data = Some(buffer.slice(200..210));
    t.broker
        .handle_packet(publisher.id, Packet::Publish(publish), t.now);
    let kept = std::iter::from_fn(|| t.broker.poll_store_op())
        .find_map(|op| match op {
            tern_core::StoreOp::RetainedSet(message) => Some(message),
            _ => None,
        })
        .expect("the retained message is stored");
    assert_eq!(&kept.payload[..], &buffer[100..110]);
    assert!(!within(&kept.payload), "the payload is its own");
    let data = kept
        .properties
        .correlation_data
        .as_deref()
        .unwrap_or_default();
    assert!(!data.is_empty() && !within(data), "so are the properties");
    // New subscribers get it as it was sent.
    let s = t.connect("s", V5, Opts::new());
    t.subscribe(&s, "status/#", Q1);
    assert_eq!(publishes(&t.recv(&s))[0].payload, &buffer[100..110]);
}
