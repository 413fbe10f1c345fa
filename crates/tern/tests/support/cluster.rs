//! Tern nodes joined through NATS, and what the cluster tests do with them.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tern_codec::{
    Ack, Connect, ConnectProperties, MqttString, Packet, ProtocolVersion, QoS, ReasonCode, Will,
    WillProperties,
};

use super::cli::{self, Running};
use super::mqtt::{publish, RawClient};
use super::nats::{NatsCluster, NatsServer};
use super::Tern;

/// How long a test waits for anything that should come.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// Once `node` has logged that NATS is out of reach, it refuses new connections with Server
/// unavailable (3.1.1: return code 3) and closes them, logging each refusal with its reason
/// (strict partition mode).
pub(crate) fn refuses_while_nats_is_out_of_reach(node: &Tern) {
    assert!(
        node.wait_for_log("NATS unreachable", WAIT),
        "the loss is logged"
    );
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let (mut refused, connack) =
            RawClient::connect_as(node.port, version, "late", true, 0).unwrap();
        assert_eq!(
            connack.reason_code,
            ReasonCode::ServerUnavailable,
            "{version:?}"
        );
        assert!(refused.recv(WAIT).is_err(), "closed after the refusal");
    }
    assert!(
        node.wait_for_log("this node cannot reach the cluster", WAIT),
        "each refusal is logged with its reason"
    );
}

/// A node joined to the NATS servers at `urls`.
pub(crate) fn node(urls: &[String], id: &str, replicas: usize) -> Tern {
    node_with(urls, id, replicas, "")
}

/// Nodes `n1`, `n2` and `n3` on `nats`.
pub(crate) fn three_nodes(nats: &NatsServer) -> (Tern, Tern, Tern) {
    let urls = [nats.url()];
    (
        node(&urls, "n1", 1),
        node(&urls, "n2", 1),
        node(&urls, "n3", 1),
    )
}

/// Nodes `n1`, `n2` and `n3`, each given every server of `cluster` and keeping three replicas
/// of the stream and buckets, with `extra` lines in their `[cluster]` sections.
pub(crate) fn replicated_nodes(cluster: &NatsCluster, extra: &str) -> (Tern, Tern, Tern) {
    let urls = cluster.urls();
    (
        node_with(&urls, "n1", 3, extra),
        node_with(&urls, "n2", 3, extra),
        node_with(&urls, "n3", 3, extra),
    )
}

/// [`node`], with `extra` lines in its `[cluster]` section.
pub(crate) fn node_with(urls: &[String], id: &str, replicas: usize, extra: &str) -> Tern {
    node_with_env(urls, id, replicas, extra, &[])
}

