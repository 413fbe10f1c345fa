//! Replays every file of the checked-in fuzz corpus (`fuzz/corpus/decode`) through the fuzz
//! harness on stable, so CI proves what the fuzzer checks for every input it was seeded with.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use std::fs;
use std::path::PathBuf;

// Brings in `check_input` and its helpers, with their imports (`BytesMut`, `Decoder`, ...).
include!("../../../fuzz/harness.rs");

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode")
}

#[test]
fn corpus_replays_through_the_harness() {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "corpus has only {} files", files.len());
    let mut decoded_somewhere = 0;
    for path in &files {
        let data = fs::read(path).unwrap();
        let outcome = std::panic::catch_unwind(|| check_input(&data));
        if let Err(panic) = outcome {
            eprintln!("corpus file {} fails the harness", path.display());
            std::panic::resume_unwind(panic);
        }
        let decodes = [ProtocolVersion::V311, ProtocolVersion::V5]
            .into_iter()
            .any(|v| {
                !decode_stream(&data, v, PACKET_SIZE_MAX, false)
                    .packets
                    .is_empty()
            });
        decoded_somewhere += usize::from(decodes);
    }
    // The corpus seeds the fuzzer with valid packets as well as broken ones.
    assert!(
        decoded_somewhere >= 30,
        "only {decoded_somewhere} files decode"
    );
}

/// The harness itself notices a packet that does not survive a round trip.
#[test]
#[should_panic(expected = "re-encodes")]
fn harness_rejects_a_growing_reencoding() {
    // A PUBACK with an explicit Success reason and empty properties re-encodes 2 bytes shorter,
    // so claiming it took 1 byte must trip the size check.
    let mut buf = BytesMut::from(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00][..]);
    let packet = Decoder::new(ProtocolVersion::V5, PACKET_SIZE_MAX)
        .decode(&mut buf)
        .unwrap()
        .unwrap();
    check_reencode(&packet, ProtocolVersion::V5, 1);
}

/// Broken and borderline inputs, by name: framing, flags, varints, strings, properties.
fn edge_cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut lcg: u32 = 0x2545_F491;
    let garbage: Vec<u8> = (0..96)
        .map(|_| {
            lcg = lcg.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (lcg >> 24) as u8
        })
        .collect();
    // A V5 PUBLISH whose properties alternate user properties and subscription identifiers.
    let mut interleaved = vec![0x00, 0x01, b't'];
    let mut props = Vec::new();
    for i in 0..8u8 {
        props.extend_from_slice(&[0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'0' + i]);
        props.extend_from_slice(&[0x0B, i + 1]);
    }
    interleaved.push(u8::try_from(props.len()).unwrap());
    interleaved.extend_from_slice(&props);
    interleaved.extend_from_slice(b"payload");
    let mut interleaved_publish = vec![0x30, u8::try_from(interleaved.len()).unwrap()];
    interleaved_publish.extend_from_slice(&interleaved);
    // A V5 SUBACK with 300 reason codes (two-byte remaining length).
    let mut suback = vec![0x90, 0xAF, 0x02, 0x00, 0x07, 0x00];
    suback.extend((0..300).map(|i| [0x00, 0x01, 0x02, 0x80][i % 4]));
    // A SUBSCRIBE with 60 one-character filters.
    let mut subscribe = vec![0x82, 0xF2, 0x01, 0x00, 0x09];
    for _ in 0..60 {
        subscribe.extend_from_slice(&[0x00, 0x01, b'a', 0x01]);
    }
    vec![
        ("edge-empty", vec![]),
        ("edge-garbage", garbage),
        ("edge-type-0", vec![0x00, 0x00]),
        ("edge-pingreq-flags", vec![0xC1, 0x00]),
        ("edge-pingreq-trailing-byte", vec![0xC0, 0x01, 0x00]),
        ("edge-pubrel-flags-0", vec![0x60, 0x02, 0x00, 0x01]),
        (
            "edge-publish-qos3",
            vec![0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01],
        ),
        ("edge-publish-dup-qos0", vec![0x38, 0x03, 0x00, 0x01, b'a']),
        ("edge-puback-id-0", vec![0x40, 0x02, 0x00, 0x00]),
        ("edge-varint-nonminimal-2", vec![0xC0, 0x80, 0x00]),
        (
            "edge-varint-nonminimal-4",
            vec![0xC0, 0x80, 0x80, 0x80, 0x00],
        ),
        (
            "edge-varint-5-bytes",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
        ),
        (
            "edge-varint-max-declared",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b'a'],
        ),
        (
            "edge-connect-huge-declared",
            vec![0x10, 0xFE, 0xFF, 0xFF, 0x7F, 0x00, 0x04],
        ),
        ("edge-header-only", vec![0x30]),
        (
            "edge-two-pings-then-partial",
            vec![0xC0, 0x00, 0xD0, 0x00, 0x30, 0x05, 0x00],
        ),
        (
            "edge-string-overlong-nul",
            vec![0x30, 0x04, 0x00, 0x02, 0xC0, 0x80],
        ),
        ("edge-string-nul", vec![0x30, 0x04, 0x00, 0x02, b'a', 0x00]),
        (
            "edge-string-surrogate",
            vec![0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80],
        ),
        (
            "edge-string-bom",
            vec![0x30, 0x07, 0x00, 0x03, 0xEF, 0xBB, 0xBF, b'h', b'i'],
        ),
        (
            "edge-connect-bad-name",
            vec![
                0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'X', 4, 0x02, 0, 0, 0, 0,
            ],
        ),
        (
            "edge-connect-level-3",
            vec![
                0x10, 0x0E, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 0x02, 0, 0, 0, 0,
            ],
        ),
        (
            "edge-connect-reserved-flag",
            vec![
                0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 0, 0, 0,
            ],
        ),
        (
            "edge-connect-will-qos3",
            vec![
                0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x1C, 0, 0, 0, 0,
            ],
        ),
        (
            "edge-v5-connect-auth-data-without-method",
            vec![
                0x10, 0x10, 0, 4, b'M', b'Q', b'T', b'T', 5, 0, 0, 0, 3, 0x16, 0, 0, 0, 0,
            ],
        ),
        (
            "edge-v5-publish-duplicate-property",
            vec![0x30, 0x08, 0x00, 0x01, b't', 0x04, 0x01, 0x00, 0x01, 0x01],
        ),
        (
            "edge-v5-publish-unknown-property",
            vec![0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x7F, 0x00],
        ),
        (
            "edge-v5-publish-property-id-nonminimal",
            vec![0x30, 0x07, 0, 1, b't', 3, 0x81, 0, 0],
        ),
        (
            "edge-v5-publish-subid-0",
            vec![0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x0B, 0x00],
        ),
        (
            "edge-v5-publish-props-overrun",
            vec![0x30, 0x05, 0x00, 0x01, b't', 0x09, 0x01],
        ),
        ("edge-v5-publish-interleaved", interleaved_publish),
        ("edge-suback-300-codes", suback),
        ("edge-subscribe-60-filters", subscribe),
        (
            "edge-v5-subscribe-retain-handling-3",
            vec![0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30],
        ),
        (
            "edge-v5-subscribe-no-local-shared",
            vec![
                0x82, 0x10, 0, 1, 0, 0, 10, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/',
                b'a', 0x04,
            ],
        ),
        (
            "edge-v5-connack-present-refused",
            vec![0x20, 0x03, 0x01, 0x80, 0x00],
        ),
        ("edge-v5-auth-bad-reason", vec![0xF0, 0x01, 0x80]),
        ("edge-v5-auth-reason-only", vec![0xF0, 0x01, 0x18]),
        ("edge-v5-disconnect-reason-only", vec![0xE0, 0x01, 0x8E]),
        (
            "edge-v5-puback-explicit-success",
            vec![0x40, 0x04, 0x00, 0x01, 0x00, 0x00],
        ),
        (
            "edge-v5-pubrel-bad-reason",
            vec![0x62, 0x03, 0x00, 0x01, 0x10],
        ),
    ]
}

