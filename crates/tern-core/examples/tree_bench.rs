//! Measures `$tree/` views in the broker core (see BENCHMARKS.md): the snapshot over 100,000
//! retained topics (time on the broker thread and memory), and delta throughput with 1,000
//! tree subscribers while 10,000 sensors publish. Every packet the broker writes is encoded, as
//! the network runtime would, so the figures include serialisation.
//!
//! `cargo run --release -p tern-core --example tree_bench`
#![allow(unsafe_code)] // The counting allocator implements `GlobalAlloc`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // A benchmark: a panic is a failure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_codec::{
    Connect, ConnectProperties, MqttString, Packet, PacketId, ProtocolVersion, Publish, QoS,
    Subscribe, SubscribeProperties, Subscription, SubscriptionList, SubscriptionOptions,
};
use tern_core::{Broker, Config, ConnectionId, Limits, Time, Transmit};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are plain atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// A broker with a fake clock, and a reused buffer to encode what it writes.
struct Bench {
    broker: Broker,
    now: Time,
    next_id: u64,
    out: BytesMut,
    woken: Vec<ConnectionId>,
    written_packets: u64,
    written_bytes: u64,
}

impl Bench {
    fn new(limits: Limits) -> Self {
        let config = Config {
            limits,
            ..Config::default()
        };
        Self {
            broker: Broker::new(config, Time::from_millis(0)),
            now: Time::from_millis(0),
            next_id: 1,
            out: BytesMut::new(),
            woken: Vec::new(),
            written_packets: 0,
            written_bytes: 0,
        }
    }

    fn connect(&mut self, client_id: &str) -> ConnectionId {
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        self.broker.connection_opened(id, self.now);
        let connect = Connect {
            protocol_version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            properties: ConnectProperties::default(),
            client_id: MqttString::new(client_id).unwrap(),
            will: None,
            username: None,
            password: None,
        };
        self.broker
            .handle_packet(id, Packet::Connect(Box::new(connect)), self.now);
        id
    }

    fn subscribe(&mut self, id: ConnectionId, filter: &str) {
        let subscription = Subscription {
            filter: filter.parse().unwrap(),
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        };
        let subscribe = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: SubscribeProperties::default(),
            subscriptions: SubscriptionList::new([&subscription]),
        };
        self.broker
            .handle_packet(id, Packet::Subscribe(subscribe), self.now);
    }

    fn publish(&mut self, id: ConnectionId, topic: &str, payload: Bytes, retain: bool) {
        let mut publish = Publish::new(topic.parse().unwrap(), payload);
        publish.retain = retain;
        self.broker
            .handle_packet(id, Packet::Publish(publish), self.now);
    }

    /// Writes out everything the broker queued, encoding each packet as the runtime does.
    fn drain(&mut self) {
        self.broker.take_woken(&mut self.woken);
        for id in std::mem::take(&mut self.woken) {
            let version = self.broker.protocol_version(id).unwrap();
            while let Some(transmit) = self.broker.poll_transmit(id) {
                self.out.clear();
                // A forwarded message is encoded for every receiver here; the runtime encodes
                // it once and copies the bytes, so this overstates the cost of a fan-out.
                match transmit {
                    Transmit::Publish(publish) => {
                        publish.view().encode(version, &mut self.out).unwrap()
                    }
                    Transmit::Packet(packet) => packet.encode(version, &mut self.out).unwrap(),
                    Transmit::Close => continue,
                }
                self.written_packets += 1;
                self.written_bytes += self.out.len() as u64;
            }
        }
        while self.broker.poll_event().is_some() {}
    }

    fn advance(&mut self, millis: u64) {
        self.now = self.now.plus_millis(millis);
        self.broker.handle_timeout(self.now);
    }
}

