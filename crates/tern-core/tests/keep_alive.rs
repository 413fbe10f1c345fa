//! Connection deadlines prove keep alive (1.5 times the interval, Server Keep Alive), the
//! CONNECT timeout, and that simultaneous closes and shutdown happen in a stable order.

mod support;

use tern_codec::{Packet, ReasonCode};
use tern_core::{CloseReason, Event, Limits, Transmit};

use support::*;

/// 5.0 MQTT-3.1.2-22: no packet for one and a half times the Keep Alive closes the connection,
/// with DISCONNECT 0x8D first (3.14.2.1); not a millisecond earlier.
#[test]
fn v5_keep_alive_timeout() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new().keep_alive(10));
    tb.advance(15_000);
    tb.expect_silent(&client);
    tb.advance(1);
    assert_eq!(
        tb.expect_closed(&client),
        [disconnect(ReasonCode::KeepAliveTimeout)]
    );
    assert!(tb.events().iter().any(|e| matches!(
        e,
        Event::Disconnected {
            reason: CloseReason::KeepAliveTimeout,
            ..
        }
    )));
    assert_eq!(tb.stats().clients_connected, 0);
}

/// 3.1.1 MQTT-3.1.2-24: the connection is closed as if the network had failed: no packet, and
/// the will is published.
#[test]
fn v311_keep_alive_timeout_publishes_the_will() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V311, Opts::new());
    tb.subscribe(&watcher, "will", Q0);
    let client = tb.connect(
        "c",
        V311,
        Opts::new()
            .keep_alive(4)
            .will(will("will", "silent", Q0, false)),
    );
    tb.advance(6_000);
    tb.expect_silent(&client);
    tb.advance(1);
    assert_eq!(tb.expect_closed(&client), []);
    assert_eq!(tb.recv(&watcher), [publish("will", "silent", Q0, 0)]);
}

/// Any control packet counts as activity (MQTT-3.1.2-20/-22): a PINGREQ restarts the period.
#[test]
fn any_packet_restarts_the_keep_alive_period() {
    for version in VERSIONS {
        let mut tb = TestBroker::new();
        let client = tb.connect("c", version, Opts::new().keep_alive(10));
        tb.advance(14_000);
        tb.send(&client, Packet::PingReq);
        assert_eq!(tb.recv(&client), [Packet::PingResp]);
        tb.advance(14_000);
        tb.send(&client, publish("t", "x", Q0, 0));
        tb.advance(15_000);
        tb.expect_silent(&client);
        tb.advance(1);
        tb.expect_closed(&client);
    }
}

/// 3.1.2.10: a Keep Alive of 0 turns the mechanism off.
#[test]
fn keep_alive_zero_never_times_out() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.advance_secs(100_000);
    tb.expect_silent(&client);
}

/// MQTT-3.2.2-21/-22: a server with a keep alive cap announces Server Keep Alive when the
/// client asks for more (or for none) and enforces it; a lower request stands unannounced.
#[test]
fn server_keep_alive_caps_the_client_value() {
    for (requested, announced, enforced_secs) in
        [(60, Some(30), 30), (0, Some(30), 30), (20, None, 20)]
    {
        let mut tb = TestBroker::with_limits(Limits {
            keep_alive_max_secs: 30,
            ..Limits::default()
        });
        let client = tb.connect("c", V5, Opts::new().keep_alive(requested));
        assert_eq!(
            client.connack.properties.server_keep_alive, announced,
            "requested {requested}"
        );
        tb.advance(enforced_secs * 1500);
        tb.expect_silent(&client);
        tb.advance(1);
        assert_eq!(
            tb.expect_closed(&client),
            [disconnect(ReasonCode::KeepAliveTimeout)],
            "requested {requested}"
        );
    }
}

/// A connection that sends no CONNECT within the connect timeout is closed without a packet
/// (MQTT-3.14.0-1: no DISCONNECT before CONNACK).
#[test]
fn connect_timeout_closes_silent_connections() {
    let mut tb = TestBroker::with_limits(Limits {
        connect_timeout_millis: 2_000,
        ..Limits::default()
    });
    let id = tb.open();
    tb.advance(1_999);
    assert_eq!(tb.broker.poll_transmit(id), None);
    tb.advance(1);
    assert_eq!(tb.broker.poll_transmit(id), Some(Transmit::Close));
    assert_eq!(tb.broker.poll_transmit(id), None);
    assert_eq!(
        tb.events(),
        [Event::Refused {
            connection: id,
            reason: CloseReason::ConnectTimeout
        }]
    );
    tb.broker.connection_lost(id, tb.now);
    assert_eq!(tb.broker.connection_count(), 0);
    // A connected client is not subject to it.
    let client = tb.connect("c", V5, Opts::new());
    tb.advance(10_000);
    tb.expect_silent(&client);
}

/// Connections timing out at the same tick are closed in connection order, so their wills go
/// out in the same order on every run.
#[test]
fn simultaneous_timeouts_close_in_connection_order() {
    let mut tb = TestBroker::new();
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "will/+", Q0);
    let names: Vec<String> = (0..12).map(|n| format!("c{n:02}")).collect();
    for name in &names {
        tb.connect(
            name,
            V5,
            Opts::new()
                .keep_alive(1)
                .will(will(&format!("will/{name}"), name, Q0, false)),
        );
    }
    tb.advance(1_501);
    assert_eq!(payloads(&tb.recv(&watcher)), names);
}

/// Shutdown tells MQTT 5 clients DISCONNECT 0x8B (Server shutting down), closes every
/// connection, and publishes wills in connection order.
#[test]
fn shutdown_closes_everyone() {
    let mut tb = TestBroker::new();
    let persistent = Opts::new().resume().expiry(600);
    let watcher = tb.connect("w", V5, persistent.clone());
    tb.subscribe(&watcher, "will/+", Q1);
    let v3 = tb.connect(
        "v3",
        V311,
        Opts::new().will(will("will/v3", "v3", Q1, false)),
    );
    let v5 = tb.connect("v5", V5, Opts::new().will(will("will/v5", "v5", Q1, false)));
    let pending = tb.open();
    let now = tb.now;
    tb.broker.shutdown(now);
    assert_eq!(
        tb.expect_closed(&watcher),
        [disconnect(ReasonCode::ServerShuttingDown)]
    );
    assert_eq!(tb.expect_closed(&v3), []);
    assert_eq!(
        tb.expect_closed(&v5),
        [disconnect(ReasonCode::ServerShuttingDown)]
    );
    assert_eq!(tb.broker.poll_transmit(pending), Some(Transmit::Close));
    assert_eq!(tb.stats().clients_connected, 0);
    // The wills were queued for the watcher's session in connection order.
    let watcher = tb.connect("w", V5, persistent);
    assert_eq!(payloads(&tb.recv(&watcher)), ["v3", "v5"]);
}
