//! SUBSCRIBE and UNSUBSCRIBE prove SUBACK/UNSUBACK codes, wildcard and `$` matching,
//! overlapping subscriptions, granted QoS, No Local, identical-filter replacement and shared
//! subscriptions, for MQTT 3.1.1 and 5.0.

mod support;

use tern_codec::{Packet, ReasonCode, SubscriptionOptions};
use tern_core::Limits;

use support::*;

/// MQTT-3.8.4-1/-2/-5/-6/-7, MQTT-3.9.3-1 (both versions): one SUBACK with the SUBSCRIBE's
/// packet identifier and one code per filter, in order, showing the QoS granted.
#[test]
fn suback_grants_each_filter_in_order() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.send(
            &client,
            subscribe(4321, &[("a/#", Q2), ("b", Q0), ("+/c", Q1)]),
        );
        let codes = [
            ReasonCode::GrantedQos2,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GrantedQos1,
        ];
        assert_eq!(tb.recv(&client), [suback(4321, &codes)]);
        assert_eq!(tb.stats().subscriptions, 3);
    }
}

/// MQTT-3.2.2-10 and MQTT-3.8.4-8 (5.0), 3.1.1 MQTT-3.8.4-6: a server with a lower maximum QoS
/// still accepts the subscription, grants its maximum, and delivers at most that QoS.
#[test]
fn granted_qos_is_capped_by_the_server_maximum() {
    for version in VERSIONS {
        let mut tb = TestBroker::with_limits(Limits {
            qos_max: Q1,
            ..Limits::default()
        });
        let client = tb.connect("c", version, Opts::new());
        tb.send(&client, subscribe(1, &[("t", Q2)]));
        assert_eq!(tb.recv(&client), [suback(1, &[ReasonCode::GrantedQos1])]);
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, publish("t", "x", Q1, 1));
        assert_eq!(tb.recv(&client), [publish("t", "x", Q1, 1)]);
    }
}

/// MQTT-4.7.1-1/-2 (5.0), 3.1.1 MQTT-4.7.1-2/-3: `+` matches exactly one level, `#` the parent
/// and any number of levels below it.
#[test]
fn wildcards_match_levels() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let plus = tb.connect("plus", version, Opts::new());
        let hash = tb.connect("hash", version, Opts::new());
        let all = tb.connect("all", version, Opts::new());
        tb.subscribe(&plus, "a/+/c", Q0);
        tb.subscribe(&hash, "a/#", Q0);
        tb.subscribe(&all, "#", Q0);
        let publisher = tb.connect("p", version, Opts::new());
        for t in ["a", "a/b", "a/b/c", "a/x/c", "a/b/c/d", "b/b/c", "a//c"] {
            tb.send(&publisher, publish(t, t, Q0, 0));
        }
        assert_eq!(
            payloads(&tb.recv(&plus)),
            ["a/b/c", "a/x/c", "a//c"],
            "{version:?}"
        );
        assert_eq!(
            payloads(&tb.recv(&hash)),
            ["a", "a/b", "a/b/c", "a/x/c", "a/b/c/d", "a//c"],
            "{version:?}"
        );
        assert_eq!(payloads(&tb.recv(&all)).len(), 7, "{version:?}");
    }
}

/// MQTT-4.7.2-1 (both versions): filters starting with a wildcard do not match topics starting
/// with `$`; a filter naming `$SYS` explicitly does.
#[test]
fn dollar_topics_are_not_matched_by_leading_wildcards() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let hash = tb.connect("hash", version, Opts::new());
        let plus = tb.connect("plus", version, Opts::new());
        let sys = tb.connect("sys", version, Opts::new());
        tb.subscribe(&hash, "#", Q0);
        tb.subscribe(&plus, "+/info", Q0);
        tb.subscribe(&sys, "$SYS/#", Q0);
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, publish("$SYS/info", "s", Q0, 0));
        tb.send(&publisher, publish("x/info", "x", Q0, 0));
        assert_eq!(payloads(&tb.recv(&hash)), ["x"]);
        assert_eq!(payloads(&tb.recv(&plus)), ["x"]);
        assert_eq!(payloads(&tb.recv(&sys)), ["s"]);
    }
}

/// MQTT-3.3.4-2/-3/-4 (5.0): overlapping subscriptions of one session give one delivery, with
/// the highest granted QoS and every subscription identifier.
#[test]
fn v5_overlapping_subscriptions_deliver_once_with_all_identifiers() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(&client, subscribe_with(1, &[("a/+", opts(Q0))], Some(11)));
    tb.send(&client, subscribe_with(2, &[("a/#", opts(Q1))], Some(22)));
    tb.send(&client, subscribe_with(3, &[("a/b", opts(Q0))], None));
    tb.recv(&client);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("a/b", "x", Q2, 1));
    let packets = tb.recv(&client);
    assert_eq!(packets.len(), 1, "one delivery: {packets:?}");
    let delivered = publishes(&packets)[0];
    assert_eq!(delivered.qos, Q1);
    assert_eq!(sub_ids(delivered), [11, 22]);
    let mut expected = delivered.clone();
    expected.properties.subscription_identifiers = Default::default();
    assert_eq!(Packet::Publish(expected), publish("a/b", "x", Q1, 1));
}

