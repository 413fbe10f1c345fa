//! One connection to the broker: opening it (transport, CONNECT, CONNACK within a deadline) and
//! the per-connection state that dies with it (write buffer, keep-alive clocks, topic aliases in
//! both directions, the broker's limits from CONNACK).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tern_codec::{
    ConnAck, Connect, Decoder, Packet, ProtocolVersion, Publish, QoS, ReasonCode, TopicName,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::error::ConnectError;
use crate::transport::{BoxStream, Transport};

/// An open link whose CONNACK accepted the connection.
pub(crate) struct Link {
    pub(crate) stream: BoxStream,
    /// Bytes read after the CONNACK, not yet decoded.
    pub(crate) read_buf: BytesMut,
    pub(crate) decoder: Decoder,
    pub(crate) connack: ConnAck,
}

/// Opens the transport, sends CONNECT and waits for an accepting CONNACK, all within `timeout`.
pub(crate) async fn open(
    transport: Arc<dyn Transport>,
    connect: Connect,
    max_packet_size: u32,
    timeout: Duration,
) -> Result<Link, ConnectError> {
    let version = connect.protocol_version;
    let handshake = async move {
        let mut stream = transport.connect().await?;
        let mut buf = BytesMut::new();
        Packet::Connect(Box::new(connect))
            .encode(version, &mut buf)
            .map_err(|e| ConnectError::Protocol(e.to_string()))?;
        stream.write_all(&buf).await?;
        stream.flush().await?;
        let mut decoder = Decoder::new(version, max_packet_size);
        let mut read_buf = BytesMut::with_capacity(8 * 1024);
        loop {
            let decoded = decoder
                .decode(&mut read_buf)
                .map_err(|e| ConnectError::Protocol(e.to_string()))?;
            match decoded {
                Some(Packet::ConnAck(connack)) if connack.reason_code.is_success() => {
                    return Ok(Link {
                        stream,
                        read_buf,
                        decoder,
                        connack: *connack,
                    });
                }
                Some(Packet::ConnAck(connack)) => {
                    return Err(ConnectError::Refused(connack.reason_code))
                }
                Some(other) => {
                    return Err(ConnectError::Protocol(format!(
                        "expected CONNACK, got {:?}",
                        other.packet_type()
                    )))
                }
                None => {}
            }
            if stream.read_buf(&mut read_buf).await? == 0 {
                return Err(ConnectError::Transport(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| ConnectError::Timeout)?
}

/// State of one connection, reset by the next.
#[derive(Debug)]
pub(crate) struct Wire {
    pub(crate) version: ProtocolVersion,
    pub(crate) write_buf: BytesMut,
    /// The broker's Receive Maximum: QoS 1/2 publishes we may have in flight.
    pub(crate) window: usize,
    /// The broker's Maximum Packet Size.
    max_packet_size: Option<u32>,
    /// The broker's Maximum QoS.
    pub(crate) max_qos: QoS,
    /// Aliases we may assign (the smaller of ours and the broker's Topic Alias Maximum).
    alias_limit: u16,
    aliases_out: HashMap<TopicName, u16>,
    /// Aliases the broker has set towards us, and the most it may use.
    aliases_in: HashMap<u16, TopicName>,
    alias_in_limit: u16,
    keep_alive: Duration,
    ping_timeout: Duration,
    last_sent: Instant,
    last_received: Instant,
    ping_sent: Option<Instant>,
}

/// Why a packet from the broker ends the connection.
pub(crate) type WireError = (ReasonCode, &'static str);

impl Wire {
    pub(crate) fn new(
        version: ProtocolVersion,
        connack: &ConnAck,
        keep_alive: Duration,
        ping_timeout: Duration,
        alias_out_wanted: u16,
        alias_in_limit: u16,
    ) -> Self {
        let props = &connack.properties;
        let keep_alive = match props.server_keep_alive {
            Some(secs) => Duration::from_secs(u64::from(secs)),
            None => keep_alive,
        };
        let now = Instant::now();
        Self {
            version,
            write_buf: BytesMut::with_capacity(8 * 1024),
            window: props
                .receive_maximum
                .map_or(usize::from(u16::MAX), usize::from),
            max_packet_size: props.maximum_packet_size,
            max_qos: props.maximum_qos.unwrap_or(QoS::ExactlyOnce),
            alias_limit: alias_out_wanted.min(props.topic_alias_maximum.unwrap_or(0)),
            aliases_out: HashMap::new(),
            aliases_in: HashMap::new(),
            alias_in_limit,
            keep_alive,
            ping_timeout: ping_timeout.min(keep_alive.max(Duration::from_millis(1))),
            last_sent: now,
            last_received: now,
            ping_sent: None,
        }
    }

    /// Encodes a packet into the write buffer.
    pub(crate) fn write(&mut self, packet: &Packet) {
        // Every packet the client builds is encodable; a failure would be a bug in the client.
        let result = packet.encode(self.version, &mut self.write_buf);
        debug_assert!(result.is_ok(), "client packet failed to encode: {result:?}");
    }

    /// Encodes a PUBLISH, replacing its topic by an alias where one is set or can be set.
    /// Returns `false`, writing nothing, if it exceeds the broker's Maximum Packet Size.
    pub(crate) fn write_publish(&mut self, publish: &Publish, dup: bool) -> bool {
        let mut publish = publish.clone();
        publish.dup = dup && publish.qos != QoS::AtMostOnce;
        if self.version == ProtocolVersion::V5 && self.alias_limit > 0 {
            if let Some(&alias) = self.aliases_out.get(&publish.topic) {
                publish.properties.topic_alias = Some(alias);
                publish.topic = TopicName::empty();
            } else if let Ok(next) = u16::try_from(self.aliases_out.len() + 1) {
                if next <= self.alias_limit {
                    self.aliases_out.insert(publish.topic.clone(), next);
                    publish.properties.topic_alias = Some(next);
                }
            }
        }
        let packet = Packet::Publish(publish);
        if let Some(max) = self.max_packet_size {
            match packet.encoded_len(self.version) {
                Ok(len) if len <= max as usize => {}
                _ => return false,
            }
        }
        self.write(&packet);
        true
    }

    /// Whether a message this size would exceed the broker's Maximum Packet Size.
    pub(crate) fn too_large(&self, publish: &Publish) -> bool {
        let mut sized = publish.clone();
        if sized.qos != QoS::AtMostOnce {
            // Sized with a placeholder: the identifier is assigned when it is sent.
            sized.packet_id = tern_codec::PacketId::new(1);
        }
        match (
            self.max_packet_size,
            Packet::Publish(sized).encoded_len(self.version),
        ) {
            (Some(max), Ok(len)) => len > max as usize,
            (_, Err(_)) => true,
            (None, Ok(_)) => false,
        }
    }

    /// Resolves an incoming topic alias (MQTT-3.3.2-12 and following), in place.
    pub(crate) fn resolve_alias(&mut self, publish: &mut Publish) -> Result<(), WireError> {
        let Some(alias) = publish.properties.topic_alias.take() else {
            if publish.topic.as_str().is_empty() {
                return Err((ReasonCode::ProtocolError, "PUBLISH without topic or alias"));
            }
            return Ok(());
        };
        if alias == 0 || alias > self.alias_in_limit {
            return Err((ReasonCode::TopicAliasInvalid, "topic alias out of range"));
        }
        if publish.topic.as_str().is_empty() {
            match self.aliases_in.get(&alias) {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err((ReasonCode::ProtocolError, "unknown topic alias")),
            }
        } else {
            self.aliases_in.insert(alias, publish.topic.clone());
        }
        Ok(())
    }

    pub(crate) fn note_sent(&mut self) {
        self.last_sent = Instant::now();
    }

    /// Any packet from the broker shows the link is alive.
    pub(crate) fn note_received(&mut self) {
        self.last_received = Instant::now();
        self.ping_sent = None;
    }

    /// When the keep-alive timer next needs attention; `None` when keep-alive is off.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        if self.keep_alive.is_zero() {
            return None;
        }
        Some(match self.ping_sent {
            Some(sent) => sent + self.ping_timeout,
            None => self.last_sent.min(self.last_received) + self.keep_alive,
        })
    }

    /// Called at the deadline: `Err` if the PINGREQ went unanswered, otherwise sends one.
    pub(crate) fn on_deadline(&mut self) -> Result<(), WireError> {
        if let Some(sent) = self.ping_sent {
            if sent.elapsed() >= self.ping_timeout {
                return Err((ReasonCode::KeepAliveTimeout, "no answer to PINGREQ"));
            }
            return Ok(());
        }
        self.write(&Packet::PingReq);
        self.ping_sent = Some(Instant::now());
        Ok(())
    }

    /// How long a write may block before the link counts as dead.
    pub(crate) fn write_timeout(&self) -> Duration {
        if self.keep_alive.is_zero() {
            Duration::from_secs(60)
        } else {
            self.keep_alive + self.ping_timeout
        }
    }
}
