//! The core as a cluster node: what it tells the other nodes (messages, interest), when a
//! message accepted here is routed, and how a message from the cluster is delivered.

mod support;

use tern_codec::Packet;
use tern_codec::{ReasonCode, SubscriptionOptions};
use tern_core::{
    CloseReason, ClusterOp, ClusterPublish, Config, Event, NodeStatus, OutboundStage,
    RemoteMessage, Time,
};

use support::*;

fn cluster_broker() -> TestBroker {
    TestBroker::with_config(Config {
        cluster: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..Config::default()
    })
}

fn ops(tb: &mut TestBroker) -> Vec<ClusterOp> {
    tb.cluster_ops()
}

fn publishes(ops: Vec<ClusterOp>) -> Vec<ClusterPublish> {
    ops.into_iter()
        .filter_map(|op| match op {
            ClusterOp::Publish(publish) => Some(publish),
            _ => None,
        })
        .collect()
}

/// What a node receives for `publish`, as the cluster layer would hand it over.
fn remote(publish: &ClusterPublish) -> RemoteMessage {
    let message = &publish.message;
    RemoteMessage {
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: message.retain,
        properties: message.properties.clone(),
        expiry_millis: publish.expiry_millis,
        publisher: publish.publisher.clone(),
        seq: None,
        shared: None,
        retained_revision: None,
    }
}

#[test]
fn a_single_node_tells_no_one_anything() {
    let mut tb = TestBroker::new();
    let client = tb.connect("c", V5, Opts::new());
    tb.subscribe(&client, "a/#", Q1);
    tb.send(&client, publish("a/b", "x", Q1, 1));
    assert_eq!(tb.recv(&client).len(), 2, "PUBACK and the delivery");
    assert!(ops(&mut tb).is_empty());
}

#[test]
fn interest_changes_only_between_none_and_some_subscriptions_per_filter() {
    let mut tb = cluster_broker();
    let a = tb.connect("a", V5, Opts::new());
    let b = tb.connect("b", V311, Opts::new().resume());
    tb.subscribe(&a, "x/+", Q1);
    tb.subscribe(&b, "x/+", Q0);
    tb.subscribe(&b, "y/#", Q0);
    // The same filter again replaces the subscription: no change.
    tb.subscribe(&b, "y/#", Q1);
    tb.subscribe(&a, "$tree/z/+", Q0);
    assert_eq!(
        interest(&ops(&mut tb)),
        [
            ("x/+".to_owned(), true),
            ("y/#".to_owned(), true),
            ("z/+".to_owned(), true),
        ]
    );
    assert_eq!(tb.broker.cluster_interest().count(), 3);

    tb.send(&a, unsubscribe(7, &["x/+"]));
    tb.recv(&a);
    assert!(interest(&ops(&mut tb)).is_empty(), "b still holds x/+");

    // A session that outlives its connection keeps its subscriptions, but its messages wait
    // in the log: the node no longer hears of them (interest is for online sessions).
    tb.lose(&b);
    let mut parked = interest(&ops(&mut tb));
    parked.sort();
    assert_eq!(
        parked,
        [("x/+".to_owned(), false), ("y/#".to_owned(), false)]
    );

    // A clean session ends with its connection, and its subscriptions with it.
    tb.disconnect(&a);
    assert_eq!(interest(&ops(&mut tb)), [("z/+".to_owned(), false)]);
    let b = tb.connect("b", V311, Opts::new());
    let _ = b;
    assert!(
        interest(&ops(&mut tb)).is_empty(),
        "clean session: the old session ended, its subscriptions were parked"
    );
    assert_eq!(tb.broker.cluster_interest().count(), 0);
}

#[test]
fn qos0_is_routed_here_at_once_and_handed_to_the_cluster() {
    let mut tb = cluster_broker();
    let publisher = tb.connect("p", V5, Opts::new());
    let subscriber = tb.connect("s", V311, Opts::new());
    tb.subscribe(&subscriber, "t/+", Q0);
    ops(&mut tb);
    tb.send(&publisher, publish("t/1", "zero", Q0, 0));
    assert_eq!(tb.recv(&subscriber), [publish("t/1", "zero", Q0, 0)]);
    let sent = publishes(ops(&mut tb));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.topic.as_str(), "t/1");
    assert_eq!(sent[0].publisher, Some(mstr("p")));
    assert_eq!(sent[0].acknowledges, None, "nobody waits on QoS 0");
}

