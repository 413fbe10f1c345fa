//! Topic aliases (MQTT 5) prove that an alias is set and used per connection, that an alias
//! above the maximum is refused with 0x94, an unknown alias with 0x82; and, towards clients, that
//! the broker sets aliases only for a client that accepts them, within both maximums, only where
//! they save bytes and the packet still fits, and afresh on every connection.

mod support;

use tern_codec::ReasonCode;
use tern_core::Limits;

use support::*;

/// PUBLISH with a topic and a Topic Alias.
fn aliased(topic_name: &str, alias: u16, payload: &str) -> tern_codec::Packet {
    publish_with(topic_name, payload, Q0, 0, |p| {
        p.properties.topic_alias = Some(alias)
    })
}

/// MQTT-3.3.2-12: the server accepts aliases up to its Topic Alias Maximum; an alias set with a
/// topic stands for it in later PUBLISH packets with an empty topic. MQTT-3.1.2-27: the client
/// sent no Topic Alias Maximum, so deliveries carry the topic and no alias.
#[test]
fn alias_is_set_and_used() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "long/topic/name", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    assert_eq!(publisher.connack.properties.topic_alias_maximum, Some(64));
    tb.send(&publisher, aliased("long/topic/name", 64, "first"));
    tb.send(
        &publisher,
        publish_with("", "second", Q0, 0, |p| p.properties.topic_alias = Some(64)),
    );
    tb.expect_silent(&publisher);
    assert_eq!(
        tb.recv(&subscriber),
        [
            publish("long/topic/name", "first", Q0, 0),
            publish("long/topic/name", "second", Q0, 0)
        ]
    );
}

/// 3.3.2.3.4: a PUBLISH with a topic and an alias already in use maps the alias anew.
#[test]
fn alias_can_be_remapped() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "#", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, aliased("a", 1, "1"));
    tb.send(&publisher, aliased("b", 1, "2"));
    tb.send(&publisher, aliased("", 1, "3"));
    let topics: Vec<String> = publishes(&tb.recv(&subscriber))
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(topics, ["a", "b", "b"]);
}

/// 3.3.2.3.4: an alias greater than the server's Topic Alias Maximum is a protocol error
/// answered with DISCONNECT 0x94 (Topic Alias invalid); nothing is routed.
#[test]
fn alias_above_maximum_is_refused() {
    let mut tb = TestBroker::with_limits(Limits {
        topic_alias_max: 5,
        ..Limits::default()
    });
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "#", Q0);
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, aliased("t", 6, "x"));
    assert_eq!(
        tb.expect_closed(&publisher),
        [disconnect(ReasonCode::TopicAliasInvalid)]
    );
    tb.expect_silent(&subscriber);
    assert_eq!(tb.stats().protocol_errors, 1);
}

/// MQTT-3.2.2-18 and 3.3.2.3.4: with a Topic Alias Maximum of 0 the server announces none, and
/// any alias is refused with 0x94.
#[test]
fn aliases_disabled() {
    let mut tb = TestBroker::with_limits(Limits {
        topic_alias_max: 0,
        ..Limits::default()
    });
    let publisher = tb.connect("p", V5, Opts::new());
    assert_eq!(publisher.connack.properties.topic_alias_maximum, None);
    tb.send(&publisher, aliased("t", 1, "x"));
    assert_eq!(
        tb.expect_closed(&publisher),
        [disconnect(ReasonCode::TopicAliasInvalid)]
    );
}

/// 3.3.2.3.4: an empty topic with an alias the connection never set is a protocol error,
/// DISCONNECT 0x82.
#[test]
fn unknown_alias_with_empty_topic_is_refused() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, aliased("t", 1, "x"));
    tb.send(&publisher, aliased("", 2, "y"));
    assert_eq!(
        tb.expect_closed(&publisher),
        [disconnect(ReasonCode::ProtocolError)]
    );
}

/// MQTT-3.3.2-7: alias mappings do not carry over to a new network connection, even when the
/// session does.
#[test]
fn aliases_do_not_survive_the_connection() {
    let mut tb = TestBroker::new();
    let opts = Opts::new().resume().expiry(60);
    let publisher = tb.connect("p", V5, opts.clone());
    tb.send(&publisher, aliased("t", 1, "x"));
    tb.disconnect(&publisher);
    let publisher = tb.connect("p", V5, opts);
    assert!(publisher.connack.session_present);
    tb.send(&publisher, aliased("", 1, "y"));
    assert_eq!(
        tb.expect_closed(&publisher),
        [disconnect(ReasonCode::ProtocolError)]
    );
}

/// Aliases are per connection: one client's alias means nothing on another connection.
#[test]
fn aliases_are_per_connection() {
    let mut tb = TestBroker::new();
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "#", Q0);
    let first = tb.connect("a", V5, Opts::new());
    let second = tb.connect("b", V5, Opts::new());
    tb.send(&first, aliased("from/a", 1, "a"));
    tb.send(&second, aliased("from/b", 1, "b"));
    tb.send(&first, aliased("", 1, "a2"));
    let topics: Vec<String> = publishes(&tb.recv(&subscriber))
        .iter()
        .map(|p| p.topic.to_string())
        .collect();
    assert_eq!(topics, ["from/a", "from/b", "from/a"]);
}

/// The aliases a client receives, with the topic sent beside each (empty: the alias stands for
/// it), in the order the PUBLISH packets came.
fn names(packets: &[tern_codec::Packet]) -> Vec<(Option<u16>, String)> {
    publishes(packets)
        .into_iter()
        .map(|p| (p.properties.topic_alias, p.topic.to_string()))
        .collect()
}

