//! What nodes tell each other about sessions, as bytes: the record of a session in the
//! sessions bucket (who holds it, and what it subscribed to), the notice a claimant sends the
//! holder through the message stream, and the session the holder hands over.
//!
//! Sessions, deliveries and wills are in the store's published format (`tern_core::record`,
//! docs/design/store-format.md), so nothing of MQTT is laid out twice. Times in them are
//! relative to the moment they cross (the core's convention for sessions between nodes),
//! written where the store writes wall-clock time.
//!
//! - entry: `[version u8][node len u8][node][boot u64][epoch u64][cursor u64][resume from u64]
//!   [client id len u16][client id][has session u8]` then, with one, a session record.
//! - notice: `[version u8][clean start u8][claim u64][client id len u16][client id]
//!   [claimant len u8][claimant][reply len u16][reply subject]`.
//! - handed over: `[version u8][resume from u64][has session u8]` then, with one, `[record len u32][record]
//!   [deliveries u32]` each `[seq u64][len u32][delivery]`, then `[incoming u32]` each
//!   `[packet id u16]`; sent in chunks of `[claim u64][index u32][count u32][bytes]`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_codec::MqttString;
use tern_core::record::{
    decode_delivery, decode_session, encode_delivery, encode_session, RecordError, SessionLayout,
    WallClock,
};
use tern_core::store::{SessionRecord, StoredSession};

/// The format version this code writes and reads.
const VERSION: u8 = 2;

/// Times are relative: written as if the epoch were now.
const RELATIVE: WallClock = WallClock { epoch_unix_ms: 0 };

/// Bytes of a chunk's header.
pub(crate) const CHUNK_HEADER_LEN: usize = 8 + 4 + 4;

/// Why bytes from another node do not read as what they should be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// Another format version: a node of another release.
    #[error("format version {0} (this node reads {VERSION})")]
    Version(u8),
    /// Shorter than its layout says, or with bytes left over.
    #[error("{0}")]
    Layout(&'static str),
    /// A session, delivery or will inside does not read.
    #[error("{0}")]
    Record(#[from] RecordError),
}

/// A session's entry in the sessions bucket.
#[derive(Debug, Clone)]
pub struct SessionEntry {
    /// The node that holds the session.
    pub node: String,
    /// That node's boot identity when it wrote the entry.
    pub boot: u64,
    /// The connection the session's will belongs to, as the cluster numbers them (the
    /// revision the claim of that connection replaced): the will's identity in the log, the
    /// same on every node that may publish it.
    pub epoch: u64,
    /// The session's cursor into the message stream (0: none yet): every QoS 1/2 message
    /// stored before it that the session's subscriptions match was delivered and acknowledged.
    pub cursor: u64,
    /// For a session without a connection, the place in the stream from which its node keeps
    /// none of its messages (0: it has a connection, and its node keeps them all).
    pub resume_from: u64,
    /// The client identifier (keys of long identifiers are hashed: this tells them apart).
    pub client_id: MqttString,
    /// What the session is, as its holder last wrote it (none right after a first claim).
    pub session: Option<SessionRecord>,
}

/// A claimant's notice to the node that held a session: it has the session now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The session's client identifier.
    pub client_id: MqttString,
    /// Whether the new connection starts afresh (the session then ends where it was).
    pub clean_start: bool,
    /// The claim, as the claimant numbers them.
    pub claim: u64,
    /// The claimant's node identifier.
    pub claimant: String,
    /// Where the session goes.
    pub reply: String,
}

struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize) -> Result<(), HandoffError> {
        if self.0.remaining() < n {
            return Err(HandoffError::Layout("ends early"));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, HandoffError> {
        self.need(1)?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self) -> Result<u16, HandoffError> {
        self.need(2)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self) -> Result<u32, HandoffError> {
        self.need(4)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self) -> Result<u64, HandoffError> {
        self.need(8)?;
        Ok(self.0.get_u64())
    }
    fn take(&mut self, n: usize) -> Result<Bytes, HandoffError> {
        self.need(n)?;
        Ok(self.0.split_to(n))
    }
    fn string(&mut self, len: usize) -> Result<String, HandoffError> {
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| HandoffError::Layout("not UTF-8"))
    }
    fn client_id(&mut self) -> Result<MqttString, HandoffError> {
        let len = usize::from(self.u16()?);
        MqttString::from_bytes(self.take(len)?)
            .map_err(|_| HandoffError::Layout("client identifier"))
    }
    fn version(&mut self) -> Result<(), HandoffError> {
        match self.u8()? {
            VERSION => Ok(()),
            other => Err(HandoffError::Version(other)),
        }
    }
    fn finish(&self) -> Result<(), HandoffError> {
        if self.0.has_remaining() {
            return Err(HandoffError::Layout("bytes left over"));
        }
        Ok(())
    }
}