#[test]
fn qos1_is_routed_only_when_it_comes_back_from_the_log() {
    let mut tb = cluster_broker();
    let publisher = tb.connect("p", V5, Opts::new());
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    ops(&mut tb);
    tb.send(&publisher, publish("t", "one", Q1, 9));
    // The PUBACK is queued (the runtime holds it until the log has the message); whether
    // anyone matched is not known on this node, so it says Success.
    assert_eq!(tb.recv(&publisher), [puback(9)]);
    tb.expect_silent(&subscriber);
    let sent = publishes(ops(&mut tb));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].acknowledges, Some(publisher.id));
    // Back from the log: delivered once, here as on every node.
    assert!(tb.broker.deliver_from_cluster(remote(&sent[0]), tb.now));
    assert_eq!(tb.recv(&subscriber), [publish("t", "one", Q1, 1)]);
    assert!(
        ops(&mut tb).is_empty(),
        "what came from the cluster goes back to no one"
    );
}

#[test]
fn a_message_from_the_cluster_is_matched_once_against_overlapping_subscriptions() {
    let mut tb = cluster_broker();
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "a/+/c", Q1);
    tb.subscribe(&subscriber, "a/#", Q0);
    let other = tb.connect("o", V311, Opts::new());
    tb.subscribe(&other, "a/b/+", Q1);
    assert!(tb
        .broker
        .deliver_from_cluster(remote_on("a/b/c", "x", Q1), tb.now));
    assert_eq!(tb.recv(&subscriber), [publish("a/b/c", "x", Q1, 1)]);
    assert_eq!(tb.recv(&other), [publish("a/b/c", "x", Q1, 1)]);
    assert!(!tb
        .broker
        .deliver_from_cluster(remote_on("q", "nobody", Q0), tb.now));
}

/// MQTT-3.8.3-3 across nodes: No Local is decided by the publisher's client identifier, which
/// travels with the message.
#[test]
fn no_local_holds_for_a_message_back_from_the_cluster() {
    let mut tb = cluster_broker();
    let client = tb.connect("c", V5, Opts::new());
    let no_local = SubscriptionOptions {
        no_local: true,
        ..opts(Q1)
    };
    tb.send(&client, subscribe_with(1, &[("t", no_local)], None));
    tb.recv(&client);
    let other = tb.connect("o", V5, Opts::new());
    tb.subscribe(&other, "t", Q1);
    ops(&mut tb);
    tb.send(&client, publish("t", "mine", Q1, 3));
    assert_eq!(tb.recv(&client), [puback(3)]);
    let sent = publishes(ops(&mut tb));
    tb.broker.deliver_from_cluster(remote(&sent[0]), tb.now);
    tb.expect_silent(&client);
    assert_eq!(tb.recv(&other), [publish("t", "mine", Q1, 1)]);
}

#[test]
fn message_expiry_crosses_as_what_remains_of_it() {
    let mut tb = cluster_broker();
    let publisher = tb.connect("p", V5, Opts::new());
    let subscriber = tb.connect("s", V5, Opts::new());
    tb.subscribe(&subscriber, "t", Q1);
    ops(&mut tb);
    let with_expiry = publish_with("t", "x", Q1, 1, |p| {
        p.properties.message_expiry_interval = Some(60);
    });
    tb.skip(1_000);
    tb.send(&publisher, with_expiry);
    let sent = publishes(ops(&mut tb));
    assert_eq!(sent[0].expiry_millis, Some(60_000));
    // Ten seconds in the cluster: 50 remain.
    let mut arrived = remote(&sent[0]);
    arrived.expiry_millis = Some(50_000);
    tb.broker.deliver_from_cluster(arrived, tb.now);
    let expected = publish_with("t", "x", Q1, 1, |p| {
        p.properties.message_expiry_interval = Some(50);
    });
    assert_eq!(tb.recv(&subscriber), [expected]);
    // Nothing remains: never delivered.
    let mut expired = remote(&sent[0]);
    expired.expiry_millis = Some(0);
    assert!(!tb.broker.deliver_from_cluster(expired, tb.now));
    tb.expect_silent(&subscriber);
}

