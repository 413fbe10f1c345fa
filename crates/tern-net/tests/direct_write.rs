//! Direct writes (the reading task writes deliveries into plain TCP receivers' sockets itself)
//! keep every receiver's stream whole and in order. With every read treated as quiet, one
//! subscriber does not read while a publisher sends more than its socket can hold, so direct
//! writes to it stop part-way and its own task must finish them; it starts reading half-way
//! through, while messages still come, so its task's unfinished writes and new direct writes
//! meet. It gets every message once, in order, as a subscriber that kept reading does.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{
    connect, loopback_config, publish, spawn_server, subscribe_qos0, Client, RunningServer,
};
use tern_codec::{Packet, Publish, QoS, ReasonCode};

/// Messages sent, of `PAYLOAD_BYTES` each: 48 MiB, half of it more than loopback socket
/// buffers hold.
const MESSAGES: u32 = 1536;
const PAYLOAD_BYTES: usize = 32 * 1024;

/// Connects `client_id` and subscribes it to `t` at QoS 0.
fn subscriber(addr: std::net::SocketAddr, client_id: &str) -> Client {
    let mut client = Client::open(addr);
    client.send(connect(client_id, None));
    assert!(matches!(client.recv(), Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));
    client.send(subscribe_qos0("t"));
    assert!(matches!(client.recv(), Packet::SubAck(_)));
    client
}

/// Reads `MESSAGES` publishes and returns their sequence numbers in arrival order.
fn read_sequence(client: &mut Client) -> Vec<u32> {
    (0..MESSAGES)
        .map(|_| match client.recv() {
            Packet::Publish(publish) => {
                assert_eq!(publish.payload.len(), PAYLOAD_BYTES, "payload intact");
                let mut seq = [0_u8; 4];
                seq.copy_from_slice(&publish.payload[..4]);
                let seq = u32::from_be_bytes(seq);
                let filler = u8::try_from(seq % 251).unwrap();
                assert!(
                    publish.payload[4..].iter().all(|&b| b == filler),
                    "payload of message {seq} intact"
                );
                seq
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        })
        .collect()
}

/// A server on its own thread where every read counts as quiet.
fn start_server() -> RunningServer {
    let mut core = tern_core::Config::default();
    // Nothing may be dropped for the stalled subscriber while it does not read.
    core.limits.outbox_qos0_count_max = 100_000;
    core.limits.outbox_qos0_bytes_max = usize::MAX;
    let mut config = loopback_config(core);
    config.direct_write_quiet_gap = Duration::ZERO;
    spawn_server(config, |_| {})
}

/// A QoS 0 PUBLISH to `t` carrying `seq` in its first four bytes, then a filler byte.
fn message(seq: u32) -> Packet {
    let mut payload = vec![u8::try_from(seq % 251).unwrap(); PAYLOAD_BYTES];
    payload[..4].copy_from_slice(&seq.to_be_bytes());
    let mut publish = Publish::new("t".parse().unwrap(), Bytes::from(payload));
    publish.qos = QoS::AtMostOnce;
    Packet::Publish(publish)
}

#[test]
fn direct_writes_to_a_stalled_receiver_arrive_whole_and_in_order() {
    let server = start_server();
    let addr = server.addr;

    let mut stalled = Some(subscriber(addr, "stalled"));
    let mut reading = subscriber(addr, "reading");
    let reader = std::thread::spawn(move || read_sequence(&mut reading));

    let mut publisher = Client::open(addr);
    publisher.send(connect("publisher", None));
    assert!(matches!(publisher.recv(), Packet::ConnAck(_)));
    let mut stalled_reader = None;
    for seq in 0..MESSAGES {
        if seq == MESSAGES / 2 {
            let mut stalled = stalled.take().unwrap();
            stalled_reader = Some(std::thread::spawn(move || read_sequence(&mut stalled)));
        }
        publisher.send(message(seq));
    }

    let expected: Vec<u32> = (0..MESSAGES).collect();
    assert_eq!(reader.join().unwrap(), expected, "the reading subscriber");
    let stalled_reader = stalled_reader.unwrap();
    assert_eq!(
        stalled_reader.join().unwrap(),
        expected,
        "the stalled subscriber"
    );

    server.stop();
}

/// One read writes to a bounded number of receivers directly and wakes the others' tasks: a
/// fan-out wider than that bound reaches every subscriber, each message once and in order.
#[test]
fn a_wide_fan_out_reaches_every_subscriber_in_order() {
    const SUBSCRIBERS: usize = 40;
    const SENT: u32 = 5;
    let server = start_server();
    let addr = server.addr;
    let mut subscribers: Vec<Client> = (0..SUBSCRIBERS)
        .map(|i| subscriber(addr, &format!("fan-{i}")))
        .collect();
    let mut publisher = Client::open(addr);
    publisher.send(connect("fan-publisher", None));
    assert!(matches!(publisher.recv(), Packet::ConnAck(_)));
    for seq in 0..SENT {
        publisher.send(message(seq));
    }
    for (i, client) in subscribers.iter_mut().enumerate() {
        let got: Vec<u32> = (0..SENT)
            .map(|_| match client.recv() {
                Packet::Publish(publish) => {
                    let mut seq = [0_u8; 4];
                    seq.copy_from_slice(&publish.payload[..4]);
                    u32::from_be_bytes(seq)
                }
                other => panic!("subscriber {i}: expected PUBLISH, got {other:?}"),
            })
            .collect();
        assert_eq!(got, (0..SENT).collect::<Vec<_>>(), "subscriber {i}");
    }
    server.stop();
}

/// A quiet read peeks and takes the bytes out of the socket only after the deliveries (and the
/// reply) are written. Publishes arriving a byte at a time, so most reads are partial, are each
/// taken once: every one is acknowledged once and delivered once, in order, and nothing else
/// follows (the PINGRESP comes next).
#[test]
fn quiet_reads_take_every_byte_once() {
    const SENT: u16 = 20;
    let server = start_server();
    let addr = server.addr;
    let mut receiver = subscriber(addr, "peek-receiver");
    let mut publisher = Client::open(addr);
    publisher.send(connect("peek-publisher", None));
    assert!(matches!(publisher.recv(), Packet::ConnAck(_)));
    for packet_id in 1..=SENT {
        publisher.send_bytewise(publish("t", b"peeked", packet_id));
        match publisher.recv() {
            Packet::PubAck(ack) => assert_eq!(ack.packet_id.get(), packet_id),
            other => panic!("expected PUBACK {packet_id}, got {other:?}"),
        }
        match receiver.recv() {
            Packet::Publish(publish) => assert_eq!(&publish.payload[..], b"peeked"),
            other => panic!("expected PUBLISH {packet_id}, got {other:?}"),
        }
    }
    publisher.send_bytewise(Packet::PingReq);
    assert!(matches!(publisher.recv(), Packet::PingResp));
    receiver.send(Packet::PingReq);
    assert!(matches!(receiver.recv(), Packet::PingResp));
    server.stop();
}