/// Rewrites `fuzz/corpus/decode`: every sample packet (distinct encodings only), streams that
/// switch level with a CONNECT, and the edge cases. Run by hand after changing the samples:
/// `cargo test -p tern-codec --test fuzz_corpus -- --ignored`.
#[test]
#[ignore = "rewrites the checked-in corpus"]
fn write_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let samples = support::samples::samples();
    // The minimal MQTT 5 forms of these add little next to their `-full` forms.
    let skipped = [
        "v5-publish-qos0-empty",
        "v5-subscribe",
        "v5-suback",
        "v5-unsubscribe",
        "v5-unsuback",
    ];
    for (name, version, packet) in &samples {
        if skipped.contains(&name.as_str()) {
            continue;
        }
        let mut buf = BytesMut::new();
        packet.encode(*version, &mut buf).unwrap();
        if !files.iter().any(|(_, bytes)| bytes[..] == buf[..]) {
            files.push((name.clone(), buf.to_vec()));
        }
    }
    let find = |name: &str| files.iter().find(|(n, _)| n == name).unwrap().1.clone();
    // A 3.1.1 decoder switched to level 5 by a CONNECT, then MQTT 5-only packets.
    let mut level_switch = find("v5-connect-min");
    level_switch.extend(find("v5-auth-full"));
    level_switch.extend(find("v5-publish-full"));
    let mut session = find("v311-connect-full");
    session.extend(find("v311-subscribe"));
    session.extend(find("v311-publish-qos1-200b"));
    session.extend(&find("v311-pingreq")[..1]);
    let connect = find("v5-connect-full");
    let truncated = connect[..connect.len() / 2].to_vec();
    files.push(("stream-v5-connect-auth-publish".into(), level_switch));
    files.push(("stream-v311-session-then-partial".into(), session));
    files.push(("truncated-v5-connect-full".into(), truncated));
    for (name, bytes) in edge_cases() {
        files.push((name.to_owned(), bytes));
    }
    for (name, bytes) in &files {
        fs::write(dir.join(name), bytes).unwrap();
    }
    assert!(files.len() <= 80, "{} corpus files", files.len());
}
