//! Wills and session lifetime prove when a will is published (connection loss, DISCONNECT
//! codes, will delay, session end), its RETAIN flag and properties, session expiry, and what a
//! 3.1.1 session keeps while its client is away.

mod support;

use tern_codec::{Packet, ReasonCode, UserProperties};
use tern_core::{CloseReason, Event, Limits};

use support::*;

/// Connects a watcher subscribed to `will/#` at QoS 2.
fn watcher(tb: &mut TestBroker, version: tern_codec::ProtocolVersion) -> TestClient {
    let watcher = tb.connect("watcher", version, Opts::new());
    tb.subscribe(&watcher, "will/#", Q2);
    watcher
}

/// 5.0 MQTT-3.1.2-8 and 3.1.1 MQTT-3.1.2-8: the will is published when the network connection
/// closes without DISCONNECT, with its QoS and as a non-retained message (MQTT-3.1.2-14 /
/// 3.1.1 MQTT-3.1.2-16).
#[test]
fn will_is_published_on_connection_loss() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let watcher = watcher(&mut tb, version);
        let client = tb.connect(
            "c",
            version,
            Opts::new().will(will("will/c", "gone", Q1, false)),
        );
        tb.lose(&client);
        assert_eq!(
            tb.recv(&watcher),
            [publish("will/c", "gone", Q1, 1)],
            "{version:?}"
        );
        assert_eq!(tb.stats().retained, 0);
        let disconnected = tb
            .events()
            .into_iter()
            .find(|e| matches!(e, Event::Disconnected { .. }));
        assert_eq!(
            disconnected,
            Some(Event::Disconnected {
                connection: client.id,
                client_id: mstr("c"),
                reason: CloseReason::ConnectionLost,
                will_triggered: true
            })
        );
    }
}

/// 5.0 MQTT-3.1.2-10 and MQTT-3.14.4-3, 3.1.1 MQTT-3.1.2-10 and MQTT-3.14.4-3: DISCONNECT with
/// reason 0x00 deletes the will without publishing it, now or later.
#[test]
fn will_is_not_published_on_normal_disconnect() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let watcher = watcher(&mut tb, version);
        let mut will = will("will/c", "gone", Q0, false);
        will.properties.will_delay_interval = Some(5);
        let client = tb.connect("c", version, Opts::new().resume().expiry(60).will(will));
        tb.disconnect(&client);
        tb.advance_secs(120);
        tb.expect_silent(&watcher);
    }
}

/// 5.0 3.14.2.1: DISCONNECT 0x04 (Disconnect with Will Message) publishes the will.
#[test]
fn will_is_published_on_disconnect_with_will_message() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let client = tb.connect("c", V5, Opts::new().will(will("will/c", "bye", Q0, false)));
    tb.send(&client, disconnect(ReasonCode::DisconnectWithWillMessage));
    assert_eq!(tb.expect_closed(&client), []);
    assert_eq!(tb.recv(&watcher), [publish("will/c", "bye", Q0, 0)]);
}

/// 3.1.1 MQTT-3.1.2-8: a connection the server closes for a protocol error publishes the will;
/// in 5.0 too (MQTT-3.1.2-8), after DISCONNECT 0x82.
#[test]
fn will_is_published_when_the_server_closes_for_an_error() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let watcher = watcher(&mut tb, version);
        let opts = Opts::new().will(will("will/c", "err", Q0, false));
        let client = tb.connect("c", version, opts.clone());
        tb.send(
            &client,
            Packet::Connect(Box::new(connect_packet("c", version, &opts))),
        );
        tb.expect_closed(&client);
        assert_eq!(tb.recv(&watcher), [publish("will/c", "err", Q0, 0)]);
    }
}

/// MQTT-3.1.2-8: with a Will Delay Interval the will goes out once the delay has passed, not
/// before.
#[test]
fn delayed_will_is_published_after_the_delay() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let client = tb.connect(
        "c",
        V5,
        Opts::new()
            .expiry(60)
            .will(delayed_will("will/c", "late", 10)),
    );
    tb.lose(&client);
    tb.advance(9_999);
    tb.expect_silent(&watcher);
    tb.advance(1);
    assert_eq!(tb.recv(&watcher), [publish("will/c", "late", Q0, 0)]);
    assert_eq!(
        tb.broker.next_timeout(),
        Some(tern_core::Time::from_millis(60_000)),
        "session expiry left"
    );
}

