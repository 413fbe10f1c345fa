//! A subscriber whose session queue overflows loses the newest QoS 1/2 messages while their
//! publisher still gets PUBACK Success (the broker accepted them; the limit is per
//! subscriber). That loss is otherwise invisible to the publisher, so the broker must say so
//! in its log at the default level.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use support::mqtt::{ack, pid, publish, RawClient};
use support::Tern;
use tern_codec::{Packet, QoS, ReasonCode};

const WAIT: Duration = Duration::from_secs(10);

#[test]
fn overflowing_session_queue_drops_newest_and_warns() {
    let broker = Tern::start_with_config(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n[limits]\nqueued_count_max = 2\n",
    );
    // An offline session with a QoS 1 subscription: everything for it is queued.
    let (mut slow, _) = RawClient::connect(broker.port, "slow", true, 600).unwrap();
    slow.subscribe("overflow/t", QoS::AtLeastOnce).unwrap();
    slow.disconnect().unwrap();

    let (mut publisher, _) = RawClient::connect(broker.port, "pub", true, 0).unwrap();
    for n in 1..=3u16 {
        let payload = format!("m{n}").into_bytes();
        let packet = publish("overflow/t", payload, QoS::AtLeastOnce, false, Some(pid(n)));
        publisher.send(&packet).unwrap();
        match publisher.recv(WAIT).unwrap() {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(
                    (ack.packet_id, ack.reason_code),
                    (pid(n), ReasonCode::Success)
                );
            }
            other => panic!("expected PUBACK {n}, got {other:?}"),
        }
    }
    assert!(
        broker.wait_for_log("\"slow\" dropped: its session queue is full", WAIT),
        "the third message's drop is logged"
    );

    // The session kept the two oldest; the newest was the one dropped.
    let (mut slow, connack) = RawClient::connect(broker.port, "slow", false, 600).unwrap();
    assert!(connack.session_present);
    let mut got = Vec::new();
    // Two messages are due; a third, had it been kept, would follow them at once.
    while got.len() < 3 {
        let wait = if got.len() < 2 {
            WAIT
        } else {
            Duration::from_millis(300)
        };
        let Some(packet) = slow.recv(wait).unwrap() else {
            break;
        };
        if let Packet::Publish(message) = packet {
            got.push(String::from_utf8(message.payload.to_vec()).unwrap());
            if let Some(id) = message.packet_id {
                slow.send(&Packet::PubAck(ack(id))).unwrap();
            }
        }
    }
    assert_eq!(got, ["m1", "m2"]);
}
