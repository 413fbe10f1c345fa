//! Replays every file of the checked-in broker fuzz corpus (`fuzz/corpus/broker`) through the
//! broker fuzz harness on stable, so CI proves what the fuzzer checks for every seed, and
//! writes that corpus (ignored test) from readable scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure.

use std::fs;
use std::path::PathBuf;

// Brings in `check_broker_input` and the harness it runs.
include!("../../../fuzz/broker_harness.rs");

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/broker")
}

#[test]
fn corpus_replays_through_the_broker_harness() {
    let mut files: Vec<PathBuf> = fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus has only {} files", files.len());
    for path in &files {
        let data = fs::read(path).unwrap();
        if let Err(panic) = std::panic::catch_unwind(|| check_broker_input(&data)) {
            eprintln!("corpus file {} fails the broker harness", path.display());
            std::panic::resume_unwind(panic);
        }
    }
}

/// The harness notices a packet the broker must never queue: here a PUBACK with a reason code
/// that PUBACK cannot carry.
#[test]
#[should_panic(expected = "does not")]
fn harness_rejects_an_unencodable_packet() {
    let good = Packet::PubAck(tern_codec::Ack {
        packet_id: tern_codec::PacketId::new(1).unwrap(),
        reason_code: tern_codec::ReasonCode::Success,
        properties: Default::default(),
    });
    // A valid PUBACK passes...
    check_encodes(&good, ProtocolVersion::V5);
    // ... and one with a reason code PUBACK cannot carry does not.
    let Packet::PubAck(mut ack) = good else {
        unreachable!()
    };
    ack.reason_code = tern_codec::ReasonCode::KeepAliveTimeout;
    check_encodes(&Packet::PubAck(ack), ProtocolVersion::V5);
}

/// A script in the harness's format.
#[derive(Default)]
struct Script(Vec<u8>);

impl Script {
    fn new(connections: u8) -> Self {
        Self(vec![connections - 1])
    }
    fn feed(mut self, conn: u8, bytes: &[u8]) -> Self {
        for chunk in bytes.chunks(255) {
            self.0.push(conn);
            self.0.push(u8::try_from(chunk.len()).unwrap());
            self.0.extend_from_slice(chunk);
        }
        self
    }
    fn advance(mut self, conn: u8, tenths: u8) -> Self {
        self.0.extend_from_slice(&[conn | (1 << 2), tenths]);
        self
    }
    fn replace(mut self, conn: u8) -> Self {
        self.0.push(conn | (2 << 2));
        self
    }
    fn connect(mut self, conn: u8, v5: bool) -> Self {
        self.0.push(conn | (3 << 2) | if v5 { 0x10 } else { 0 });
        self
    }
}

