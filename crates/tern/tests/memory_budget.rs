//! The real `tern serve` under subscribers that never read, fed hundreds of large messages:
//! the broker's resident memory stays under its memory limit (`memory_max_bytes`) plus a
//! fixed overhead, `$SYS` counts the dropped messages and the clients cut loose, and a healthy
//! subscriber on the same topics gets every QoS 1 message in order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use support::mqtt::{ack, publish, RawClient};
use support::{rss_bytes, Tern};
use tern_codec::{Packet, QoS};

const WAIT: Duration = Duration::from_secs(30);
/// Messages published, each of `PAYLOAD_BYTES`: 200 MiB in all, four times the limit.
const MESSAGES: u32 = 400;
const PAYLOAD_BYTES: usize = 512 * 1024;
/// The broker's memory limit in this test.
const BUDGET_BYTES: u64 = 48 * 1024 * 1024;
/// What the broker may hold beyond the limit: each subscriber's connection task holds a write
/// batch (256 KiB) and the message it stopped in (512 KiB), the publisher's a read buffer of up
/// to 1 MiB, and the allocator keeps pages freed by a client cut loose until it reuses them.
const OVERHEAD_BYTES: u64 = 16 * 1024 * 1024;
/// QoS 1/2 publishes the publisher has unacknowledged at once.
const WINDOW: u32 = 8;
/// Subscribers that never read, one per topic `big/N`; the first at QoS 0.
const STALLED: u32 = 3;

/// Receives every message on `big/#` at QoS 1, acknowledging each; returns their numbers.
fn healthy_subscriber(mut client: RawClient) -> Vec<u32> {
    let mut received = Vec::new();
    while received.len() < MESSAGES as usize {
        match client
            .recv(WAIT)
            .expect("the healthy subscriber stays connected")
        {
            Some(Packet::Publish(publish)) => {
                received.push(u32::from_be_bytes(publish.payload[..4].try_into().unwrap()));
                let id = publish.packet_id.expect("QoS 1");
                client.send(&Packet::PubAck(ack(id))).unwrap();
            }
            Some(other) => panic!("healthy subscriber got {other:?}"),
            None => panic!("healthy subscriber waited in vain after {}", received.len()),
        }
    }
    received
}

/// The numeric `$SYS/broker/...` statistics, once `done` holds for them (retained, published
/// every second).
fn sys_stats(port: u16, done: impl Fn(&HashMap<String, u64>) -> bool) -> HashMap<String, u64> {
    let (mut observer, _) = RawClient::connect(port, "observer", true, 0).unwrap();
    observer
        .subscribe("$SYS/broker/#", QoS::AtMostOnce)
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut stats = HashMap::new();
    while Instant::now() < deadline {
        if let Some(Packet::Publish(publish)) = observer.recv(WAIT).unwrap() {
            let name = publish.topic.trim_start_matches("$SYS/broker/").to_owned();
            if let Some(value) = std::str::from_utf8(&publish.payload)
                .ok()
                .and_then(|text| text.parse().ok())
            {
                stats.insert(name, value);
            }
            if done(&stats) {
                break;
            }
        }
    }
    stats
}

#[test]
fn stalled_subscribers_stay_within_the_memory_limit() {
    let tern = Tern::start_with_config(&format!(
        "sys_interval_secs = 1\n\
         [[listener]]\nbind = \"127.0.0.1:0\"\n\
         [limits]\nmemory_max_bytes = {BUDGET_BYTES}\n\
         inflight_bytes_max = 1073741824\nqueued_bytes_max = 1073741824\n\
         outbox_qos0_bytes_max = 1073741824\n"
    ));
    let port = tern.port;
    // Only the broker-wide limit applies: each stalled subscriber alone could hold 200 MiB.
    let stalled: Vec<RawClient> = (0..STALLED)
        .map(|n| {
            let (mut client, _) =
                RawClient::connect(port, &format!("stalled-{n}"), true, 0).unwrap();
            let qos = if n == 0 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            client.subscribe(&format!("big/{n}"), qos).unwrap();
            client
        })
        .collect();
    let (mut good, _) = RawClient::connect(port, "good", true, 0).unwrap();
    good.subscribe("big/#", QoS::AtLeastOnce).unwrap();
    let subscriber = thread::spawn(move || healthy_subscriber(good));
    let (mut publisher, _) = RawClient::connect(port, "publisher", true, 0).unwrap();
    let baseline = rss_bytes(tern.pid());

    let mut peak = baseline;
    let mut sent = 0;
    while sent < MESSAGES {
        let batch = WINDOW.min(MESSAGES - sent);
        for seq in sent..sent + batch {
            let mut payload = seq.to_be_bytes().to_vec();
            payload.resize(PAYLOAD_BYTES, 0x5A);
            let topic = format!("big/{}", seq % STALLED);
            let id = support::mqtt::pid((seq % 60_000) as u16 + 1);
            publisher
                .send(&publish(&topic, payload, QoS::AtLeastOnce, false, Some(id)))
                .unwrap();
        }
        for _ in 0..batch {
            match publisher.recv(WAIT).unwrap() {
                Some(Packet::PubAck(_)) => {}
                other => panic!("publisher expected PUBACK, got {other:?}"),
            }
        }
        sent += batch;
        peak = peak.max(rss_bytes(tern.pid()));
    }
    let received = subscriber.join().expect("healthy subscriber");
    peak = peak.max(rss_bytes(tern.pid()));
    assert_eq!(
        received,
        (0..MESSAGES).collect::<Vec<_>>(),
        "the healthy subscriber lost or reordered QoS 1 messages"
    );
    let mib = |bytes: u64| bytes / (1024 * 1024);
    eprintln!(
        "VmRSS: {} MiB before publishing, peak {} MiB (limit {} MiB + {} MiB overhead)",
        mib(baseline),
        mib(peak),
        mib(BUDGET_BYTES),
        mib(OVERHEAD_BYTES)
    );
    assert!(
        peak <= baseline + BUDGET_BYTES + OVERHEAD_BYTES,
        "resident memory peaked at {} MiB, {} MiB above where it started (limit {} MiB)",
        mib(peak),
        mib(peak - baseline),
        mib(BUDGET_BYTES)
    );
    assert!(
        tern.wait_for_log("cut loose at the broker's memory limit", WAIT),
        "the client cut loose is logged with the reason"
    );
    let stats = sys_stats(port, |stats| {
        stats.get("clients/shed").is_some_and(|&n| n > 0)
            && stats.get("messages/dropped/memory").is_some_and(|&n| n > 0)
            && stats.contains_key("memory/maximum")
            && stats.contains_key("memory/held")
    });
    assert!(
        stats.get("clients/shed").is_some_and(|&n| n > 0),
        "{stats:?}"
    );
    assert!(
        stats.get("messages/dropped/memory").is_some_and(|&n| n > 0),
        "{stats:?}"
    );
    assert_eq!(
        stats.get("memory/maximum"),
        Some(&BUDGET_BYTES),
        "{stats:?}"
    );
    assert!(
        stats.get("memory/held").is_some_and(|&n| n <= BUDGET_BYTES),
        "{stats:?}"
    );
    drop(stalled);
}
