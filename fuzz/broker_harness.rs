// The broker harness: arbitrary bytes drive the broker core's connection handling the way the
// network runtime does (several connections, each with its own read buffer and `Decoder`, the
// core's `handle_packet`, `handle_decode_error`, `poll_transmit`, timers, lost connections). It
// is `include!`d by the libFuzzer target (`fuzz/fuzz_targets/broker.rs`) and by the corpus
// replay test (`crates/tern-core/tests/fuzz_broker_corpus.rs`), so CI on stable runs exactly
// the fuzzer's checks.
//
// The input is a script. Its first byte picks how many connections there are (1 to 4); then
// each step starts with a byte whose low two bits pick a connection and whose next two bits
// pick an operation:
// - 0: feed the next `n` bytes (`n` = the following byte) to the connection, as a socket read;
// - 1: let `100 ms x` the following byte pass and run the broker's timers;
// - 2: the socket is lost (if open), then a new connection opens in its place;
// - 3: feed a well-formed CONNECT (MQTT 5 if bit 4 is set, else 3.1.1), so that inputs reach
//   the connected phase without the fuzzer having to find one.
// It checks that nothing panics, that every packet the broker queues encodes at the
// connection's protocol level and decodes again, that a closed connection gets nothing more,
// and that the broker's connection count matches the open sockets.

use bytes::{Bytes, BytesMut};
use tern_codec::{Connect, ConnectProperties, Decoder, MqttString, Packet, ProtocolVersion};
use tern_core::{Broker, Config, ConnectionId, Limits, Time, Transmit};

/// Small limits, so that every limit is within reach of short inputs.
fn fuzz_config() -> Config {
    Config {
        limits: Limits {
            packet_size_max_bytes: 4096,
            receive_maximum: 8,
            inflight_count_max: 8,
            queued_count_max: 16,
            queued_bytes_max: 4096,
            inflight_bytes_max: 2048,
            outbox_qos0_count_max: 16,
            outbox_qos0_bytes_max: 2048,
            memory_max_bytes: 8192,
            topic_alias_max: 4,
            subscriptions_per_session_max: 8,
            topic_length_max_bytes: 64,
            topic_levels_max: 8,
            connect_timeout_millis: 1000,
            publish_rate_per_client_max: 64,
            stall_timeout_millis: 1000,
            ..Limits::default()
        },
        assigned_id_prefix: "fuzz-".to_owned(),
        persistence: true,
        ..Config::default()
    }
}

/// One simulated socket.
struct Socket {
    id: ConnectionId,
    decoder: Decoder,
    read_buf: BytesMut,
    /// The broker asked to close it (or decoding failed): no more input is fed.
    closed: bool,
}

struct Harness {
    broker: Broker,
    sockets: Vec<Socket>,
    now: Time,
    next_id: u64,
}

impl Harness {
    fn new(connections: usize) -> Self {
        let now = Time::from_millis(0);
        let mut harness = Self {
            broker: Broker::new(fuzz_config(), now),
            sockets: Vec::new(),
            now,
            next_id: 1,
        };
        for _ in 0..connections {
            let socket = harness.open();
            harness.sockets.push(socket);
        }
        harness
    }

    fn open(&mut self) -> Socket {
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        self.broker.connection_opened(id, self.now);
        let max = self.broker.config().limits.packet_size_max_bytes;
        Socket {
            id,
            decoder: Decoder::new(ProtocolVersion::V311, max),
            read_buf: BytesMut::new(),
            closed: false,
        }
    }

    fn feed(&mut self, index: usize, bytes: &[u8]) {
        let socket = &mut self.sockets[index];
        if socket.closed {
            return;
        }
        socket.read_buf.extend_from_slice(bytes);
        loop {
            match socket.decoder.decode(&mut socket.read_buf) {
                Ok(Some(packet)) => self.broker.handle_packet(socket.id, packet, self.now),
                Ok(None) => break,
                Err(error) => {
                    if let Some(level) = tern_codec::connect_protocol_level(&socket.read_buf) {
                        self.broker.hint_protocol_level(socket.id, level);
                    }
                    self.broker.handle_decode_error(socket.id, error, self.now);
                    socket.read_buf.clear();
                    break;
                }
            }
        }
    }