fn snapshot(topics: usize) {
    println!("# Snapshot over {topics} retained topics (`$tree/site/+/temp`)");
    let limits = Limits {
        packet_size_max_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    };
    let base = live();
    let mut bench = Bench::new(limits);
    let publisher = bench.connect("loader");
    for n in 0..topics {
        let payload = Bytes::from(format!("{}.{}", 15 + n % 20, n % 10));
        bench.publish(publisher, &format!("site/s{n}/temp"), payload, true);
    }
    bench.drain();
    let loaded = live();
    println!(
        "retained set: {:.1} MiB live for {topics} topics",
        mib(loaded - base)
    );
    let watcher = bench.connect("watcher");
    bench.drain();
    let before = live();
    PEAK.store(before, Ordering::Relaxed);
    let started = Instant::now();
    bench.subscribe(watcher, "$tree/site/+/temp");
    let built = started.elapsed();
    let queued = live();
    let (packets, bytes) = (bench.written_packets, bench.written_bytes);
    let started = Instant::now();
    bench.drain();
    let encoded = started.elapsed();
    // Later rounds of the snapshot, as the runtime's timer runs them.
    let mut rounds = 1;
    let mut slowest = built;
    while bench.broker.next_timeout() == Some(bench.now) {
        let started = Instant::now();
        bench.advance(0);
        slowest = slowest.max(started.elapsed());
        rounds += 1;
        bench.drain();
    }
    let total = started.elapsed() + built;
    let peak = PEAK.load(Ordering::Relaxed);
    // The encoding buffer is the runtime's, not the subscription's.
    bench.out = BytesMut::new();
    println!(
        "snapshot built in {rounds} rounds, {:.1} ms in all; longest round {:.1} ms; the first \
         (with the SUBSCRIBE) {:.1} ms; encoding the SUBACK: {:.2} ms",
        ms(total),
        ms(slowest),
        ms(built),
        ms(encoded)
    );
    println!(
        "snapshot: {} packet(s), {:.2} MiB on the wire",
        bench.written_packets - packets,
        mib((bench.written_bytes - bytes) as usize)
    );
    println!(
        "memory: +{:.2} MiB after the first round, peak +{:.1} MiB while building, +{} bytes \
         once written (the tree subscription itself)",
        mib(queued.saturating_sub(before)),
        mib(peak - before),
        live().saturating_sub(before)
    );
}

fn deltas(subscribers: usize, sensors: usize, readings_per_sec: u64, seconds: u64) {
    println!(
        "# Deltas: {subscribers} subscribers on `$tree/site/+/temp`, {sensors} sensors publishing \
         {readings_per_sec}/s each, 10 ms window, {seconds} s of broker time"
    );
    let mut bench = Bench::new(Limits::default());
    let watchers: Vec<ConnectionId> = (0..subscribers)
        .map(|n| bench.connect(&format!("w{n}")))
        .collect();
    for &id in &watchers {
        bench.subscribe(id, "$tree/site/+/temp");
    }
    let sensor_ids: Vec<ConnectionId> = (0..sensors)
        .map(|n| bench.connect(&format!("s{n}")))
        .collect();
    let topics: Vec<String> = (0..sensors).map(|n| format!("site/s{n}/temp")).collect();
    bench.drain();
    let (packets, bytes) = (bench.written_packets, bench.written_bytes);
    // Publishes spread evenly over the 10 ms windows of each second.
    let windows = seconds * 100;
    let per_window = (sensors as u64 * readings_per_sec / 100) as usize;
    let mut next = 0;
    let started = Instant::now();
    for window in 0..windows {
        for _ in 0..per_window {
            let sensor = next % sensors;
            next += 1;
            let payload = Bytes::from(format!("{}", 15 + (window + sensor as u64) % 20));
            bench.publish(sensor_ids[sensor], &topics[sensor], payload, false);
        }
        bench.drain();
        bench.advance(10);
        bench.drain();
    }
    let elapsed = started.elapsed();
    let published = per_window as u64 * windows;
    let deltas = bench.written_packets - packets;
    println!(
        "{published} publishes in, {deltas} delta messages out ({:.1} MiB) in {:.0} ms: \
         {:.0} publishes/s and {:.0} deltas/s, broker thread {:.0}% busy",
        mib((bench.written_bytes - bytes) as usize),
        ms(elapsed),
        published as f64 / elapsed.as_secs_f64(),
        deltas as f64 / elapsed.as_secs_f64(),
        100.0 * elapsed.as_secs_f64() / seconds as f64
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn main() {
    let only = std::env::args().nth(1);
    if only.as_deref() != Some("deltas") {
        snapshot(100_000);
    }
    if only.as_deref() != Some("snapshot") {
        deltas(1_000, 10_000, 1, 3);
        deltas(1_000, 10_000, 10, 1);
    }
}