/// Short strings (node identifiers, at most 255 bytes by configuration) with their length.
fn put_short(buf: &mut BytesMut, text: &str) {
    let bytes = &text.as_bytes()[..text.len().min(usize::from(u8::MAX))];
    buf.put_u8(bytes.len() as u8);
    buf.put_slice(bytes);
}

/// Client identifiers are MQTT strings: at most 65,535 bytes.
fn put_client_id(buf: &mut BytesMut, client_id: &MqttString) {
    let bytes = client_id.as_bytes();
    buf.put_u16(bytes.len() as u16);
    buf.put_slice(bytes);
}

impl SessionEntry {
    /// The entry's bytes.
    pub fn encode(&self) -> Result<Bytes, HandoffError> {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_u8(VERSION);
        put_short(&mut buf, &self.node);
        buf.put_u64(self.boot);
        buf.put_u64(self.epoch);
        buf.put_u64(self.cursor);
        buf.put_u64(self.resume_from);
        put_client_id(&mut buf, &self.client_id);
        match &self.session {
            None => buf.put_u8(0),
            Some(record) => {
                buf.put_u8(1);
                buf.put_slice(&encode_session(RELATIVE, record)?);
            }
        }
        Ok(buf.freeze())
    }

    /// An entry back from its bytes.
    pub fn decode(bytes: Bytes) -> Result<Self, HandoffError> {
        let mut r = Reader(bytes);
        r.version()?;
        let len = usize::from(r.u8()?);
        let node = r.string(len)?;
        let boot = r.u64()?;
        let epoch = r.u64()?;
        let cursor = r.u64()?;
        let resume_from = r.u64()?;
        let client_id = r.client_id()?;
        let session = match r.u8()? {
            0 => {
                r.finish()?;
                None
            }
            _ => {
                let rest = std::mem::take(&mut r.0);
                let layout = SessionLayout::Current;
                Some(decode_session(RELATIVE, client_id.clone(), rest, layout)?)
            }
        };
        Ok(Self {
            node,
            boot,
            epoch,
            cursor,
            resume_from,
            client_id,
            session,
        })
    }
}

impl Notice {
    /// The notice's bytes.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(32 + self.client_id.len() + self.reply.len());
        buf.put_u8(VERSION);
        buf.put_u8(u8::from(self.clean_start));
        buf.put_u64(self.claim);
        put_client_id(&mut buf, &self.client_id);
        put_short(&mut buf, &self.claimant);
        // Reply subjects are Tern's own, far shorter than 65,535 bytes.
        buf.put_u16(self.reply.len() as u16);
        buf.put_slice(self.reply.as_bytes());
        buf.freeze()
    }

    /// A notice back from its bytes.
    pub fn decode(bytes: Bytes) -> Result<Self, HandoffError> {
        let mut r = Reader(bytes);
        r.version()?;
        let clean_start = r.u8()? != 0;
        let claim = r.u64()?;
        let client_id = r.client_id()?;
        let len = usize::from(r.u8()?);
        let claimant = r.string(len)?;
        let len = usize::from(r.u16()?);
        let reply = r.string(len)?;
        r.finish()?;
        Ok(Self {
            client_id,
            clean_start,
            claim,
            claimant,
            reply,
        })
    }
}

