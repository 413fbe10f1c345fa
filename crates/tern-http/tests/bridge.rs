//! The bridge end to end, without the binary: a signed publish over HTTP reaches an MQTT
//! subscriber through the broker thread and is answered with a response signed for it; a
//! refused request is counted by its code.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::io::Read;
use std::time::Instant;

use tern_auth::{KeyRing, MasterKey};
use tern_http::signing::{self, RequestParts};
use tern_http::{HttpConfig, HttpListener};

mod common;
use common::{exchange, subscriber, WAIT};

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
    let running = common::start(HttpConfig::new(vec![listener], dir.path().to_owned()));
    let (bridge, http, mqtt) = (&running.bridge, running.http, running.mqtt);
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
}
