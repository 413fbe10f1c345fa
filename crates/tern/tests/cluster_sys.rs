//! The cluster view under `$SYS/cluster/nodes/`, from the nodes' leases in NATS: every node
//! shows every node, alive or dead, with the connections and sessions it last reported; a
//! dead node gone from the cluster leaves the view.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::BTreeMap;
use std::time::Instant;

use support::cluster::{client, node_with, WAIT};
use support::mqtt::RawClient;
use support::nats::NatsServer;
use tern_codec::{Packet, QoS};

/// The view as a subscriber to `$SYS/cluster/nodes/#` sees it: each topic's last value.
struct View {
    client: RawClient,
    values: BTreeMap<String, String>,
}

impl View {
    fn on(node: &support::Tern, client_id: &str) -> Self {
        let mut client = client(node, client_id);
        client
            .subscribe("$SYS/cluster/nodes/#", QoS::AtMostOnce)
            .unwrap();
        Self {
            client,
            values: BTreeMap::new(),
        }
    }

    /// Reads the view's changes until `done` says it is as expected, or [`WAIT`] passes.
    fn until(&mut self, what: &str, done: impl Fn(&BTreeMap<String, String>) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.values) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no {what}: {:#?}", self.values);
            if let Some(Packet::Publish(publish)) = self.client.recv(left).unwrap() {
                let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
                let topic = publish.topic.as_str().to_owned();
                match payload.is_empty() {
                    true => self.values.remove(&topic),
                    false => self.values.insert(topic, payload),
                };
            }
        }
    }
}

fn value<'a>(values: &'a BTreeMap<String, String>, node: &str, what: &str) -> Option<&'a str> {
    values
        .get(&format!("$SYS/cluster/nodes/{node}/{what}"))
        .map(String::as_str)
}

#[test]
fn every_node_shows_every_node_and_a_dead_one_leaves_the_view() {
    let nats = NatsServer::start();
    let urls = [nats.url()];
    let lease = "lease_secs = 1";
    let started = Instant::now();
    let n1 = node_with(&urls, "n1", 1, lease);
    let n2 = node_with(&urls, "n2", 1, lease);
    let n3 = node_with(&urls, "n3", 1, lease);
    let mut on_n1 = View::on(&n1, "viewer1");
    let mut on_n2 = View::on(&n2, "viewer2");
    let _a = client(&n3, "a");
    let _b = client(&n3, "b");

    let all_there = |values: &BTreeMap<String, String>| {
        ["n1", "n2", "n3"]
            .iter()
            .all(|node| value(values, node, "state") == Some("alive"))
            && value(values, "n3", "clients/connected") == Some("2")
            && value(values, "n3", "clients/total") == Some("2")
            && value(values, "n1", "clients/connected") == Some("1")
    };
    on_n1.until("three live nodes", all_there);
    on_n2.until("three live nodes", all_there);
    println!(
        "the view on n1 and n2 showed three live nodes and n3's two clients {} ms after the \
         nodes started",
        started.elapsed().as_millis()
    );

    let killed = Instant::now();
    n3.kill();
    on_n1.until("n3 dead", |values| {
        value(values, "n3", "state") == Some("dead")
            && value(values, "n3", "clients/connected").is_none()
    });
    let dead = killed.elapsed();
    // Its sessions (clean, without wills) are settled by a live node; then it is no member.
    on_n1.until("n3 gone", |values| value(values, "n3", "state").is_none());
    println!(
        "n3 killed: shown dead after {} ms, gone from the view after {} ms (lease 1 s)",
        dead.as_millis(),
        killed.elapsed().as_millis()
    );
    assert_eq!(value(&on_n1.values, "n1", "state"), Some("alive"));
    assert_eq!(value(&on_n1.values, "n2", "state"), Some("alive"));
}