/// MQTT-3.1.3-9: a new connection to the session within the Will Delay Interval cancels the
/// will.
#[test]
fn reconnect_within_will_delay_cancels_the_will() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let opts = Opts::new()
        .resume()
        .expiry(60)
        .will(delayed_will("will/c", "late", 10));
    let client = tb.connect("c", V5, opts.clone());
    tb.lose(&client);
    tb.advance_secs(5);
    let client = tb.connect("c", V5, Opts::new().resume().expiry(60));
    assert!(client.connack.session_present);
    tb.advance_secs(60);
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.2-8: a reconnect with Clean Start 1 ends the old session, so its delayed will is
/// published at once (the will goes out when the delay passes or the session ends).
#[test]
fn clean_start_within_will_delay_publishes_the_will() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let client = tb.connect(
        "c",
        V5,
        Opts::new()
            .expiry(60)
            .will(delayed_will("will/c", "ended", 30)),
    );
    tb.lose(&client);
    tb.advance_secs(1);
    let again = tb.connect("c", V5, Opts::new());
    assert!(!again.connack.session_present);
    assert_eq!(tb.recv(&watcher), [publish("will/c", "ended", Q0, 0)]);
    tb.advance_secs(60);
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.2-8 with 4.1.0-2: a Will Delay Interval longer than the Session Expiry Interval
/// publishes the will when the session ends.
#[test]
fn delayed_will_is_published_when_the_session_ends_first() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let client = tb.connect(
        "c",
        V5,
        Opts::new()
            .expiry(5)
            .will(delayed_will("will/c", "end", 3600)),
    );
    tb.lose(&client);
    tb.advance(4_999);
    tb.expect_silent(&watcher);
    tb.advance(1);
    assert_eq!(tb.recv(&watcher), [publish("will/c", "end", Q0, 0)]);
    assert_eq!(tb.stats().sessions, 1, "only the watcher's session is left");
}

/// MQTT-3.1.2-8: the will is due once its delay has passed, even when the client reconnects
/// before the broker's next timer tick; MQTT-4.1.0-2: likewise an expired session is not
/// resumed.
#[test]
fn due_will_and_expiry_apply_before_a_reconnect() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let opts = Opts::new()
        .resume()
        .expiry(10)
        .will(delayed_will("will/c", "due", 5));
    let client = tb.connect("c", V5, opts.clone());
    tb.subscribe(&client, "t", Q1);
    tb.lose(&client);
    tb.skip(5_500);
    let client = tb.connect("c", V5, opts.clone());
    assert!(client.connack.session_present);
    assert_eq!(tb.recv(&watcher), [publish("will/c", "due", Q0, 0)]);

    tb.lose(&client);
    tb.skip(10_000);
    let client = tb.connect("c", V5, opts);
    assert!(!client.connack.session_present, "the session expired");
    assert_eq!(tb.stats().subscriptions, 1, "only the watcher's");
}

/// 5.0 MQTT-3.1.2-15 and 3.1.1 MQTT-3.1.2-17: a will with Will Retain is published as a
/// retained message: stored, forwarded with RETAIN 0 to existing subscribers and with RETAIN 1
/// to new ones.
#[test]
fn will_retain_is_stored() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let watcher = watcher(&mut tb, version);
        let client = tb.connect(
            "c",
            version,
            Opts::new().will(will("will/c", "kept", Q1, true)),
        );
        tb.lose(&client);
        assert_eq!(tb.recv(&watcher), [publish("will/c", "kept", Q1, 1)]);
        let later = tb.connect("later", version, Opts::new());
        tb.subscribe(&later, "will/c", Q1);
        assert_eq!(
            tb.recv(&later),
            [retained("will/c", "kept", Q1, 1)],
            "{version:?}"
        );
    }
}

/// MQTT-3.1.3-10 and 3.1.3.2: will properties are forwarded (user properties in order) and the
/// Message Expiry Interval counts from publication.
#[test]
fn will_properties_are_forwarded() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let (k, a, b) = (mstr("k"), mstr("a"), mstr("b"));
    let mut will = delayed_will("will/c", "p", 2);
    will.properties.user_properties = UserProperties::from_pairs([(&k, &b), (&k, &a)]);
    will.properties.content_type = Some(mstr("text/plain"));
    will.properties.message_expiry_interval = Some(30);
    let client = tb.connect("c", V5, Opts::new().expiry(60).will(will));
    tb.lose(&client);
    tb.advance_secs(2);
    let expected = publish_with("will/c", "p", Q0, 0, |p| {
        p.properties.user_properties = UserProperties::from_pairs([(&k, &b), (&k, &a)]);
        p.properties.content_type = Some(mstr("text/plain"));
        p.properties.message_expiry_interval = Some(30);
    });
    assert_eq!(tb.recv(&watcher), [expected]);
}

