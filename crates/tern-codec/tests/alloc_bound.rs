//! Proves that `Decoder::decode` allocates no more than the input's length plus 256 bytes in
//! total, whatever the input (random, corpus, adversarial), beyond the fixed-size box each
//! CONNECT or CONNACK is decoded into, and that every decode call makes progress or stops.
//!
//! A counting global allocator adds up the bytes requested (`alloc` sizes and the full new size
//! of every `realloc`) while a thread-local flag is on; the flag is on only inside decode calls,
//! so the input buffer, filled before each call, is never counted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failure.
#![allow(unsafe_code)] // The counting allocator implements `GlobalAlloc`.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs;
use std::path::PathBuf;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use tern_codec::{
    ConnAck, Connect, DecodeError, Decoder, Packet, ProtocolVersion, PACKET_SIZE_MAX,
};

use ProtocolVersion::{V311, V5};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static REQUESTED: Cell<usize> = const { Cell::new(0) };
}

fn record(bytes: usize) {
    // `try_with`: the allocator may run while this thread's locals are being torn down.
    let on = COUNTING.try_with(Cell::get).unwrap_or(false);
    if on {
        let _ = REQUESTED.try_with(|r| r.set(r.get() + bytes));
    }
}

// SAFETY: every call is forwarded unchanged to `System`; the counting touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` with counting on; returns its result and the bytes it requested.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    REQUESTED.with(|r| r.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, REQUESTED.with(Cell::get))
}

/// Slack for fixed costs: sharing the read buffer's allocation once, and the like.
const SLACK: usize = 256;

/// The fixed-size box a CONNECT or CONNACK is decoded into (allocated before its last checks).
fn boxed_size(first_byte: u8) -> usize {
    match first_byte >> 4 {
        1 => size_of::<Connect>(),
        2 => size_of::<ConnAck>(),
        _ => 0,
    }
}

/// Decodes `input` as one stream (from one buffer, or fed a byte at a time) and returns the
/// bytes allocated inside decode calls, less the box of each CONNECT or CONNACK frame taken.
/// Checks that each call consumes bytes and returns a packet, returns `Ok(None)` without
/// consuming, or fails.
fn allocated_decoding(input: &[u8], version: ProtocolVersion, max: u32, bytewise: bool) -> usize {
    let mut decoder = Decoder::new(version, max);
    // Room for the whole input, so that feeding it never reallocates.
    let mut buf = BytesMut::with_capacity(input.len());
    let chunks: Vec<&[u8]> = if bytewise {
        input.chunks(1).collect()
    } else {
        vec![input]
    };
    let mut total = 0;
    let mut calls = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            calls += 1;
            assert!(calls <= 2 * input.len() + 2, "decoder spins: {calls} calls");
            let before = buf.len();
            let first_byte = buf.first().copied().unwrap_or(0);
            let (result, bytes) = counted(|| decoder.decode(&mut buf));
            match result {
                Ok(Some(_)) => {
                    assert!(buf.len() < before, "a packet consumed nothing");
                    total += bytes - boxed_size(first_byte);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                    assert_eq!(bytes, 0, "waiting for bytes allocated");
                    break;
                }
                Err(_) => return total + bytes.saturating_sub(boxed_size(first_byte)),
            }
        }
    }
    total
}

/// Every way of decoding `input` stays within its length plus the slack.
fn check_bound(input: &[u8]) {
    let len = u32::try_from(input.len()).unwrap();
    for version in [V311, V5] {
        for max in [PACKET_SIZE_MAX, 64, len] {
            for bytewise in [false, true] {
                let bytes = allocated_decoding(input, version, max, bytewise);
                assert!(
                    bytes <= input.len() + SLACK,
                    "decoding {} input bytes ({version:?}, max {max}, bytewise {bytewise}) \
                     allocated {bytes} bytes",
                    input.len()
                );
            }
        }
    }
}

/// Wraps an MQTT 5 property block in a body: `before`, the block's length and bytes, `after`.
fn with_properties(before: &[u8], props: &[u8], after: &[u8]) -> Vec<u8> {
    let mut body = before.to_vec();
    let mut len = u32::try_from(props.len()).unwrap();
    loop {
        let byte = (len & 0x7F) as u8;
        len >>= 7;
        body.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    body.extend_from_slice(props);
    body.extend_from_slice(after);
    body
}

/// A packet from its first byte and body.
fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = with_properties(&[first_byte], body, &[]);
    out.shrink_to_fit();
    out
}