/// 3.1.1 MQTT-3.3.5-1: overlapping subscriptions deliver with the maximum QoS of them.
#[test]
fn v311_overlapping_subscriptions_respect_maximum_qos() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.subscribe(&client, "a/+", Q2);
    tb.subscribe(&client, "a/#", Q0);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("a/b", "x", Q2, 1));
    assert_eq!(tb.recv(&client), [publish("a/b", "x", Q2, 1)]);
}

/// 3.8.2.1.2 / MQTT-3.3.4-3: a single matching subscription with an identifier sends it.
#[test]
fn subscription_identifier_is_sent_with_deliveries() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(
        &client,
        subscribe_with(1, &[("t", opts(Q1))], Some(268_435_455)),
    );
    tb.recv(&client);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "x", Q1, 1));
    let expected = publish_with("t", "x", Q1, 1, |p| {
        p.properties.subscription_identifiers =
            tern_codec::SubscriptionIds::from_ids([268_435_455]).expect("in range");
    });
    assert_eq!(tb.recv(&client), [expected]);
}

/// MQTT-3.8.3-3: with No Local the client's own messages are not sent back to it; others' are.
#[test]
fn no_local_skips_own_messages() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(Q1)
    };
    tb.send(&client, subscribe_with(1, &[("t", no_local)], None));
    tb.recv(&client);
    tb.send(&client, publish("t", "mine", Q1, 1));
    assert_eq!(
        tb.recv(&client),
        [Packet::PubAck(ack(1, ReasonCode::NoMatchingSubscribers))]
    );
    let other = tb.connect("o", V5, Opts::new());
    tb.send(&other, publish("t", "theirs", Q1, 1));
    assert_eq!(tb.recv(&client), [publish("t", "theirs", Q1, 1)]);
    // Without No Local (3.1.1 has none) the client does get its own messages.
    let v3 = tb.connect("v3", V311, Opts::new());
    tb.subscribe(&v3, "t", Q0);
    tb.send(&v3, publish("t", "own", Q0, 0));
    assert_eq!(tb.recv(&v3), [publish("t", "own", Q0, 0)]);
}

/// MQTT-3.8.4-3 (5.0), 3.1.1 MQTT-3.8.4-3: a SUBSCRIBE with an identical filter replaces the
/// subscription: the new QoS applies, there is still one subscription and one delivery.
#[test]
fn identical_filter_replaces_the_subscription() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.subscribe(&client, "a/+", Q2);
        tb.subscribe(&client, "a/+", Q0);
        assert_eq!(tb.stats().subscriptions, 1);
        let publisher = tb.connect("p", version, Opts::new());
        tb.send(&publisher, publish("a/b", "x", Q2, 1));
        assert_eq!(
            tb.recv(&client),
            [publish("a/b", "x", Q0, 0)],
            "{version:?}"
        );
    }
}

/// MQTT-3.8.4-3: replacing a subscription replaces its identifier too.
#[test]
fn replaced_subscription_takes_the_new_identifier() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(&client, subscribe_with(1, &[("t", opts(Q0))], Some(1)));
    tb.send(&client, subscribe_with(2, &[("t", opts(Q0))], Some(2)));
    tb.recv(&client);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "x", Q0, 0));
    assert_eq!(sub_ids(publishes(&tb.recv(&client))[0]), [2]);
}

/// 4.8.2 (5.0): each message on a shared subscription goes to one member of the group, in turn;
/// a non-shared subscriber of the same topic gets every message (MQTT-4.8.2-3: granted QoS).
#[test]
fn shared_subscription_round_robin() {
    let mut tb = TestBroker::new();
    let members: Vec<TestClient> = (0..3)
        .map(|n| tb.connect(&format!("m{n}"), V5, Opts::new()))
        .collect();
    for member in &members {
        tb.subscribe(member, "$share/g/jobs/+", Q1);
    }
    let plain = tb.connect("plain", V5, Opts::new());
    tb.subscribe(&plain, "jobs/#", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    for n in 0..6u16 {
        tb.send(&publisher, publish("jobs/x", &n.to_string(), Q2, n + 1));
    }
    let mut all = Vec::new();
    for member in &members {
        let got = tb.recv(member);
        assert!(publishes(&got).iter().all(|p| p.qos == Q1), "granted QoS 1");
        all.push(payloads(&got));
    }
    assert_eq!(all, [["0", "3"], ["1", "4"], ["2", "5"]]);
    assert_eq!(payloads(&tb.recv(&plain)), ["0", "1", "2", "3", "4", "5"]);
}

/// A connected member is preferred over one without a connection, and two groups on one filter
/// each get a copy.
#[test]
fn shared_subscription_prefers_connected_members_and_groups_are_independent() {
    let mut tb = TestBroker::new();
    let away = tb.connect("away", V5, Opts::new().resume().expiry(600));
    let here = tb.connect("here", V5, Opts::new());
    let other = tb.connect("other", V5, Opts::new());
    tb.subscribe(&away, "$share/g/t", Q1);
    tb.subscribe(&here, "$share/g/t", Q1);
    tb.subscribe(&other, "$share/h/t", Q1);
    tb.disconnect(&away);
    let publisher = tb.connect("p", V5, Opts::new());
    for n in 0..4u16 {
        tb.send(&publisher, publish("t", &n.to_string(), Q1, n + 1));
    }
    assert_eq!(payloads(&tb.recv(&here)), ["0", "1", "2", "3"]);
    assert_eq!(payloads(&tb.recv(&other)), ["0", "1", "2", "3"]);
    let away = tb.connect("away", V5, Opts::new().resume().expiry(600));
    tb.expect_silent(&away);
}

/// 4.8.2: retained messages are not sent for a shared subscription.
#[test]
fn shared_subscription_gets_no_retained_messages() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, retained("t", "kept", Q0, 0));
    let member = tb.connect("m", V5, Opts::new());
    tb.subscribe(&member, "$share/g/t", Q1);
    tb.expect_silent(&member);
    tb.send(&publisher, publish("t", "live", Q0, 0));
    assert_eq!(tb.recv(&member), [publish("t", "live", Q0, 0)]);
}

