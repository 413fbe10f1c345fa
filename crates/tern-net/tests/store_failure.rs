//! A store that fails while the broker runs: nothing its failed batch carried is acknowledged,
//! everything acknowledged before is in batches the store applied, and the server stops with
//! the store's reason instead of going on without durability.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use support::{connect, loopback_config, on_own_runtime, Client, WAIT};
use tern_codec::{Packet, PacketId, Publish, QoS, ReasonCode, TopicName};
use tern_core::{MemoryStore, Snapshot, Store, StoreOp};
use tern_net::{NetError, Server};

/// Applies batches to memory until its `fail_at`-th, which fails (as a full disk would);
/// records the retained topics of the batches it applied.
#[derive(Debug)]
struct FailingStore {
    inner: MemoryStore,
    applies: usize,
    fail_at: usize,
    applied_topics: Arc<Mutex<Vec<String>>>,
}

impl Store for FailingStore {
    type Error = std::io::Error;

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), Self::Error> {
        self.applies += 1;
        if self.applies >= self.fail_at {
            return Err(std::io::Error::other("no space left on the test device"));
        }
        self.inner.apply(ops).map_err(std::io::Error::other)?;
        let mut applied = self.applied_topics.lock().unwrap();
        for op in ops {
            if let StoreOp::RetainedSet(message) = op {
                applied.push(message.topic.as_str().to_owned());
            }
        }
        Ok(())
    }

    fn load(&mut self) -> Result<Snapshot, Self::Error> {
        Ok(Snapshot::default())
    }
}

fn retained(topic: &str, packet_id: u16) -> Packet {
    let topic: TopicName = topic.parse().unwrap();
    let mut publish = Publish::new(topic, Bytes::from_static(b"kept?"));
    publish.qos = QoS::AtLeastOnce;
    publish.retain = true;
    publish.packet_id = PacketId::new(packet_id);
    Packet::Publish(publish)
}

#[test]
fn a_failing_store_stops_the_broker_and_nothing_unstored_is_acknowledged() {
    let applied_topics = Arc::new(Mutex::new(Vec::new()));
    let store = FailingStore {
        inner: MemoryStore::default(),
        applies: 0,
        fail_at: 4,
        applied_topics: Arc::clone(&applied_topics),
    };
    let (addr_tx, addr_rx) = mpsc::channel();
    let (result_tx, result_rx) = mpsc::channel();
    let server = on_own_runtime(move || async move {
        let config = loopback_config(tern_core::Config {
            persistence: true,
            ..tern_core::Config::default()
        });
        let server = Server::bind(config).await.unwrap().with_store(
            store,
            Snapshot::default(),
            Instant::now(),
        );
        addr_tx.send(server.local_addrs()[0]).unwrap();
        // Runs until the store fails: no shutdown signal is ever given.
        let result = server.run(std::future::pending()).await;
        result_tx.send(result).unwrap();
    });
    let addr = addr_rx.recv_timeout(WAIT).unwrap();

    let mut client = Client::open(addr);
    client.send(connect("writer", None));
    assert!(matches!(client.recv(), Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));
    // One retained QoS 1 message at a time, each waiting for its PUBACK: one batch each.
    let mut acknowledged = Vec::new();
    let mut ended_with = None;
    for n in 1..=20_u16 {
        let topic = format!("kept/{n}");
        client.send(retained(&topic, n));
        match client.try_recv() {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.packet_id.get(), n);
                // Kept as retained, though nobody subscribes yet.
                assert_eq!(ack.reason_code, ReasonCode::NoMatchingSubscribers);
                acknowledged.push(topic);
            }
            other => {
                ended_with = Some(other);
                break;
            }
        }
    }

    drop(client);
    // The broker stopped with the store's reason...
    let result = result_rx.recv_timeout(WAIT).expect("the server stopped");
    match result {
        Err(NetError::Store(reason)) => {
            assert!(reason.contains("no space left"), "{reason}");
        }
        other => panic!("expected a store failure, got {other:?}"),
    }
    server.join().unwrap();
    // ...telling the client it was shutting down, or just closing, never acknowledging.
    assert!(
        matches!(ended_with, Some(None) | Some(Some(Packet::Disconnect(_)))),
        "{ended_with:?}"
    );
    // Three batches applied before the fourth failed; every acknowledgement is among them.
    let applied = applied_topics.lock().unwrap().clone();
    assert_eq!(acknowledged, ["kept/1", "kept/2", "kept/3"]);
    assert_eq!(applied, acknowledged);
}