fn repeat(unit: &[u8], times: usize) -> Vec<u8> {
    unit.repeat(times)
}

/// Inputs built to make a decoder allocate per element: many tiny user properties, many
/// one-character filters, many subscription identifiers or reason codes, repeated properties
/// interleaved with others, many small packets, huge declared lengths.
fn adversarial() -> Vec<(&'static str, Vec<u8>)> {
    const N: usize = 2_000;
    let user = [0x26, 0x00, 0x00, 0x00, 0x00];
    let user_a = [0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v'];
    let sub_id = [0x0B, 0x01];
    let topic = [0x00, 0x01, b't'];
    let mut user_and_ids = Vec::new();
    for _ in 0..N {
        user_and_ids.extend_from_slice(&user);
        user_and_ids.extend_from_slice(&sub_id);
    }
    // Every other PUBLISH property once, each between runs of user properties.
    let others: [&[u8]; 6] = [
        &[0x01, 0x01],
        &[0x02, 0, 0, 0, 9],
        &[0x23, 0x00, 0x05],
        &[0x08, 0x00, 0x01, b'r'],
        &[0x09, 0x00, 0x01, 0xFF],
        &[0x03, 0x00, 0x01, b'c'],
    ];
    let mut users_and_others = Vec::new();
    for other in others {
        users_and_others.extend(repeat(&user_a, N / 6));
        users_and_others.extend_from_slice(other);
    }
    users_and_others.extend(repeat(&user_a, N / 6));
    let connect_head = [0, 4, b'M', b'Q', b'T', b'T', 5, 0x04, 0, 0];
    let mut connect_props = Vec::new();
    for other in [
        &[0x11, 0, 0, 0, 1][..],
        &[0x21, 0, 9],
        &[0x17, 1],
        &[0x15, 0, 1, b'm'],
    ] {
        connect_props.extend(repeat(&user, N / 4));
        connect_props.extend_from_slice(other);
    }
    let mut will_props = Vec::new();
    for other in [
        &[0x18, 0, 0, 0, 1][..],
        others[0],
        others[1],
        others[3],
        others[4],
        others[5],
    ] {
        will_props.extend(repeat(&user_a, N / 6));
        will_props.extend_from_slice(other);
    }
    let mut connect_tail = vec![0x00, 0x00]; // empty client identifier
    connect_tail.extend(with_properties(&[], &will_props, &[0, 1, b'w', 0, 0]));
    let subscribe_v5 = with_properties(&[0, 1], &[], &repeat(&[0, 1, b'a', 0], N));
    let subscribe_v311 = [&[0u8, 1][..], &repeat(&[0, 1, b'+', 2], N)].concat();
    let unsubscribe = with_properties(&[0, 1], &repeat(&user, N), &repeat(&[0, 1, b'#'], N));
    let suback_v5 = with_properties(&[0, 1], &[], &repeat(&[0x00, 0x01, 0x02, 0x80], N));
    let suback_v311 = [&[0u8, 1][..], &repeat(&[0x00, 0x01, 0x02, 0x80], N)].concat();
    let unsuback = with_properties(&[0, 1], &repeat(&user, N), &repeat(&[0x00, 0x11], N));
    vec![
        (
            "publish-many-users",
            frame(0x30, &with_properties(&topic, &repeat(&user, N), b"")),
        ),
        (
            "publish-many-ids",
            frame(0x30, &with_properties(&topic, &repeat(&sub_id, N), b"p")),
        ),
        (
            "publish-users-and-ids",
            frame(0x30, &with_properties(&topic, &user_and_ids, b"")),
        ),
        (
            "publish-users-and-others",
            frame(0x30, &with_properties(&topic, &users_and_others, b"")),
        ),
        (
            "connect-interleaved",
            frame(
                0x10,
                &with_properties(&connect_head, &connect_props, &connect_tail),
            ),
        ),
        ("subscribe-v5-filters", frame(0x82, &subscribe_v5)),
        ("subscribe-v311-filters", frame(0x82, &subscribe_v311)),
        ("unsubscribe-many", frame(0xA2, &unsubscribe)),
        ("suback-v5-codes", frame(0x90, &suback_v5)),
        ("suback-v311-codes", frame(0x90, &suback_v311)),
        ("unsuback-many", frame(0xB0, &unsuback)),
        ("many-subacks", repeat(&[0x90, 0x03, 0x00, 0x01, 0x01], N)),
        (
            "many-unsubacks-v5",
            repeat(&[0xB0, 0x04, 0x00, 0x01, 0x00, 0x11], N),
        ),
        ("many-pings", repeat(&[0xC0, 0x00], N)),
        ("many-publishes", repeat(&[0x30, 0x03, 0x00, 0x01, b't'], N)),
        (
            "huge-declared-length",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b't'],
        ),
        (
            "huge-declared-connect",
            vec![0x10, 0xFE, 0xFF, 0xFF, 0x7F, 0x00, 0x04, b'M'],
        ),
    ]
}