/// MQTT-3.1.2-23 and MQTT-4.1.0-2: a 5.0 session outlives its connection for its Session Expiry
/// Interval and is discarded after it; the server's maximum caps the interval.
#[test]
fn session_expiry_ends_the_session() {
    let mut tb = TestBroker::with_limits(Limits {
        session_expiry_max_secs: 20,
        ..Limits::default()
    });
    let opts = Opts::new().resume().expiry(100);
    let client = tb.connect("c", V5, opts.clone());
    assert_eq!(client.connack.properties.session_expiry_interval, Some(20));
    tb.subscribe(&client, "t", Q1);
    tb.disconnect(&client);
    tb.advance_secs(19);
    let client = tb.connect("c", V5, opts.clone());
    assert!(client.connack.session_present, "within the interval");
    tb.disconnect(&client);
    tb.advance_secs(20);
    assert_eq!(tb.stats().sessions, 0);
    assert_eq!(tb.stats().subscriptions, 0);
    assert!(tb.events().contains(&Event::SessionEnded {
        client_id: mstr("c")
    }));
    let client = tb.connect("c", V5, opts);
    assert!(!client.connack.session_present, "after the interval");
}

/// 5.0 3.1.2.11.2: without a Session Expiry Interval the session ends with the connection.
#[test]
fn v5_session_without_expiry_ends_with_the_connection() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new().resume());
    tb.subscribe(&client, "t", Q1);
    tb.lose(&client);
    assert_eq!(tb.stats().sessions, 0);
    let client = tb.connect("c", V5, Opts::new().resume());
    assert!(!client.connack.session_present);
}

/// 3.1.1 MQTT-3.1.2-6: a Clean Session 1 session ends when its connection does, subscriptions
/// included.
#[test]
fn v311_clean_session_ends_at_disconnect() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new());
    tb.subscribe(&client, "t", Q1);
    tb.disconnect(&client);
    assert_eq!(tb.stats().sessions, 0);
    assert_eq!(tb.stats().subscriptions, 0);
    let client = tb.connect("c", V311, Opts::new().resume());
    assert!(!client.connack.session_present);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send(&publisher, publish("t", "x", Q1, 1));
    tb.expect_silent(&client);
}

/// 3.1.1 MQTT-3.1.2-4 and MQTT-3.1.2-5: a Clean Session 0 session keeps its subscriptions and
/// stores QoS 1 and 2 messages while the client is away; QoS 0 messages are not kept.
#[test]
fn v311_persistent_session_queues_qos1_and_qos2_only() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V311, Opts::new().resume());
    tb.subscribe(&client, "t/#", Q2);
    tb.disconnect(&client);
    let publisher = tb.connect("p", V311, Opts::new());
    tb.send_all(
        &publisher,
        [
            publish("t/0", "zero", Q0, 0),
            publish("t/1", "one", Q1, 1),
            publish("t/2", "two", Q2, 2),
        ],
    );
    tb.advance_secs(3600);
    let client = tb.connect("c", V311, Opts::new().resume());
    assert!(client.connack.session_present);
    assert_eq!(
        tb.recv(&client),
        [publish("t/1", "one", Q1, 1), publish("t/2", "two", Q2, 2)]
    );
    tb.send(&publisher, publish("t/0", "online", Q0, 0));
    assert_eq!(tb.recv(&client), [publish("t/0", "online", Q0, 0)]);
}

/// 5.0 3.14.2.2.2: a DISCONNECT setting a non-zero Session Expiry Interval when CONNECT had 0
/// is a protocol error: DISCONNECT 0x82, and (not being a normal disconnection) the will goes.
#[test]
fn disconnect_cannot_extend_a_zero_session_expiry() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let client = tb.connect("c", V5, Opts::new().will(will("will/c", "w", Q0, false)));
    tb.send(
        &client,
        disconnect_with_expiry(ReasonCode::NORMAL_DISCONNECTION, 60),
    );
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::ProtocolError)]
    );
    assert_eq!(tb.stats().protocol_errors, 1);
    assert_eq!(
        tb.stats().sessions,
        1,
        "the session ended with its connection"
    );
    assert_eq!(tb.recv(&watcher), [publish("will/c", "w", Q0, 0)]);
}

