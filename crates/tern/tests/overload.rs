//! The real `tern serve` with its default limits and overload policy (backpressure), and a
//! stall timeout of 2 s instead of 30: three QoS 1 subscribers on the same topics, one that
//! stops reading, one that reads at a fixed slow pace (about 4,000 messages a second, a small
//! share of what the broker delivers to the fast one) and one that reads as fast as it can,
//! and two QoS 1 publishers that keep up to
//! their window of messages unacknowledged, as devices do. The stalled one is cut loose once
//! it has held the publishers for the stall timeout; the slow one loses nothing; the fast one is
//! held back only as far as the slow one's queue requires; and the bytes the broker holds for
//! its receivers (`$SYS/broker/memory/held`) stay within what the queue limits allow.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use support::mqtt::{ack, pid, publish, RawClient};
use support::Tern;
use tern_codec::{Packet, QoS, ReasonCode};

/// An upper bound on any one wait; nothing waits for it in a passing run.
const WAIT: Duration = Duration::from_secs(30);
const STALL_TIMEOUT: Duration = Duration::from_secs(2);
const PUBLISHERS: usize = 2;
/// Messages each publisher sends: together more than a queue holds (10,000 by default), so
/// the stalled subscriber and then the slow one fill theirs.
const PER_PUBLISHER: usize = 10_000;
/// QoS 1 messages each publisher keeps unacknowledged at most.
const WINDOW: usize = 256;
/// The slow subscriber takes this many messages, then pauses for `SLOW_PAUSE`: about 4,000
/// messages a second, against tens of thousands for the fast one.
const SLOW_BATCH: usize = 8;
const SLOW_PAUSE: Duration = Duration::from_millis(2);
/// The defaults this test relies on (`Limits::default()`).
const QUEUED_COUNT_MAX: usize = 10_000;
const INFLIGHT_COUNT_MAX: usize = 1_024;
const LOW_WATER_PERCENT: usize = 50;

/// The payload of message `seq` of publisher `publisher`.
fn payload(publisher: usize, seq: usize) -> Vec<u8> {
    format!("{publisher}:{seq:08}").into_bytes()
}

/// What a message charges a receiver: its topic and payload.
fn charge() -> usize {
    "load/0".len() + payload(0, 0).len()
}

/// (publisher, seq) of a delivered PUBLISH.
fn origin(payload: &[u8]) -> (usize, usize) {
    let text = std::str::from_utf8(payload).unwrap();
    let (publisher, seq) = text.split_once(':').unwrap();
    (publisher.parse().unwrap(), seq.parse().unwrap())
}

/// Counts shared by the threads, read by the slow subscriber as it goes.
#[derive(Default)]
struct Progress {
    acked: AtomicUsize,
    fast: AtomicUsize,
}

/// Publishes `PER_PUBLISHER` messages keeping at most `WINDOW` unacknowledged; returns the
/// sequence numbers acknowledged, in the order of their PUBACK.
fn publisher(port: u16, n: usize, progress: Arc<Progress>) -> Vec<usize> {
    let (mut client, _) = RawClient::connect(port, &format!("pub-{n}"), true, 0).unwrap();
    let topic = format!("load/{n}");
    let mut next = 0;
    let mut acked = Vec::with_capacity(PER_PUBLISHER);
    while acked.len() < PER_PUBLISHER {
        let room = WINDOW - (next - acked.len());
        let batch: Vec<Packet> = (next..PER_PUBLISHER.min(next + room))
            .map(|seq| {
                let id = pid(u16::try_from(seq % 60_000 + 1).unwrap());
                publish(&topic, payload(n, seq), QoS::AtLeastOnce, false, Some(id))
            })
            .collect();
        next += batch.len();
        client.send_all(batch).unwrap();
        match client.recv(WAIT).unwrap() {
            Some(Packet::PubAck(puback)) => {
                assert_eq!(puback.reason_code, ReasonCode::Success);
                acked.push(usize::from(puback.packet_id.get()) - 1);
                progress.acked.fetch_add(1, Ordering::SeqCst);
            }
            other => panic!("publisher {n} expected PUBACK, got {other:?}"),
        }
    }
    acked
}

/// What a subscriber received, in order.
fn receive(client: &mut RawClient, seen: &mut Vec<(usize, usize)>) -> bool {
    match client.recv(WAIT).unwrap() {
        Some(Packet::Publish(message)) => {
            client
                .send(&Packet::PubAck(ack(message.packet_id.unwrap())))
                .unwrap();
            seen.push(origin(&message.payload));
            true
        }
        Some(other) => panic!("subscriber got {other:?}"),
        None => false,
    }
}

/// Checks that `seen` holds every message of every publisher exactly once, in order per
/// publisher.
fn assert_complete(who: &str, seen: &[(usize, usize)]) {
    let mut per_publisher: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(publisher, seq) in seen {
        per_publisher.entry(publisher).or_default().push(seq);
    }
    for n in 0..PUBLISHERS {
        let got = per_publisher.remove(&n).unwrap_or_default();
        assert!(
            got.iter().copied().eq(0..PER_PUBLISHER),
            "{who}: publisher {n}'s messages lost, repeated or out of order ({} received)",
            got.len()
        );
    }
}

