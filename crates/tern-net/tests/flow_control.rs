//! Flow control in the runtime (docs/design/backpressure.md): a publisher held back past its
//! window is no longer read, its input waiting in the socket and in its read buffer, and is read
//! again (its task woken) once its subscriber drains, losing nothing; a subscriber whose socket
//! takes nothing for the stall timeout is cut loose and counted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use support::{connect, loopback_config, spawn_server, subscribe, subscribe_qos0, Client, WAIT};
use tern_codec::{Ack, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode};

/// Messages the publisher sends in one write, without waiting for any acknowledgement.
const MESSAGES: u16 = 2_000;

fn numbered(n: u16) -> Packet {
    let mut publish = Publish::new("t".parse().unwrap(), Bytes::from(format!("{n:020}")));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = PacketId::new(n);
    Packet::Publish(publish)
}

/// The subscriber's queue holds 4 messages (about 90 bytes), and is cut loose past 400 bytes:
/// 2,000 messages handled while it does not read would cut it loose many times over. The
/// publisher speaks MQTT 3.1.1, which has no Receive Maximum to keep it within 4 (an MQTT 5
/// one would be disconnected with 0x93): it is held from the fifth queued message on, and no
/// longer read from the fifth held acknowledgement on: its queue never grows past a dozen
/// messages, and every message reaches it, in order, as it reads.
#[test]
fn a_publisher_past_its_window_is_read_again_when_its_subscriber_drains() {
    let mut core = tern_core::Config::default();
    core.limits.queued_count_max = 4;
    core.limits.queued_bytes_max = 200;
    core.limits.inflight_count_max = 1;
    core.limits.receive_maximum = 4;
    let server = spawn_server(loopback_config(core), |_| {});

    let mut subscriber = Client::open(server.addr);
    subscriber.send(connect("s", None));
    assert!(matches!(subscriber.recv(), Packet::ConnAck(_)));
    subscriber.send(subscribe("t", 1));
    assert!(matches!(subscriber.recv(), Packet::SubAck(_)));

    let mut publisher = Client::open(server.addr);
    assert!(matches!(publisher.connect_v311("p"), Packet::ConnAck(_)));
    let mut all = BytesMut::new();
    for n in 1..=MESSAGES {
        numbered(n).encode(ProtocolVersion::V311, &mut all).unwrap();
    }
    publisher.send_raw(&all);

    let mut got = Vec::new();
    while got.len() < usize::from(MESSAGES) {
        match subscriber.recv() {
            Packet::Publish(publish) => {
                got.push(
                    std::str::from_utf8(&publish.payload)
                        .unwrap()
                        .parse::<u16>()
                        .unwrap(),
                );
                subscriber.send(Packet::PubAck(Ack::new(publish.packet_id.unwrap())));
            }
            other => panic!("after {} messages the subscriber got {other:?}", got.len()),
        }
    }
    assert_eq!(got, (1..=MESSAGES).collect::<Vec<_>>());
    let acks: Vec<u16> = (0..MESSAGES)
        .map(|_| match publisher.recv() {
            Packet::PubAck(ack) => {
                assert_eq!(ack.reason_code, ReasonCode::Success);
                ack.packet_id.get()
            }
            other => panic!("expected PUBACK, got {other:?}"),
        })
        .collect();
    assert_eq!(acks, (1..=MESSAGES).collect::<Vec<_>>());
    server.stop();
}

/// A subscriber whose socket takes nothing of a pending write for the stall timeout is cut
/// loose, and `$SYS/broker/clients/cut_loose` counts it.
#[test]
fn a_socket_that_takes_nothing_is_cut_loose_and_counted() {
    let mut core = tern_core::Config::default();
    // Nothing is dropped for it before its socket is full.
    core.limits.outbox_qos0_count_max = 100_000;
    core.limits.outbox_qos0_bytes_max = usize::MAX;
    let mut config = loopback_config(core);
    config.write_stall_timeout = Duration::from_millis(300);
    config.sys_interval = Some(Duration::from_millis(50));
    let server = spawn_server(config, |_| {});

    let mut watcher = Client::open(server.addr);
    watcher.send(connect("watcher", None));
    assert!(matches!(watcher.recv(), Packet::ConnAck(_)));
    watcher.send(subscribe("$SYS/broker/clients/cut_loose", 1));
    assert!(matches!(watcher.recv(), Packet::SubAck(_)));

    let mut victim = Client::open(server.addr);
    victim.send(connect("victim", None));
    assert!(matches!(victim.recv(), Packet::ConnAck(_)));
    victim.send(subscribe_qos0("flood"));
    assert!(matches!(victim.recv(), Packet::SubAck(_)));

    // 32 MiB: far more than the loopback socket buffers hold.
    let mut publisher = Client::open(server.addr);
    publisher.send(connect("publisher", None));
    assert!(matches!(publisher.recv(), Packet::ConnAck(_)));
    let payload = Bytes::from(vec![7_u8; 64 * 1024]);
    for _ in 0..512 {
        let publish = Publish::new("flood".parse().unwrap(), payload.clone());
        publisher.send(Packet::Publish(publish));
    }

    // Each update until the count moves; the wait for each is bounded by the client's WAIT.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        assert!(std::time::Instant::now() < deadline, "not cut loose");
        if let Packet::Publish(update) = watcher.recv() {
            if &update.payload[..] == b"1" {
                break;
            }
        }
    }
    drop(victim);
    server.stop();
}
