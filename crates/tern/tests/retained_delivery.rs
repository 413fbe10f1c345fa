//! The real `tern serve` with its default limits: 100,000 retained messages all reach a new
//! `site/#` subscriber, at QoS 1 (paced by its window) and at QoS 0 (paced by its reading),
//! while the broker's resident memory grows by little more than one window's worth: the
//! retained messages are not copied into a queue to be sent.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::mqtt::{ack, pid, publish, RawClient};
use support::{rss_bytes, Tern};
use tern_codec::{Packet, QoS};

const TOPICS: u32 = 100_000;
const WAIT: Duration = Duration::from_secs(30);
/// What resident memory may grow by while the retained messages go out, over its figure once
/// they are all stored: the window in flight, the QoS 0 share of the outbox, a write batch and
/// the encodings the runtime keeps. Queueing the 100,000 deliveries at once would take more
/// (a queued delivery is 64 bytes, an outbox entry 56: 5-6 MiB).
const GROWTH_MAX_BYTES: u64 = 4 * 1024 * 1024;

fn topic(n: u32) -> String {
    format!("site/{}/{}", n / 1_000, n % 1_000)
}

/// Subscribes to `site/#` at `qos` and reads until every retained message has come (each
/// acknowledged at QoS 1), sampling the broker's memory on the way; returns the peak.
fn receive_all(port: u16, broker: u32, qos: QoS) -> u64 {
    let (mut subscriber, _) = RawClient::connect(port, &format!("site-{qos:?}"), true, 0).unwrap();
    subscriber.subscribe("site/#", qos).unwrap();
    let mut seen = HashSet::new();
    let mut peak = 0;
    let mut acks = Vec::new();
    while seen.len() < TOPICS as usize {
        let mut packet = subscriber.recv(WAIT).unwrap();
        assert!(
            packet.is_some(),
            "{qos:?}: {} of {TOPICS} retained messages, then nothing for {WAIT:?}",
            seen.len()
        );
        // What one read brought is acknowledged in one write, as a client reading in bulk does.
        while let Some(Packet::Publish(message)) = packet {
            assert!(message.retain, "sent for the subscription: RETAIN set");
            assert_eq!(message.qos, qos);
            if let Some(id) = message.packet_id {
                acks.push(Packet::PubAck(ack(id)));
            }
            let n = u32::from_be_bytes(message.payload[..4].try_into().unwrap());
            assert_eq!(message.topic.as_str(), topic(n));
            assert!(seen.insert(n), "{qos:?}: {} twice", message.topic);
            if seen.len() % 5_000 == 0 {
                peak = peak.max(rss_bytes(broker));
            }
            packet = subscriber.recv_buffered().unwrap();
        }
        if let Some(other) = packet {
            panic!(
                "{qos:?}: {} of {TOPICS} retained messages, then {other:?}",
                seen.len()
            );
        }
        subscriber.send_all(acks.drain(..)).unwrap();
    }
    peak
}

#[test]
fn every_retained_message_reaches_a_new_wildcard_subscriber() {
    let tern = Tern::start();
    let (mut publisher, _) = RawClient::connect(tern.port, "retainer", true, 0).unwrap();
    // At QoS 1, so that a QoS 1 subscription gets them at QoS 1: in bulk, as many at a time as
    // the broker's Receive Maximum (1,024 by default) lets a client have unacknowledged.
    const BULK: u32 = 1_000;
    for first in (0..TOPICS).step_by(BULK as usize) {
        publisher
            .send_all((first..first + BULK).map(|n| {
                let payload = n.to_be_bytes().to_vec();
                let id = pid((n - first + 1) as u16);
                publish(&topic(n), payload, QoS::AtLeastOnce, true, Some(id))
            }))
            .unwrap();
        for _ in 0..BULK {
            match publisher.recv(WAIT).unwrap() {
                Some(Packet::PubAck(_)) => {}
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
    }
    let baseline = rss_bytes(tern.pid());
    let mut peak = baseline;
    for qos in [QoS::AtLeastOnce, QoS::AtMostOnce] {
        peak = peak.max(receive_all(tern.port, tern.pid(), qos));
    }
    let kib = |bytes: u64| bytes / 1024;
    eprintln!(
        "VmRSS: {} KiB with {TOPICS} retained messages, peak {} KiB while sending them",
        kib(baseline),
        kib(peak)
    );
    assert!(
        peak <= baseline + GROWTH_MAX_BYTES,
        "resident memory grew by {} KiB while sending the retained messages",
        kib(peak - baseline)
    );
}
