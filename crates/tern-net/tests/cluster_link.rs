//! The seam to the cluster layer, with a scripted cluster in place of NATS: a CONNACK waits for
//! its session's claim, operations leave in numbered batches, a QoS 1 PUBACK (and a SUBACK that
//! changes the node's interest) waits until its batch is reported through, messages from the
//! cluster are routed, and a cluster layer that fails stops the server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::io::ErrorKind;
use std::sync::mpsc as std_mpsc;

use bytes::Bytes;
use support::{
    connect, loopback_config, on_own_runtime, publish, spawn_server, subscribe, Client, WAIT,
};
use tern_codec::{Packet, PublishProperties, QoS, ReasonCode};
use tern_core::{ClaimOutcome, ClusterBatch, ClusterInput, ClusterOp, RemoteMessage};
use tern_net::{ClusterLink, NetError, Server};
use tokio::sync::mpsc;

/// The cluster layer's ends of a link.
struct FakeCluster {
    batches: mpsc::UnboundedReceiver<ClusterBatch>,
    inputs: mpsc::Sender<ClusterInput>,
}

fn link() -> (ClusterLink, FakeCluster) {
    let (batches_tx, batches_rx) = mpsc::unbounded_channel();
    let (inputs_tx, inputs_rx) = mpsc::channel(16);
    (
        ClusterLink {
            batches: batches_tx,
            inputs: inputs_rx,
            qos0_backlog_bytes_max: tern_net::CLUSTER_QOS0_BACKLOG_BYTES_MAX,
        },
        FakeCluster {
            batches: batches_rx,
            inputs: inputs_tx,
        },
    )
}

impl FakeCluster {
    fn next_batch(&mut self) -> ClusterBatch {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            match self.batches.try_recv() {
                Ok(batch) => return batch,
                Err(mpsc::error::TryRecvError::Empty) if std::time::Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(error) => panic!("no batch: {error}"),
            }
        }
    }

    fn say(&self, input: ClusterInput) {
        self.inputs.blocking_send(input).unwrap();
    }

    /// Settles the claim of the CONNECT that `client` just sent, as a cluster where nobody
    /// else knows its client identifier would, and expects the CONNACK.
    fn settle_claim(&mut self, client: &mut Client) {
        let batch = self.next_batch();
        let [ClusterOp::Claim(claim)] = &batch.ops[..] else {
            panic!("expected a claim, got {:?}", batch.ops);
        };
        // The CONNACK waits for the claim.
        assert_nothing_to_read(client);
        let outcome = ClaimOutcome::Owned {
            handed_over: None,
            backlog: Vec::new(),
            outbound: Vec::new(),
        };
        self.say(ClusterInput::ClaimSettled {
            connection: claim.connection,
            outcome,
        });
        assert!(matches!(client.recv(), Packet::ConnAck(_)));
        let done = self.next_batch();
        assert!(
            matches!(&done.ops[..], [ClusterOp::ClaimDone { .. }]),
            "{:?}",
            done.ops
        );
    }
}

fn cluster_config() -> tern_net::ServerConfig {
    loopback_config(tern_core::Config {
        cluster: true,
        ..tern_core::Config::default()
    })
}

#[test]
fn a_puback_waits_until_the_cluster_reports_its_message_replicated() {
    let (link, mut cluster) = link();
    let server = spawn_server(cluster_config(), move |server| server.set_cluster(link));

    let mut subscriber = Client::open(server.addr);
    subscriber.send(connect("sub", None));
    cluster.settle_claim(&mut subscriber);
    subscriber.send(subscribe("t/+", 1));
    let batch = cluster.next_batch();
    let interest_seq = batch.seq;
    // With the question whether its retained messages may be read (none here).
    assert!(matches!(
        &batch.ops[..],
        [
            ClusterOp::Interest { filter, present: true },
            ClusterOp::RetainedWanted { .. },
        ] if filter.as_str() == "t/+"
    ));
    // The SUBACK waits until the cluster has the subscription too.
    assert_nothing_to_read(&mut subscriber);
    cluster.say(ClusterInput::Through(interest_seq));
    assert!(matches!(subscriber.recv(), Packet::SubAck(_)));

    let mut publisher = Client::open(server.addr);
    publisher.send(connect("pub", None));
    cluster.settle_claim(&mut publisher);
    publisher.send(publish("t/1", b"replicate me", 7));
    let batch = cluster.next_batch();
    let publish_seq = batch.seq;
    let [ClusterOp::Publish(sent)] = &batch.ops[..] else {
        panic!("{:?}", batch.ops);
    };
    assert_eq!(sent.message.topic.as_str(), "t/1");
    assert_eq!(sent.publisher.as_ref().map(|p| p.as_str()), Some("pub"));

    // The log hands the message back: the subscriber gets it, the publisher still waits.
    cluster.say(ClusterInput::Deliver(vec![RemoteMessage {
        topic: sent.message.topic.clone(),
        payload: sent.message.payload.clone(),
        qos: sent.message.qos,
        retain: false,
        properties: PublishProperties::default(),
        expiry_millis: None,
        publisher: sent.publisher.clone(),
        seq: Some(1),
        shared: None,
        retained_revision: None,
    }]));
    let Packet::Publish(delivered) = subscriber.recv() else {
        panic!("not a PUBLISH");
    };
    assert_eq!(delivered.payload, Bytes::from_static(b"replicate me"));
    assert_eq!(delivered.qos, QoS::AtLeastOnce);
    assert_nothing_to_read(&mut publisher);

    // Replicated: the PUBACK goes.
    cluster.say(ClusterInput::Through(publish_seq));
    match publisher.recv() {
        Packet::PubAck(ack) => {
            assert_eq!(ack.packet_id.get(), 7);
            assert_eq!(ack.reason_code, ReasonCode::Success);
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    server.stop();
}

/// Whether the client's socket holds nothing. An acknowledgement not held would have been
/// written right after its packet was handled: before the batch reached the scripted cluster
/// (for the SUBACK), before the subscriber's delivery made its round through it (the PUBACK).
fn assert_nothing_to_read(client: &mut Client) {
    let stream = client.stream();
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0_u8; 1];
    match stream.peek(&mut byte) {
        Err(error) if error.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the publisher was written to: {other:?}"),
    }
    stream.set_nonblocking(false).unwrap();
}

#[test]
fn a_cluster_layer_that_fails_stops_the_server() {
    let (link, mut cluster) = link();
    let (result_tx, result_rx) = std_mpsc::channel();
    let (addr_tx, addr_rx) = std_mpsc::channel();
    let thread = on_own_runtime(move || async move {
        let mut server = Server::bind(cluster_config()).await.unwrap();
        server.set_cluster(link);
        addr_tx.send(server.local_addrs()[0]).unwrap();
        result_tx
            .send(server.run(std::future::pending()).await)
            .unwrap();
    });
    let addr = addr_rx.recv_timeout(WAIT).unwrap();
    let mut client = Client::open(addr);
    client.send(connect("c", None));
    cluster.settle_claim(&mut client);
    cluster.say(ClusterInput::Failed("NATS is gone".to_owned()));
    match result_rx.recv_timeout(WAIT).unwrap() {
        Err(NetError::Cluster(reason)) => assert!(reason.contains("NATS is gone"), "{reason}"),
        other => panic!("expected a cluster failure, got {other:?}"),
    }
    thread.join().unwrap();
}
