//! The retained scenario: publish R retained messages across a topic tree, then time one new
//! `<root>/#` subscriber until every one of them has arrived.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_codec::{MqttString, Packet, Publish, QoS, TopicName};

use crate::client::{ack, next_packet_id, packet_id, Conn};
use crate::payload::{self, Stamp};
use crate::report::{self, Report, RetainedFigures};
use crate::track::{SeqSet, Totals};
use crate::{BenchArgs, BenchError};

/// How long delivery may stall before the run gives up on the rest.
const STALL_MAX: Duration = Duration::from_secs(5);

/// The topic of retained message `i`: a tree of 100 × 100 leaves per top-level branch.
fn topic(root: &str, i: usize) -> String {
    format!("{root}/{}/{}/{}", i / 10_000, (i / 100) % 100, i % 100)
}

pub(crate) async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let run = report::run_id();
    let version = args.version();
    let total = args.retained;
    let cpu_start = report::cpu_time();
    let start = Instant::now();
    let progress = report::Progress::new(crate::Scenario::Retained, args.quiet);

    // Publish every retained message at QoS 1, so each is known to be stored.
    let mut publisher = Conn::connect(
        &args.host,
        args.port,
        &format!("bench-{run}-rp"),
        version,
        args.keep_alive,
        0,
    )
    .await?;
    let inflight_max = usize::from(publisher.receive_maximum.min(args.inflight));
    let mut body = BytesMut::zeroed(args.payload);
    let (mut sent, mut acked, mut next_id) = (0usize, 0usize, 0u16);
    while acked < total {
        while sent < total && sent - acked < inflight_max {
            payload::write(
                &mut body,
                Stamp {
                    publisher: 0,
                    seq: sent as u64,
                    sent_nanos: 0,
                },
            );
            let name = MqttString::new(&topic(&args.retained_root, sent))
                .ok()
                .and_then(|t| TopicName::new(t).ok())
                .ok_or_else(|| BenchError::Options("bad --retained-root".into()))?;
            let mut publish = Publish::new(name, Bytes::copy_from_slice(&body));
            publish.qos = QoS::AtLeastOnce;
            publish.retain = true;
            next_id = next_packet_id(next_id);
            publish.packet_id = Some(packet_id(next_id));
            publisher.send(&Packet::Publish(publish))?;
            sent += 1;
        }
        publisher.flush().await?;
        publisher.read().await?;
        while let Some(packet) = publisher.decode()? {
            if let Packet::PubAck(_) = packet {
                acked += 1;
            }
        }
        progress.tick(start.elapsed(), sent as u64, acked as u64);
    }
    let publish_s = start.elapsed().as_secs_f64();

    // One new subscriber: from SUBSCRIBE until the last retained message.
    let mut subscriber = Conn::connect(
        &args.host,
        args.port,
        &format!("bench-{run}-rs"),
        version,
        args.keep_alive,
        args.topic_alias_maximum,
    )
    .await?;
    let mut seen = SeqSet::default();
    let mut totals = Totals::new();
    let subscribed = Instant::now();
    let mut last_arrival = subscribed;
    subscriber.send_subscribe(&format!("{}/#", args.retained_root), args.qos())?;
    subscriber.flush().await?;
    while totals.unique() < total as u64 {
        match tokio::time::timeout(STALL_MAX, subscriber.read()).await {
            Ok(result) => result?,
            Err(_) => break,
        }
        let now = Instant::now();
        while let Some(packet) = subscriber.decode()? {
            let Packet::Publish(publish) = packet else {
                continue;
            };
            match (publish.qos, publish.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => subscriber.send(&Packet::PubAck(ack(id)))?,
                (QoS::ExactlyOnce, Some(id)) => subscriber.send(&Packet::PubRec(ack(id)))?,
                _ => {}
            }
            match payload::read(&publish.payload).filter(|s| s.seq < total as u64) {
                Some(stamp) if seen.insert(stamp.seq) => {
                    totals.in_window += 1;
                    last_arrival = now;
                }
                Some(_) => totals.duplicated += 1,
                None => totals.foreign += 1,
            }
        }
        subscriber.flush().await?;
        progress.tick(start.elapsed(), total as u64, totals.unique());
    }
    progress.finish();
    let deliver_s = last_arrival.duration_since(subscribed).as_secs_f64();
    let cpu = report::cpu_time().saturating_sub(cpu_start);
    Ok(Report::with_retained(
        args,
        RetainedFigures {
            retained: total,
            publish_s,
            deliver_s,
            deliver_rate: totals.unique() as f64 / deliver_s.max(1e-9),
        },
        &totals,
        cpu,
        start.elapsed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::topic;

    #[test]
    fn retained_topics_form_a_tree_of_distinct_leaves() {
        assert_eq!(topic("site", 0), "site/0/0/0");
        assert_eq!(topic("site", 12_345), "site/1/23/45");
        let all: std::collections::HashSet<_> = (0..30_000).map(|i| topic("s", i)).collect();
        assert_eq!(all.len(), 30_000);
    }
}
