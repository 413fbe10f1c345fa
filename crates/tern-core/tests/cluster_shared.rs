//! `$share` groups on a cluster node: the node holds a group's interest apart from its other
//! subscriptions, and a group takes only the copies the cluster hands this node for it (one
//! node per message and group), one member each; every other route passes the groups over.

mod support;

use tern_core::{Config, RemoteMessage};

use support::*;

fn cluster_broker() -> TestBroker {
    TestBroker::with_config(Config {
        cluster: true,
        ..Config::default()
    })
}

/// A copy of a message on `topic_name` handed to this node for the group of `shared`.
fn for_group(shared: &str, topic_name: &str, payload: &str) -> RemoteMessage {
    RemoteMessage {
        shared: Some(filter(shared)),
        ..remote_on(topic_name, payload, Q1)
    }
}

#[test]
fn shared_subscriptions_are_granted_and_held_per_group() {
    let mut tb = cluster_broker();
    let a = tb.connect("a", V5, Opts::new());
    assert_eq!(
        a.connack.properties.shared_subscription_available, None,
        "available, as on one node"
    );
    let b = tb.connect("b", V5, Opts::new());
    tb.send(&a, subscribe(4, &[("$share/g/t/#", Q1), ("t/#", Q1)]));
    assert_eq!(tb.recv(&a), [suback(4, &[granted(Q1), granted(Q1)])]);
    tb.subscribe(&b, "$share/g/t/#", Q1);
    tb.subscribe(&b, "$share/h/t/#", Q0);
    assert_eq!(
        interest(&tb.cluster_ops()),
        [
            ("$share/g/t/#".to_owned(), true),
            ("t/#".to_owned(), true),
            ("$share/h/t/#".to_owned(), true),
        ],
        "one interest per group and filter, apart from the plain filter"
    );
    tb.disconnect(&a);
    assert_eq!(
        interest(&tb.cluster_ops()),
        [("t/#".to_owned(), false)],
        "b still holds its place in g"
    );
    tb.disconnect(&b);
    let mut left = interest(&tb.cluster_ops());
    left.sort();
    assert_eq!(
        left,
        [
            ("$share/g/t/#".to_owned(), false),
            ("$share/h/t/#".to_owned(), false)
        ]
    );
}

#[test]
fn a_group_takes_only_the_copies_handed_to_this_node_for_it() {
    let mut tb = cluster_broker();
    let publisher = tb.connect("p", V5, Opts::new());
    let plain = tb.connect("plain", V5, Opts::new());
    let a = tb.connect("a", V5, Opts::new());
    let b = tb.connect("b", V5, Opts::new());
    let other = tb.connect("other", V5, Opts::new());
    tb.subscribe(&plain, "t/#", Q1);
    tb.subscribe(&a, "$share/g/t/#", Q1);
    tb.subscribe(&b, "$share/g/t/#", Q1);
    tb.subscribe(&other, "$share/h/t/+", Q1);
    tb.cluster_ops();

    // The copy for the node's plain subscriptions: no group takes it.
    assert!(tb
        .broker
        .deliver_from_cluster(remote_on("t/1", "plain", Q1), tb.now));
    assert_eq!(payloads(&tb.recv(&plain)), ["plain"]);
    for member in [&a, &b, &other] {
        tb.expect_silent(member);
    }

    // A QoS 0 message published here reaches the plain subscriber at once; the groups get it
    // only as the cluster hands it back to one node.
    tb.send(&publisher, publish("t/2", "zero", Q0, 0));
    assert_eq!(payloads(&tb.recv(&plain)), ["zero"]);
    for member in [&a, &b, &other] {
        tb.expect_silent(member);
    }

    // The copies for g: one member each, in turn; nobody else.
    for n in 0..4 {
        let copy = for_group("$share/g/t/#", "t/3", &format!("g{n}"));
        assert!(tb.broker.deliver_from_cluster(copy, tb.now));
    }
    assert_eq!(payloads(&tb.recv(&a)), ["g0", "g2"]);
    assert_eq!(payloads(&tb.recv(&b)), ["g1", "g3"]);
    tb.expect_silent(&plain);
    tb.expect_silent(&other);

    // A copy for a group with no member here, or whose filter the topic does not match (a
    // topic too long for a subject reaches every group through one subject), goes nowhere.
    assert!(!tb
        .broker
        .deliver_from_cluster(for_group("$share/x/t/#", "t/4", "x"), tb.now));
    assert!(!tb
        .broker
        .deliver_from_cluster(for_group("$share/h/t/+", "t/4/5", "deep"), tb.now));
    for client in [&plain, &a, &b, &other] {
        tb.expect_silent(client);
    }
}
