//! The byte layout of a session, its deliveries and retained messages as they leave the broker:
//! the store's records (format version 4; see docs/design/store-format.md), which a cluster
//! node also uses to hand a session to another node.
//!
//! Plain bytes in, plain bytes out: no I/O. Fixed fields are big-endian integers. Everything that carries MQTT content (a message's
//! topic, properties and payload; a will) is kept as an MQTT 5 packet encoded by `tern-codec`:
//! that wire format is a published standard, so it cannot drift when the codec's Rust types
//! change, and every property round-trips without a second, hand-kept list of them.
//! Times are wall-clock milliseconds since the Unix epoch (0 = none), because the core's
//! `Time` restarts at zero with every process.

use crate::auth::SessionOwner;
use crate::session::{Delivery, PendingWill};
use crate::store::{DeliveryStage, SessionRecord};
use crate::tree::SubscriptionInfo;
use crate::types::{Message, SharedMessage, Time};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_codec::{
    parse_frame, Connect, ConnectProperties, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, QoS, RetainHandling, SubscriptionIds, SubscriptionOptions, TopicFilter,
    PACKET_SIZE_MAX,
};

/// Why a record could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RecordError(String);

impl RecordError {
    /// A record that is not what its layout says: `what` is wrong with it.
    pub fn corrupt(what: impl Into<String>) -> Self {
        Self(what.into())
    }
}

fn corrupt(what: impl Into<String>) -> RecordError {
    RecordError::corrupt(what)
}

/// Converts between the core's monotonic `Time` and wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// Wall-clock milliseconds since the Unix epoch at the core's `Time` zero.
    pub epoch_unix_ms: u64,
}

impl WallClock {
    fn wall_of(self, time: Option<Time>) -> u64 {
        time.map_or(0, |t| {
            self.epoch_unix_ms.saturating_add(t.as_millis()).max(1)
        })
    }

    /// A deadline that passed before this process started becomes `Time` zero: due at once.
    fn time_of(self, wall: u64) -> Option<Time> {
        (wall != 0).then(|| Time::from_millis(wall.saturating_sub(self.epoch_unix_ms)))
    }
}

struct Reader {
    bytes: Bytes,
}

impl Reader {
    fn need(&self, n: usize) -> Result<(), RecordError> {
        if self.bytes.remaining() < n {
            return Err(corrupt("record ends early"));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        self.need(1)?;
        Ok(self.bytes.get_u8())
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        self.need(2)?;
        Ok(self.bytes.get_u16())
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        self.need(4)?;
        Ok(self.bytes.get_u32())
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        self.need(8)?;
        Ok(self.bytes.get_u64())
    }
    fn take(&mut self, n: usize) -> Result<Bytes, RecordError> {
        self.need(n)?;
        Ok(self.bytes.split_to(n))
    }
    /// An embedded MQTT 5 packet, complete with its fixed header.
    fn packet(&mut self) -> Result<Packet, RecordError> {
        let frame = parse_frame(&self.bytes, PACKET_SIZE_MAX)
            .map_err(|e| corrupt(format!("embedded packet: {e}")))?
            .ok_or_else(|| corrupt("embedded packet ends early"))?;
        let mut whole = self.take(frame.total_len)?;
        let first = whole[0];
        whole.advance(frame.header_len);
        // A CONNECT decodes by its own protocol level, anything else as MQTT 5.
        Packet::decode(first, whole, ProtocolVersion::V5)
            .map_err(|e| corrupt(format!("embedded packet: {e}")))
    }
    fn qos(&mut self) -> Result<QoS, RecordError> {
        let byte = self.u8()?;
        QoS::from_u8(byte).ok_or_else(|| corrupt(format!("QoS {byte}")))
    }
    fn finish(&self) -> Result<(), RecordError> {
        if self.bytes.has_remaining() {
            return Err(corrupt("bytes left over after the record"));
        }
        Ok(())
    }
}

fn put_packet(buf: &mut BytesMut, packet: &Packet) -> Result<(), RecordError> {
    packet
        .encode(ProtocolVersion::V5, buf)
        .map_err(|e| corrupt(format!("cannot encode: {e}")))
}

/// A message: `[id u64][expires_at u64][qos u8][retain u8]` then a PUBLISH carrying topic,
/// properties, `subscription_ids` and payload.
fn put_message(
    buf: &mut BytesMut,
    clock: WallClock,
    message: &Message,
    subscription_ids: &SubscriptionIds,
) -> Result<(), RecordError> {
    buf.put_u64(message.id);
    buf.put_u64(clock.wall_of(message.expires_at));
    buf.put_u8(message.qos as u8);
    buf.put_u8(u8::from(message.retain));
    let mut properties = message.properties.clone();
    properties.subscription_identifiers = subscription_ids.clone();
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: message.topic.clone(),
        packet_id: None,
        properties,
        payload: message.payload.clone(),
    };
    put_packet(buf, &Packet::Publish(publish))
}

