//! QoS 1 throughput to a persistent subscriber under each durability mode, and restart time of
//! a large store. Starts the `tern` binary it is given on loopback port 0 with a fresh data
//! directory per run.
//!
//! ```sh
//! cargo build --release -p tern --examples
//! target/release/examples/durability_bench throughput target/release/tern [PER_PUBLISHER [ROUNDS]]
//! target/release/examples/durability_bench restart target/release/tern [QUEUED [RETAINED]]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark fails loudly.

#[allow(dead_code)] // Shared with the tests; the benchmark uses a part of it.
#[path = "../tests/support/mqtt.rs"]
mod mqtt;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mqtt::{ack, publish, RawClient};
use tern_codec::{Packet, PacketId, QoS};

/// Publishers sending at once.
const PUBLISHERS: u32 = 8;
/// QoS 1 publishes each keeps unacknowledged.
const WINDOW: usize = 100;
/// Payload bytes per message.
const PAYLOAD_BYTES: usize = 64;

struct Broker {
    child: Child,
    port: u16,
    /// When the listening line appeared (the store is loaded by then).
    ready_after: Duration,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(tern: &Path, dir: &Path, durability: &str, config: Option<&Path>) -> Broker {
    let started = Instant::now();
    let mut command = Command::new(tern);
    command
        .args([
            "serve",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--durability",
            durability,
        ])
        .arg("--data-dir")
        .arg(dir)
        .args(["--log", "warn,tern=info,tern_net=info,tern_store=info"]);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tern starts");
    let stderr = child.stderr.take().unwrap();
    let (found, port) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("recovering the store") || line.contains("store ") {
                eprintln!("  | {line}");
            }
            if let Some(rest) = line.split("listening for MQTT on ").nth(1) {
                let port = rest
                    .split_whitespace()
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.parse::<u16>().ok());
                if let Some(port) = port {
                    let _ = found.send(port);
                }
            }
        }
    });
    let port = port
        .recv_timeout(Duration::from_secs(600))
        .expect("tern logs its port");
    Broker {
        child,
        port,
        ready_after: started.elapsed(),
    }
}

/// Publishes `count` QoS 1 messages with a window of `WINDOW`.
fn publisher(port: u16, name: String, count: u32) {
    let (mut client, _) = RawClient::connect(port, &name, true, 0).unwrap();
    let payload = vec![b'x'; PAYLOAD_BYTES];
    let (mut sent, mut acked, mut outstanding) = (0, 0, 0usize);
    while acked < count {
        while outstanding < WINDOW && sent < count {
            let id = client.fresh_id();
            let packet = publish(
                "bench/q1",
                payload.clone(),
                QoS::AtLeastOnce,
                false,
                Some(id),
            );
            client.send(&packet).unwrap();
            sent += 1;
            outstanding += 1;
        }
        match client.recv(Duration::from_secs(30)).unwrap() {
            Some(Packet::PubAck(_)) => {
                acked += 1;
                outstanding -= 1;
            }
            other => panic!("{name}: expected PUBACK, got {other:?}"),
        }
    }
}