/// 3.14.2.2.2: DISCONNECT may change a non-zero Session Expiry Interval, to 0 (the session ends
/// now) or to another value (the session lasts that long).
#[test]
fn disconnect_changes_a_non_zero_session_expiry() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new().resume().expiry(60));
    tb.send(
        &client,
        disconnect_with_expiry(ReasonCode::NORMAL_DISCONNECTION, 0),
    );
    assert_eq!(tb.expect_closed(&client), []);
    assert_eq!(tb.stats().sessions, 0);

    let client = tb.connect("c", V5, Opts::new().resume().expiry(60));
    tb.send(
        &client,
        disconnect_with_expiry(ReasonCode::NORMAL_DISCONNECTION, 600),
    );
    assert_eq!(tb.expect_closed(&client), []);
    tb.advance_secs(599);
    assert_eq!(tb.stats().sessions, 1);
    tb.advance_secs(1);
    assert_eq!(tb.stats().sessions, 0);
}

/// A Session Expiry Interval of 0xFFFFFFFF never expires (3.1.2.11.2).
#[test]
fn session_expiry_max_never_expires() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new().expiry(u32::MAX));
    tb.lose(&client);
    tb.advance_secs(10 * 365 * 24 * 3600);
    assert_eq!(tb.stats().sessions, 1);
    assert_eq!(tb.broker.next_timeout(), None);
}

/// MQTT-3.1.4-3 with MQTT-3.1.2-8 and MQTT-3.1.3-9 (5.0): a take-over that continues the
/// session is a new connection to it before the Will Delay Interval has passed (it starts when
/// the old connection closes, which the take-over causes), so the old connection's will is not
/// published, with a delay or without one (Mosquitto's 07-will-takeover). The new connection's
/// will replaces it.
#[test]
fn take_over_and_the_old_will() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let old = tb.connect(
        "a",
        V5,
        Opts::new()
            .expiry(60)
            .will(will("will/a", "a-old", Q0, false)),
    );
    let new = tb.connect(
        "a",
        V5,
        Opts::new()
            .resume()
            .expiry(60)
            .will(will("will/a", "a-new", Q0, false)),
    );
    tb.expect_closed(&old);
    tb.expect_silent(&watcher);

    let old = tb.connect(
        "b",
        V5,
        Opts::new()
            .expiry(60)
            .will(delayed_will("will/b", "b-old", 5)),
    );
    let replacement = tb.connect("b", V5, Opts::new().resume().expiry(60));
    tb.expect_closed(&old);
    tb.advance_secs(10);
    tb.expect_silent(&watcher);

    tb.lose(&new);
    tb.lose(&replacement);
    assert_eq!(tb.recv(&watcher), [publish("will/a", "a-new", Q0, 0)]);
    tb.advance_secs(120);
    tb.expect_silent(&watcher);
}

/// MQTT-3.1.2-8 (5.0): a take-over that ends the session (Clean Start 1, or a session that was to
/// end with its connection) publishes the old connection's will, as the session's end comes
/// before its Will Delay Interval (Mosquitto's 07-will-takeover).
#[test]
fn take_over_that_ends_the_session_publishes_the_old_will() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V5);
    let old = tb.connect(
        "a",
        V5,
        Opts::new()
            .expiry(60)
            .will(delayed_will("will/a", "a-old", 30)),
    );
    let _new = tb.connect("a", V5, Opts::new().expiry(60));
    tb.expect_closed(&old);
    assert_eq!(tb.recv(&watcher), [publish("will/a", "a-old", Q0, 0)]);
    let old = tb.connect(
        "b",
        V5,
        Opts::new().will(will("will/b", "b-old", Q0, false)),
    );
    let _new = tb.connect("b", V5, Opts::new().resume().expiry(60));
    tb.expect_closed(&old);
    assert_eq!(tb.recv(&watcher), [publish("will/b", "b-old", Q0, 0)]);
}

/// MQTT-3.1.2-8 (3.1.1): a 3.1.1 will belongs to its network connection and is published when
/// that closes without DISCONNECT, a take-over included, whatever the Clean Session flags (where
/// Mosquitto, which follows 5.0 here, publishes none for a continued session: see
/// docs/conformance.md, "Where Tern differs from Mosquitto").
#[test]
fn v311_take_over_publishes_the_old_will() {
    let mut tb = TestBroker::new();
    let watcher = watcher(&mut tb, V311);
    let old = tb.connect(
        "a",
        V311,
        Opts::new()
            .resume()
            .will(will("will/a", "a-old", Q0, false)),
    );
    let _new = tb.connect("a", V311, Opts::new().resume());
    tb.expect_closed(&old);
    assert_eq!(tb.recv(&watcher), [publish("will/a", "a-old", Q0, 0)]);
}