#[test]
fn the_brokers_own_sys_topics_stay_on_the_node() {
    let mut tb = cluster_broker();
    let client = tb.connect("c", V311, Opts::new());
    tb.subscribe(&client, "$SYS/#", Q0);
    ops(&mut tb);
    tb.broker.publish_sys(
        Time::from_millis(5_000),
        tern_core::TrafficTotals::default(),
        "test",
    );
    assert!(!tb.recv(&client).is_empty());
    assert!(publishes(ops(&mut tb)).is_empty());
}

#[test]
fn a_will_crosses_like_any_message() {
    let mut tb = cluster_broker();
    let client = tb.connect("w", V5, Opts::new().will(will("gone/w", "bye", Q1, false)));
    ops(&mut tb);
    tb.lose(&client);
    let sent = publishes(ops(&mut tb));
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.topic.as_str(), "gone/w");
    assert_eq!(sent[0].acknowledges, None, "no client waits on a will");
}

/// Strict partition mode: while the node cannot reach the cluster, a new CONNECT is refused
/// with Server unavailable (3.1.1: return code 3) so that a load balancer sends the client
/// elsewhere; clients already connected stay; once the cluster is back, CONNECTs are accepted.
#[test]
fn connects_are_refused_as_server_unavailable_while_the_cluster_is_out_of_reach() {
    let mut tb = cluster_broker();
    let before = tb.connect("before", V5, Opts::new());
    tb.broker.set_cluster_reachable(false);
    tb.events();
    for version in VERSIONS {
        let (_, packets, closed) = tb.try_connect(connect_packet("late", version, &Opts::new()));
        let [Packet::ConnAck(connack)] = &packets[..] else {
            panic!("expected a CONNACK, got {packets:?}");
        };
        assert_eq!(connack.reason_code, ReasonCode::ServerUnavailable);
        assert!(closed);
    }
    let refused = tb
        .events()
        .into_iter()
        .filter(|event| {
            matches!(
                event,
                Event::Refused {
                    reason: CloseReason::ClusterUnavailable,
                    ..
                }
            )
        })
        .count();
    assert_eq!(refused, 2, "each refusal is reported, for the log");
    tb.subscribe(&before, "still/here", Q1);
    tb.broker.set_cluster_reachable(true);
    tb.connect("after", V311, Opts::new());
    // A single node has no cluster to lose.
    let mut single = TestBroker::new();
    single.broker.set_cluster_reachable(false);
    single.connect("c", V5, Opts::new());
}

/// A QoS 2 PUBLISH leaves with its identity across nodes (packet identifier, DUP), a resend
/// on the same node does not leave again, and every PUBREL is told to the cluster, known here
/// or not (the PUBLISH may have come in on a node since dead).
#[test]
fn qos2_publishes_carry_their_identity_and_pubrels_are_told_to_the_cluster() {
    let mut tb = cluster_broker();
    let client = tb.connect("p", V5, Opts::new());

    tb.send(&client, publish("t", "x", Q2, 7));
    let mut resent = publish("t", "x", Q2, 7);
    if let Packet::Publish(publish) = &mut resent {
        publish.dup = true;
    }
    tb.send(&client, resent);
    let sent = publishes(ops(&mut tb));
    assert_eq!(sent.len(), 1, "a resend on the same node leaves once");
    let inbound = sent[0].exactly_once.expect("a QoS 2 message's identity");
    assert_eq!(
        (inbound.packet_id, inbound.dup, inbound.part),
        (7, false, 0)
    );

    for packet_id in [7, 9] {
        tb.send(&client, pubrel(packet_id));
        let released = ops(&mut tb);
        assert!(
            matches!(
                released.as_slice(),
                [ClusterOp::Released { client_id, packet_id: id, connection: Some(_) }]
                    if client_id.as_str() == "p" && *id == packet_id
            ),
            "{released:?}"
        );
    }
    // QoS 1 messages carry none.
    tb.send(&client, publish("t", "y", Q1, 8));
    let sent = publishes(ops(&mut tb));
    assert_eq!(sent[0].exactly_once, None);
}

