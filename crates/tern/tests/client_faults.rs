//! The client's fault-injection suite: a publisher and a subscriber, both behind a proxy that
//! drops, resets and blackholes their connections (mid-CONNECT and mid-QoS 2 exchange
//! included), hundreds of times; every QoS 1 message must arrive at least once and every QoS 2
//! message exactly once, in order per topic. Run against `tern serve` and against Debian's
//! `mosquitto`, to show the client does not depend on our broker's quirks.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod faults;
mod support;

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use faults::FaultProxy;
use support::mosquitto::Mosquitto;
use tern_client::{Client, ClientOptions, QoS, ReasonCode, TcpTransport};

/// Faults to inject per run (both clients together).
const FAULTS_MIN: usize = 200;
/// Publishes awaiting acknowledgement at once.
const OUTSTANDING_MAX: usize = 32;
/// Messages the publisher may be ahead of the subscriber. Unpaced, the subscriber falls more
/// than the broker's `queued_count_max` (10,000) messages behind and the broker drops the
/// newest for it by policy, while the publisher still gets PUBACK Success.
const AHEAD_MAX: u64 = 64;
/// Upper bound of one connection's byte budget before its fault.
const BUDGET_MAX: usize = 12_000;
/// The whole run must finish within this.
const RUN_DEADLINE: Duration = Duration::from_secs(90);

fn options(id: &str) -> ClientOptions {
    let mut options = ClientOptions::new(id);
    options.clean_start = true;
    options.session_expiry_secs = 600;
    // Short timers so hundreds of outages fit in seconds: a blackhole is noticed within
    // keep_alive + ping_timeout.
    options.keep_alive = Duration::from_millis(100);
    options.ping_timeout = Some(Duration::from_millis(150));
    options.connect_timeout = Duration::from_millis(500);
    options.quiet_period = Duration::from_millis(20);
    options.backoff_min = Duration::from_millis(10);
    options.backoff_max = Duration::from_millis(100);
    options
}

