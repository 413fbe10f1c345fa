//! `tern bench` against the real `tern serve`: a few short scenarios must run to completion
//! with every message delivered once, in order, and report sane JSON.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::process::Command;

use serde_json::Value;
use support::Tern;

/// Runs `tern bench` with `args` against `tern` and returns one parsed JSON report per line.
fn bench(tern: &Tern, args: &[&str]) -> Vec<Value> {
    let port = tern.port.to_string();
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