/// [`node_with`], with `env` added to the node's environment.
pub(crate) fn node_with_env(
    urls: &[String],
    id: &str,
    replicas: usize,
    extra: &str,
    env: &[(&str, &str)],
) -> Tern {
    let nats = urls
        .iter()
        .map(|url| format!("{url:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[cluster]\nnats = [{nats}]\nnode_id = \
         \"{id}\"\nreplicas = {replicas}\n{extra}\n"
    );
    Tern::start_with_config_env(&config, env)
}

pub(crate) fn client(node: &Tern, id: &str) -> RawClient {
    let (client, connack) = RawClient::connect(node.port, id, true, 0).expect("connects");
    assert_eq!(connack.reason_code, ReasonCode::Success);
    client
}

/// Publishes at `qos`; at QoS 1 waits for the PUBACK, which must say Success.
pub(crate) fn send(client: &mut RawClient, topic: &str, payload: &str, qos: QoS) {
    let packet_id = (qos != QoS::AtMostOnce).then(|| client.fresh_id());
    client
        .send(&publish(
            topic,
            payload.as_bytes().to_vec(),
            qos,
            false,
            packet_id,
        ))
        .expect("publishes");
    let Some(packet_id) = packet_id else {
        return;
    };
    match client.recv(WAIT).expect("connected") {
        Some(Packet::PubAck(ack)) if ack.packet_id == packet_id => {
            assert_eq!(ack.reason_code, ReasonCode::Success, "{topic:?}");
        }
        other => panic!("expected the PUBACK for {topic:?}, got {other:?}"),
    }
}

/// A message as a subscriber saw it.
pub(crate) type Seen = (String, String, QoS);

/// Receives (and acknowledges) until `done` says enough, or [`WAIT`] passes.
pub(crate) fn receive_until(
    client: &mut RawClient,
    mut done: impl FnMut(&[Seen]) -> bool,
) -> Vec<Seen> {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    while !done(&seen) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only got {seen:#?}");
        match client.recv(left).expect("connected") {
            Some(Packet::Publish(publish)) => {
                if let Some(id) = publish.packet_id {
                    client.send(&Packet::PubAck(Ack::new(id))).unwrap();
                }
                let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
                seen.push((publish.topic.as_str().to_owned(), payload, publish.qos));
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {}
        }
    }
    seen
}

/// An MQTT 5 CONNECT for a session that outlives its connection (ten minutes), taking at most
/// `receive_maximum` QoS 1 messages at a time.
pub(crate) fn persistent(client_id: &str, clean_start: bool, receive_maximum: u16) -> Connect {
    Connect {
        protocol_version: ProtocolVersion::V5,
        clean_start,
        keep_alive: 0,
        properties: ConnectProperties {
            session_expiry_interval: Some(600),
            receive_maximum: Some(receive_maximum),
            ..ConnectProperties::default()
        },
        client_id: MqttString::new(client_id).unwrap(),
        will: None,
        username: None,
        password: None,
    }
}

/// `connect` with a QoS 1 will "gone" to `will/<client id>`, published at once.
pub(crate) fn with_will(mut connect: Connect) -> Connect {
    connect.will = Some(Will {
        topic: format!("will/{}", connect.client_id.as_str())
            .parse()
            .unwrap(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    connect
}

/// Connects `connect` to the node on `port`; the CONNACK must say Success.
pub(crate) fn join(port: u16, connect: Connect) -> (RawClient, bool) {
    let (client, connack) = RawClient::connect_with(port, connect).unwrap();
    assert_eq!(connack.reason_code, ReasonCode::Success);
    (client, connack.session_present)
}

/// A PUBLISH's payload as a number, and whether it is a resend (DUP).
pub(crate) fn numbered(packet: &Packet) -> Option<(u32, bool, Option<u16>)> {
    let Packet::Publish(publish) = packet else {
        return None;
    };
    let n = std::str::from_utf8(&publish.payload).ok()?.parse().ok()?;
    Some((n, publish.dup, publish.packet_id.map(|id| id.get())))
}

/// Acknowledges `packet`, a numbered QoS 1 PUBLISH; returns its number, DUP flag and packet
/// identifier.
pub(crate) fn acknowledge(client: &mut RawClient, packet: &Packet) -> (u32, bool, u16) {
    let (n, dup, packet_id) = numbered(packet).expect("a numbered PUBLISH");
    let packet_id = packet_id.expect("QoS 1");
    let ack = Ack::new(tern_codec::PacketId::new(packet_id).unwrap());
    client.send(&Packet::PubAck(ack)).unwrap();
    (n, dup, packet_id)
}

/// mosquitto_sub (MQTT 5, with its debug lines) on the node on `port`, subscribed to
/// `filters` at `qos`, once it reports the SUBACK: the subscriptions stand (and NATS has them)
/// from there. Returns it and the line that says what was granted.
pub(crate) fn mosquitto_sub(port: u16, qos: QoS, filters: &[&str]) -> (Running, String) {
    let port = port.to_string();
    let qos = (qos as u8).to_string();
    let mut command = std::process::Command::new("stdbuf");
    // Line-buffered: mosquitto_sub writes its debug lines through stdio, which a pipe would
    // hold back.
    command
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &port])
        .args(["-V", "mqttv5", "-q", &qos, "-d", "-v"]);
    for filter in filters {
        command.args(["-t", filter]);
    }
    let mut sub = cli::spawn(&mut command);
    let deadline = Instant::now() + WAIT;
    loop {
        let line = sub.line(WAIT).expect("mosquitto_sub runs");
        if line.contains("SUBACK") {
            let granted = sub.line(WAIT).expect("what was granted");
            return (sub, granted);
        }
        assert!(Instant::now() < deadline, "no SUBACK");
    }
}

/// Publishes `payload` to `topic` at `qos` with mosquitto_pub (MQTT 5) on the node on `port`.
pub(crate) fn mosquitto_pub(port: u16, qos: QoS, topic: &str, payload: &str) {
    let (port, qos) = (port.to_string(), (qos as u8).to_string());
    let status = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", &qos])
        .args(["-t", topic, "-m", payload])
        .status()
        .expect("mosquitto_pub runs");
    assert!(status.success(), "mosquitto_pub to {topic:?}");
}

/// Expects `sub` (from [`mosquitto_sub`]) to print next, as `topic payload`, one message on
/// each of `topics` in order, the n-th with payload `m<n>`.
pub(crate) fn expect_printed(sub: &mut Running, topics: &[&str]) {
    let mut got = Vec::new();
    while got.len() < topics.len() {
        let line = sub.line(WAIT).expect("a message");
        // Debug lines say what the client sent and received; the messages are `topic payload`.
        if let Some((topic, payload)) = line.rsplit_once(' ') {
            if payload.starts_with('m') && !line.starts_with("Client ") {
                got.push((topic.to_owned(), payload.to_owned()));
            }
        }
    }
    let expected: Vec<(String, String)> = topics
        .iter()
        .enumerate()
        .map(|(n, t)| ((*t).to_owned(), format!("m{n}")))
        .collect();
    assert_eq!(got, expected);
}
