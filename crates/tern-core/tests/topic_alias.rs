//! Topic aliases (MQTT 5) prove that an alias is set and used per connection, that an alias
//! above the maximum is refused with 0x94, an unknown alias with 0x82, and that the server
//! sends none.

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
