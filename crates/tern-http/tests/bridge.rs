//! The bridge end to end, without the binary: a signed publish over HTTP reaches an MQTT
//! subscriber through the broker thread and is answered with a response signed for it; a
//! refused request is counted by its code.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tern_auth::{KeyRing, MasterKey};
use tern_http::signing::{self, RequestParts};
use tern_http::{HttpBridge, HttpConfig, HttpListener};
use tern_net::{AdmissionLimits, ListenerConfig, Server, ServerConfig};

const WAIT: Duration = Duration::from_secs(10);

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

/// Sends one request and reads the whole answer (the connection is closed after it).
fn exchange(address: SocketAddr, head: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
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
fn subscriber(address: SocketAddr, topic: &str) -> TcpStream {
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

#[test]
fn a_signed_publish_reaches_an_mqtt_subscriber_and_a_bad_one_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::random();
    let mut ring = KeyRing::default();
    let secret = ring.add("d:dev1", None, Vec::new(), 0).unwrap();
    tern_http::keys::write(dir.path(), &ring, &master).unwrap();
    std::fs::write(dir.path().join("http.key"), master.to_bytes()).unwrap();
    let listener = HttpListener {
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: None,
    };
    let (bridge, edge) =
        HttpBridge::start(HttpConfig::new(vec![listener], dir.path().to_owned())).unwrap();
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
    let mut sub = subscriber(mqtt, "s/dev1/t");

    let path = "/v1/pub/s/dev1/t";
    let query = "qos=1";
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    let headers: [(&str, &[u8]); 3] = [
        ("Tern-Key", b"d:dev1"),
        ("Tern-Time", time.as_bytes()),
        ("Tern-Nonce", b"c:1"),
    ];
    let canonical = signing::canonical_request(&RequestParts {
        method: "POST",
        path,
        query,
        headers: &headers,
        body: b"21.5",
    })
    .unwrap();
    let signature = signing::sign(&secret, canonical.as_bytes());
    let head = |signature: &str| {
        format!(
            "POST {path}?{query} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 4\r\n\
             Tern-Key: d:dev1\r\nTern-Time: {time}\r\nTern-Nonce: c:1\r\nTern-Signature: {signature}\r\n\r\n"
        )
    };
    let (status, answer_headers, body) =
        exchange(http, &head(&signing::signature_header(&signature)), b"21.5");
    assert_eq!((status, &body[..]), (200, &br#"{"qos":1,"matched":1}"#[..]));
    let header = |name: &str| {
        answer_headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let signed = signing::response_string(
        200,
        &signing::hex(&signature),
        &body,
        header("tern-time").parse().unwrap(),
    );
    assert_eq!(
        header("tern-response-signature"),
        signing::signature_header(&signing::sign(&secret, signed.as_bytes()))
    );
    let mut publish = [0; 2 + 2 + 8 + 4];
    sub.read_exact(&mut publish).unwrap();
    assert_eq!(&publish[4..12], b"s/dev1/t");
    assert_eq!(&publish[12..], b"21.5");

    // A signature of another secret: refused and counted.
    let forged = signing::signature_header(&signing::sign(&[7; 32], canonical.as_bytes()));
    let (status, _, _) = exchange(http, &head(&forged), b"21.5");
    assert_eq!(status, 401);
    let deadline = Instant::now() + WAIT;
    while bridge.refused_counts().get("signature_invalid") != Some(&1) {
        assert!(Instant::now() < deadline, "{:?}", bridge.refused_counts());
        std::thread::yield_now();
    }
    stop.send(()).unwrap();
    thread.join().unwrap();
}
