//! The byte layout of the request guard's records (partition `guard`, format version 3; see
//! docs/design/store-format.md): the HTTP bridge's spent nonces and exactly-once answers.
//!
//! Key: `[kind u8][principal len u16][principal][nonce]` (kind 0: a counter, with no nonce;
//! 1: a random nonce; 2: an answer). Value: a counter `[last u64]`; a nonce `[until u64]`; an
//! answer `[until u64][signature 32 bytes][status u16][body]`. Times are Unix seconds.

use bytes::{BufMut, Bytes, BytesMut};
use tern_core::{GuardKey, GuardRecord};

use crate::record::{self, RecordError};

const COUNTER: u8 = 0;
const NONCE: u8 = 1;
const ANSWER: u8 = 2;

fn corrupt(what: &str) -> RecordError {
    RecordError::corrupt(what)
}

/// The key a record is kept under.
pub(crate) fn key(key: &GuardKey) -> Result<Vec<u8>, RecordError> {
    let (kind, principal, nonce) = match key {
        GuardKey::Counter(principal) => (COUNTER, principal, ""),
        GuardKey::Nonce(principal, nonce) => (NONCE, principal, nonce.as_str()),
        GuardKey::Answer(principal, nonce) => (ANSWER, principal, nonce.as_str()),
    };
    let len = u16::try_from(principal.len()).map_err(|_| corrupt("principal too long"))?;
    let mut bytes = Vec::with_capacity(3 + principal.len() + nonce.len());
    bytes.push(kind);
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes.extend_from_slice(principal.as_bytes());
    bytes.extend_from_slice(nonce.as_bytes());
    Ok(bytes)
}

/// A record's value.
pub(crate) fn encode(record: &GuardRecord) -> Bytes {
    let mut buf = BytesMut::with_capacity(48);
    match record {
        GuardRecord::Counter { last, .. } => buf.put_u64(*last),
        GuardRecord::Nonce { until, .. } => buf.put_u64(*until),
        GuardRecord::Answer {
            signature,
            status,
            body,
            until,
            ..
        } => {
            buf.put_u64(*until);
            buf.put_slice(signature);
            buf.put_u16(*status);
            buf.put_slice(body);
        }
    }
    buf.freeze()
}

/// A record back from its key and value.
pub(crate) fn decode(key: &[u8], value: &[u8]) -> Result<GuardRecord, RecordError> {
    let (&kind, rest) = key.split_first().ok_or_else(|| corrupt("empty key"))?;
    let (principal, nonce) = record::split_prefixed(rest)?;
    let text = |bytes: &[u8], what: &str| {
        String::from_utf8(bytes.to_vec()).map_err(|_| corrupt(&format!("{what} is not UTF-8")))
    };
    let principal = text(principal, "principal")?;
    let nonce = text(nonce, "nonce")?;
    let (until, rest) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| corrupt("value too short"))?;
    let until = u64::from_be_bytes(*until);
    match kind {
        COUNTER if nonce.is_empty() && rest.is_empty() => Ok(GuardRecord::Counter {
            principal,
            last: until,
        }),
        NONCE if rest.is_empty() => Ok(GuardRecord::Nonce {
            principal,
            nonce,
            until,
        }),
        ANSWER => {
            let (signature, rest) = rest
                .split_first_chunk::<32>()
                .ok_or_else(|| corrupt("answer too short"))?;
            let (status, body) = rest
                .split_first_chunk::<2>()
                .ok_or_else(|| corrupt("answer too short"))?;
            Ok(GuardRecord::Answer {
                principal,
                nonce,
                signature: *signature,
                status: u16::from_be_bytes(*status),
                body: Bytes::copy_from_slice(body),
                until,
            })
        }
        COUNTER | NONCE => Err(corrupt("bytes left over after the record")),
        other => Err(corrupt(&format!("record kind {other}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is a failure.

    use super::*;

    #[test]
    fn every_kind_reads_back_and_damage_is_refused() {
        let records = [
            GuardRecord::Counter {
                principal: "d:a".into(),
                last: 0x1a4,
            },
            GuardRecord::Nonce {
                principal: "a:fleet/7F".into(),
                nonce: "r:00112233".into(),
                until: 1_767_225_900,
            },
            GuardRecord::Answer {
                principal: "d:a".into(),
                nonce: "c:9".into(),
                signature: [7; 32],
                status: 200,
                body: Bytes::from_static(b"{\"qos\":2,\"matched\":1}"),
                until: 1_767_312_000,
            },
        ];
        for record in records {
            let key = key(&record.key()).unwrap();
            let value = encode(&record);
            assert_eq!(decode(&key, &value).unwrap(), record);
            assert!(decode(&key, &value[..7]).is_err());
        }
        assert!(decode(&[9, 0, 0], &[0; 8]).is_err(), "unknown kind");
        assert!(decode(&[0, 0, 5, b'a'], &[0; 8]).is_err(), "short key");
        assert!(
            decode(&[0, 0, 1, b'a'], &[0; 9]).is_err(),
            "bytes left over"
        );
    }
}
