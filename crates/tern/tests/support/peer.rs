//! A test client on a cluster node that publishes and receives at QoS 1 and 2, answering every
//! acknowledgement it owes, and waits long enough for the NATS servers to elect a new leader.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tern_codec::{Packet, QoS, ReasonCode};

use super::mqtt::{ack, publish, RawClient};

/// How long a publisher may wait for an acknowledgement: through a leader's election.
pub(crate) const ELECTION_WAIT: Duration = Duration::from_secs(30);

/// A client that sends and receives at QoS 1 and 2, answering every acknowledgement it owes.
pub(crate) struct Peer {
    pub(crate) client: RawClient,
    /// Payloads received, a QoS 2 message once (a resend under an identifier still held is
    /// the same message).
    pub(crate) got: Vec<String>,
    held: HashSet<u16>,
}

impl Peer {
    pub(crate) fn connect(port: u16, id: &str) -> Self {
        let (client, connack) = RawClient::connect(port, id, true, 0).expect("connects");
        assert_eq!(connack.reason_code, ReasonCode::Success);
        Self {
            client,
            got: Vec::new(),
            held: HashSet::new(),
        }
    }

    /// Answers `packet` if it is a message or a release; returns whether it was.
    pub(crate) fn take(&mut self, packet: &Packet) -> bool {
        match packet {
            Packet::Publish(p) => {
                let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                match (p.qos, p.packet_id) {
                    (QoS::ExactlyOnce, Some(id)) => {
                        if self.held.insert(id.get()) {
                            self.got.push(payload);
                        }
                        self.client.send(&Packet::PubRec(ack(id))).unwrap();
                    }
                    (_, Some(id)) => {
                        self.got.push(payload);
                        self.client.send(&Packet::PubAck(ack(id))).unwrap();
                    }
                    (_, None) => self.got.push(payload),
                }
                true
            }
            Packet::PubRel(rel) => {
                self.held.remove(&rel.packet_id.get());
                self.client
                    .send(&Packet::PubComp(ack(rel.packet_id)))
                    .unwrap();
                true
            }
            _ => false,
        }
    }

    /// Receives until `last` has come, within [`ELECTION_WAIT`].
    pub(crate) fn receive_through(&mut self, last: &str) {
        let deadline = Instant::now() + ELECTION_WAIT;
        while !self.got.iter().any(|p| p == last) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "{last:?} never came; got {:?}", self.got);
            if let Some(packet) = self.client.recv(left).unwrap() {
                assert!(self.take(&packet), "unexpected {packet:?}");
            }
        }
    }

    /// Publishes `payload` to `topic` at `qos` (1 or 2) and completes the exchange; every
    /// acknowledgement must say Success.
    pub(crate) fn send(&mut self, topic: &str, payload: &str, qos: QoS) {
        let id = self.client.fresh_id();
        let packet = publish(topic, payload.into(), qos, false, Some(id));
        self.client.send(&packet).unwrap();
        let expected = |packet: &Packet| match packet {
            Packet::PubAck(a) | Packet::PubRec(a) | Packet::PubComp(a) if a.packet_id == id => {
                assert_eq!(a.reason_code, ReasonCode::Success, "{packet:?}");
                true
            }
            _ => false,
        };
        let next = |peer: &mut Self| {
            let packet = peer.client.recv(ELECTION_WAIT).unwrap();
            packet.unwrap_or_else(|| panic!("no acknowledgement of {payload:?}"))
        };
        let first = next(self);
        assert!(
            expected(&first),
            "expected an acknowledgement, got {first:?}"
        );
        if qos == QoS::ExactlyOnce {
            self.client.send(&Packet::PubRel(ack(id))).unwrap();
            let complete = next(self);
            assert!(
                matches!(complete, Packet::PubComp(_)) && expected(&complete),
                "expected the PUBCOMP, got {complete:?}"
            );
        }
    }
}

/// The payloads of `got` that start with `prefix`.
pub(crate) fn with_prefix<'a>(got: &'a [String], prefix: &str) -> Vec<&'a str> {
    got.iter()
        .map(String::as_str)
        .filter(|p| p.starts_with(prefix))
        .collect()
}

/// `count` payloads `<prefix><n>`, in order.
pub(crate) fn numbered(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}{n}")).collect()
}
