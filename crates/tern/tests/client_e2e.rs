//! `tern-client` against the real `tern serve`: request/response in MQTT 5 and through the
//! 3.1.1 envelope (responses, handler errors, no responder, timeout), QoS 1/2 messages
//! persisted on disk surviving a restart of the client, the WebSocket transport, and `tern req`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use support::Tern;
use tern_client::request::HandlerError;
use tern_client::{
    Bytes, Client, ClientOptions, ProtocolVersion, QoS, RequestError, TcpTransport, Transport,
    WsTransport,
};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(id: &str, version: ProtocolVersion, transport: impl Transport) -> Client {
    let mut options = ClientOptions::new(id);
    options.version = version;
    let (client, _task) = Client::start(options, transport).unwrap();
    client.wait_connected(WAIT).await.unwrap();
    client
}

async fn request_response(version: ProtocolVersion) {
    let broker = Tern::start();
    let address = format!("127.0.0.1:{}", broker.port);
    let responder = connect("responder", version, TcpTransport::new(&address)).await;
    responder
        .serve("svc/upper", |request| async move {
            match std::str::from_utf8(&request.payload) {
                Ok(text) if !text.is_empty() => Ok(Bytes::from(text.to_uppercase())),
                _ => Err(HandlerError::new("bad-request", "empty or not UTF-8")),
            }
        })
        .await
        .unwrap();
    let requester = connect("requester", version, TcpTransport::new(&address)).await;

    let response = requester.request("svc/upper", "hello", WAIT).await.unwrap();
    assert_eq!(&response.payload[..], b"HELLO");
    // Concurrent requests are matched to their own responses by correlation data.
    let (a, b) = tokio::join!(
        requester.request("svc/upper", "a", WAIT),
        requester.request("svc/upper", "b", WAIT)
    );
    assert_eq!(
        (&a.unwrap().payload[..], &b.unwrap().payload[..]),
        (&b"A"[..], &b"B"[..])
    );

    let failure = requester.request("svc/upper", "", WAIT).await;
    assert_eq!(
        failure.unwrap_err(),
        RequestError::Remote {
            name: "bad-request".into(),
            message: "empty or not UTF-8".into()
        }
    );

    // A listener that never answers: the request times out.
    let _silent = requester
        .subscribe("svc/silent", QoS::AtLeastOnce)
        .await
        .unwrap();
    let timed_out = requester
        .request("svc/silent", "anyone?", Duration::from_millis(300))
        .await;
    assert_eq!(timed_out.unwrap_err(), RequestError::Timeout);

    let nobody = requester
        .request("svc/nobody", "anyone?", Duration::from_secs(2))
        .await;
    match version {
        // The broker's PUBACK 0x10 (No matching subscribers) says so at once.
        ProtocolVersion::V5 => assert_eq!(nobody.unwrap_err(), RequestError::NoResponder),
        // 3.1.1 has no reason codes: only the timeout tells.
        ProtocolVersion::V31 | ProtocolVersion::V311 => {
            assert_eq!(nobody.unwrap_err(), RequestError::Timeout)
        }
    }
}

#[tokio::test]
async fn request_response_mqtt5() {
    request_response(ProtocolVersion::V5).await;
}

#[tokio::test]
async fn request_response_mqtt311_envelope() {
    request_response(ProtocolVersion::V311).await;
}

#[tokio::test]
async fn persisted_messages_survive_a_client_restart() {
    let broker = Tern::start();
    let address = format!("127.0.0.1:{}", broker.port);
    let store = tempfile::tempdir().unwrap();
    let subscriber = connect(
        "persist-sub",
        ProtocolVersion::V5,
        TcpTransport::new(&address),
    )
    .await;
    let mut messages = subscriber
        .subscribe("persist/#", QoS::ExactlyOnce)
        .await
        .unwrap();

    // First run: the broker is unreachable (nothing listens on the closed port), so the
    // messages wait in the offline queue, persisted, when the process "ends".
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut options = ClientOptions::new("persist-pub");
    options.store_dir = Some(store.path().to_owned());
    options.clean_start = false;
    options.session_expiry_secs = 300;
    {
        let (client, task) =
            Client::start(options.clone(), TcpTransport::new(&dead_address)).unwrap();
        for (i, qos) in [QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce]
            .iter()
            .enumerate()
        {
            let mut message =
                tern_client::message(&format!("persist/{i}"), format!("m{i}")).unwrap();
            message.qos = *qos;
            drop(client.send(message).await.unwrap());
        }
        client.disconnect().await;
        task.await.unwrap();
    }
    let files = std::fs::read_dir(store.path()).unwrap().count();
    assert_eq!(files, 3, "each QoS 1/2 message is one file");

    // Second run, same store, broker reachable: the messages are sent, then forgotten.
    let (client, _task) = Client::start(options, TcpTransport::new(&address)).unwrap();
    for i in 0..3 {
        let message = tokio::time::timeout(WAIT, messages.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(message.topic.as_str(), format!("persist/{i}"));
        assert_eq!(&message.payload[..], format!("m{i}").as_bytes());
    }
    // Files go once acknowledged (PUBACK / PUBCOMP); poll for that with a deadline.
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::fs::read_dir(store.path()).unwrap().count() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "store not emptied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.disconnect().await;
}

#[tokio::test]
async fn websocket_transport() {
    let broker = Tern::start_with_config(
        "[[listener]]\nbind = \"127.0.0.1:0\"\nprotocol = \"ws\"\npath = \"/mqtt\"\n",
    );
    let url = format!("ws://127.0.0.1:{}/mqtt", broker.port);
    let client = connect(
        "ws-client",
        ProtocolVersion::V5,
        WsTransport::new(&url, None),
    )
    .await;
    let mut messages = tokio::time::timeout(WAIT, client.subscribe("ws/#", QoS::AtLeastOnce))
        .await
        .expect("SUBACK in time")
        .unwrap();
    let code = tokio::time::timeout(
        WAIT,
        client.publish("ws/x", QoS::ExactlyOnce, false, vec![7u8; 70_000]),
    )
    .await
    .expect("PUBCOMP in time")
    .unwrap();
    assert!(code.is_success());
    let message = tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(message.payload.len(), 70_000);
    client.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_req_prints_the_response() {
    let broker = Tern::start();
    let address = format!("127.0.0.1:{}", broker.port);
    let responder = connect(
        "cli-responder",
        ProtocolVersion::V5,
        TcpTransport::new(&address),
    )
    .await;
    responder
        .serve("cli/echo", |request| async move {
            let mut reply = b"echo: ".to_vec();
            reply.extend_from_slice(&request.payload);
            Ok(Bytes::from(reply))
        })
        .await
        .unwrap();
    let port = broker.port.to_string();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "req",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-t",
                "cli/echo",
                "-m",
                "ping",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout), "echo: ping\n");
}
