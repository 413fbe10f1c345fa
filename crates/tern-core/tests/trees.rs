//! `$tree/` views: the snapshot after SUBACK keyed by wildcard levels, value encoding, batched
//! deltas (merging, last value, QoS, `null` on clearing), Retain Handling and identifiers, and
//! spreading a `$tree/` publish into one message per key, for MQTT 3.1.1 and 5.0.

#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use serde_json::{json, Value};
use tern_codec::RetainHandling::{DoNotSend, SendIfNew};
use tern_codec::{Packet, Publish, QoS, ReasonCode};
use tern_core::{Access, Authorizer, Config, Event, Limits, Permissions, Principal};

use support::*;

/// A tree message as a client sees it.
#[derive(Debug, PartialEq)]
struct Tree {
    topic: String,
    value: Value,
    qos: QoS,
    retain: bool,
}

fn tree(publish: &Publish) -> Tree {
    Tree {
        topic: publish.topic.to_string(),
        value: serde_json::from_slice(&publish.payload).expect("tree payload is JSON"),
        qos: publish.qos,
        retain: publish.retain,
    }
}

/// The `tree` user property of a PUBLISH (MQTT 5).
fn kind(publish: &Publish) -> Option<String> {
    publish
        .properties
        .user_properties
        .iter()
        .find(|(k, _)| *k == "tree")
        .map(|(_, v)| v.to_owned())
}

fn trees(packets: &[Packet]) -> Vec<Tree> {
    publishes(packets).into_iter().map(tree).collect()
}

fn snap(topic: &str, value: Value, qos: QoS) -> Tree {
    Tree {
        topic: topic.to_owned(),
        value,
        qos,
        retain: true,
    }
}

fn delta(topic: &str, value: Value, qos: QoS) -> Tree {
    Tree {
        retain: false,
        ..snap(topic, value, qos)
    }
}

/// Point 1 and 3: the snapshot right after SUBACK is one PUBLISH on the filter with `+` spelled
/// `*`, keyed by the levels the wildcard matched; MQTT 5 marks it `tree=snapshot`.
#[test]
fn snapshot_follows_suback_keyed_by_wildcard_levels() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let p = tb.connect("p", version, Opts::new());
        tb.send(&p, retained("light/bedroom/is_on", "1", Q0, 0));
        tb.send(&p, retained("light/livingroom/is_on", "0", Q0, 0));
        tb.send(&p, retained("light/bedroom/brightness", "55", Q0, 0));
        let s = tb.connect("s", version, Opts::new());
        tb.send(&s, subscribe(7, &[("$tree/light/+/is_on", Q1)]));
        let packets = tb.recv(&s);
        assert_eq!(packets.len(), 2, "{packets:?}");
        assert_eq!(packets[0], suback(7, &[granted(Q1)]));
        let got = trees(&packets);
        let want = json!({"bedroom": 1, "livingroom": 0});
        assert_eq!(got, [snap("$tree/light/*/is_on", want, Q1)], "{version:?}");
        let publish = publishes(&packets)[0];
        let expected_kind = (version == V5).then(|| "snapshot".to_owned());
        assert_eq!(kind(publish), expected_kind);
    }
}

/// Point 1: several wildcards nest in order, `#` nests every remaining level (a topic that is
/// also a parent keeps its value under `$value`), and a filter without wildcards gives its value
/// under its last level. An empty subtree still gives a (empty) snapshot.
#[test]
fn wildcards_nest_in_order() {
    let mut tb = TestBroker::new();
    let p = tb.connect("p", V5, Opts::new());
    for (t, v) in [
        ("light/bedroom/is_on", "1"),
        ("light/bedroom/brightness", "55"),
        ("light/hall/is_on", "0"),
        ("site/a", "1"),
        ("site/a/b/c", "2"),
    ] {
        tb.send(&p, retained(t, v, Q0, 0));
    }
    let s = tb.connect("s", V5, Opts::new());
    let cases = [
        (
            "$tree/light/+/+",
            "$tree/light/*/*",
            json!({"bedroom": {"is_on": 1, "brightness": 55}, "hall": {"is_on": 0}}),
        ),
        (
            "$tree/site/#",
            "$tree/site/**",
            json!({"a": {"$value": 1, "b": {"c": 2}}}),
        ),
        (
            "$tree/light/bedroom/is_on",
            "$tree/light/bedroom/is_on",
            json!({"is_on": 1}),
        ),
        ("$tree/nothing/+", "$tree/nothing/*", json!({})),
    ];
    for (f, t, want) in cases {
        tb.subscribe(&s, f, Q0);
        assert_eq!(trees(&tb.recv(&s)), [snap(t, want, Q0)], "{f}");
    }
}

