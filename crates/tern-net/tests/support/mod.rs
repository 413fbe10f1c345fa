//! A blocking MQTT 5 client on the codec and packet builders, for the runtime's tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // Each test uses a part.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_codec::{
    Connect, ConnectProperties, Decoder, MqttString, Packet, PacketId, ProtocolVersion, Publish,
    QoS, Subscribe, SubscribeProperties, Subscription, SubscriptionList, SubscriptionOptions,
    TopicFilter, TopicName,
};
use tern_net::{AdmissionLimits, ListenerConfig, Server, ServerConfig};

pub(crate) mod tls;

/// How long a test waits for anything.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// MQTT 5 over a blocking byte stream: plain TCP unless said otherwise.
pub(crate) struct Client<S = TcpStream> {
    stream: S,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    pub(crate) fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self::over(stream)
    }

    /// Sends `packet` one byte per write, each its own TCP segment (no Nagle), so the broker
    /// sees it in as many reads as the timing allows, most of them partial.
    /// The socket, for tests that look at it directly.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub(crate) fn send_bytewise(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(ProtocolVersion::V5, &mut out).unwrap();
        self.stream.set_nodelay(true).unwrap();
        for byte in out.iter() {
            self.stream.write_all(std::slice::from_ref(byte)).unwrap();
        }
    }
}

impl<S: Read + Write> Client<S> {
    /// A client on a connection already open (and through its handshakes).
    pub(crate) fn over(stream: S) -> Self {
        Self {
            stream,
            decoder: Decoder::new(ProtocolVersion::V5, u32::MAX),
            buf: BytesMut::new(),
        }
    }

    pub(crate) fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(ProtocolVersion::V5, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
        self.stream.flush().unwrap();
    }

    /// Connects as an MQTT 3.1.1 client (`client_id`, clean session) and reads 3.1.1 from here
    /// on; returns the CONNACK.
    #[allow(dead_code)] // Not every test file uses it.
    pub(crate) fn connect_v311(&mut self, client_id: &str) -> Packet {
        let Packet::Connect(mut connect) = connect(client_id, None) else {
            unreachable!("connect() makes a CONNECT")
        };
        connect.protocol_version = ProtocolVersion::V311;
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .encode(ProtocolVersion::V311, &mut out)
            .unwrap();
        self.decoder = Decoder::new(ProtocolVersion::V311, u32::MAX);
        self.send_raw(&out);
        self.recv()
    }

    /// Writes `bytes` (packets already encoded) in one write.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next packet; panics if the connection closes or nothing comes within [`WAIT`].
    pub(crate) fn recv(&mut self) -> Packet {
        self.try_recv().expect("connection closed")
    }

    /// The next packet, or `None` once the broker has closed the connection.
    pub(crate) fn try_recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(packet);
            }
            let mut chunk = [0_u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(error) => panic!("no packet within {WAIT:?}: {error}"),
            }
        }
    }
}

pub(crate) fn connect(client_id: &str, username: Option<&str>) -> Packet {
    Packet::Connect(Box::new(Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: MqttString::new(client_id).unwrap(),
        will: None,
        username: username.map(|u| MqttString::new(u).unwrap()),
        password: username.map(|_| Bytes::from_static(b"pw")),
    }))
}

pub(crate) fn subscribe(filter: &str, packet_id: u16) -> Packet {
    let filter: TopicFilter = filter.parse().unwrap();
    let subscription = Subscription {
        filter,
        options: SubscriptionOptions::qos(QoS::AtLeastOnce),
    };
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(packet_id).unwrap(),
        properties: SubscribeProperties::default(),
        subscriptions: SubscriptionList::new(&[subscription]),
    })
}

/// A SUBSCRIBE to `filter` at QoS 0.
pub(crate) fn subscribe_qos0(filter: &str) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: SubscribeProperties::default(),
        subscriptions: SubscriptionList::new(&[Subscription {
            filter: filter.parse().unwrap(),
            options: SubscriptionOptions::qos(QoS::AtMostOnce),
        }]),
    })
}

/// A QoS 1 PUBLISH.
pub(crate) fn publish(topic: &str, payload: &'static [u8], packet_id: u16) -> Packet {
    let topic: TopicName = topic.parse().unwrap();
    let mut publish = Publish::new(topic, Bytes::from_static(payload));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = PacketId::new(packet_id);
    Packet::Publish(publish)
}

/// One plain listener on a free loopback port, no `$SYS`, no busy polling, a short shutdown.
pub(crate) fn loopback_config(core: tern_core::Config) -> ServerConfig {
    ServerConfig {
        listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse().unwrap())],
        admission: AdmissionLimits::default(),
        core,
        sys_interval: None,
        shutdown_grace: Duration::from_secs(1),
        listener_auth_profiles: Vec::new(),
        busy_poll: Duration::ZERO,
        direct_write_quiet_gap: tern_net::DIRECT_WRITE_QUIET_GAP,
        release_memory: None,
        write_stall_timeout: tern_net::WRITE_STALL_TIMEOUT,
        close_timeout: tern_net::CLOSE_TIMEOUT,
    }
}

/// A running server: its first listener's address, what stops it, and its thread.
pub(crate) struct RunningServer {
    pub(crate) addr: SocketAddr,
    /// Every listener's address, in configuration order.
    pub(crate) addrs: Vec<SocketAddr>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl RunningServer {
    /// Stops the server and waits for its thread.
    pub(crate) fn stop(self) {
        let _ = self.shutdown.send(());
        self.thread.join().unwrap();
    }
}

/// Binds a server with `config` on a runtime thread of its own, lets `setup` adjust it (the
/// authenticator, say), and runs it until stopped.
pub(crate) fn spawn_server<F>(config: ServerConfig, setup: F) -> RunningServer
where
    F: FnOnce(&mut Server) + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (shutdown, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = on_own_runtime(move || async move {
        let mut server = Server::bind(config).await.unwrap();
        setup(&mut server);
        addr_tx.send(server.local_addrs()).unwrap();
        server
            .run(async move {
                let _ = shutdown_rx.await;
            })
            .await
            .unwrap();
    });
    let addrs: Vec<SocketAddr> = addr_rx.recv_timeout(WAIT).unwrap();
    RunningServer {
        addr: addrs[0],
        addrs,
        shutdown,
        thread,
    }
}

/// A current-thread runtime on a thread of its own, running the future `serve` makes there
/// (a server's future stays on its thread).
pub(crate) fn on_own_runtime<F, Fut>(serve: F) -> std::thread::JoinHandle<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(serve());
    })
}