/// Messages per second from the first publish until the persistent subscriber has
/// received (and acknowledged) every message.
fn throughput(tern: &Path, durability: &str, per_publisher: u32) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    // Publishers may run ahead of the subscriber: its queue must hold the whole run, or the
    // slow-consumer policy drops the newest messages.
    let config = dir.path().join("tern.toml");
    let limit = u64::from(PUBLISHERS * per_publisher) + 1;
    std::fs::write(
        &config,
        format!(
            "[limits]\nqueued_count_max = {limit}\nqueued_bytes_max = {}\n",
            limit * 128
        ),
    )
    .unwrap();
    let broker = start(tern, &dir.path().join("data"), durability, Some(&config));
    let (mut sub, _) = RawClient::connect(broker.port, "bench-sub", true, 3600).unwrap();
    sub.subscribe("bench/#", QoS::AtLeastOnce).unwrap();
    let total = u64::from(PUBLISHERS * per_publisher);
    let started = Instant::now();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|i| {
            let port = broker.port;
            std::thread::spawn(move || publisher(port, format!("bench-pub-{i}"), per_publisher))
        })
        .collect();
    let mut received = 0u64;
    while received < total {
        match sub.recv(Duration::from_secs(30)).unwrap() {
            Some(Packet::Publish(p)) => {
                received += 1;
                let id: PacketId = p.packet_id.expect("QoS 1");
                sub.send(&Packet::PubAck(ack(id))).unwrap();
            }
            other => panic!("subscriber: expected PUBLISH, got {other:?}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    for p in publishers {
        p.join().unwrap();
    }
    if durability != "none" {
        // Every message went in and out of the store: what is left on disk is the churn's cost.
        let size = walk(&dir.path().join("data"));
        eprintln!(
            "  | {durability}: store on disk after the run: {} MiB",
            size / (1024 * 1024)
        );
    }
    total as f64 / secs
}

/// Fills a store with `queued` messages for one offline persistent session and `retained`
/// retained messages, stops the broker, and times the next start until it listens.
fn restart(tern: &Path, queued: u32, retained: u32) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tern.toml");
    std::fs::write(
        &config,
        format!(
            "[limits]\nqueued_count_max = {}\nqueued_bytes_max = {}\n",
            queued + 1,
            u64::from(queued) * 128
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let broker = start(tern, &data, "fsync", Some(&config));
    let (mut sub, _) = RawClient::connect(broker.port, "offline", true, u32::MAX).unwrap();
    sub.subscribe("fill/q", QoS::AtLeastOnce).unwrap();
    sub.disconnect().unwrap();
    let fill = Instant::now();
    let port = broker.port;
    let per = queued / PUBLISHERS;
    let threads: Vec<_> = (0..PUBLISHERS)
        .map(|i| std::thread::spawn(move || publisher_to(port, i, "fill/q", per, false)))
        .chain((0..2).map(|i| {
            std::thread::spawn(move || publisher_to(port, 100 + i, "fill/r", retained / 2, true))
        }))
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    println!(
        "filled {} queued + {} retained in {:.1} s",
        per * PUBLISHERS,
        retained,
        fill.elapsed().as_secs_f64()
    );
    drop(broker);
    let broker = start(tern, &data, "fsync", Some(&config));
    println!(
        "restart: listening after {:.2} s",
        broker.ready_after.as_secs_f64()
    );
    let size: u64 = walk(&data);
    println!("store size on disk: {} MiB", size / (1024 * 1024));
}

/// Publishes `count` QoS 1 messages to `topic` (retained: each to its own topic under it).
fn publisher_to(port: u16, index: u32, topic: &'static str, count: u32, retain: bool) {
    let (mut client, _) = RawClient::connect(port, &format!("fill-{index}"), true, 0).unwrap();
    let payload = vec![b'y'; PAYLOAD_BYTES];
    let (mut sent, mut acked, mut outstanding) = (0, 0, 0usize);
    while acked < count {
        while outstanding < WINDOW && sent < count {
            let id = client.fresh_id();
            let name = if retain {
                format!("{topic}/{index}/{sent}")
            } else {
                topic.to_owned()
            };
            let packet = publish(&name, payload.clone(), QoS::AtLeastOnce, retain, Some(id));
            client.send(&packet).unwrap();
            sent += 1;
            outstanding += 1;
        }
        match client.recv(Duration::from_secs(60)).unwrap() {
            Some(Packet::PubAck(_)) => {
                acked += 1;
                outstanding -= 1;
            }
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

fn walk(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => walk(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: durability_bench (throughput|restart) PATH_TO_TERN [N]";
    let (Some(what), Some(tern)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let tern = Path::new(tern);
    match what.as_str() {
        "throughput" => {
            let per: u32 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(25_000);
            let rounds: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(3);
            println!(
                "QoS 1, {PUBLISHERS} publishers x {per} messages of {PAYLOAD_BYTES} B (window {WINDOW}), one persistent subscriber; {rounds} rounds, modes interleaved"
            );
            let modes = ["none", "os", "fsync"];
            let mut rates = vec![Vec::new(); modes.len()];
            // Interleaved, so that a change in the machine's load hits every mode alike.
            for _ in 0..rounds {
                for (i, mode) in modes.iter().enumerate() {
                    let rate = throughput(tern, mode, per);
                    println!("{mode:>6}: {rate:>9.0} msg/s");
                    rates[i].push(rate);
                }
            }
            let medians: Vec<f64> = rates
                .iter_mut()
                .map(|r| {
                    r.sort_by(f64::total_cmp);
                    r[r.len() / 2]
                })
                .collect();
            for (mode, median) in modes.iter().zip(&medians) {
                println!("median {mode:>6}: {median:>9.0} msg/s");
            }
            println!("fsync / none (medians) = {:.2}", medians[2] / medians[0]);
        }
        "restart" => {
            let queued: u32 = args
                .get(3)
                .and_then(|n| n.parse().ok())
                .unwrap_or(1_000_000);
            let retained: u32 = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(100_000);
            restart(tern, queued, retained);
        }
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    }
}