#[test]
fn a_stalled_subscriber_is_cut_loose_a_slow_one_slows_its_publishers_and_loses_nothing() {
    let tern = Tern::start_with_config(&format!(
        "sys_interval_secs = 1\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [limits]\nstall_timeout_secs = {}\n",
        STALL_TIMEOUT.as_secs()
    ));
    let port = tern.port;
    let total = PUBLISHERS * PER_PUBLISHER;
    let progress = Arc::new(Progress::default());
    let done = Arc::new(AtomicBool::new(false));

    // Held bytes as `$SYS` reports them, every second.
    let (mut watcher, _) = RawClient::connect(port, "watcher", true, 0).unwrap();
    watcher
        .subscribe("$SYS/broker/memory/held", QoS::AtMostOnce)
        .unwrap();
    let watching = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            let mut held = Vec::new();
            while !done.load(Ordering::SeqCst) {
                if let Some(Packet::Publish(update)) =
                    watcher.recv(Duration::from_millis(200)).unwrap()
                {
                    held.push(
                        std::str::from_utf8(&update.payload)
                            .unwrap()
                            .parse()
                            .unwrap(),
                    );
                }
            }
            held
        })
    };

    let (mut stalled, _) = RawClient::connect(port, "stalled", true, 0).unwrap();
    stalled.subscribe("load/#", QoS::AtLeastOnce).unwrap();
    let stopped_reading = Instant::now();

    let (mut fast_client, _) = RawClient::connect(port, "fast", true, 0).unwrap();
    fast_client.subscribe("load/#", QoS::AtLeastOnce).unwrap();
    let fast = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || {
            let mut seen = Vec::with_capacity(total);
            while seen.len() < total && receive(&mut fast_client, &mut seen) {
                progress.fast.fetch_add(1, Ordering::SeqCst);
            }
            seen
        })
    };
    let (mut slow_client, _) = RawClient::connect(port, "slow", true, 0).unwrap();
    slow_client.subscribe("load/#", QoS::AtLeastOnce).unwrap();
    let slow = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || {
            let mut seen = Vec::with_capacity(total);
            // The most acknowledged to publishers beyond what the slow one has taken, and the
            // furthest the fast one got ahead of it.
            let (mut behind_max, mut fast_lead_max) = (0, 0);
            while seen.len() < total && receive(&mut slow_client, &mut seen) {
                let acked = progress.acked.load(Ordering::SeqCst);
                let fast = progress.fast.load(Ordering::SeqCst);
                behind_max = behind_max.max(acked.saturating_sub(seen.len()));
                fast_lead_max = fast_lead_max.max(fast.saturating_sub(seen.len()));
                if seen.len() % SLOW_BATCH == 0 {
                    thread::sleep(SLOW_PAUSE);
                }
            }
            (seen, behind_max, fast_lead_max)
        })
    };
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|n| {
            let progress = Arc::clone(&progress);
            thread::spawn(move || publisher(port, n, progress))
        })
        .collect();

    // The publishers cannot finish while the stalled subscriber holds them.
    assert!(
        tern.wait_for_log("subscriber \"stalled\" cut loose", WAIT),
        "the stalled subscriber is cut loose"
    );
    let cut_after = stopped_reading.elapsed();
    for (n, publisher) in publishers.into_iter().enumerate() {
        let acked = publisher.join().expect("publisher");
        let mut sorted = acked.clone();
        sorted.sort_unstable();
        assert!(
            sorted.iter().copied().eq(0..PER_PUBLISHER),
            "publisher {n}: every message acknowledged once"
        );
    }
    let fast_seen = fast.join().expect("fast subscriber");
    let (slow_seen, behind_max, fast_lead_max) = slow.join().expect("slow subscriber");
    done.store(true, Ordering::SeqCst);
    let held = watching.join().expect("watcher");

    // Cut loose for holding the publishers without progress, no sooner than the stall timeout
    // after it stopped reading, and disconnected with Quota exceeded.
    assert!(
        cut_after >= STALL_TIMEOUT,
        "cut loose after {cut_after:?}, before the stall timeout"
    );
    let disconnect = loop {
        match stalled.recv(WAIT) {
            Ok(Some(Packet::Publish(_))) => continue,
            other => break other,
        }
    };
    assert!(
        matches!(&disconnect, Ok(Some(Packet::Disconnect(d))) if d.reason_code == ReasonCode::QuotaExceeded),
        "{disconnect:?}"
    );
    assert!(
        tern.wait_for_log("made no progress for the stall timeout", Duration::ZERO),
        "cut loose as stalled"
    );

    // Nothing lost, repeated or reordered for the two that read.
    assert_complete("slow", &slow_seen);
    assert_complete("fast", &fast_seen);
    assert!(!tern.wait_for_log("subscriber \"slow\" cut loose", Duration::ZERO));
    for who in ["slow", "fast"] {
        assert!(!tern.wait_for_log(&format!("for \"{who}\" dropped"), Duration::ZERO));
    }

    // The publishers were held to the slow one's pace: never acknowledged more than its queue,
    // its window and their own windows ahead of it. The fast one was held no sooner than the
    // slow one's queue required: it got at least the low-water mark's worth ahead of it.
    let budget = QUEUED_COUNT_MAX + INFLIGHT_COUNT_MAX + PUBLISHERS * WINDOW;
    assert!(
        behind_max <= budget,
        "acknowledged {behind_max} ahead of the slow subscriber (budget {budget})"
    );
    let low_water = QUEUED_COUNT_MAX * LOW_WATER_PERCENT / 100;
    assert!(
        fast_lead_max >= low_water,
        "the fast subscriber got only {fast_lead_max} ahead of the slow one"
    );

    // Memory: three receivers, each within its queue, its window and the publishers' windows.
    let bytes_budget = 3 * budget * charge();
    assert!(held.len() >= 2, "$SYS updates seen: {held:?}");
    let peak: usize = held.iter().copied().max().unwrap_or(0);
    assert!(
        peak <= bytes_budget,
        "held {peak} bytes, budget {bytes_budget}: {held:?}"
    );
    eprintln!(
        "cut loose after {cut_after:?}; acknowledged at most {behind_max} ahead of the slow \
         subscriber; fast at most {fast_lead_max} ahead of it; held at most {peak} bytes"
    );
}
