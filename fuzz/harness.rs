// The decode harness: the checks every fuzz input goes through. It is `include!`d by the
// libFuzzer target (`fuzz/fuzz_targets/decode.rs`) and by the corpus replay test
// (`crates/tern-codec/tests/fuzz_corpus.rs`), so CI on stable runs exactly the fuzzer's checks.
//
// For each protocol level, the input is decoded as a stream, once from one buffer and once fed a
// byte at a time, with no size limit and with several maximum packet sizes. It checks that:
// - both feedings give the same packets, frame sizes and ending (need more bytes, or an error);
// - every decode call either consumes bytes and returns a packet, returns `Ok(None)` without
//   consuming anything, or fails;
// - a size limit only truncates the stream with `PacketTooLarge` at the first frame above it;
// - every decoded packet re-encodes at the level it was decoded at, `encoded_len` is exact, the
//   encoding decodes to an equal packet, and encoding that packet gives the same bytes again.

use bytes::BytesMut;
use tern_codec::{DecodeError, Decoder, Packet, ProtocolVersion, PACKET_SIZE_MAX};

/// How a decoded stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    /// The decoder wanted more bytes; this many were left unconsumed.
    NeedMore(usize),
    /// The decoder failed; a connection would be closed here.
    Failed(DecodeError),
}

/// Everything a stream decoded to: each packet with the level it was decoded at and the bytes
/// its frame took, then how the stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decoded {
    packets: Vec<(Packet, ProtocolVersion, usize)>,
    end: StreamEnd,
}

/// Runs the decoder over `buf` until it needs more bytes or fails, recording each packet.
/// Returns the error, if any.
fn drain(
    decoder: &mut Decoder,
    buf: &mut BytesMut,
    packets: &mut Vec<(Packet, ProtocolVersion, usize)>,
) -> Option<DecodeError> {
    loop {
        let level = decoder.version();
        let before = buf.len();
        match decoder.decode(buf) {
            Ok(Some(packet)) => {
                let used = before - buf.len();
                assert!(used >= 2, "a packet took {used} bytes");
                assert!(
                    used <= decoder.max_packet_size() as usize,
                    "a packet of {used} bytes passed a limit of {}",
                    decoder.max_packet_size()
                );
                packets.push((packet, level, used));
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "Ok(None) consumed bytes");
                return None;
            }
            Err(error) => return Some(error),
        }
    }
}

/// Decodes `data` as one stream, from one buffer or fed a byte at a time.
fn decode_stream(data: &[u8], version: ProtocolVersion, max: u32, bytewise: bool) -> Decoded {
    let mut decoder = Decoder::new(version, max);
    let mut packets = Vec::new();
    let mut buf = BytesMut::with_capacity(data.len());
    let chunks: Vec<&[u8]> = if bytewise {
        data.chunks(1).collect()
    } else {
        vec![data]
    };
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        if let Some(error) = drain(&mut decoder, &mut buf, &mut packets) {
            return Decoded {
                packets,
                end: StreamEnd::Failed(error),
            };
        }
    }
    Decoded {
        packets,
        end: StreamEnd::NeedMore(buf.len()),
    }
}

/// A limit may only cut the unlimited stream short, at the first frame larger than it.
fn check_limited(limited: &Decoded, unlimited: &Decoded, max: u32) {
    let n = limited.packets.len();
    assert!(
        n <= unlimited.packets.len(),
        "a limit let more packets through"
    );
    assert_eq!(
        limited.packets[..],
        unlimited.packets[..n],
        "a limit changed a packet"
    );
    let too_large = match limited.end {
        StreamEnd::Failed(DecodeError::PacketTooLarge { size, max: m }) => {
            assert_eq!(m, max, "PacketTooLarge names the wrong limit");
            assert!(
                size > max as usize,
                "refused a {size}-byte packet under a {max} limit"
            );
            Some(size)
        }
        _ => None,
    };
    if n < unlimited.packets.len() {
        let size = unlimited.packets[n].2;
        assert_eq!(
            too_large,
            Some(size),
            "a limit of {max} stopped the stream for no reason"
        );
    } else if limited.end != unlimited.end {
        assert!(
            too_large.is_some(),
            "a limit of {max} changed how the stream ended"
        );
    }
}

/// A decoded packet must re-encode, and the result must decode to the same packet.
fn check_reencode(packet: &Packet, level: ProtocolVersion, used: usize) {
    // Encoding a decoded packet cannot legitimately fail: every field the decoder accepted came
    // with a 16-bit or variable byte integer length and is re-encoded the same way; QoS and packet
    // identifier agree; 3.1.1 CONNECT has a user name when it has a password; AUTH only decodes
    // at level 5. The body never grows by more than the one property-length byte that an AUTH
    // with its properties left out gains, so it stays under the MQTT size limit.
    let len = match packet.encoded_len(level) {
        Ok(len) => len,
        Err(error) => panic!("decoded packet does not re-encode ({error}): {packet:?}"),
    };
    assert!(
        len <= used + 1,
        "{used}-byte packet re-encodes to {len} bytes: {packet:?}"
    );
    let mut wire = BytesMut::new();
    if let Err(error) = packet.encode(level, &mut wire) {
        panic!("encoded_len succeeded but encode failed ({error}): {packet:?}");
    }
    assert_eq!(
        wire.len(),
        len,
        "encoded_len is not the encoded size: {packet:?}"
    );
    let canonical = wire.clone().freeze();

    let mut decoder = Decoder::new(level, PACKET_SIZE_MAX);
    let again = match decoder.decode(&mut wire) {
        Ok(Some(again)) => again,
        other => panic!("re-encoded packet does not decode ({other:?}): {packet:?}"),
    };
    assert!(
        wire.is_empty(),
        "re-encoded packet left bytes over: {packet:?}"
    );
    assert_eq!(&again, packet, "re-encoded packet decodes differently");

    let mut twice = BytesMut::new();
    if let Err(error) = again.encode(level, &mut twice) {
        panic!("packet stopped encoding after a round trip ({error}): {again:?}");
    }
    assert_eq!(
        twice.freeze(),
        canonical,
        "encoding is not canonical: {packet:?}"
    );
}

/// The fuzz entry point: every check above, for each protocol level.
fn check_input(data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    for version in [ProtocolVersion::V31, ProtocolVersion::V311, ProtocolVersion::V5] {
        let unlimited = decode_stream(data, version, PACKET_SIZE_MAX, false);
        let bytewise = decode_stream(data, version, PACKET_SIZE_MAX, true);
        assert_eq!(
            bytewise, unlimited,
            "byte-at-a-time decoding differs ({version:?})"
        );
        for (packet, level, used) in &unlimited.packets {
            check_reencode(packet, *level, *used);
        }
        for max in [0, 2, 5, 64, len.saturating_sub(1), len] {
            let whole = decode_stream(data, version, max, false);
            let bytewise = decode_stream(data, version, max, true);
            assert_eq!(
                bytewise, whole,
                "byte-at-a-time decoding differs ({version:?}, {max})"
            );
            check_limited(&whole, &unlimited, max);
        }
    }
}
