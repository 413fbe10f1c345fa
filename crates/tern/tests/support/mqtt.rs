//! A small blocking MQTT 5 client over `TcpStream`, built on `tern-codec`, for tests that need
//! to see every acknowledgement (and its absence) exactly.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tern_codec::{
    Ack, ConnAck, Connect, ConnectProperties, Decoder, MqttString, Packet, PacketId,
    ProtocolVersion, Publish, PublishProperties, QoS, Subscribe, SubscribeProperties, Subscription,
    SubscriptionList, SubscriptionOptions, TopicFilter, TopicName,
};

/// One connection to the broker.
pub(crate) struct RawClient {
    stream: TcpStream,
    decoder: Decoder,
    buf: BytesMut,
    next_id: u16,
    version: ProtocolVersion,
}

fn other(message: impl Into<String>) -> io::Error {
    io::Error::other(message.into())
}

pub(crate) fn pid(id: u16) -> PacketId {
    PacketId::new(id).expect("packet identifiers in tests are not 0")
}

impl RawClient {
    /// Connects with MQTT 5; `expiry` is the Session Expiry Interval (0: ends with the
    /// connection). Returns the client and its CONNACK.
    pub(crate) fn connect(
        port: u16,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
    ) -> io::Result<(Self, ConnAck)> {
        Self::connect_as(port, ProtocolVersion::V5, client_id, clean_start, expiry)
    }

    /// [`RawClient::connect`] at protocol level `version` (the expiry is MQTT 5's only).
    pub(crate) fn connect_as(
        port: u16,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
        expiry: u32,
    ) -> io::Result<(Self, ConnAck)> {
        let v5 = version == ProtocolVersion::V5;
        let connect = Connect {
            protocol_version: version,
            clean_start,
            keep_alive: 0,
            properties: ConnectProperties {
                session_expiry_interval: v5.then_some(expiry),
                ..ConnectProperties::default()
            },
            client_id: MqttString::new(client_id).map_err(|e| other(e.to_string()))?,
            will: None,
            username: None,
            password: None,
        };
        Self::connect_with(port, connect)
    }

    /// Sends `connect` on a new connection and returns the client and its CONNACK.
    pub(crate) fn connect_with(port: u16, connect: Connect) -> io::Result<(Self, ConnAck)> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        let version = connect.protocol_version;
        let mut client = Self {
            stream,
            decoder: Decoder::new(version, 16 * 1024 * 1024),
            buf: BytesMut::with_capacity(64 * 1024),
            next_id: 1,
            version,
        };
        client.send(&Packet::Connect(Box::new(connect)))?;
        match client.recv(Duration::from_secs(10))? {
            Some(Packet::ConnAck(connack)) => Ok((client, *connack)),
            other_packet => Err(other(format!("expected CONNACK, got {other_packet:?}"))),
        }
    }

    pub(crate) fn send(&mut self, packet: &Packet) -> io::Result<()> {
        let mut out = BytesMut::new();
        packet
            .encode(self.version, &mut out)
            .map_err(|e| other(e.to_string()))?;
        self.stream.write_all(&out)
    }

    /// Sends `packets` in as few writes as the socket takes (one buffer), as a client that
    /// publishes in bulk does.
    pub(crate) fn send_all(&mut self, packets: impl IntoIterator<Item = Packet>) -> io::Result<()> {
        let mut out = BytesMut::new();
        for packet in packets {
            packet
                .encode(self.version, &mut out)
                .map_err(|e| other(e.to_string()))?;
        }
        self.stream.write_all(&out)
    }

    /// The next packet, or `None` if none arrives within `timeout`. A closed connection is an
    /// error.
    pub(crate) fn recv(&mut self, timeout: Duration) -> io::Result<Option<Packet>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(packet) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| other(e.to_string()))?
            {
                return Ok(Some(packet));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next packet already read from the socket, if a whole one has been: never waits.
    pub(crate) fn recv_buffered(&mut self) -> io::Result<Option<Packet>> {
        self.decoder
            .decode(&mut self.buf)
            .map_err(|e| other(e.to_string()))
    }

    /// PUBLISH packets until `count` have arrived (each acknowledged), or none arrives for
    /// 10 s.
    pub(crate) fn receive_acked(&mut self, count: usize) -> io::Result<Vec<Publish>> {
        let mut got = Vec::new();
        while got.len() < count {
            match self.recv(Duration::from_secs(10))? {
                Some(Packet::Publish(p)) => {
                    if let Some(id) = p.packet_id {
                        self.send(&Packet::PubAck(ack(id)))?;
                    }
                    got.push(p);
                }
                Some(_) => {}
                None => break,
            }
        }
        Ok(got)
    }

    /// A fresh packet identifier (1..=65535, cycling).
    pub(crate) fn fresh_id(&mut self) -> PacketId {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        pid(id)
    }

    /// Subscribes to `filter` and waits for the SUBACK.
    pub(crate) fn subscribe(&mut self, filter: &str, qos: QoS) -> io::Result<()> {
        let packet_id = self.fresh_id();
        let filter = MqttString::new(filter)
            .ok()
            .and_then(|f| TopicFilter::new(f).ok())
            .ok_or_else(|| other("bad filter"))?;
        let subscription = Subscription {
            filter,
            options: SubscriptionOptions::qos(qos),
        };
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            subscriptions: SubscriptionList::new([&subscription]),
        }))?;
        loop {
            match self.recv(Duration::from_secs(10))? {
                Some(Packet::SubAck(ack)) if ack.packet_id == packet_id => return Ok(()),
                Some(_) => continue,
                None => return Err(other("no SUBACK")),
            }
        }
    }

    pub(crate) fn disconnect(mut self) -> io::Result<()> {
        self.send(&Packet::Disconnect(tern_codec::Disconnect::new(
            tern_codec::ReasonCode::NORMAL_DISCONNECTION,
        )))
    }
}

/// A PUBLISH of `payload` to `topic`.
pub(crate) fn publish(
    topic: &str,
    payload: Vec<u8>,
    qos: QoS,
    retain: bool,
    packet_id: Option<PacketId>,
) -> Packet {
    let topic = MqttString::new(topic)
        .ok()
        .and_then(|t| TopicName::new(t).ok())
        .expect("test topics are valid");
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain,
        topic,
        packet_id,
        properties: PublishProperties::default(),
        payload: Bytes::from(payload),
    })
}

pub(crate) fn ack(packet_id: PacketId) -> Ack {
    Ack::new(packet_id)
}