/// What a node hands over of a session: the session, or that it had none to give, and where
/// in the stream it kept no more of its messages (0: it kept them all).
pub fn encode_handed_over(
    session: Option<&StoredSession>,
    resume_from: u64,
) -> Result<Bytes, HandoffError> {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_u8(VERSION);
    buf.put_u64(resume_from);
    let Some(session) = session else {
        buf.put_u8(0);
        return Ok(buf.freeze());
    };
    buf.put_u8(1);
    let record = encode_session(RELATIVE, &session.record)?;
    buf.put_u32(len_u32(record.len())?);
    buf.put_slice(&record);
    buf.put_u32(len_u32(session.deliveries.len())?);
    for (delivery, stage) in &session.deliveries {
        let bytes = encode_delivery(RELATIVE, delivery, *stage)?;
        buf.put_u64(delivery.seq);
        buf.put_u32(len_u32(bytes.len())?);
        buf.put_slice(&bytes);
    }
    buf.put_u32(len_u32(session.incoming_qos2.len())?);
    for packet_id in &session.incoming_qos2 {
        buf.put_u16(*packet_id);
    }
    Ok(buf.freeze())
}

fn len_u32(len: usize) -> Result<u32, HandoffError> {
    u32::try_from(len).map_err(|_| HandoffError::Layout("longer than 4 GiB"))
}

/// The session of `client_id` back from [`encode_handed_over`] (`None`: the holder had none),
/// and where the holder kept no more of its messages.
pub fn decode_handed_over(
    client_id: &MqttString,
    bytes: Bytes,
) -> Result<(Option<StoredSession>, u64), HandoffError> {
    let mut r = Reader(bytes);
    r.version()?;
    let resume_from = r.u64()?;
    if r.u8()? == 0 {
        r.finish()?;
        return Ok((None, resume_from));
    }
    let len = r.u32()? as usize;
    let record = r.take(len)?;
    let record = decode_session(RELATIVE, client_id.clone(), record, SessionLayout::Current)?;
    let count = r.u32()?;
    let mut deliveries = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let seq = r.u64()?;
        let len = r.u32()? as usize;
        deliveries.push(decode_delivery(RELATIVE, seq, r.take(len)?)?);
    }
    let count = r.u32()?;
    let mut incoming_qos2 = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        incoming_qos2.push(r.u16()?);
    }
    r.finish()?;
    let session = StoredSession {
        record,
        deliveries,
        incoming_qos2,
    };
    Ok((Some(session), resume_from))
}

/// `bytes` in chunks of at most `max` bytes each (header included) for claim `claim`.
pub fn chunks(claim: u64, bytes: &Bytes, max: usize) -> Vec<Bytes> {
    let room = max.saturating_sub(CHUNK_HEADER_LEN).max(1);
    let count = bytes.len().div_ceil(room).max(1);
    (0..count)
        .map(|index| {
            let part = bytes.slice(index * room..((index + 1) * room).min(bytes.len()));
            let mut chunk = BytesMut::with_capacity(CHUNK_HEADER_LEN + part.len());
            chunk.put_u64(claim);
            // A chunk holds at least one byte: far fewer than 2^32 of them.
            chunk.put_u32(index as u32);
            chunk.put_u32(count as u32);
            chunk.put_slice(&part);
            chunk.freeze()
        })
        .collect()
}