/// Point 2: JSON is embedded, other UTF-8 becomes a string, other bytes `{"$base64": ...}`; a
/// cleared retained message is `null` in the next delta.
#[test]
fn values_and_null_on_clearing() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let p = tb.connect("p", version, Opts::new());
        tb.send(&p, retained("v/json", r#"{"x":[1,2]}"#, Q0, 0));
        tb.send(&p, retained("v/text", "on", Q0, 0));
        tb.send(
            &p,
            publish_with("v/bin", "", Q0, 0, |p| {
                p.retain = true;
                p.payload = bytes::Bytes::from_static(&[0xff, 0x00]);
            }),
        );
        let s = tb.connect("s", version, Opts::new());
        tb.subscribe(&s, "$tree/v/+", Q0);
        let want = json!({"json": {"x": [1, 2]}, "text": "on", "bin": {"$base64": "/wA="}});
        assert_eq!(trees(&tb.recv(&s)), [snap("$tree/v/*", want, Q0)]);
        tb.send(&p, retained("v/text", "", Q0, 0));
        tb.advance(10);
        let got = trees(&tb.recv(&s));
        assert_eq!(got, [delta("$tree/v/*", json!({"text": null}), Q0)]);
        tb.subscribe(&s, "$tree/v/+", Q0);
        let want = json!({"json": {"x": [1, 2]}, "bin": {"$base64": "/wA="}});
        assert_eq!(trees(&tb.recv(&s)), [snap("$tree/v/*", want, Q0)]);
    }
}

/// A retained message that expires leaves the tree as a cleared one does: `null` in the next
/// delta, and gone from later snapshots.
#[test]
fn an_expired_retained_message_is_null_in_the_next_delta() {
    let mut tb = TestBroker::new();
    let p = tb.connect("p", V5, Opts::new());
    tb.send(&p, retained("v/kept", "1", Q0, 0));
    tb.send(
        &p,
        publish_with("v/brief", "2", Q0, 0, |p| {
            p.retain = true;
            p.properties.message_expiry_interval = Some(2);
        }),
    );
    let s = tb.connect("s", V5, Opts::new());
    tb.subscribe(&s, "$tree/v/+", Q0);
    let want = json!({"kept": 1, "brief": 2});
    assert_eq!(trees(&tb.recv(&s)), [snap("$tree/v/*", want, Q0)]);
    tb.advance(1_999);
    tb.expect_silent(&s);
    // Expired at 2 s; the delta goes out when its window ends.
    tb.advance(1);
    tb.advance(10);
    let got = trees(&tb.recv(&s));
    assert_eq!(got, [delta("$tree/v/*", json!({"brief": null}), Q0)]);
    tb.subscribe(&s, "$tree/v/+", Q0);
    assert_eq!(
        trees(&tb.recv(&s)),
        [snap("$tree/v/*", json!({"kept": 1}), Q0)]
    );
}

/// Point 4: changes within the window become one delta with only the changed keys and the last
/// value of each; it goes out when the window ends (the core's next timeout), at the lower of
/// the granted QoS and the highest merged QoS; MQTT 5 marks it `tree=delta`.
#[test]
fn deltas_merge_within_the_window() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let p = tb.connect("p", version, Opts::new());
        tb.send(&p, retained("site/a/temp", "20", Q0, 0));
        let s = tb.connect("s", version, Opts::new());
        tb.subscribe(&s, "$tree/site/+/temp", Q1);
        assert_eq!(tb.recv(&s).len(), 1, "snapshot");
        let start = tb.broker.next_timeout();
        tb.send(&p, publish("site/a/temp", "21", Q0, 0));
        assert_eq!(
            tb.broker.next_timeout(),
            Some(tb.now.plus_millis(10)),
            "the window is a timer ({start:?} before)"
        );
        tb.skip(4);
        tb.send(&p, publish("site/b/temp", "18", Q1, 1));
        tb.send(&p, publish("site/a/temp", "22", Q0, 0));
        tb.send(&p, publish("other/x", "1", Q0, 0));
        tb.advance(5);
        tb.expect_silent(&s);
        tb.advance(1);
        let packets = tb.recv(&s);
        let want = json!({"a": 22, "b": 18});
        assert_eq!(trees(&packets), [delta("$tree/site/*/temp", want, Q1)]);
        let expected_kind = (version == V5).then(|| "delta".to_owned());
        assert_eq!(kind(publishes(&packets)[0]), expected_kind);
        tb.send(&s, puback(packet_id(&packets[0])));
        // Only QoS 0 changes: delivered at QoS 0 although QoS 1 was granted.
        tb.send(&p, publish("site/c/temp", "5", Q0, 0));
        tb.advance(10);
        let want = json!({"c": 5});
        assert_eq!(trees(&tb.recv(&s)), [delta("$tree/site/*/temp", want, Q0)]);
        assert_eq!(tb.broker.next_timeout(), start);
    }
}

