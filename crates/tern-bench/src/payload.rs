//! The payload header every benchmark message carries: who sent it, its sequence number and
//! when it was sent, so the receiver can count losses, duplicates, reordering and latency.

/// Bytes of the header: publisher (u32), sequence number (u64), send time in ns (u64).
pub(crate) const HEADER_BYTES: usize = 20;

/// What a payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) publisher: u32,
    pub(crate) seq: u64,
    pub(crate) sent_nanos: u64,
}

/// Writes the header into the front of `payload` (at least [`HEADER_BYTES`] long).
pub(crate) fn write(payload: &mut [u8], stamp: Stamp) {
    payload[0..4].copy_from_slice(&stamp.publisher.to_be_bytes());
    payload[4..12].copy_from_slice(&stamp.seq.to_be_bytes());
    payload[12..20].copy_from_slice(&stamp.sent_nanos.to_be_bytes());
}

/// Reads the header, or `None` if the payload is too short to be one of ours.
pub(crate) fn read(payload: &[u8]) -> Option<Stamp> {
    let publisher = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
    let sent_nanos = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
    Some(Stamp {
        publisher,
        seq,
        sent_nanos,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_short_payloads_are_refused() {
        let stamp = Stamp {
            publisher: 7,
            seq: 1 << 40,
            sent_nanos: 123_456_789,
        };
        let mut payload = [0u8; 32];
        write(&mut payload, stamp);
        assert_eq!(read(&payload), Some(stamp));
        assert_eq!(read(&payload[..HEADER_BYTES - 1]), None);
    }
}
