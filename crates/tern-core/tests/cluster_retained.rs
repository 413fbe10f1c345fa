//! The core's side of retained messages on a cluster node: the cluster keeps them, the node's
//! retained store is its copy (the later revision of a topic winning whatever order changes
//! come in), and a new subscription reads it only once the cluster layer says it is complete.

mod support;

use tern_core::{ClusterOp, Config, RemoteMessage, RetainedEntry};

use support::*;

fn cluster_broker() -> TestBroker {
    TestBroker::with_config(Config {
        cluster: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..Config::default()
    })
}

/// A RETAIN message from the cluster, retained under `revision`.
fn live(topic_name: &str, payload: &str, revision: u64) -> RemoteMessage {
    RemoteMessage {
        retain: true,
        retained_revision: Some(revision),
        ..remote_on(topic_name, payload, Q0)
    }
}

/// A change of the cluster's retained messages (`None`: deleted).
fn change(topic_name: &str, payload: Option<&str>, revision: u64) -> RetainedEntry {
    RetainedEntry {
        revision,
        topic: topic(topic_name),
        message: payload.map(|payload| live(topic_name, payload, revision)),
    }
}

/// The node's retained messages, as topic=payload.
fn held(tb: &TestBroker) -> Vec<String> {
    let mut held: Vec<String> = tb
        .broker
        .admin_retained("#", 100)
        .iter()
        .map(|m| format!("{}={}", m.topic, String::from_utf8_lossy(&m.payload)))
        .collect();
    held.sort();
    held
}

/// The tokens of the retained lookups among `ops`.
fn wanted(ops: &[ClusterOp]) -> Vec<u64> {
    ops.iter()
        .filter_map(|op| match op {
            ClusterOp::RetainedWanted { token } => Some(*token),
            _ => None,
        })
        .collect()
}

#[test]
fn a_retained_publish_is_routed_and_kept_only_once_the_cluster_retains_it() {
    let mut tb = cluster_broker();
    let sub = tb.connect("sub", V5, Opts::new());
    tb.subscribe(&sub, "r/#", Q1);
    let publisher = tb.connect("pub", V5, Opts::new());
    let _ = tb.cluster_ops();
    // QoS 0 too: a subscriber here must not see it before a new one could read it.
    tb.send(&publisher, retained("r/a", "x", Q0, 0));
    assert!(tb.recv(&sub).is_empty(), "routed before the cluster had it");
    assert!(held(&tb).is_empty(), "kept before the cluster had it");
    let published: Vec<_> = tb
        .cluster_ops()
        .into_iter()
        .filter_map(|op| match op {
            ClusterOp::Publish(publish) => Some(publish),
            _ => None,
        })
        .collect();
    assert_eq!(published.len(), 1);
    assert!(published[0].message.retain);

    // Back from the cluster with its revision: routed, and kept.
    let now = tb.now;
    tb.broker.deliver_from_cluster(live("r/a", "x", 7), now);
    assert_eq!(payloads(&tb.recv(&sub)), ["x"]);
    assert_eq!(held(&tb), ["r/a=x"]);
}

#[test]
fn the_later_revision_of_a_topic_wins_whatever_order_the_changes_come_in() {
    let mut tb = cluster_broker();
    let now = tb.now;
    tb.broker
        .retained_from_cluster(vec![change("t", Some("new"), 5)], now);
    // The live copy of an older write, arriving late, changes nothing.
    tb.broker.deliver_from_cluster(live("t", "old", 4), now);
    assert_eq!(held(&tb), ["t=new"]);
    // Nor the bucket's copy of the older write.
    tb.broker
        .retained_from_cluster(vec![change("t", Some("old"), 4)], now);
    assert_eq!(held(&tb), ["t=new"]);
    // A deletion, then the late live copy of what it deleted: it stays deleted.
    tb.broker
        .retained_from_cluster(vec![change("t", None, 6)], now);
    tb.broker.deliver_from_cluster(live("t", "new", 5), now);
    assert!(held(&tb).is_empty());
    // A later write, live first, then its bucket copy: set once.
    tb.broker.deliver_from_cluster(live("t", "newest", 8), now);
    tb.broker
        .retained_from_cluster(vec![change("t", Some("newest"), 8)], now);
    assert_eq!(held(&tb), ["t=newest"]);
    // An empty live message deletes, as an empty retained PUBLISH does.
    tb.broker.deliver_from_cluster(live("t", "", 9), now);
    assert!(held(&tb).is_empty());
}

#[test]
fn a_new_subscription_reads_retained_messages_once_the_cluster_says_the_copy_is_complete() {
    let mut tb = cluster_broker();
    let now = tb.now;
    tb.broker
        .retained_from_cluster(vec![change("r/a", Some("a"), 1)], now);
    let sub = tb.connect("sub", V5, Opts::new());
    let _ = tb.cluster_ops();
    tb.subscribe(&sub, "r/#", Q1);
    assert!(
        tb.recv(&sub).is_empty(),
        "read before the copy was complete"
    );
    let tokens = wanted(&tb.cluster_ops());
    assert_eq!(tokens.len(), 1);
    // Written before the subscription was in place, and reaching the copy only now: owed.
    tb.broker
        .retained_from_cluster(vec![change("r/b", Some("b"), 2)], now);
    tb.broker.cluster_retained_ready(tokens, now);
    let packets = tb.recv(&sub);
    assert_eq!(payloads(&packets), ["a", "b"]);
    assert!(publishes(&packets).iter().all(|publish| publish.retain));
}