/// Point 4: the window is configurable.
#[test]
fn window_is_configurable() {
    let mut config = Config::default();
    config.trees.window_millis = 50;
    let mut tb = TestBroker::with_config(config);
    let p = tb.connect("p", V5, Opts::new());
    let s = tb.connect("s", V5, Opts::new());
    tb.subscribe(&s, "$tree/x/+", Q0);
    assert_eq!(tb.recv(&s).len(), 1, "snapshot");
    tb.send(&p, publish("x/1", "1", Q0, 0));
    tb.advance(49);
    tb.expect_silent(&s);
    tb.advance(1);
    assert_eq!(
        trees(&tb.recv(&s)),
        [delta("$tree/x/*", json!({"1": 1}), Q0)]
    );
}

/// Point 3 (MQTT 5): Retain Handling 2 sends no snapshot, 1 only for a new subscription; the
/// subscription identifier travels with snapshot and deltas.
#[test]
fn retain_handling_and_subscription_identifier() {
    let mut tb = TestBroker::new();
    let p = tb.connect("p", V5, Opts::new());
    tb.send(&p, retained("r/a", "1", Q0, 0));
    let s = tb.connect("s", V5, Opts::new());
    tb.send(
        &s,
        subscribe_with(1, &[("$tree/r/+", opts_rh(Q0, DoNotSend))], None),
    );
    assert_eq!(tb.recv(&s), [suback(1, &[granted(Q0)])]);
    tb.send(
        &s,
        subscribe_with(2, &[("$tree/r/+", opts_rh(Q0, SendIfNew))], Some(9)),
    );
    assert_eq!(tb.recv(&s), [suback(2, &[granted(Q0)])], "not new");
    tb.send(&p, publish("r/b", "2", Q0, 0));
    tb.advance(10);
    let packets = tb.recv(&s);
    assert_eq!(trees(&packets), [delta("$tree/r/*", json!({"b": 2}), Q0)]);
    assert_eq!(sub_ids(publishes(&packets)[0]), [9]);
    let t = tb.connect("t", V5, Opts::new());
    tb.send(
        &t,
        subscribe_with(3, &[("$tree/r/+", opts_rh(Q0, SendIfNew))], Some(4)),
    );
    let packets = tb.recv(&t);
    assert_eq!(trees(&packets), [snap("$tree/r/*", json!({"a": 1}), Q0)]);
    assert_eq!(sub_ids(publishes(&packets)[0]), [4]);
}

/// A tree view and an ordinary subscription on the same filter live side by side; unsubscribing
/// the tree view stops its deltas only.
#[test]
fn tree_view_beside_ordinary_subscription() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let p = tb.connect("p", version, Opts::new());
        let s = tb.connect("s", version, Opts::new());
        tb.subscribe(&s, "$tree/k/+", Q0);
        assert_eq!(trees(&tb.recv(&s)), [snap("$tree/k/*", json!({}), Q0)]);
        tb.subscribe(&s, "k/+", Q0);
        tb.expect_silent(&s);
        tb.send(&p, publish("k/1", "x", Q0, 0));
        assert_eq!(tb.recv(&s), [publish("k/1", "x", Q0, 0)]);
        tb.advance(10);
        assert_eq!(
            trees(&tb.recv(&s)),
            [delta("$tree/k/*", json!({"1": "x"}), Q0)]
        );
        tb.send(&s, unsubscribe(5, &["$tree/k/+"]));
        let codes: &[ReasonCode] = if version == V5 {
            &[ReasonCode::Success]
        } else {
            &[]
        };
        assert_eq!(tb.recv(&s), [unsuback(5, codes)]);
        tb.send(&p, publish("k/2", "y", Q0, 0));
        tb.advance(10);
        assert_eq!(tb.recv(&s), [publish("k/2", "y", Q0, 0)]);
        assert_eq!(tb.broker.next_timeout(), None);
    }
}