/// MQTT-3.10.4-1/-2/-4/-5/-6, MQTT-3.11.3-1: UNSUBACK carries the packet identifier and, in 5.0,
/// one code per filter: 0x00 where a subscription was removed, 0x11 where none existed;
/// delivery stops for removed filters only.
#[test]
fn unsubscribe_stops_delivery_and_reports_each_filter() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new());
        tb.subscribe(&client, "a", Q0);
        tb.subscribe(&client, "b/+", Q0);
        tb.subscribe(&client, "$share/g/c", Q0);
        tb.send(&client, unsubscribe(77, &["b/+", "nothing", "$share/g/c"]));
        let expected = match version {
            V5 => unsuback(
                77,
                &[
                    ReasonCode::Success,
                    ReasonCode::NoSubscriptionExisted,
                    ReasonCode::Success,
                ],
            ),
            V31 | V311 => unsuback(77, &[]),
        };
        assert_eq!(tb.recv(&client), [expected]);
        assert_eq!(tb.stats().subscriptions, 1);
        let publisher = tb.connect("p", version, Opts::new());
        for t in ["a", "b/x", "c"] {
            tb.send(&publisher, publish(t, t, Q0, 0));
        }
        assert_eq!(payloads(&tb.recv(&client)), ["a"], "{version:?}");
    }
}

/// MQTT-3.10.4-1: filters are compared character by character; `a/+` does not remove `a/b`.
#[test]
fn unsubscribe_compares_filters_literally() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.subscribe(&client, "a/b", Q0);
    tb.send(&client, unsubscribe(1, &["a/+"]));
    assert_eq!(
        tb.recv(&client),
        [unsuback(1, &[ReasonCode::NoSubscriptionExisted])]
    );
    assert_eq!(tb.stats().subscriptions, 1);
}

/// MQTT-3.10.4-3: QoS 1/2 deliveries already started complete after the filter is removed.
#[test]
fn unsubscribe_completes_started_deliveries() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.subscribe(&client, "t", Q2);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "x", Q2, 1));
    assert_eq!(tb.recv(&client), [publish("t", "x", Q2, 1)]);
    tb.send(&client, unsubscribe(2, &["t"]));
    assert_eq!(tb.recv(&client), [unsuback(2, &[ReasonCode::Success])]);
    tb.send(&client, pubrec(1));
    assert_eq!(tb.recv(&client), [pubrel(1)]);
    tb.send(&client, pubcomp(1));
    tb.expect_silent(&client);
}

/// MQTT-3.8.4-5: several filters in one SUBSCRIBE act like several SUBSCRIBEs; a message
/// matching two of them is still one delivery.
#[test]
fn one_subscribe_many_filters() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.send(
        &client,
        subscribe(9, &[("x/#", Q1), ("x/y", Q0), ("z", Q0)]),
    );
    tb.recv(&client);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send_all(
        &publisher,
        [publish("x/y", "1", Q1, 1), publish("z", "2", Q1, 2)],
    );
    assert_eq!(
        tb.recv(&client),
        [publish("x/y", "1", Q1, 1), publish("z", "2", Q0, 0)]
    );
}

/// MQTT-3.3.4-5: a session matching through a shared and a non-shared subscription gets one
/// PUBLISH for each, each with the identifier of its own subscription.
#[test]
fn shared_and_plain_subscriptions_of_one_session_deliver_separately() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.send(
        &client,
        subscribe_with(1, &[("$share/g/t", opts(Q0))], Some(1)),
    );
    tb.send(&client, subscribe_with(2, &[("t", opts(Q0))], Some(2)));
    tb.recv(&client);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, publish("t", "x", Q0, 0));
    let packets = tb.recv(&client);
    let mut ids: Vec<Vec<u32>> = publishes(&packets).iter().map(|p| sub_ids(p)).collect();
    ids.sort();
    assert_eq!(ids, [[1], [2]]);
}