/// A subscriber to `#` that accepts topic aliases up to `max`.
fn alias_taker(tb: &mut TestBroker, client_id: &str, opts: Opts) -> TestClient {
    let client = tb.connect(client_id, V5, opts);
    tb.subscribe(&client, "#", Q1);
    client
}

/// 3.3.2.3.4: a client that gave a Topic Alias Maximum gets a topic with an alias set the first
/// time and the alias alone after that, so it pays for a long topic once; a topic no longer than
/// an alias (3 bytes) goes by name. A client without a maximum gets no alias (MQTT-3.1.2-27).
#[test]
fn broker_sets_aliases_towards_a_client_that_takes_them() {
    let mut tb = TestBroker::new();
    let taker = alias_taker(&mut tb, "s", Opts::new().topic_alias_maximum(10));
    let plain = alias_taker(&mut tb, "plain", Opts::new());
    let publisher = tb.connect("p", V311, Opts::new());
    for (topic_name, payload) in [
        ("sensors/1/temp", "1"),
        ("sensors/1/temp", "2"),
        ("a/b", "3"),
    ] {
        tb.send(&publisher, publish(topic_name, payload, Q0, 0));
    }
    tb.send(&publisher, publish("sensors/2/temp", "4", Q1, 1));
    tb.send(&publisher, publish("sensors/1/temp", "5", Q1, 2));
    let packets = tb.recv(&taker);
    assert_eq!(
        names(&packets),
        [
            (Some(1), "sensors/1/temp".to_owned()),
            (Some(1), String::new()),
            (None, "a/b".to_owned()),
            (Some(2), "sensors/2/temp".to_owned()),
            (Some(1), String::new()),
        ]
    );
    let payloads: Vec<&[u8]> = publishes(&packets).iter().map(|p| &p.payload[..]).collect();
    assert_eq!(payloads, [&b"1"[..], b"2", b"3", b"4", b"5"]);
    assert!(names(&tb.recv(&plain))
        .iter()
        .all(|(alias, _)| alias.is_none()));
}

/// The broker sets no more aliases than its own setting allows, however many the client takes,
/// and none at all when the setting is 0.
#[test]
fn broker_aliases_are_bounded_by_its_setting() {
    for (setting, expected) in [(1, [Some(1), None, Some(1)]), (0, [None, None, None])] {
        let mut tb = TestBroker::with_limits(Limits {
            topic_alias_out_max: setting,
            ..Limits::default()
        });
        let taker = alias_taker(&mut tb, "s", Opts::new().topic_alias_maximum(100));
        let publisher = tb.connect("p", V311, Opts::new());
        for topic_name in ["first/topic", "second/topic", "first/topic"] {
            tb.send(&publisher, publish(topic_name, "x", Q0, 0));
        }
        let aliases: Vec<Option<u16>> = names(&tb.recv(&taker)).into_iter().map(|n| n.0).collect();
        assert_eq!(aliases, expected, "setting {setting}");
    }
}

/// MQTT-3.1.2-24: setting an alias makes a PUBLISH three bytes longer; where that would pass the
/// client's Maximum Packet Size the topic goes by name alone, unaliased, and a later message that
/// leaves room sets the alias.
#[test]
fn broker_sets_no_alias_that_would_pass_the_maximum_packet_size() {
    let mut tb = TestBroker::new();
    // "sensors/1/temp" at QoS 0 is 2 + 2 + 14 + 1 + payload bytes: 22 with a 3-byte payload, one
    // that sets an alias 22 with an empty payload.
    let opts = Opts::new().topic_alias_maximum(10).max_packet_size(22);
    let taker = alias_taker(&mut tb, "s", opts);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("sensors/1/temp", "abc", Q0, 0));
    tb.send(&publisher, publish("sensors/1/temp", "", Q0, 0));
    tb.send(&publisher, publish("sensors/1/temp", "abc", Q0, 0));
    assert_eq!(
        names(&tb.recv(&taker)),
        [
            (None, "sensors/1/temp".to_owned()),
            (Some(1), "sensors/1/temp".to_owned()),
            (Some(1), String::new()),
        ]
    );
}

/// MQTT-3.3.2-7: aliases belong to a network connection. After a reconnection with the session
/// resumed, the broker's aliases start afresh: the resent unacknowledged PUBLISH (DUP) carries
/// its topic, setting the alias anew, and so does the next new message on another topic.
#[test]
fn broker_aliases_start_afresh_on_each_connection() {
    let mut tb = TestBroker::new();
    let opts = Opts::new().resume().expiry(60).topic_alias_maximum(10);
    let taker = alias_taker(&mut tb, "s", opts.clone());
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("sensors/1/temp", "1", Q1, 1));
    tb.send(&publisher, publish("sensors/1/temp", "2", Q1, 2));
    assert_eq!(
        names(&tb.recv(&taker)),
        [
            (Some(1), "sensors/1/temp".to_owned()),
            (Some(1), String::new())
        ]
    );
    tb.lose(&taker);
    let taker = tb.connect("s", V5, opts);
    assert!(taker.connack.session_present);
    let resent = tb.recv(&taker);
    assert_eq!(
        names(&resent),
        [
            (Some(1), "sensors/1/temp".to_owned()),
            (Some(1), String::new())
        ]
    );
    assert!(publishes(&resent).iter().all(|p| p.dup));
}