/// MQTT-4.7.2-1 holds inside tree filters: a leading wildcard does not match `$` topics, an
/// explicit `$SYS` level does; `*` levels in a tree filter are refused.
#[test]
fn dollar_topics_and_refused_filters() {
    let mut tb = TestBroker::new();
    let p = tb.connect("p", V5, Opts::new());
    tb.send(&p, retained("$SYS/x", "1", Q0, 0));
    tb.send(&p, retained("a/x", "2", Q0, 0));
    let s = tb.connect("s", V5, Opts::new());
    tb.subscribe(&s, "$tree/+/x", Q0);
    assert_eq!(
        trees(&tb.recv(&s)),
        [snap("$tree/*/x", json!({"a": 2}), Q0)]
    );
    tb.subscribe(&s, "$tree/$SYS/+", Q0);
    assert_eq!(
        trees(&tb.recv(&s)),
        [snap("$tree/$SYS/*", json!({"x": 1}), Q0)]
    );
    tb.send(&s, subscribe(3, &[("$tree/a/*", Q0)]));
    assert_eq!(tb.recv(&s), [suback(3, &[ReasonCode::TopicFilterInvalid])]);
}

/// Point 6: a pending delta is bounded like a session queue: at the limit it goes out early.
#[test]
fn pending_delta_is_bounded() {
    let limits = Limits {
        queued_count_max: 3,
        ..Limits::default()
    };
    let mut tb = TestBroker::with_limits(limits);
    let p = tb.connect("p", V5, Opts::new());
    let s = tb.connect("s", V5, Opts::new());
    tb.subscribe(&s, "$tree/b/+", Q0);
    assert_eq!(tb.recv(&s).len(), 1, "snapshot");
    for n in 0..4 {
        tb.send(&p, publish(&format!("b/{n}"), "1", Q0, 0));
    }
    let want = json!({"0": 1, "1": 1, "2": 1});
    assert_eq!(trees(&tb.recv(&s)), [delta("$tree/b/*", want, Q0)]);
    tb.advance(10);
    assert_eq!(
        trees(&tb.recv(&s)),
        [delta("$tree/b/*", json!({"3": 1}), Q0)]
    );
}

/// Point 5: a `$tree/` publish is spread into one message per key, with the PUBLISH's QoS and
/// retain flag, routed like ordinary publishes (and so into tree views); `**` spreads nested
/// objects over several levels.
#[test]
fn tree_publish_spreads_into_messages() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let s = tb.connect("s", version, Opts::new());
        tb.subscribe(&s, "light/#", Q1);
        let p = tb.connect("p", version, Opts::new());
        let payload = r##"{"is_on":1,"brightness":55,"color":"#FFFFFF"}"##;
        tb.send(&p, retained("$tree/light/bedroom/*", payload, Q1, 1));
        assert_eq!(tb.recv(&p), [puback(1)]);
        let packets = tb.recv(&s);
        let got: Vec<(String, String, QoS, bool)> = publishes(&packets)
            .iter()
            .map(|p| {
                let text = String::from_utf8_lossy(&p.payload).into_owned();
                (p.topic.to_string(), text, p.qos, p.retain)
            })
            .collect();
        let want = [
            ("light/bedroom/brightness", "55"),
            ("light/bedroom/color", "#FFFFFF"),
            ("light/bedroom/is_on", "1"),
        ]
        .map(|(t, v)| (t.to_owned(), v.to_owned(), Q1, false));
        assert_eq!(got, want, "{version:?}");
        for packet in &packets {
            tb.send(&s, puback(packet_id(packet)));
        }
        // Retained, each under its own topic.
        let t = tb.connect("t", version, Opts::new());
        tb.subscribe(&t, "$tree/light/+/+", Q0);
        let want = json!({"bedroom": {"is_on": 1, "brightness": 55, "color": "#FFFFFF"}});
        assert_eq!(trees(&tb.recv(&t)), [snap("$tree/light/*/*", want, Q0)]);
        // `**`, and the spread messages reach tree views as one delta.
        let payload = r#"{"kitchen":{"is_on":0,"lamp":{"level":3}}}"#;
        tb.send(&p, publish("$tree/light/**", payload, Q0, 0));
        let got = payloads(&tb.recv(&s));
        assert_eq!(
            got,
            ["0", "3"],
            "light/kitchen/is_on, light/kitchen/lamp/level"
        );
        tb.advance(10);
        let want = json!({"kitchen": {"is_on": 0}});
        assert_eq!(trees(&tb.recv(&t)), [delta("$tree/light/*/*", want, Q0)]);
    }
}

