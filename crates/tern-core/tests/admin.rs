//! The operator's interface: sessions listed and inspected in place (queue, in flight,
//! subscriptions), a kick that closes a connection with 0x98 and keeps or ends its session,
//! retained messages browsed by filter and deleted (from the store too), and bans refused at
//! CONNECT (0x8A) and in requests until lifted.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use support::*;
use tern_codec::{Packet, Publish, QoS, ReasonCode};
use tern_core::{Config, ConnectionId, RequestRefusal, StoreOp};

const EDGE: ConnectionId = ConnectionId(1_000_000);

fn persistent() -> TestBroker {
    TestBroker::with_config(Config {
        persistence: true,
        ..Config::default()
    })
}

fn v5_persistent() -> Opts {
    Opts::default().expiry(3600)
}

#[test]
fn sessions_are_listed_and_inspected_with_their_queues() {
    let mut broker = persistent();
    let sub = broker.connect("sub", V5, v5_persistent());
    broker.subscribe(&sub, "a/#", QoS::AtLeastOnce);
    broker.lose(&sub);
    let publisher = broker.connect("pub", V5, Opts::default());
    for (n, payload) in ["one", "two"].into_iter().enumerate() {
        broker.send(
            &publisher,
            publish("a/b", payload, QoS::AtLeastOnce, n as u16 + 1),
        );
    }
    let listed = broker.broker.admin_sessions(|_| true);
    let ids: Vec<&str> = listed.iter().map(|s| s.client_id.as_str()).collect();
    assert_eq!(ids, ["pub", "sub"]);
    let sub_summary = &listed[1];
    assert!(!sub_summary.connected);
    assert_eq!((sub_summary.queued, sub_summary.subscriptions), (2, 1));
    assert!(listed[0].connected);
    // What the operator may see is chosen by the caller.
    let only_sub = broker.broker.admin_sessions(|id| id.starts_with('s'));
    assert_eq!(only_sub.len(), 1);

    let detail = broker.broker.admin_session("sub", 1).expect("a session");
    assert_eq!(detail.subscriptions, [("a/#".to_owned(), QoS::AtLeastOnce)]);
    assert_eq!(detail.queue.len(), 1, "cut to the limit");
    assert_eq!(&detail.queue[0].message.payload[..], b"one");
    assert!(broker.broker.admin_session("nobody", 10).is_none());
}

#[test]
fn a_kick_closes_with_administrative_action_and_keeps_or_ends_the_session() {
    let mut broker = persistent();
    let kept = broker.connect("kept", V5, v5_persistent());
    let now = broker.now;
    assert!(broker.broker.admin_kick("kept", false, now));
    let packets = broker.expect_closed(&kept);
    let Some(Packet::Disconnect(disconnect)) = packets.last() else {
        panic!("no DISCONNECT: {packets:?}");
    };
    assert_eq!(disconnect.reason_code, ReasonCode::AdministrativeAction);
    let summary = broker.broker.admin_session("kept", 1).expect("kept");
    assert!(!summary.summary.connected);

    let gone = broker.connect("gone", V311, Opts::default().expiry(0).resume());
    assert!(broker.broker.admin_kick("gone", true, now));
    broker.expect_closed(&gone);
    assert!(broker.broker.admin_session("gone", 1).is_none());
    assert!(
        !broker.broker.admin_kick("gone", true, now),
        "nothing left to kick"
    );
}

#[test]
fn retained_messages_are_browsed_by_filter_and_deleted_from_the_store() {
    let mut broker = persistent();
    let publisher = broker.connect("pub", V5, Opts::default());
    for (n, topic_name) in ["t/a/1", "t/a/2", "t/b/1", "u/1"].into_iter().enumerate() {
        broker.send(
            &publisher,
            retained(topic_name, "v", QoS::AtLeastOnce, n as u16 + 1),
        );
    }
    let topics = |broker: &TestBroker, filter: &str| -> Vec<String> {
        let found = broker.broker.admin_retained(filter, 10);
        found.iter().map(|m| m.topic.as_str().to_owned()).collect()
    };
    assert_eq!(topics(&broker, "t/a/#"), ["t/a/1", "t/a/2"]);
    assert_eq!(topics(&broker, "#").len(), 4);
    assert_eq!(
        broker.broker.admin_retained("#", 2).len(),
        2,
        "cut to the limit"
    );
    while broker.broker.poll_store_op().is_some() {}
    assert!(broker.broker.admin_retained_delete(&topic("t/a/1")));
    assert!(!broker.broker.admin_retained_delete(&topic("t/a/1")));
    assert_eq!(topics(&broker, "t/#"), ["t/a/2", "t/b/1"]);
    // Its record becomes a deletion's (no payload), which key/value listings tell.
    assert!(matches!(
        broker.broker.poll_store_op(),
        Some(StoreOp::RetainedSet(m)) if m.topic.as_str() == "t/a/1" && m.payload.is_empty()
    ));
}

#[test]
fn a_banned_client_is_closed_and_refused_until_the_ban_is_lifted_or_ends() {
    let mut broker = persistent();
    let dev = broker.connect("dev", V5, v5_persistent());
    let now = broker.now;
    broker.broker.ban(mstr("dev"), Some(now.plus_secs(60)), now);
    let packets = broker.expect_closed(&dev);
    assert!(matches!(packets.last(), Some(Packet::Disconnect(d))
        if d.reason_code == ReasonCode::AdministrativeAction));
    let connect = connect_packet("dev", V5, &Opts::default());
    let (_, packets, closed) = broker.try_connect(connect.clone());
    assert!(closed);
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::Banned)
    );
    // Requests for the client identifier are refused as well.
    let client = broker
        .broker
        .request_client(EDGE, mstr("dev"), key_identity("dev"), None);
    let message = Publish::new(topic("x"), bytes::Bytes::from_static(b"x"));
    let now = broker.now;
    let outcome = broker
        .broker
        .publish_for(&client, vec![message], false, now);
    assert_eq!(outcome, [Err(RequestRefusal::Banned)]);
    assert_eq!(broker.broker.bans(now).len(), 1);

    // The ban ends at its time.
    broker.advance_secs(61);
    let now = broker.now;
    assert!(broker.broker.bans(now).is_empty());
    let (_, packets, closed) = broker.try_connect(connect.clone());
    assert!(!closed);
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::Success)
    );

    broker.broker.ban(mstr("other"), None, now);
    assert!(broker.broker.unban("other"));
    assert!(!broker.broker.unban("other"));
}