fn read_message(
    r: &mut Reader,
    clock: WallClock,
) -> Result<(Message, SubscriptionIds), RecordError> {
    let id = r.u64()?;
    let expires_at = clock.time_of(r.u64()?);
    let qos = r.qos()?;
    let retain = r.u8()? != 0;
    let Packet::Publish(mut publish) = r.packet()? else {
        return Err(corrupt("message is not a PUBLISH"));
    };
    let subscription_ids = std::mem::take(&mut publish.properties.subscription_identifiers);
    let message = Message {
        id,
        topic: publish.topic,
        payload: publish.payload,
        qos,
        retain,
        properties: publish.properties,
        expires_at,
        origin: None,
    };
    Ok((message, subscription_ids))
}

/// A retained message record.
pub fn encode_retained(clock: WallClock, message: &Message) -> Result<Bytes, RecordError> {
    let mut buf = BytesMut::with_capacity(64 + message.payload.len());
    put_message(&mut buf, clock, message, &SubscriptionIds::default())?;
    Ok(buf.freeze())
}

/// A retained message back from [`encode_retained`].
pub fn decode_retained(clock: WallClock, bytes: Bytes) -> Result<Message, RecordError> {
    let mut r = Reader { bytes };
    let (message, _) = read_message(&mut r, clock)?;
    r.finish()?;
    Ok(message)
}

/// A delivery: `[stage: 3 bytes]` (see [`encode_stage`]) `[qos u8][retain u8]` then the
/// message with the delivery's subscription identifiers. A later change of stage is written
/// to the `stages` partition, which takes precedence.
pub fn encode_delivery(
    clock: WallClock,
    delivery: &Delivery,
    stage: DeliveryStage,
) -> Result<Bytes, RecordError> {
    let mut buf = BytesMut::with_capacity(72 + delivery.message.payload.len());
    buf.put_slice(&encode_stage(stage));
    buf.put_u8(delivery.qos as u8);
    buf.put_u8(u8::from(delivery.retain));
    put_message(
        &mut buf,
        clock,
        &delivery.message,
        &delivery.subscription_ids,
    )?;
    Ok(buf.freeze())
}

/// A delivery, numbered `seq`, back from [`encode_delivery`], with its stage.
pub fn decode_delivery(
    clock: WallClock,
    seq: u64,
    bytes: Bytes,
) -> Result<(Delivery, DeliveryStage), RecordError> {
    let mut r = Reader { bytes };
    let stage = decode_stage(&r.take(3)?)?;
    let qos = r.qos()?;
    let retain = r.u8()? != 0;
    let (message, subscription_ids) = read_message(&mut r, clock)?;
    r.finish()?;
    let message = SharedMessage::new(message);
    let delivery = Delivery {
        seq,
        charge: message.charge(),
        message,
        qos,
        retain,
        subscription_ids,
    };
    Ok((delivery, stage))
}

/// Where a delivery stands: `[tag u8][packet id u16]`, tag 0 = queued (id 0), 1 = sent,
/// 2 = released, 3 = a dead letter (id 0).
pub fn encode_stage(stage: DeliveryStage) -> [u8; 3] {
    let (tag, id) = match stage {
        DeliveryStage::Queued => (0u8, 0),
        DeliveryStage::Sent(id) => (1u8, id.get()),
        DeliveryStage::Released(id) => (2u8, id.get()),
        DeliveryStage::Dead => (3u8, 0),
    };
    let [hi, lo] = id.to_be_bytes();
    [tag, hi, lo]
}

/// A stage back from [`encode_stage`].
pub fn decode_stage(bytes: &[u8]) -> Result<DeliveryStage, RecordError> {
    let &[tag, hi, lo] = bytes else {
        return Err(corrupt("delivery stage is not 3 bytes"));
    };
    let id = u16::from_be_bytes([hi, lo]);
    match tag {
        0 => return Ok(DeliveryStage::Queued),
        3 => return Ok(DeliveryStage::Dead),
        _ => {}
    }
    let id = PacketId::new(id).ok_or_else(|| corrupt("delivery stage with packet identifier 0"))?;
    match tag {
        1 => Ok(DeliveryStage::Sent(id)),
        2 => Ok(DeliveryStage::Released(id)),
        _ => Err(corrupt(format!("delivery stage tag {tag}"))),
    }
}

fn options_byte(options: SubscriptionOptions) -> u8 {
    options.qos as u8
        | u8::from(options.no_local) << 2
        | u8::from(options.retain_as_published) << 3
        | (options.retain_handling as u8) << 4
}

fn options_from_byte(byte: u8) -> Result<SubscriptionOptions, RecordError> {
    let qos = QoS::from_u8(byte & 0x03).ok_or_else(|| corrupt("subscription QoS 3"))?;
    let retain_handling = match (byte >> 4) & 0x03 {
        0 => RetainHandling::SendAtSubscribe,
        1 => RetainHandling::SendIfNew,
        2 => RetainHandling::DoNotSend,
        _ => return Err(corrupt("retain handling 3")),
    };
    Ok(SubscriptionOptions {
        qos,
        no_local: byte & 0x04 != 0,
        retain_as_published: byte & 0x08 != 0,
        retain_handling,
    })
}

