//! A bare MQTT connection for the generator: CONNECT/SUBSCRIBE handshakes and packet I/O on
//! top of `tern-codec`, with no client library in between.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_codec::{
    Ack, Connect, ConnectProperties, Decoder, MqttString, Packet, PacketId, ProtocolVersion,
    Publish, QoS, Subscribe, SubscribeProperties, Subscription, SubscriptionList,
    SubscriptionOptions, TopicFilter, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// How long a handshake (CONNACK, SUBACK) may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer of a busy connection; idle ones read into whatever a handshake needed.
pub(crate) const READ_BUFFER_BYTES: usize = 64 * 1024;

/// One connection to the broker under test.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) stream: TcpStream,
    pub(crate) version: ProtocolVersion,
    pub(crate) decoder: Decoder,
    pub(crate) rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
    /// QoS 1/2 publishes the broker accepts unacknowledged (its Receive Maximum).
    pub(crate) receive_maximum: u16,
}

impl Conn {
    /// Opens a TCP connection and completes CONNECT/CONNACK with a clean session; an MQTT 5
    /// connection announces `topic_alias_maximum` (0: the broker may send no topic alias).
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        client_id: &str,
        version: ProtocolVersion,
        keep_alive: u16,
        topic_alias_maximum: u16,
    ) -> Result<Self, BenchError> {
        Self::connect_as(
            host,
            port,
            client_id,
            version,
            keep_alive,
            topic_alias_maximum,
            None,
        )
        .await
    }

    /// [`Conn::connect`] with a user name and password.
    pub(crate) async fn connect_as(
        host: &str,
        port: u16,
        client_id: &str,
        version: ProtocolVersion,
        keep_alive: u16,
        topic_alias_maximum: u16,
        login: Option<(&str, &str)>,
    ) -> Result<Self, BenchError> {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| BenchError::io(format!("connecting to {host}:{port}"), e))?;
        let _ = stream.set_nodelay(true);
        let mut conn = Self {
            stream,
            version,
            decoder: Decoder::new(version, tern_codec::PACKET_SIZE_MAX),
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            receive_maximum: u16::MAX,
        };
        let client_id = MqttString::new(client_id)
            .map_err(|e| BenchError::Options(format!("client identifier: {e}")))?;
        let username = login
            .map(|(user, _)| MqttString::new(user))
            .transpose()
            .map_err(|e| BenchError::Options(format!("user name: {e}")))?;
        let password = login.map(|(_, password)| Bytes::copy_from_slice(password.as_bytes()));
        let properties = ConnectProperties {
            // Take whatever the broker sends; the generator acknowledges at once.
            receive_maximum: Some(u16::MAX),
            // Receivers read publisher and sequence from the payload, so an alias standing
            // for the topic changes nothing they count.
            topic_alias_maximum: Some(topic_alias_maximum).filter(|&max| max > 0),
            ..ConnectProperties::default()
        };
        conn.send(&Packet::Connect(Box::new(Connect {
            protocol_version: version,
            clean_start: true,
            keep_alive,
            properties,
            client_id,
            will: None,
            username,
            password,
        })))?;
        conn.flush().await?;
        match conn.handshake_packet("CONNACK").await? {
            Packet::ConnAck(ack) if ack.reason_code.is_success() => {
                if let Some(max) = ack.properties.receive_maximum {
                    conn.receive_maximum = max.max(1);
                }
                Ok(conn)
            }
            Packet::ConnAck(ack) => Err(BenchError::Protocol(format!(
                "connection refused: {:?}",
                ack.reason_code
            ))),
            other => Err(BenchError::Protocol(format!(
                "expected CONNACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Subscribes to one filter and waits for a SUBACK that grants it.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), BenchError> {
        self.send_subscribe(filter, qos)?;
        self.flush().await?;
        self.await_suback().await
    }

    /// Queues a SUBSCRIBE (packet identifier 1) without waiting for the answer.
    pub(crate) fn send_subscribe(&mut self, filter: &str, qos: QoS) -> Result<(), BenchError> {
        let filter = MqttString::new(filter)
            .ok()
            .and_then(|f| TopicFilter::new(f).ok())
            .ok_or_else(|| BenchError::Options(format!("bad topic filter {filter:?}")))?;
        let subscription = Subscription {
            filter,
            options: SubscriptionOptions::qos(qos),
        };
        self.send(&Packet::Subscribe(Subscribe {
            packet_id: packet_id(1),
            properties: SubscribeProperties::default(),
            subscriptions: SubscriptionList::new([&subscription]),
        }))
    }

    /// Waits for the SUBACK of [`Conn::send_subscribe`]; anything before it is an error.
    pub(crate) async fn await_suback(&mut self) -> Result<(), BenchError> {
        match self.handshake_packet("SUBACK").await? {
            Packet::SubAck(ack) if ack.reason_codes.iter().all(|c| c.is_success()) => Ok(()),
            Packet::SubAck(ack) => Err(BenchError::Protocol(format!(
                "subscription refused: {:?}",
                ack.reason_codes
            ))),
            other => Err(BenchError::Protocol(format!(
                "expected SUBACK, got {:?}",
                other.packet_type()
            ))),
        }
    }

    /// Encodes a packet into the write buffer.
    pub(crate) fn send(&mut self, packet: &Packet) -> Result<(), BenchError> {
        packet
            .encode(self.version, &mut self.wbuf)
            .map_err(|e| BenchError::Protocol(format!("cannot encode: {e}")))
    }

    /// Writes out the write buffer.
    pub(crate) async fn flush(&mut self) -> Result<(), BenchError> {
        if !self.wbuf.is_empty() {
            self.stream
                .write_all(&self.wbuf)
                .await
                .map_err(|e| BenchError::io("writing", e))?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// The next complete packet already in the read buffer.
    pub(crate) fn decode(&mut self) -> Result<Option<Packet>, BenchError> {
        self.decoder
            .decode(&mut self.rbuf)
            .map_err(|e| BenchError::Protocol(format!("undecodable packet from broker: {e}")))
    }

    /// Reads more bytes; an end of stream is an error (the broker closed the connection).
    pub(crate) async fn read(&mut self) -> Result<(), BenchError> {
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(READ_BUFFER_BYTES);
        }
        match self.stream.read_buf(&mut self.rbuf).await {
            Ok(0) => Err(BenchError::Protocol("broker closed the connection".into())),
            Ok(_) => Ok(()),
            Err(e) => Err(BenchError::io("reading", e)),
        }
    }

    async fn handshake_packet(&mut self, what: &str) -> Result<Packet, BenchError> {
        let wait = async {
            loop {
                if let Some(packet) = self.decode()? {
                    return Ok(packet);
                }
                // A handshake answer is small: read it into a small buffer.
                if self.rbuf.capacity() == self.rbuf.len() {
                    self.rbuf.reserve(256);
                }
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) => {
                        return Err(BenchError::Protocol(format!(
                            "broker closed the connection before {what}"
                        )))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(BenchError::io(format!("waiting for {what}"), e)),
                }
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, wait)
            .await
            .map_err(|_| BenchError::Timeout(format!("no {what} within {HANDSHAKE_TIMEOUT:?}")))?
    }
}

/// A packet identifier from a counter that skips 0.
pub(crate) fn packet_id(value: u16) -> PacketId {
    match PacketId::new(value) {
        Some(id) => id,
        // 0 is never a packet identifier: wrap to 1.
        None => packet_id(1),
    }
}

/// The packet identifier after `id`, wrapping from 65,535 to 1.
pub(crate) fn next_packet_id(id: u16) -> u16 {
    if id == u16::MAX {
        1
    } else {
        id + 1
    }
}

/// An acknowledgement packet with no properties.
pub(crate) fn ack(id: PacketId) -> Ack {
    Ack::new(id)
}

/// A PUBLISH encoded once, then copied and patched per message: the codec does the encoding,
/// the hot loop only stamps the packet identifier and the payload header.
#[derive(Debug)]
pub(crate) struct PublishTemplate {
    bytes: Vec<u8>,
    packet_id_at: Option<usize>,
    payload_at: usize,
}

impl PublishTemplate {
    pub(crate) fn new(
        topic: &str,
        qos: QoS,
        retain: bool,
        payload_bytes: usize,
        version: ProtocolVersion,
    ) -> Result<Self, BenchError> {
        let topic_name = MqttString::new(topic)
            .ok()
            .and_then(|t| TopicName::new(t).ok())
            .ok_or_else(|| BenchError::Options(format!("bad topic {topic:?}")))?;
        let mut publish = Publish::new(topic_name, Bytes::from(vec![0u8; payload_bytes]));
        publish.qos = qos;
        publish.retain = retain;
        publish.packet_id = (qos != QoS::AtMostOnce).then(|| packet_id(1));
        let mut buf = BytesMut::new();
        Packet::Publish(publish)
            .encode(version, &mut buf)
            .map_err(|e| BenchError::Protocol(format!("cannot encode PUBLISH: {e}")))?;
        let frame = tern_codec::parse_frame(&buf, tern_codec::PACKET_SIZE_MAX)
            .ok()
            .flatten()
            .ok_or_else(|| BenchError::Protocol("codec produced an unframed PUBLISH".into()))?;
        let packet_id_at = (qos != QoS::AtMostOnce).then_some(frame.header_len + 2 + topic.len());
        Ok(Self {
            payload_at: buf.len() - payload_bytes,
            packet_id_at,
            bytes: buf.to_vec(),
        })
    }

    /// Appends one message to `out`.
    pub(crate) fn put(
        &self,
        out: &mut BytesMut,
        id: Option<PacketId>,
        stamp: crate::payload::Stamp,
    ) {
        let start = out.len();
        out.extend_from_slice(&self.bytes);
        let packet = &mut out[start..];
        if let (Some(at), Some(id)) = (self.packet_id_at, id) {
            packet[at..at + 2].copy_from_slice(&id.get().to_be_bytes());
        }
        crate::payload::write(&mut packet[self.payload_at..], stamp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{self, Stamp};

    #[test]
    fn a_patched_template_decodes_to_the_stamped_message() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let template = PublishTemplate::new("a/b/c", qos, true, 32, version).unwrap();
                let mut out = BytesMut::new();
                let stamp = Stamp {
                    publisher: 3,
                    seq: 99,
                    sent_nanos: 5,
                };
                template.put(&mut out, Some(packet_id(777)), stamp);
                let mut decoder = Decoder::new(version, u32::MAX);
                let Some(Packet::Publish(p)) = decoder.decode(&mut out).unwrap() else {
                    panic!("not a PUBLISH");
                };
                assert_eq!(p.topic.as_str(), "a/b/c");
                assert!(p.retain);
                assert_eq!(p.qos, qos);
                let expected_id = (qos != QoS::AtMostOnce).then(|| packet_id(777));
                assert_eq!(p.packet_id, expected_id);
                assert_eq!(p.payload.len(), 32);
                assert_eq!(payload::read(&p.payload), Some(stamp));
            }
        }
    }
}