#[test]
fn adversarial_inputs_stay_within_the_bound() {
    for (name, input) in adversarial() {
        eprintln!("{name}: {} bytes", input.len());
        check_bound(&input);
    }
}

/// The adversarial inputs are what they claim: most of them decode at some level.
#[test]
fn adversarial_inputs_are_valid_where_meant() {
    for (name, input) in adversarial() {
        let decodes = [V311, V5].into_iter().any(|v| {
            let mut buf = BytesMut::from(&input[..]);
            matches!(
                Decoder::new(v, PACKET_SIZE_MAX).decode(&mut buf),
                Ok(Some(_))
            )
        });
        let incomplete = name.starts_with("huge");
        assert!(decodes != incomplete, "{name} decodes: {decodes}");
    }
}

#[test]
fn corpus_files_stay_within_the_bound() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/decode");
    let mut count = 0;
    for entry in fs::read_dir(dir).unwrap() {
        let input = fs::read(entry.unwrap().path()).unwrap();
        check_bound(&input);
        count += 1;
    }
    assert!(count > 0, "the corpus is empty");
}

/// Refusing a packet from its fixed header allocates nothing, and once the read buffer is
/// shared (by the first packet split off it), an error allocates at most the refused packet's
/// size (a reason code list is sized before it is checked); error details are static.
#[test]
fn errors_do_not_allocate() {
    let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0x7F][..]);
    let (result, bytes) = counted(|| Decoder::new(V5, 16).decode(&mut buf));
    assert!(matches!(result, Err(DecodeError::PacketTooLarge { .. })));
    assert_eq!(bytes, 0);
    let broken: [&[u8]; 5] = [
        &[0x00, 0x00],
        &[0x40, 0x02, 0x00, 0x00],
        &[0x30, 0x03, 0x00, 0x01, b'#'],
        &[0x90, 0x04, 0x00, 0x01, 0x00, 0x03],
        &[0xC0, 0x80, 0x00],
    ];
    for input in broken {
        for version in [V311, V5] {
            let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
            buf.extend_from_slice(input);
            let mut decoder = Decoder::new(version, PACKET_SIZE_MAX);
            assert_eq!(decoder.decode(&mut buf), Ok(Some(Packet::PingReq)));
            let (result, bytes) = counted(|| decoder.decode(&mut buf));
            assert!(result.is_err(), "{input:?} decodes");
            assert!(bytes <= input.len(), "{result:?} allocated {bytes} bytes");
        }
    }
}

/// Random bytes, valid packets, and valid packets with bytes changed, cut short or appended.
fn inputs() -> impl Strategy<Value = Vec<u8>> {
    let valid = support::versioned_packet()
        .prop_map(|(v, p)| {
            let mut buf = BytesMut::new();
            p.encode(v, &mut buf).unwrap();
            buf.to_vec()
        })
        .boxed();
    let mutated = (
        valid.clone(),
        vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, value) in edits {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            bytes
        });
    let cut = (valid.clone(), any::<prop::sample::Index>())
        .prop_map(|(bytes, at)| bytes[..at.index(bytes.len() + 1)].to_vec());
    prop_oneof![
        3 => vec(any::<u8>(), 0..512),
        3 => valid.clone(),
        3 => mutated,
        1 => cut,
        1 => (valid.clone(), valid).prop_map(|(a, b)| [a, b].concat()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_inputs_stay_within_the_bound(input in inputs()) {
        check_bound(&input);
    }
}
