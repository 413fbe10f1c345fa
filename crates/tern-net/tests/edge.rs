//! Another edge on the broker thread (the HTTP bridge's way in): its input reaches the core
//! directly, the store operations it causes join group commit, and waiting on their batch
//! ends only once the store has applied it, as a PUBACK waits.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use bytes::Bytes;
use support::{loopback_config, on_own_runtime, WAIT};
use tern_codec::{MqttString, Publish, QoS, TopicName};
use tern_core::{Identity, MemoryStore, Method, Snapshot, Store, StoreOp};
use tern_net::{BrokerHandle, Server};

/// A store whose applies wait while `held`, and report each batch's retained topics when it
/// starts applying.
#[derive(Debug)]
struct HeldStore {
    inner: MemoryStore,
    held: Arc<(Mutex<bool>, Condvar)>,
    started: mpsc::Sender<Vec<String>>,
}

impl Store for HeldStore {
    type Error = std::io::Error;

    fn apply(&mut self, ops: &[StoreOp]) -> Result<(), Self::Error> {
        let topics = ops
            .iter()
            .filter_map(|op| match op {
                StoreOp::RetainedSet(message) => Some(message.topic.as_str().to_owned()),
                _ => None,
            })
            .collect();
        let _ = self.started.send(topics);
        let (lock, released) = &*self.held;
        let mut held = lock.lock().unwrap();
        while *held {
            held = released.wait(held).unwrap();
        }
        self.inner.apply(ops).map_err(std::io::Error::other)
    }

    fn load(&mut self) -> Result<Snapshot, Self::Error> {
        Ok(Snapshot::default())
    }
}

fn message(topic: &str, retain: bool) -> Publish {
    let topic: TopicName = topic.parse().unwrap();
    let mut publish = Publish::new(topic, Bytes::from_static(b"on"));
    publish.qos = QoS::AtLeastOnce;
    publish.retain = retain;
    publish
}

/// Publishes one message as the key "dev"; returns the subscriptions it matched and its batch.
fn publish(handle: &BrokerHandle, publish: Publish) -> (Option<usize>, Option<tern_net::Batch>) {
    let edge = handle.connection_id();
    let (outcomes, batch) = handle.input(|broker, now| {
        let identity = Identity {
            method: Method::HttpKey,
            username: Some("dev".to_owned()),
            ..Identity::default()
        };
        let client = broker.request_client(edge, MqttString::new("dev").unwrap(), identity, None);
        broker.publish_for(&client, vec![publish], false, now)
    });
    (outcomes[0].unwrap(), batch)
}

#[test]
fn an_edge_waits_for_the_batch_its_input_caused() {
    let held = Arc::new((Mutex::new(true), Condvar::new()));
    let (started_tx, started) = mpsc::channel();
    let store = HeldStore {
        inner: MemoryStore::default(),
        held: Arc::clone(&held),
        started: started_tx,
    };
    let (report_tx, report) = mpsc::channel::<&'static str>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = on_own_runtime(move || async move {
        let config = loopback_config(tern_core::Config {
            persistence: true,
            ..tern_core::Config::default()
        });
        let mut server = Server::bind(config).await.unwrap().with_store(
            store,
            Snapshot::default(),
            Instant::now(),
        );
        server.add_edge(Box::new(move |handle: BrokerHandle| {
            Box::pin(async move {
                // Nothing durable to wait for: no retained copy, no persistent subscriber.
                let (matched, batch) = publish(&handle, message("plain", false));
                assert_eq!((matched, batch), (Some(0), None));
                let (_, batch) = publish(&handle, message("kept", true));
                let batch = batch.expect("a retained message is a store operation");
                report_tx.send("published").unwrap();
                handle.durable(batch).await;
                report_tx.send("durable").unwrap();
            })
        }));
        server
            .run(async move {
                let _ = stop_rx.await;
            })
            .await
            .unwrap();
    });
    assert_eq!(report.recv_timeout(WAIT).unwrap(), "published");
    // The store has the batch and is applying it: the edge is still waiting.
    assert_eq!(started.recv_timeout(WAIT).unwrap(), ["kept"]);
    assert!(
        report.try_recv().is_err(),
        "durable before the store applied"
    );
    {
        let (lock, released) = &*held;
        *lock.lock().unwrap() = false;
        released.notify_all();
    }
    assert_eq!(report.recv_timeout(WAIT).unwrap(), "durable");
    stop_tx.send(()).unwrap();
    server.join().unwrap();
}
