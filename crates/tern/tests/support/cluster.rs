//! Tern nodes joined through NATS, and what the cluster tests do with them.

use std::time::{Duration, Instant};

use tern_codec::{Packet, QoS, ReasonCode};

use super::mqtt::{publish, RawClient};
use super::nats::NatsServer;
use super::Tern;

/// How long a test waits for anything that should come.
pub(crate) const WAIT: Duration = Duration::from_secs(15);

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

/// [`node`], with `extra` lines in its `[cluster]` section.
pub(crate) fn node_with(urls: &[String], id: &str, replicas: usize, extra: &str) -> Tern {
    let nats = urls
        .iter()
        .map(|url| format!("{url:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    Tern::start_with_config(&format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\n[cluster]\nnats = [{nats}]\nnode_id = \
         \"{id}\"\nreplicas = {replicas}\n{extra}\n"
    ))
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
                    client
                        .send(&Packet::PubAck(tern_codec::Ack::new(id)))
                        .unwrap();
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