/// One chunk: its claim, index, count and bytes.
pub fn read_chunk(mut chunk: Bytes) -> Result<(u64, u32, u32, Bytes), HandoffError> {
    if chunk.len() < CHUNK_HEADER_LEN {
        return Err(HandoffError::Layout("chunk header ends early"));
    }
    let claim = chunk.get_u64();
    let index = chunk.get_u32();
    let count = chunk.get_u32();
    if index >= count {
        return Err(HandoffError::Layout("chunk index past its count"));
    }
    Ok((claim, index, count, chunk))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a panic is a failure.

    use std::sync::Arc;

    use tern_codec::{PacketId, PublishProperties, QoS, SubscriptionIds, SubscriptionOptions};
    use tern_core::session::Delivery;
    use tern_core::store::DeliveryStage;
    use tern_core::tree::SubscriptionInfo;
    use tern_core::{Message, SessionOwner, Time};

    use super::*;

    fn mstr(text: &str) -> MqttString {
        MqttString::new(text).unwrap()
    }

    fn record() -> SessionRecord {
        SessionRecord {
            client_id: mstr("dev/1"),
            owner: SessionOwner::from_stored(Some("password\0\0alice")),
            expiry_secs: 600,
            subscriptions: vec![(
                "a/+/c".parse().unwrap(),
                SubscriptionInfo {
                    options: SubscriptionOptions::qos(QoS::AtLeastOnce),
                    identifier: Some(7),
                    tree_view: None,
                },
            )],
            will: None,
            expires_at: None,
            will_at: None,
            next_seq: 12,
        }
    }

    fn delivery(seq: u64, payload: &'static [u8], expires_in: Option<u64>) -> Delivery {
        let message = Arc::new(Message {
            id: 9,
            topic: "a/b/c".parse().unwrap(),
            payload: Bytes::from_static(payload),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: PublishProperties::default(),
            expires_at: expires_in.map(Time::from_millis),
            origin: None,
        });
        Delivery {
            seq,
            charge: message.charge(),
            message,
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: SubscriptionIds::from_ids([7]).unwrap(),
        }
    }

    #[test]
    fn an_entry_reads_back_with_or_without_its_session() {
        for session in [None, Some(record())] {
            let entry = SessionEntry {
                node: "n-1".to_owned(),
                boot: 0xfeed,
                epoch: 31,
                cursor: 1_000_000,
                resume_from: 1_000_042,
                client_id: mstr("dev/1"),
                session,
            };
            let back = SessionEntry::decode(entry.encode().unwrap()).unwrap();
            assert_eq!((back.node.as_str(), back.boot), ("n-1", 0xfeed));
            assert_eq!(
                (back.epoch, back.cursor, back.resume_from),
                (31, 1_000_000, 1_000_042)
            );
            assert_eq!(back.client_id, entry.client_id);
            let filters = |e: &SessionEntry| {
                e.session
                    .as_ref()
                    .map(|r| (r.expiry_secs, r.subscriptions.clone(), r.owner.clone()))
            };
            assert_eq!(filters(&back), filters(&entry));
        }
        assert!(SessionEntry::decode(Bytes::from_static(&[1, 0])).is_err());
    }

    #[test]
    fn a_notice_reads_back() {
        let notice = Notice {
            client_id: mstr("ünï code"),
            clean_start: true,
            claim: 42,
            claimant: "n2".to_owned(),
            reply: "tern.r.00ff".to_owned(),
        };
        assert_eq!(Notice::decode(notice.encode()).unwrap(), notice);
        let mut cut = notice.encode();
        cut.truncate(cut.len() - 1);
        assert!(Notice::decode(cut).is_err());
    }

    #[test]
    fn a_session_handed_over_reads_back_in_chunks_with_its_stages() {
        let session = StoredSession {
            record: record(),
            deliveries: vec![
                (
                    delivery(3, b"in flight", Some(4_000)),
                    DeliveryStage::Sent(PacketId::new(12).unwrap()),
                ),
                (delivery(4, b"queued", None), DeliveryStage::Queued),
            ],
            incoming_qos2: vec![5, 6],
        };
        let bytes = encode_handed_over(Some(&session), 99).unwrap();
        let pieces = chunks(77, &bytes, CHUNK_HEADER_LEN + 10);
        assert!(pieces.len() > 2);
        let mut whole = BytesMut::new();
        for (n, piece) in pieces.into_iter().enumerate() {
            let (claim, index, _, part) = read_chunk(piece).unwrap();
            assert_eq!((claim, index as usize), (77, n));
            whole.extend_from_slice(&part);
        }
        let (back, resume_from) = decode_handed_over(&mstr("dev/1"), whole.freeze()).unwrap();
        assert_eq!(resume_from, 99);
        let back = back.unwrap();
        let seen: Vec<(u64, DeliveryStage, Option<Time>, Bytes)> = back
            .deliveries
            .iter()
            .map(|(d, stage)| {
                (
                    d.seq,
                    *stage,
                    d.message.expires_at,
                    d.message.payload.clone(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                (
                    3,
                    DeliveryStage::Sent(PacketId::new(12).unwrap()),
                    Some(Time::from_millis(4_000)),
                    Bytes::from_static(b"in flight")
                ),
                (
                    4,
                    DeliveryStage::Queued,
                    None,
                    Bytes::from_static(b"queued")
                ),
            ]
        );
        assert_eq!(back.incoming_qos2, [5, 6]);
        assert_eq!(back.record.subscriptions, session.record.subscriptions);
        let nothing = encode_handed_over(None, 0).unwrap();
        assert!(decode_handed_over(&mstr("x"), nothing).unwrap().0.is_none());
    }
}
