//! Sessions across `tern serve` nodes joined through a real `nats-server`: what a node does
//! while NATS is out of reach (strict partition mode).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Instant;

use support::cluster::{client, node, receive_until, send, WAIT};
use support::mqtt::RawClient;
use support::nats::NatsServer;
use tern_codec::{ProtocolVersion, QoS, ReasonCode};

/// With NATS gone, a node refuses new connections with Server unavailable (3.1.1: return code
/// 3), logging each, so that a load balancer sends clients to a node that can serve them; once
/// NATS is back the node takes connections again by itself, and messages cross as before.
#[test]
fn while_nats_is_down_new_connections_are_refused_then_accepted_again() {
    let mut nats = NatsServer::start();
    let urls = [nats.url()];
    let n1 = node(&urls, "n1", 1);
    let mut early = client(&n1, "early");
    early.subscribe("after/#", QoS::AtLeastOnce).unwrap();

    nats.kill();
    let down_at = Instant::now();
    assert!(
        n1.wait_for_log("NATS unreachable", WAIT),
        "the loss is logged"
    );
    for version in [ProtocolVersion::V5, ProtocolVersion::V311] {
        let (mut refused, connack) =
            RawClient::connect_as(n1.port, version, "late", true, 0).unwrap();
        assert_eq!(
            connack.reason_code,
            ReasonCode::ServerUnavailable,
            "{version:?}"
        );
        assert!(refused.recv(WAIT).is_err(), "closed after the refusal");
    }
    assert!(
        n1.wait_for_log("this node cannot reach the cluster", WAIT),
        "each refusal is logged with its reason"
    );

    nats.restart();
    assert!(n1.wait_for_log("NATS reachable again", WAIT));
    println!(
        "connections accepted again {:.1} s after NATS went down",
        down_at.elapsed().as_secs_f64()
    );
    let mut publisher = client(&n1, "late");
    send(&mut publisher, "after/1", "back", QoS::AtLeastOnce);
    let seen = receive_until(&mut early, |seen| !seen.is_empty());
    assert_eq!(seen[0].1, "back");
}
