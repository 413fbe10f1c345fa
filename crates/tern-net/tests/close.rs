//! Closing a connection is bounded: a TLS or WebSocket client that stops reading while the
//! broker has more for it than its socket holds is dropped after the write stall, and closing
//! it (`close_notify`, a Close frame, which cannot be written either) does not wait past the
//! close timeout, so its will is published. Both timeouts are short here; what is asserted is
//! that the will comes (the wait's timeout only bounds the test).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use support::tls::{TestCertificate, WsClient};
use support::{
    connect, loopback_config, spawn_server, subscribe, subscribe_qos0, Client, RunningServer,
};
use tern_codec::{Packet, Publish, QoS, ReasonCode, Will, WillProperties};
use tern_net::{ListenerConfig, Transport};

/// What the broker is given for the client that stopped reading: far more than the socket
/// buffers of a client that never reads hold.
const FLOOD_MESSAGES: usize = 512;
const FLOOD_PAYLOAD_BYTES: usize = 64 * 1024;

/// A server with a plain, a TLS and a WebSocket listener, and short write-stall and close
/// timeouts.
fn server(certificate: &TestCertificate) -> RunningServer {
    let mut config = loopback_config(tern_core::Config::default());
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    config.listeners.push(ListenerConfig {
        bind: any,
        transport: Transport::Tls(certificate.settings.clone()),
        use_identity_as_username: false,
    });
    config.listeners.push(ListenerConfig {
        bind: any,
        transport: Transport::WebSocket {
            path: "/mqtt".to_owned(),
        },
        use_identity_as_username: false,
    });
    config.write_stall_timeout = Duration::from_millis(300);
    config.close_timeout = Duration::from_millis(300);
    spawn_server(config, |_| {})
}

/// CONNECT with a will on `will/<client_id>`, no keep alive.
fn connect_with_will(client_id: &str) -> Packet {
    let Packet::Connect(mut connect) = connect(client_id, None) else {
        unreachable!("connect() builds a CONNECT")
    };
    let topic = format!("will/{client_id}").parse().unwrap();
    connect.will = Some(Will {
        topic,
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    Packet::Connect(connect)
}

/// Connects `victim` with a will, subscribes it to `flood`, then stops reading it while a
/// publisher sends more than its socket holds; the will must reach a watcher.
fn will_arrives_after_client_stops_reading<S: Read + Write>(
    server: &RunningServer,
    mut victim: Client<S>,
    client_id: &str,
) {
    let mut watcher = Client::open(server.addr);
    watcher.send(connect("watcher", None));
    assert!(matches!(watcher.recv(), Packet::ConnAck(_)));
    watcher.send(subscribe("will/#", 1));
    assert!(matches!(watcher.recv(), Packet::SubAck(_)));

    victim.send(connect_with_will(client_id));
    assert!(matches!(victim.recv(), Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));
    victim.send(subscribe_qos0("flood"));
    assert!(matches!(victim.recv(), Packet::SubAck(_)));

    let mut publisher = Client::open(server.addr);
    publisher.send(connect("publisher", None));
    assert!(matches!(publisher.recv(), Packet::ConnAck(_)));
    let payload = Bytes::from(vec![7_u8; FLOOD_PAYLOAD_BYTES]);
    for _ in 0..FLOOD_MESSAGES {
        let publish = Publish::new("flood".parse().unwrap(), payload.clone());
        publisher.send(Packet::Publish(publish));
    }

    match watcher.recv() {
        Packet::Publish(will) => {
            assert_eq!(&*will.topic, format!("will/{client_id}"));
            assert_eq!(&will.payload[..], b"gone");
        }
        other => panic!("expected the will, got {other:?}"),
    }
    drop(victim);
}

#[test]
fn tls_client_that_stops_reading_is_closed_and_its_will_published() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::new(dir.path());
    let server = server(&certificate);
    let victim = Client::over(certificate.connect(server.addrs[1]));
    will_arrives_after_client_stops_reading(&server, victim, "tls-victim");
    server.stop();
}

#[test]
fn websocket_client_that_stops_reading_is_closed_and_its_will_published() {
    let dir = tempfile::tempdir().unwrap();
    let certificate = TestCertificate::new(dir.path());
    let server = server(&certificate);
    let victim = Client::over(WsClient::connect(server.addrs[2], "/mqtt"));
    will_arrives_after_client_stops_reading(&server, victim, "ws-victim");
    server.stop();
}
