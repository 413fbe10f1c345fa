//! `tern bench` against the real `tern serve`: a few short scenarios must run to completion
//! with every message delivered once, in order, and report sane JSON. The open-loop mode must
//! count exactly what a broker acknowledged and dropped as lost (against `tern serve` with a
//! tiny session queue, checked against its `$SYS` drop counter), and nothing against a broker
//! that loses nothing (Mosquitto).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::mosquitto::Mosquitto;
use support::mqtt::RawClient;
use support::Tern;
use tern_codec::{Packet, QoS};

/// Runs `tern bench` with `args` against `tern` and returns one parsed JSON report per line.
fn bench(tern: &Tern, args: &[&str]) -> Vec<Value> {
    bench_on(tern.port, args)
}

/// Runs `tern bench` with `args` against the broker on `port`.
fn bench_on(port: u16, args: &[&str]) -> Vec<Value> {
    let port = port.to_string();
    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["bench", "--host", "127.0.0.1", "--port", &port, "--quiet"])
        .args(args)
        .output()
        .expect("tern bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "tern bench failed: {stderr}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("each stdout line is JSON"))
        .collect()
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {report}"))
}

/// Every message sent arrived exactly once, in order, and the window saw traffic.
fn assert_complete(report: &Value) {
    let expected = count(report, "expected");
    assert!(count(report, "sent") > 0, "nothing sent: {report}");
    assert!(expected >= count(report, "sent"), "{report}");
    assert_eq!(count(report, "lost"), 0, "{report}");
    assert_eq!(count(report, "duplicated"), 0, "{report}");
    assert_eq!(count(report, "out_of_order"), 0, "{report}");
    assert_eq!(count(report, "foreign"), 0, "{report}");
    assert_eq!(
        count(report, "delivered_in_window") + count(report, "backlog"),
        expected,
        "{report}"
    );
    assert!(count(report, "delivered_in_window") > 0, "{report}");
    assert!(
        report["delivered_per_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    let latency = &report["latency_us"];
    assert!(count(latency, "p50") <= count(latency, "p99"), "{report}");
    assert!(count(latency, "p99") <= count(latency, "max"), "{report}");
    assert!(
        report["generator_cpu_s"].as_f64().unwrap() > 0.0,
        "{report}"
    );
}

#[test]
fn flow_scenarios_deliver_everything_at_every_qos() {
    let tern = Tern::start();
    let common = [
        "--duration",
        "0.7",
        "--publishers",
        "3",
        "--subscribers",
        "3",
    ];
    let qos0 = bench(
        &tern,
        &[&["fan-in", "fan-out", "shared"][..], &common].concat(),
    );
    let qos1 = bench(
        &tern,
        &[
            &["pairs", "--pairs", "3", "--qos", "1", "--mqtt", "5"][..],
            &common,
        ]
        .concat(),
    );
    let qos2 = bench(
        &tern,
        &[&["pairs", "--pairs", "2", "--qos", "2"][..], &common].concat(),
    );
    let names: Vec<_> = qos0
        .iter()
        .chain(&qos1)
        .chain(&qos2)
        .map(|r| r["scenario"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["fan-in", "fan-out", "shared", "pairs", "pairs"]);
    for report in qos0.iter().chain(&qos1).chain(&qos2) {
        assert_complete(report);
    }
    assert_eq!(qos0[1]["subscribers"], 3);
    assert_eq!(count(&qos0[1], "expected"), 3 * count(&qos0[1], "sent"));
    assert_eq!(qos1[0]["mqtt"], "5.0");
    assert_eq!(qos2[0]["qos"], 2);
}

#[test]
fn latency_runs_at_the_fixed_rate() {
    let tern = Tern::start();
    let reports = bench(&tern, &["latency", "--rate", "500", "--duration", "1"]);
    let report = &reports[0];
    assert_complete(report);
    // 500 msg/s for one second, give or take the timer's granularity.
    let sent = count(report, "sent");
    assert!((400..=600).contains(&sent), "{report}");
    // The histogram (for pooling rounds) holds every delivery, in ascending buckets, and its
    // 99th percentile is the one reported.
    let latency = &report["latency_us"];
    let buckets: Vec<(u64, u64)> = latency["histogram"]
        .as_array()
        .unwrap_or_else(|| panic!("no histogram in {report}"))
        .iter()
        .map(|b| (b[0].as_u64().unwrap_or(0), b[1].as_u64().unwrap_or(0)))
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "{report}");
    let total: u64 = buckets.iter().map(|b| b.1).sum();
    assert_eq!(
        total,
        count(report, "delivered_in_window") + count(report, "backlog")
    );
    let rank = (total * 99).div_ceil(100);
    let mut seen = 0;
    let p99 = buckets
        .iter()
        .find(|b| {
            seen += b.1;
            seen >= rank
        })
        .map(|b| b.0);
    assert_eq!(p99, Some(count(latency, "p99")), "{report}");
}

#[test]
fn connections_and_retained_report_their_figures() {
    let tern = Tern::start();
    let pid = tern.pid().to_string();
    let reports = bench(
        &tern,
        &[
            "connections",
            "retained",
            "--connections",
            "200",
            "--broker-pid",
            &pid,
            "--retained",
            "500",
            "--retained-root",
            "smoke",
        ],
    );
    let connections = &reports[0]["connections"];
    assert_eq!(count(connections, "connections"), 200);
    assert!(connections["connect_rate"].as_f64().unwrap() > 0.0);
    assert!(count(connections, "rss_after_kib") > 0);
    let retained = &reports[1];
    assert_eq!(count(retained, "lost"), 0, "{retained}");
    assert_eq!(count(retained, "duplicated"), 0, "{retained}");
    assert_eq!(count(retained, "delivered_in_window"), 500, "{retained}");
    assert!(retained["retained"]["deliver_s"].as_f64().unwrap() > 0.0);
}

/// Checks an open-loop report's own arithmetic: every message was answered, each publisher's
/// figures add up to the totals, and every acknowledged message was delivered or lost.
fn assert_open_loop_accounts(report: &Value) {
    assert_eq!(report["open_loop"], true, "{report}");
    let sent = count(report, "sent");
    let acknowledged = count(report, "acknowledged");
    assert!(sent > 0, "{report}");
    assert_eq!(acknowledged, sent, "every publish answered: {report}");
    assert_eq!(count(report, "unacknowledged"), 0, "{report}");
    assert_eq!(count(report, "duplicated"), 0, "{report}");
    assert_eq!(count(report, "out_of_order"), 0, "{report}");
    assert!(count(report, "acknowledged_in_window") > 0, "{report}");
    let publishers = report["per_publisher"].as_array().expect("per_publisher");
    assert_eq!(publishers.len() as u64, count(report, "publishers"));
    let sum = |field: &str| publishers.iter().map(|p| count(p, field)).sum::<u64>();
    assert_eq!(sum("sent"), sent, "{report}");
    assert_eq!(sum("lost"), count(report, "lost"), "{report}");
    for field in ["acknowledged_in_window", "delivered_in_window"] {
        assert_eq!(sum(field), count(report, field), "{field}: {report}");
    }
    let delivered = count(report, "delivered_in_window") + count(report, "backlog");
    assert_eq!(sum("delivered"), delivered, "{report}");
    // One subscriber group here: each acknowledged message arrived once or is lost.
    assert_eq!(delivered + count(report, "lost"), acknowledged, "{report}");
}

/// The broker's `$SYS/broker/messages/dropped` as published after this call: retained copies
/// (published before) are skipped, the first live one is taken.
fn dropped_by(tern: &Tern) -> u64 {
    let (mut client, _) = RawClient::connect(tern.port, "sys-reader", true, 0).unwrap();
    client
        .subscribe("$SYS/broker/messages/dropped", QoS::AtMostOnce)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match client.recv(Duration::from_secs(5)).unwrap() {
            Some(Packet::Publish(p)) if !p.retain => {
                return std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
            }
            _ => continue,
        }
    }
    panic!("no $SYS/broker/messages/dropped within 20 s");
}

#[test]
fn open_loop_counts_what_the_broker_acknowledged_and_dropped_as_lost() {
    // A subscriber window and queue of 10 each: a burst of the publishers' 4 x 100 in flight
    // overflows them, and under the drop policy the broker drops the newest, having
    // acknowledged every one (the default, backpressure, would hold the publishers instead).
    let config = "sys_interval_secs = 1\n[[listener]]\nbind = \"127.0.0.1:0\"\n\
                  [limits]\ninflight_count_max = 10\nqueued_count_max = 10\n\
                  overload = \"drop\"\n";
    for extra in [&["--qos", "1"][..], &["--qos", "2", "--mqtt", "5"]] {
        let tern = Tern::start_with_config(config);
        let args = [
            &[
                "fan-in",
                "--open-loop",
                "--publishers",
                "4",
                "--duration",
                "0.5",
            ][..],
            extra,
        ]
        .concat();
        let report = &bench(&tern, &args)[0];
        assert_open_loop_accounts(report);
        assert_eq!(count(report, "inflight_max"), 100, "{report}");
        let lost = count(report, "lost");
        assert!(
            lost > 0,
            "the queue limit must have dropped messages: {report}"
        );
        assert_eq!(
            lost,
            dropped_by(&tern),
            "lost is what the broker dropped: {report}"
        );
        assert_eq!(count(report, "subscribers_closed"), 0, "{report}");
    }
}

#[test]
fn open_loop_against_tern_under_backpressure_loses_nothing() {
    // The same small window and queue under the default overload policy: the publishers'
    // acknowledgements wait for the subscriber instead, and everything acknowledged arrives.
    let config = "[[listener]]\nbind = \"127.0.0.1:0\"\n\
                  [limits]\ninflight_count_max = 10\nqueued_count_max = 10\n";
    for extra in [&["--qos", "1"][..], &["--qos", "2", "--mqtt", "5"]] {
        let tern = Tern::start_with_config(config);
        let args = [
            &[
                "fan-in",
                "--open-loop",
                "--publishers",
                "4",
                "--duration",
                "0.5",
            ][..],
            extra,
        ]
        .concat();
        let report = &bench(&tern, &args)[0];
        assert_open_loop_accounts(report);
        assert!(count(report, "acknowledged") > 0, "{report}");
        assert_eq!(count(report, "lost"), 0, "{report}");
        assert_eq!(count(report, "duplicated"), 0, "{report}");
        assert_eq!(count(report, "out_of_order"), 0, "{report}");
    }
}

#[test]
fn open_loop_against_mosquitto_loses_nothing() {
    // Mosquitto acknowledges a publish no sooner than it has queued it for the subscriber,
    // and its queues are raised here: every acknowledged message must be counted delivered.
    let mosquitto = Mosquitto::start();
    let common = ["--open-loop", "--duration", "0.5", "--inflight", "20"];
    let qos1 = bench_on(
        mosquitto.port,
        &[&["fan-in", "--qos", "1", "--publishers", "3"][..], &common].concat(),
    );
    let qos2 = bench_on(
        mosquitto.port,
        &[
            &["pairs", "--qos", "2", "--mqtt", "5", "--pairs", "2"][..],
            &common,
        ]
        .concat(),
    );
    for report in qos1.iter().chain(&qos2) {
        assert_open_loop_accounts(report);
        assert_eq!(count(report, "lost"), 0, "{report}");
        assert_eq!(count(report, "inflight_max"), 20, "{report}");
    }
}
