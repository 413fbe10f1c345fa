//! What the bridge's end-to-end tests share: a broker with the bridge as its edge, on
//! loopback ports of its own, and raw HTTP and MQTT clients.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // Tests fail loudly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tern_http::{HttpBridge, HttpConfig};
use tern_net::{AdmissionLimits, ListenerConfig, Server, ServerConfig};

pub(crate) const WAIT: Duration = Duration::from_secs(10);

fn server_config() -> ServerConfig {
    ServerConfig {
        listeners: vec![ListenerConfig::tcp("127.0.0.1:0".parse().unwrap())],
        admission: AdmissionLimits::default(),
        core: tern_core::Config::default(),
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

/// A broker running with the bridge: stopped when dropped.
pub(crate) struct Running {
    pub(crate) bridge: HttpBridge,
    pub(crate) http: SocketAddr,
    pub(crate) mqtt: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the bridge with `config` and a broker (MQTT on a free loopback port) around it.
pub(crate) fn start(config: HttpConfig) -> Running {
    let (bridge, edge) = HttpBridge::start(config, Vec::new()).unwrap();
    let http = bridge.local_addrs()[0];
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut server = Server::bind(server_config()).await.unwrap();
            server.add_edge(edge);
            addr_tx.send(server.local_addrs()[0]).unwrap();
            server
                .run(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let mqtt = addr_rx.recv_timeout(WAIT).unwrap();
    Running {
        bridge,
        http,
        mqtt,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Sends one request and reads the whole answer (the connection is closed after it).
pub(crate) fn exchange(
    address: SocketAddr,
    head: &str,
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(answer[..split].to_vec()).unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    (status, headers, answer[split + 4..].to_vec())
}

/// Waits for an MQTT PUBLISH on a raw 3.1.1 connection subscribed to `topic`.
pub(crate) fn subscriber(address: SocketAddr, topic: &str) -> TcpStream {
    let mut stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut connect = vec![
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b's',
    ];
    connect[1] = (connect.len() - 2) as u8;
    stream.write_all(&connect).unwrap();
    let mut connack = [0; 4];
    stream.read_exact(&mut connack).unwrap();
    let mut subscribe = vec![0x82, 0, 0, 1, 0, topic.len() as u8];
    subscribe.extend_from_slice(topic.as_bytes());
    subscribe.push(0);
    subscribe[1] = (subscribe.len() - 2) as u8;
    stream.write_all(&subscribe).unwrap();
    let mut suback = [0; 5];
    stream.read_exact(&mut suback).unwrap();
    stream
}