fn pkt(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut len = body.len();
    loop {
        let mut byte = u8::try_from(len % 128).unwrap();
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn string(s: &str) -> Vec<u8> {
    let mut out = u16::try_from(s.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

fn subscribe(v5: bool, pid: u16, filter: &str, options: u8) -> Vec<u8> {
    let mut body = pid.to_be_bytes().to_vec();
    if v5 {
        body.push(0);
    }
    body.extend(string(filter));
    body.push(options);
    pkt(0x82, &body)
}

fn publish(v5: bool, qos: u8, pid: u16, topic: &str, props: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = string(topic);
    if qos > 0 {
        body.extend_from_slice(&pid.to_be_bytes());
    }
    if v5 {
        body.push(u8::try_from(props.len()).unwrap());
        body.extend_from_slice(props);
    }
    body.extend_from_slice(payload);
    pkt(0x30 | (qos << 1), &body)
}

fn ack(header: u8, pid: u16) -> Vec<u8> {
    pkt(header, &pid.to_be_bytes())
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let qos1_v311 = Script::new(2)
        .connect(0, false)
        .connect(1, false)
        .feed(0, &subscribe(false, 1, "t/#", 1))
        .feed(1, &publish(false, 1, 1, "t/1", &[], b"hello"))
        .feed(0, &ack(0x40, 1))
        .feed(1, &publish(false, 2, 2, "t/2", &[], b"two"))
        .feed(1, &ack(0x62, 2))
        .feed(0, &ack(0x50, 1))
        .feed(0, &ack(0x70, 1))
        .feed(1, &pkt(0xC0, &[]))
        .feed(1, &pkt(0xE0, &[]));
    let v5_alias = Script::new(2)
        .connect(0, true)
        .connect(1, true)
        .feed(0, &subscribe(true, 1, "a/+", 2))
        .feed(1, &publish(true, 1, 1, "a/b", &[0x23, 0x00, 0x01], b"x"))
        .feed(1, &publish(true, 1, 2, "", &[0x23, 0x00, 0x01], b"y"))
        .feed(
            1,
            &publish(true, 0, 0, "", &[0x23, 0x00, 0x09], b"bad alias"),
        );
    let session = Script::new(3)
        .connect(0, true)
        .feed(0, &subscribe(true, 1, "s/#", 1))
        .replace(0)
        .connect(1, true)
        .feed(1, &publish(true, 1, 1, "s/x", &[], b"queued"))
        .feed(1, &publish(true, 0, 0, "s/y", &[], b"qos0"))
        .connect(0, true)
        .feed(0, &ack(0x40, 1))
        .advance(2, 50);
    let retained_and_shared = Script::new(3)
        .connect(0, false)
        .feed(0, &publish(false, 1, 1, "r/1", &[], b"kept"))
        .connect(1, true)
        .feed(1, &subscribe(true, 1, "$share/g/r/#", 1))
        .connect(2, true)
        .feed(2, &subscribe(true, 1, "r/#", 0))
        .feed(0, &publish(false, 0, 0, "r/2", &[], b"both"));
    let timeouts = Script::new(2)
        .advance(0, 20)
        .connect(1, false)
        .advance(1, 80)
        .connect(0, true)
        .advance(0, 255);
    let garbage = Script::new(2)
        .connect(0, true)
        .feed(0, &[0x30, 0xFF, 0xFF, 0xFF, 0x7F])
        .connect(1, false)
        .feed(1, &[0x00, 0x00, 0x12, 0x34]);
    let trickled_connect = {
        let connect = well_formed_connect(0, true);
        let mut script = Script::new(1);
        for byte in &connect {
            script = script.feed(0, &[*byte]).advance(0, 1);
        }
        script.feed(0, &pkt(0xC0, &[]))
    };
    let flood = {
        let mut script = Script::new(2).connect(0, false).connect(1, false);
        script = script.feed(0, &subscribe(false, 1, "f", 1));
        for pid in 1..=80u16 {
            script = script.feed(1, &publish(false, 1, pid, "f", &[], b"flood"));
        }
        script
    };
    let many_subscriptions = {
        let mut script = Script::new(1).connect(0, true);
        for n in 0..12u16 {
            script = script.feed(0, &subscribe(true, n + 1, &format!("m/{n}/#"), 1));
        }
        script.feed(0, &subscribe(true, 99, "a/b/c/d/e/f/g/h/i/j", 0))
    };
    let will = Script::new(2)
        .connect(1, true)
        .feed(1, &subscribe(true, 1, "#", 1))
        .feed(
            0,
            &pkt(
                0x10,
                &[
                    &string("MQTT")[..],
                    &[5, 0x2E, 0, 10, 0, 0, 1, b'w', 0],
                    &string("will/t")[..],
                    &string("gone")[..],
                ]
                .concat(),
            ),
        )
        .replace(0)
        .advance(1, 10);
    vec![
        ("qos1-qos2-v311", qos1_v311.0),
        ("v5-topic-alias", v5_alias.0),
        ("v5-session-resume", session.0),
        ("retained-and-shared", retained_and_shared.0),
        ("connect-and-keep-alive-timeouts", timeouts.0),
        ("garbage-after-connect", garbage.0),
        ("trickled-connect", trickled_connect.0),
        ("qos1-flood-beyond-queue", flood.0),
        ("subscription-limits", many_subscriptions.0),
        ("will-on-lost-connection", will.0),
    ]
}

/// Rewrites `fuzz/corpus/broker` from the scripts above. Run by hand after changing them:
/// `cargo test -p tern-core --test fuzz_broker_corpus -- --ignored`.
#[test]
#[ignore = "rewrites the checked-in corpus"]
fn write_corpus() {
    let dir = corpus_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The seeds themselves run clean (and do not merely stop at the first byte).
#[test]
fn seeds_run_through_the_harness() {
    for (name, bytes) in seeds() {
        assert!(bytes.len() > 8, "{name} is too short to test anything");
        check_broker_input(&bytes);
    }
}