/// Each step of a QoS 2 delivery of a message from the log is told to the cluster before its
/// packet goes (the PUBLISH, the PUBREL: their connection's packets wait), and after the
/// PUBCOMP.
#[test]
fn qos2_deliveries_are_recorded_step_by_step() {
    let mut tb = cluster_broker();
    let sub = tb.connect("s", V5, Opts::new());
    tb.subscribe(&sub, "t", Q2);
    ops(&mut tb);
    let stored = RemoteMessage {
        topic: "t".parse().unwrap(),
        payload: "a".into(),
        qos: Q2,
        retain: false,
        properties: Default::default(),
        expiry_millis: None,
        publisher: None,
        seq: Some(40),
        shared: None,
        retained_revision: None,
    };
    tb.broker.deliver_from_cluster(stored, tb.now);
    let packets = tb.recv(&sub);
    let [Packet::Publish(publish)] = packets.as_slice() else {
        panic!("{packets:?}")
    };
    let packet_id = publish.packet_id.unwrap().get();
    let recorded = |ops: Vec<ClusterOp>| -> Vec<(u16, u64, OutboundStage, bool)> {
        ops.into_iter()
            .filter_map(|op| match op {
                ClusterOp::Outbound {
                    record, connection, ..
                } => Some((
                    record.packet_id,
                    record.seq,
                    record.stage,
                    connection.is_some(),
                )),
                _ => None,
            })
            .collect()
    };
    let sent = (packet_id, 40, OutboundStage::Sent, true);
    assert_eq!(recorded(ops(&mut tb)), [sent]);
    tb.send(&sub, pubrec(packet_id));
    assert_eq!(tb.recv(&sub), [pubrel(packet_id)]);
    let released = (packet_id, 40, OutboundStage::Released, true);
    assert_eq!(recorded(ops(&mut tb)), [released]);
    tb.send(&sub, pubcomp(packet_id));
    let completed = (packet_id, 40, OutboundStage::Completed, false);
    assert_eq!(recorded(ops(&mut tb)), [completed]);
}

/// The cluster view: a node's load goes to the cluster with a checkpoint when it changed, and
/// the nodes the cluster layer reports are published under `$SYS/cluster/nodes/`, each value
/// when it changes, cleared when it no longer applies.
#[test]
fn the_cluster_view_is_published_under_sys_as_it_changes() {
    let mut tb = cluster_broker();
    let viewer = tb.connect("viewer", V5, Opts::new());
    tb.subscribe(&viewer, "$SYS/cluster/#", Q0);
    tb.cluster_ops();
    let loads = |ops: Vec<ClusterOp>| -> Vec<(u64, u64)> {
        ops.into_iter()
            .filter_map(|op| match op {
                ClusterOp::Load {
                    connections,
                    sessions,
                } => Some((connections, sessions)),
                _ => None,
            })
            .collect()
    };
    tb.broker.cluster_checkpoint();
    assert_eq!(loads(ops(&mut tb)), [(1, 1)]);
    tb.broker.cluster_checkpoint();
    assert!(loads(ops(&mut tb)).is_empty(), "unchanged");

    let node = |id: &str, alive, load| NodeStatus {
        id: id.to_owned(),
        alive,
        load,
    };
    let seen = |tb: &mut TestBroker, nodes| {
        tb.broker.cluster_nodes(nodes, tb.now);
        let packets = tb.recv(&viewer);
        support::publishes(&packets)
            .iter()
            .map(|p| {
                let payload = String::from_utf8(p.payload.to_vec()).unwrap();
                format!("{} {payload}", p.topic.as_str())
            })
            .collect::<Vec<_>>()
    };
    let view = vec![node("n1", true, Some((1, 2))), node("n2", true, None)];
    assert_eq!(
        seen(&mut tb, view.clone()),
        [
            "$SYS/cluster/nodes/n1/clients/connected 1",
            "$SYS/cluster/nodes/n1/clients/total 2",
            "$SYS/cluster/nodes/n1/state alive",
            "$SYS/cluster/nodes/n2/state alive",
        ]
    );
    assert!(seen(&mut tb, view).is_empty(), "nothing changed");
    let view = vec![
        node("n1", true, Some((3, 2))),
        node("n2", false, Some((5, 5))),
    ];
    assert_eq!(
        seen(&mut tb, view),
        [
            "$SYS/cluster/nodes/n1/clients/connected 3",
            "$SYS/cluster/nodes/n2/state dead",
        ]
    );
    assert_eq!(
        seen(&mut tb, vec![node("n1", true, Some((3, 2)))]),
        ["$SYS/cluster/nodes/n2/state "],
        "a node gone from the cluster is cleared"
    );
}