/// A session: `[expiry_secs u32][expires_at u64][will_at u64][subscriptions u32]`, each
/// subscription `[filter len u16][filter][options u8][has id u8][id u32]`, then `[has will u8]`
/// and, with a will, `[delay u32]` and a CONNECT carrying it; then the owner (`[has owner u8]`
/// and with one `[len u16][owner]`) and `[next seq u64]`.
pub fn encode_session(clock: WallClock, record: &SessionRecord) -> Result<Bytes, RecordError> {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_u32(record.expiry_secs);
    buf.put_u64(clock.wall_of(record.expires_at));
    buf.put_u64(clock.wall_of(record.will_at));
    let count =
        u32::try_from(record.subscriptions.len()).map_err(|_| corrupt("too many subscriptions"))?;
    buf.put_u32(count);
    for (filter, info) in &record.subscriptions {
        let bytes = filter.as_str().as_bytes();
        let len = u16::try_from(bytes.len()).map_err(|_| corrupt("topic filter too long"))?;
        buf.put_u16(len);
        buf.put_slice(bytes);
        buf.put_u8(options_byte(info.options));
        buf.put_u8(u8::from(info.identifier.is_some()));
        buf.put_u32(info.identifier.unwrap_or(0));
    }
    match &record.will {
        None => buf.put_u8(0),
        Some(pending) => {
            buf.put_u8(1);
            buf.put_u32(pending.delay_secs);
            let connect = Connect {
                protocol_version: ProtocolVersion::V5,
                clean_start: false,
                keep_alive: 0,
                properties: ConnectProperties::default(),
                client_id: record.client_id.clone(),
                will: Some(pending.will.clone()),
                username: None,
                password: None,
            };
            put_packet(&mut buf, &Packet::Connect(Box::new(connect)))?;
        }
    }
    match record.owner.as_stored() {
        None => buf.put_u8(0),
        Some(owner) => {
            buf.put_u8(1);
            let len = u16::try_from(owner.len()).map_err(|_| corrupt("session owner too long"))?;
            buf.put_u16(len);
            buf.put_slice(owner.as_bytes());
        }
    }
    buf.put_u64(record.next_seq);
    Ok(buf.freeze())
}

/// Which layout a session record has: format version 1 records end after the will and name no
/// owner; versions 2 and 3 end after the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionLayout {
    /// Format version 1: no owner (read as [`SessionOwner::unknown`]).
    WithoutOwner,
    /// Format versions 2 and 3: no next sequence number (read as 0).
    WithOwner,
    /// This format: the owner and the next sequence number.
    Current,
}

/// The session of `client_id` back from [`encode_session`], as laid out by `layout`.
pub fn decode_session(
    clock: WallClock,
    client_id: MqttString,
    bytes: Bytes,
    layout: SessionLayout,
) -> Result<SessionRecord, RecordError> {
    let mut r = Reader { bytes };
    let expiry_secs = r.u32()?;
    let expires_at = clock.time_of(r.u64()?);
    let will_at = clock.time_of(r.u64()?);
    let count = r.u32()?;
    let mut subscriptions = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let filter = MqttString::from_bytes(r.take(len)?)
            .map_err(|e| corrupt(format!("topic filter: {e}")))
            .and_then(|s| TopicFilter::new(s).map_err(|e| corrupt(format!("topic filter: {e}"))))?;
        let options = options_from_byte(r.u8()?)?;
        let has_id = r.u8()? != 0;
        let id = r.u32()?;
        // A `$tree/` filter gets its tree view again when the broker indexes it at restore.
        let info = SubscriptionInfo {
            options,
            identifier: has_id.then_some(id),
            tree_view: None,
        };
        subscriptions.push((filter, info));
    }
    let will = match r.u8()? {
        0 => None,
        _ => {
            let delay_secs = r.u32()?;
            let Packet::Connect(connect) = r.packet()? else {
                return Err(corrupt("will is not in a CONNECT"));
            };
            let will = connect
                .will
                .ok_or_else(|| corrupt("CONNECT without a will"))?;
            Some(PendingWill { will, delay_secs })
        }
    };
    let owner = match layout {
        SessionLayout::WithoutOwner => SessionOwner::unknown(),
        SessionLayout::WithOwner | SessionLayout::Current => match r.u8()? {
            0 => SessionOwner::unverified(),
            _ => {
                let len = usize::from(r.u16()?);
                let owner = std::str::from_utf8(&r.take(len)?)
                    .map_err(|_| corrupt("session owner is not UTF-8"))?
                    .to_owned();
                SessionOwner::from_stored(Some(&owner))
            }
        },
    };
    let next_seq = match layout {
        SessionLayout::Current => r.u64()?,
        SessionLayout::WithoutOwner | SessionLayout::WithOwner => 0,
    };
    r.finish()?;
    Ok(SessionRecord {
        client_id,
        owner,
        expiry_secs,
        subscriptions,
        will,
        expires_at,
        will_at,
        next_seq,
    })
}