/// Point 5: a payload that is not an object, or does not fit the topic, is refused whole: MQTT 5
/// with 0x99 in PUBACK or PUBREC, 3.1.1 with a logged drop and the usual acknowledgement.
#[test]
fn bad_tree_publish_is_refused_whole() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let s = tb.connect("s", version, Opts::new());
        tb.subscribe(&s, "#", Q0);
        let p = tb.connect("p", version, Opts::new());
        tb.events();
        let bad = [
            ("$tree/a/*", "[1,2]"),
            ("$tree/a/*", "not json"),
            ("$tree/a/*/*", r#"{"ok":{"x":1},"bad":2}"#),
            ("$tree/a/*", r#"{"x/y":1}"#),
            ("$tree/a/b", r#"{"c":1}"#),
        ];
        for (n, (t, payload)) in bad.into_iter().enumerate() {
            let packet_id = n as u16 + 1;
            tb.send(&p, publish(t, payload, Q1, packet_id));
            let want = if version == V5 {
                ack(packet_id, ReasonCode::PayloadFormatInvalid)
            } else {
                ack(packet_id, ReasonCode::Success)
            };
            assert_eq!(tb.recv(&p), [Packet::PubAck(want)], "{t} {payload}");
            let refused = tb.events().into_iter().any(|e| {
                matches!(e, Event::PublishRefused { reason, .. }
                    if reason == ReasonCode::PayloadFormatInvalid)
            });
            assert!(refused, "{t} {payload}: logged");
        }
        tb.send(&p, publish("$tree/a/*", "3", Q2, 9));
        let want = if version == V5 {
            vec![Packet::PubRec(ack(9, ReasonCode::PayloadFormatInvalid))]
        } else {
            vec![pubrec(9)]
        };
        assert_eq!(tb.recv(&p), want);
        tb.send(&p, publish("$tree/a/*", "4", Q0, 0));
        tb.expect_silent(&s);
        assert_eq!(tb.stats().retained, 0);
    }
}

/// Point 6: a large snapshot is built in chunks over several calls into the core (so other
/// clients' traffic runs in between), walking the retained messages in order; deltas to that
/// member wait until it is sent, and what changed meanwhile follows it at once as a delta.
/// Members of the same view share each delta.
#[test]
fn large_snapshot_is_built_in_chunks() {
    let mut config = Config::default();
    config.trees.snapshot_chunk_entries = 2;
    let mut tb = TestBroker::with_config(config);
    let p = tb.connect("p", V5, Opts::new());
    for n in 0..5 {
        tb.send(&p, retained(&format!("c/{n}"), "0", Q0, 0));
    }
    let early = tb.connect("early", V5, Opts::new());
    tb.subscribe(&early, "$tree/c/+", Q0);
    for _ in 0..3 {
        tb.advance(0);
    }
    let all = json!({"0": 0, "1": 0, "2": 0, "3": 0, "4": 0});
    assert_eq!(trees(&tb.recv(&early)), [snap("$tree/c/*", all, Q0)]);

    let s = tb.connect("s", V5, Opts::new());
    tb.subscribe(&s, "$tree/c/+", Q0);
    tb.expect_silent(&s);
    assert_eq!(
        tb.broker.next_timeout(),
        Some(tb.now),
        "more to build at once"
    );
    // c/0 and c/1 are laid out; c/1 changes behind the walk, c/3 and c/4 ahead of it.
    tb.send(&p, retained("c/1", "9", Q0, 0));
    tb.send(&p, retained("c/3", "8", Q0, 0));
    tb.send(&p, retained("c/4", "", Q0, 0));
    tb.advance(10);
    let packets = tb.recv(&s);
    let changed = json!({"1": 9, "3": 8, "4": null});
    assert_eq!(
        trees(&packets),
        [
            snap("$tree/c/*", json!({"0": 0, "1": 0, "2": 0, "3": 8}), Q0),
            delta("$tree/c/*", changed.clone(), Q0)
        ]
    );
    assert_eq!(kind(publishes(&packets)[1]).as_deref(), Some("delta"));
    assert_eq!(trees(&tb.recv(&early)), [delta("$tree/c/*", changed, Q0)]);
    assert_eq!(tb.broker.next_timeout(), None);
    tb.send(&p, publish("c/2", "7", Q0, 0));
    tb.advance(10);
    for client in [&early, &s] {
        let got = trees(&tb.recv(client));
        assert_eq!(got, [delta("$tree/c/*", json!({"2": 7}), Q0)]);
    }
}

/// A session that unsubscribes or goes away while its snapshot is being built leaves nothing
/// behind.
#[test]
fn leaving_during_a_snapshot() {
    let mut config = Config::default();
    config.trees.snapshot_chunk_entries = 1;
    let mut tb = TestBroker::with_config(config);
    let p = tb.connect("p", V311, Opts::new());
    for n in 0..3 {
        tb.send(&p, retained(&format!("l/{n}"), "0", Q0, 0));
    }
    let s = tb.connect("s", V311, Opts::new());
    tb.subscribe(&s, "$tree/l/+", Q0);
    tb.send(&s, unsubscribe(2, &["$tree/l/+"]));
    assert_eq!(tb.recv(&s), [unsuback(2, &[])]);
    tb.advance(0);
    tb.expect_silent(&s);
    let t = tb.connect("t", V311, Opts::new());
    tb.subscribe(&t, "$tree/l/+", Q0);
    tb.disconnect(&t);
    tb.advance(0);
    tb.advance(0);
    assert_eq!(tb.broker.next_timeout(), None);
    tb.send(&p, publish("l/0", "1", Q0, 0));
    assert_eq!(tb.broker.next_timeout(), None, "no tree view is left");
}

/// Lets every client publish and subscribe under `ok/` only.
#[derive(Debug)]
struct OnlyOk;

#[derive(Debug)]
struct OnlyOkPermissions;

impl Permissions for OnlyOkPermissions {
    fn allows(&self, _access: Access, topic: &str) -> bool {
        topic.starts_with("ok/")
    }
}

impl Authorizer for OnlyOk {
    fn permissions(&mut self, _principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        Some(Box::new(OnlyOkPermissions))
    }
}

/// Point 5 with ACLs: each spread topic is checked as an ordinary publish would be (the
/// `$tree/` topic itself is not); one denied topic refuses the whole publish, with 0x87 in
/// MQTT 5 and a silent drop in 3.1.1. A tree subscription is checked by its inner filter.
#[test]
fn acl_denial_inside_a_tree_publish_refuses_it_whole() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        tb.broker.set_authorizer(Box::new(OnlyOk));
        let s = tb.connect("s", version, Opts::new());
        tb.subscribe(&s, "ok/#", Q0);
        tb.send(&s, subscribe(2, &[("$tree/no/+", Q0)]));
        let refused = if version == V5 {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::UnspecifiedError // 0x80 Failure in 3.1.1
        };
        assert_eq!(tb.recv(&s), [suback(2, &[refused])]);
        let p = tb.connect("p", version, Opts::new());
        tb.events();
        tb.send(&p, publish("$tree/ok/*", r#"{"a":1,"b":2}"#, Q1, 1));
        assert_eq!(tb.recv(&p), [puback(1)]);
        assert_eq!(payloads(&tb.recv(&s)), ["1", "2"]);
        tb.send(&p, publish("$tree/*/x", r#"{"ok":1,"no":2}"#, Q1, 2));
        let code = if version == V5 {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        assert_eq!(tb.recv(&p), [Packet::PubAck(ack(2, code))], "{version:?}");
        tb.send(&p, publish("$tree/*/x", r#"{"ok":1,"no":2}"#, Q2, 3));
        let want = if version == V5 {
            Packet::PubRec(ack(3, ReasonCode::NotAuthorized))
        } else {
            pubrec(3)
        };
        assert_eq!(tb.recv(&p), [want]);
        tb.expect_silent(&s);
        let events = tb.events();
        let denied: Vec<&str> = events
            .iter()
            .filter_map(|e| match e {
                Event::Denied { topic, .. } => Some(topic.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(denied, ["no/x", "no/x"]);
        assert!(events
            .iter()
            .any(|e| matches!(e, Event::PublishRefused { reason, .. }
            if *reason == ReasonCode::NotAuthorized)));
    }
}