    fn replace(&mut self, index: usize) {
        let id = self.sockets[index].id;
        self.broker.connection_lost(id, self.now);
        let socket = self.open();
        self.sockets[index] = socket;
    }

    fn advance(&mut self, tenths: u8) {
        self.now = self.now.plus_millis(u64::from(tenths) * 100);
        self.broker.handle_timeout(self.now);
    }

    /// Writes out what the broker queued, as the runtime does after each batch.
    fn flush(&mut self) {
        let mut woken = Vec::new();
        self.broker.take_woken(&mut woken);
        while self.broker.poll_event().is_some() {}
        while self.broker.poll_store_op().is_some() {}
        for index in 0..self.sockets.len() {
            let id = self.sockets[index].id;
            let version = self
                .broker
                .protocol_version(id)
                .unwrap_or(ProtocolVersion::V311);
            while let Some(transmit) = self.broker.poll_transmit(id) {
                assert!(
                    !self.sockets[index].closed,
                    "output queued for a connection after it was closed: {transmit:?}"
                );
                match transmit {
                    Transmit::Packet(packet) => check_encodes(&packet, version),
                    Transmit::Publish(publish) => {
                        check_encodes(&Packet::Publish(publish.to_publish()), version);
                    }
                    Transmit::Close => {
                        // The runtime flushes, closes the socket and tells the core.
                        self.sockets[index].closed = true;
                        self.broker.connection_lost(id, self.now);
                    }
                }
            }
        }
        assert_eq!(
            self.broker.held_bytes(),
            self.broker.held_bytes_recounted(),
            "the running total of bytes held for receivers drifted"
        );
        let open = self.sockets.iter().filter(|s| !s.closed).count();
        assert!(
            self.broker.connection_count() >= open,
            "the broker lost track of an open connection"
        );
    }
}

/// A packet the broker sends must encode at the connection's level and decode back.
fn check_encodes(packet: &Packet, version: ProtocolVersion) {
    let mut buf = BytesMut::new();
    if let Err(error) = packet.encode(version, &mut buf) {
        panic!("broker queued a packet that does not encode at {version:?}: {error}: {packet:?}");
    }
    let mut decoder = Decoder::new(version, u32::MAX);
    match decoder.decode(&mut buf) {
        Ok(Some(_)) if buf.is_empty() => {}
        other => panic!("broker's {packet:?} does not decode back at {version:?}: {other:?}"),
    }
}

fn well_formed_connect(index: usize, v5: bool) -> Vec<u8> {
    let version = if v5 {
        ProtocolVersion::V5
    } else {
        ProtocolVersion::V311
    };
    let client_id = ["a", "b", "c", "d"][index % 4];
    let connect = Connect {
        protocol_version: version,
        clean_start: false,
        keep_alive: 5,
        client_id: MqttString::from_bytes(Bytes::from_static(client_id.as_bytes()))
            .unwrap_or_default(),
        will: None,
        username: None,
        password: None,
        properties: ConnectProperties {
            session_expiry_interval: v5.then_some(60),
            ..ConnectProperties::default()
        },
    };
    let mut buf = BytesMut::new();
    let _ = Packet::Connect(Box::new(connect)).encode(version, &mut buf);
    buf.to_vec()
}

/// Runs one input through the broker.
pub fn check_broker_input(data: &[u8]) {
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let connections = usize::from(first % 4) + 1;
    let mut harness = Harness::new(connections);
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let index = usize::from(op & 3) % connections;
        match (op >> 2) & 3 {
            0 => {
                let Some((&len, tail)) = rest.split_first() else {
                    break;
                };
                let take = usize::from(len).min(tail.len());
                harness.feed(index, &tail[..take]);
                rest = &tail[take..];
            }
            1 => {
                let Some((&tenths, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                harness.advance(tenths);
            }
            2 => harness.replace(index),
            _ => {
                let connect = well_formed_connect(index, op & 0x10 != 0);
                harness.feed(index, &connect);
            }
        }
        harness.flush();
    }
    // Every connection goes away: the broker must end up with none.
    for index in 0..harness.sockets.len() {
        let id = harness.sockets[index].id;
        harness.broker.connection_lost(id, harness.now);
        harness.sockets[index].closed = true;
    }
    harness.flush();
    assert_eq!(harness.broker.connection_count(), 0, "connections left over");
}
