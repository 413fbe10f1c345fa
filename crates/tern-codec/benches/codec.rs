//! Encode and decode cost of the hot-path packet: a QoS 0 PUBLISH, 3-level topic, 64-byte payload.
#![allow(clippy::expect_used)] // A benchmark set-up failure should stop the benchmark loudly.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tern_codec::{Decoder, Packet, ProtocolVersion, Publish, TopicName, PACKET_SIZE_MAX};

const BATCH: usize = 1_000;

fn sample() -> Packet {
    let topic: TopicName = "site/sensor42/temp".parse().expect("valid topic");
    Packet::Publish(Publish::new(topic, Bytes::from(vec![0x5A; 64])))
}

fn encoded(version: ProtocolVersion) -> BytesMut {
    let mut buf = BytesMut::new();
    sample().encode(version, &mut buf).expect("encodes");
    buf
}

fn bench(c: &mut Criterion) {
    for (name, version) in [("v311", ProtocolVersion::V311), ("v5", ProtocolVersion::V5)] {
        let mut group = c.benchmark_group(format!("publish_qos0_64B_{name}"));
        group.throughput(Throughput::Elements(1));

        let frame = encoded(version).freeze();
        let first_byte = frame[0];
        let body = frame.slice(2..);
        group.bench_function("decode_body", |b| {
            b.iter(|| Packet::decode(black_box(first_byte), black_box(body.clone()), version))
        });

        let packet = sample();
        let mut out = BytesMut::with_capacity(128 * BATCH);
        group.bench_function("encode", |b| {
            b.iter(|| {
                if out.len() > 120 * BATCH {
                    out.clear();
                }
                black_box(&packet).encode(version, &mut out)
            })
        });
        group.finish();

        // The decoder as the network runtime drives it: one read buffer holding many packets.
        let mut group = c.benchmark_group(format!("publish_qos0_64B_{name}_stream"));
        group.throughput(Throughput::Elements(BATCH as u64));
        let mut stream = BytesMut::new();
        for _ in 0..BATCH {
            stream.extend_from_slice(&frame);
        }
        group.bench_function("decode_framed", |b| {
            b.iter_batched_ref(
                || stream.clone(),
                |buf| {
                    let mut decoder = Decoder::new(version, PACKET_SIZE_MAX);
                    while let Ok(Some(packet)) = decoder.decode(buf) {
                        black_box(packet);
                    }
                },
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