async fn run(broker_port: u16, seed: u64, label: &str, receive_maximum: u16) {
    let proxy = FaultProxy::start(broker_port, seed, BUDGET_MAX).await;
    let address = format!("127.0.0.1:{}", proxy.port);
    let prefix = format!("faults-{label}-{seed:x}");
    let topics = [format!("{prefix}/q1"), format!("{prefix}/q2")];

    // A broker resends its whole in-flight window after each reconnection; were that burst
    // larger than a connection's byte budget, no acknowledgement would ever get through. The
    // subscriber's Receive Maximum bounds it (see the tests below for the value per broker).
    let mut sub_options = options(&format!("{prefix}-sub"));
    sub_options.receive_maximum = receive_maximum;
    let (subscriber, _sub_task) = Client::start(sub_options, TcpTransport::new(&address)).unwrap();
    // The first SUBSCRIBE may itself be cut; the client resends it until acknowledged.
    let mut messages = tokio::time::timeout(
        RUN_DEADLINE,
        subscriber.subscribe(&format!("{prefix}/#"), QoS::ExactlyOnce),
    )
    .await
    .expect("subscribed in time")
    .expect("subscription granted");

    // Every message must arrive; QoS 1 may repeat, QoS 2 must not, and first arrivals follow
    // publication order on each topic. The collector panics (failing the test) on a violation.
    let (progress_tx, mut progress) = tokio::sync::watch::channel([0u64; 2]);
    let collector = {
        let topics = topics.clone();
        tokio::spawn(async move {
            let mut next_new = [0u64; 2];
            let mut seen_q1 = HashSet::new();
            let mut duplicates_q1 = 0u64;
            while let Some(message) = messages.recv().await {
                let seq: u64 = std::str::from_utf8(&message.payload)
                    .unwrap()
                    .parse()
                    .unwrap();
                if message.topic.as_str() == topics[0] {
                    if !seen_q1.insert(seq) {
                        duplicates_q1 += 1;
                        continue;
                    }
                    assert_eq!(seq, next_new[0], "QoS 1 out of order or lost");
                    next_new[0] += 1;
                } else {
                    assert_eq!(seq, next_new[1], "QoS 2 duplicated, lost or out of order");
                    next_new[1] += 1;
                }
                progress_tx.send_replace(next_new);
            }
            duplicates_q1
        })
    };

    let (publisher, _pub_task) = Client::start(
        options(&format!("{prefix}-pub")),
        TcpTransport::new(&address),
    )
    .unwrap();
    // Publish, alternating QoS 1 and QoS 2, until enough faults have struck.
    let publishing = {
        let mut progress = progress.clone();
        let counts = proxy.counts.clone();
        let publisher = publisher.clone();
        let topics = topics.clone();
        tokio::spawn(async move {
            let mut outstanding = VecDeque::new();
            let mut sent = [0u64; 2];
            while counts.total() < FAULTS_MIN {
                for (index, qos) in [(0, QoS::AtLeastOnce), (1, QoS::ExactlyOnce)] {
                    let mut message =
                        tern_client::message(&topics[index], sent[index].to_string()).unwrap();
                    message.qos = qos;
                    sent[index] += 1;
                    outstanding.push_back(publisher.send(message).await.unwrap());
                }
                // Stay at most AHEAD_MAX messages ahead of the subscriber, so what a broker
                // resends after each of its reconnections stays small.
                let total = sent[0] + sent[1];
                let caught_up = progress
                    .wait_for(|got| got[0] + got[1] + AHEAD_MAX >= total)
                    .await
                    .is_ok();
                assert!(caught_up, "collector stopped");
                while outstanding.len() > OUTSTANDING_MAX {
                    let ack = outstanding.pop_front().unwrap().await;
                    assert_eq!(ack, Ok(ReasonCode::Success), "publish failed");
                }
            }
            for ack in outstanding {
                assert_eq!(ack.await, Ok(ReasonCode::Success), "publish failed");
            }
            sent
        })
    };
    let sent = tokio::time::timeout(RUN_DEADLINE, publishing)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{label} (seed {seed:#x}): publishing stalled; {}",
                proxy.counts.summary()
            )
        })
        .unwrap();
    let arrived = tokio::time::timeout(
        RUN_DEADLINE,
        progress.wait_for(|got| got[0] >= sent[0] && got[1] >= sent[1]),
    )
    .await
    .is_ok_and(|waited| waited.is_ok());
    let got = *progress.borrow();
    assert!(
        arrived,
        "{label} (seed {seed:#x}): only {got:?} of {sent:?} arrived; {}",
        proxy.counts.summary()
    );
    // A late duplicate of a QoS 2 message would arrive within a round trip or a reconnection:
    // the collector must still be running (not have panicked) after that window.
    let mut collector = collector;
    let late = tokio::time::timeout(Duration::from_millis(500), &mut collector).await;
    assert!(
        late.is_err(),
        "{label} (seed {seed:#x}): collector ended: {late:?}"
    );
    collector.abort();
    eprintln!(
        "{label} (seed {seed:#x}): {} QoS 1 + {} QoS 2 messages, none lost, no QoS 2 \
         duplicate; {}",
        sent[0],
        sent[1],
        proxy.counts.summary()
    );
    publisher.disconnect().await;
    subscriber.disconnect().await;
}

fn seed() -> u64 {
    // Failures print the seed in hex (0x...); decimal works too.
    std::env::var("TERN_FAULT_SEED")
        .ok()
        .and_then(|s| match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).ok(),
            None => s.parse().ok(),
        })
        .unwrap_or_else(|| fastrand::u64(..))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_or_duplicates_through_faults_against_tern() {
    let broker = support::Tern::start();
    run(broker.port, seed(), "tern", 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_loss_or_duplicates_through_faults_against_mosquitto() {
    let broker = Mosquitto::start();
    // Mosquitto 2.0.11 reorders messages once a client's receive quota is used up, so its
    // subscriber keeps the default (65,535); the publisher's AHEAD_MAX bounds the burst.
    run(broker.port, seed(), "mosquitto", u16::MAX).await;
}
