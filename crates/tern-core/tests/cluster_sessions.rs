//! Sessions on a cluster node: a CONNECT waits for its session's claim, a session another node
//! takes over is handed to it with what was in flight, a node that finds out late lets the
//! session go, and the record the other nodes read follows the session.

mod support;

use tern_codec::{Packet, ReasonCode};
use tern_core::store::StoredSession;
use tern_core::{
    ClaimOutcome, ClusterOp, Config, OutboundQos2, OutboundStage, RemoteMessage, SessionClaim,
};

use support::*;

fn cluster_broker() -> TestBroker {
    TestBroker::with_config(Config {
        cluster: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..Config::default()
    })
}

/// A cluster node whose claims the test settles itself.
fn claiming_broker() -> TestBroker {
    let mut tb = cluster_broker();
    tb.auto_claim = false;
    tb
}

fn claims(ops: &[ClusterOp]) -> Vec<SessionClaim> {
    ops.iter()
        .filter_map(|op| match op {
            ClusterOp::Claim(claim) => Some(claim.clone()),
            _ => None,
        })
        .collect()
}

/// The session `ops` hand over for `token`.
fn handed_over(ops: &[ClusterOp], token: u64) -> Option<Box<StoredSession>> {
    ops.iter()
        .find_map(|op| match op {
            ClusterOp::HandedOver {
                token: t, session, ..
            } if *t == token => Some(session.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no answer for token {token}: {ops:?}"))
}

/// Sends an MQTT 5 CONNECT for `client_id` on a new connection of `tb`.
fn send_connect(tb: &mut TestBroker, client_id: &str, opts: &Opts) -> tern_core::ConnectionId {
    let id = tb.open();
    let connect = connect_packet(client_id, V5, opts);
    tb.send_to(id, V5, Packet::Connect(Box::new(connect)));
    id
}

/// The session of `client_id`, connected with `opts` and subscribed with `subscribe` on a node,
/// as that node hands it over to a claimant.
fn subscribed_and_handed_over(
    client_id: &str,
    opts: &Opts,
    subscribe: Packet,
) -> Option<Box<StoredSession>> {
    let mut a = cluster_broker();
    let old = a.connect(client_id, V5, opts.clone());
    a.send(&old, subscribe);
    a.recv(&old);
    a.cluster_ops();
    a.broker
        .session_taken_over(&mstr(client_id), false, Some(5), a.now);
    a.expect_closed(&old);
    handed_over(&a.cluster_ops(), 5)
}

fn owned(handed_over: Option<Box<StoredSession>>, backlog: Vec<RemoteMessage>) -> ClaimOutcome {
    ClaimOutcome::Owned {
        handed_over,
        backlog,
        outbound: Vec::new(),
    }
}

#[test]
fn a_connect_waits_for_its_claim_and_so_do_the_packets_after_it() {
    let mut tb = claiming_broker();
    let id = send_connect(&mut tb, "c", &Opts::new());
    tb.send_to(id, V5, subscribe(1, &[("t", Q1)]));
    assert!(tb.drain(id).is_empty(), "nothing before the claim settles");
    let ops = tb.cluster_ops();
    let claimed = claims(&ops);
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].connection, claimed[0].client_id.as_str()),
        (id, "c")
    );
    assert!(claimed[0].clean_start);

    tb.broker.claim_settled(id, owned(None, Vec::new()), tb.now);
    let packets = tb.drain(id);
    let [Packet::ConnAck(connack), suback_packet] = &packets[..] else {
        panic!("expected CONNACK and SUBACK, got {packets:?}");
    };
    assert_eq!(connack.reason_code, ReasonCode::Success);
    assert!(!connack.session_present);
    assert_eq!(suback_packet, &suback(1, &[granted(Q1)]));
    let ops = tb.cluster_ops();
    let done = ops
        .iter()
        .position(|op| matches!(op, ClusterOp::ClaimDone { connection } if *connection == id));
    let interest = ops
        .iter()
        .position(|op| matches!(op, ClusterOp::Interest { present: true, .. }));
    assert!(
        interest < done && done.is_some(),
        "the claim is done once the session holds its own interest: {ops:?}"
    );
}

#[test]
fn a_claim_the_cluster_cannot_settle_refuses_the_connect_as_server_unavailable() {
    let mut tb = claiming_broker();
    for version in VERSIONS {
        let id = tb.open();
        tb.send_to(
            id,
            version,
            Packet::Connect(Box::new(connect_packet("c", version, &Opts::new()))),
        );
        tb.broker
            .claim_settled(id, ClaimOutcome::Unavailable, tb.now);
        let packets = tb.drain(id);
        let [Packet::ConnAck(connack)] = &packets[..] else {
            panic!("expected a CONNACK, got {packets:?}");
        };
        assert_eq!(connack.reason_code, ReasonCode::ServerUnavailable);
        assert!(tb.take_closed(id));
    }
}

/// The heart of a take-over across nodes: the old connection gets 0x8E and closes; what it had
/// not acknowledged is sent again (DUP, same packet identifier) on the new node, then its queue,
/// then what came for it during the hand-over; what it acknowledged is not sent again.
#[test]
fn a_session_taken_over_moves_with_what_was_in_flight_and_queued() {
    let mut a = cluster_broker();
    let opts = Opts::new().resume().expiry(600).receive_maximum(2);
    let old = a.connect("s", V5, opts.clone());
    a.subscribe(&old, "t", Q1);
    for n in 1..=4 {
        a.broker
            .deliver_from_cluster(remote_on("t", &n.to_string(), Q1), a.now);
    }
    let first = a.recv(&old);
    assert_eq!(payloads(&first), ["1", "2"], "the window is two");
    a.send(&old, puback(packet_id(&first[0])));
    let third = a.recv(&old);
    assert_eq!(payloads(&third), ["3"], "the acknowledgement made room");
    let unacked = [packet_id(&first[1]), packet_id(&third[0])];
    a.cluster_ops();

    a.broker
        .session_taken_over(&mstr("s"), false, Some(7), a.now);
    assert_eq!(
        a.expect_closed(&old),
        [disconnect(ReasonCode::SessionTakenOver)]
    );
    let ops = a.cluster_ops();
    let session = handed_over(&ops, 7).expect("the session is handed over");
    assert!(
        !ops.iter()
            .any(|op| matches!(op, ClusterOp::SessionEnded { .. })),
        "the session lives on elsewhere: {ops:?}"
    );
    assert_eq!(a.stats().sessions, 0, "it left this node");

    let mut b = cluster_broker();
    // Another subscriber there had the backlog's message when it came: it gets no copy now.
    let other = b.connect("other", V5, Opts::new());
    b.subscribe(&other, "t", Q1);
    b.auto_claim = false;
    let id = send_connect(&mut b, "s", &opts);
    assert!(!claims(&b.cluster_ops())[0].clean_start);
    let backlog = vec![remote_on("t", "5", Q1)];
    b.broker
        .claim_settled(id, owned(Some(session), backlog), b.now);
    let mut packets = b.drain(id);
    let Packet::ConnAck(connack) = packets.remove(0) else {
        panic!("expected CONNACK first, got {packets:?}");
    };
    assert!(connack.session_present);
    let resent: Vec<(bool, u16)> = publishes(&packets)
        .iter()
        .take(2)
        .map(|p| (p.dup, p.packet_id.map_or(0, |id| id.get())))
        .collect();
    assert_eq!(
        resent,
        [(true, unacked[0]), (true, unacked[1])],
        "what was not acknowledged goes again first, as it was"
    );
    let mut got = payloads(&packets);
    for packet in &packets {
        b.send_to(id, V5, puback(packet_id(packet)));
    }
    loop {
        let more = b.drain(id);
        if more.is_empty() {
            break;
        }
        for packet in &more {
            b.send_to(id, V5, puback(packet_id(packet)));
        }
        got.extend(payloads(&more));
    }
    assert_eq!(
        got,
        ["2", "3", "4", "5"],
        "no loss, nothing acknowledged again"
    );
    b.expect_silent(&other);
}

/// A session resumed elsewhere cancels the old connection's will (MQTT-3.1.3-9); one started
/// afresh ends the old session, whose will then goes out, as on one node.
#[test]
fn a_take_over_cancels_the_will_unless_the_client_starts_afresh() {
    for clean_start in [false, true] {
        let mut a = cluster_broker();
        let opts = Opts::new()
            .resume()
            .expiry(600)
            .will(delayed_will("gone", "bye", 30));
        let old = a.connect("w", V5, opts);
        a.cluster_ops();
        a.broker
            .session_taken_over(&mstr("w"), clean_start, Some(1), a.now);
        a.expect_closed(&old);
        let ops = a.cluster_ops();
        let wills = ops
            .iter()
            .filter(|op| matches!(op, ClusterOp::Publish(p) if p.message.topic.as_str() == "gone"))
            .count();
        assert_eq!(wills, usize::from(clean_start), "clean start {clean_start}");
        assert_eq!(
            handed_over(&ops, 1).is_some(),
            !clean_start,
            "clean start {clean_start}"
        );
        a.advance_secs(60);
        assert!(
            !a.cluster_ops()
                .iter()
                .any(|op| matches!(op, ClusterOp::Publish(_))),
            "no will later either"
        );
    }
}

/// A node that finds out only late (a write of the session was refused) closes the connection
/// with 0x8E and keeps what it holds, without the will, until the session expires.
#[test]
fn a_node_that_finds_out_late_closes_the_connection_and_lets_the_session_expire() {
    let mut a = cluster_broker();
    let opts = Opts::new()
        .resume()
        .expiry(60)
        .will(delayed_will("gone", "bye", 5));
    let old = a.connect("late", V5, opts);
    a.cluster_ops();
    a.broker
        .session_taken_over(&mstr("late"), false, None, a.now);
    assert_eq!(
        a.expect_closed(&old),
        [disconnect(ReasonCode::SessionTakenOver)]
    );
    assert!(
        a.cluster_ops().is_empty(),
        "nobody waits for it, and nothing of it is written"
    );
    assert_eq!(a.stats().sessions, 1);
    a.advance_secs(61);
    let ops = a.cluster_ops();
    assert!(
        !ops.iter().any(|op| matches!(op, ClusterOp::Publish(_))),
        "no will: {ops:?}"
    );
    assert_eq!(a.stats().sessions, 0, "expired");
}

/// The record other nodes read follows a session that outlives its connection: written when it
/// connects and when its subscriptions change (the SUBACK waiting for it), gone when it ends.
/// A session that ends with its connection is only claimed.
#[test]
fn the_record_follows_the_session_and_goes_with_it() {
    let mut tb = cluster_broker();
    let client = tb.connect("kept", V5, Opts::new().expiry(30));
    tb.subscribe(&client, "a/+", Q1);
    let ops = tb.cluster_ops();
    let saved: Vec<(Vec<String>, bool)> = ops
        .iter()
        .filter_map(|op| match op {
            ClusterOp::SessionSaved {
                record, connection, ..
            } => Some((
                record
                    .subscriptions
                    .iter()
                    .map(|(f, _)| f.as_str().to_owned())
                    .collect(),
                *connection == Some(client.id),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        saved,
        [(vec![], true), (vec!["a/+".to_owned()], true)],
        "{ops:?}"
    );
    tb.disconnect(&client);
    tb.advance_secs(31);
    let ended = tb
        .cluster_ops()
        .into_iter()
        .filter(|op| matches!(op, ClusterOp::SessionEnded { client_id } if client_id.as_str() == "kept"))
        .count();
    assert_eq!(ended, 1);

    let clean = tb.connect("clean", V311, Opts::new());
    tb.subscribe(&clean, "b", Q0);
    assert!(!tb
        .cluster_ops()
        .iter()
        .any(|op| matches!(op, ClusterOp::SessionSaved { .. })));
    tb.disconnect(&clean);
    assert!(tb.cluster_ops().iter().any(
        |op| matches!(op, ClusterOp::SessionEnded { client_id } if client_id.as_str() == "clean")
    ));
}

/// Message expiry crosses as what remains of it, whatever the two nodes' clocks read.
#[test]
fn expiry_in_a_handed_over_queue_counts_on_from_where_it_was() {
    let mut a = cluster_broker();
    a.advance_secs(1_000);
    let opts = Opts::new().resume().expiry(600);
    let old = a.connect("e", V5, opts.clone());
    a.subscribe(&old, "t", Q1);
    let mut message = stored_at("t", "soon", 1);
    message.expiry_millis = Some(10_000);
    a.broker.deliver_from_cluster(message, a.now);
    // Sent, not acknowledged: in flight when the connection goes.
    assert_eq!(payloads(&a.recv(&old)), ["soon"]);
    a.lose(&old);
    a.advance_secs(4);
    a.cluster_ops();
    a.broker
        .session_taken_over(&mstr("e"), false, Some(3), a.now);
    let session = handed_over(&a.cluster_ops(), 3);

    let mut b = claiming_broker();
    let id = send_connect(&mut b, "e", &opts);
    b.broker
        .claim_settled(id, owned(session, Vec::new()), b.now);
    let packets = b.drain(id);
    let sent = publishes(&packets);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].properties.message_expiry_interval, Some(6));
}

/// The backlog is delivered as routing would: overlapping subscriptions make one delivery, and
/// No Local holds for what the client itself published during the hand-over.
#[test]
fn the_backlog_follows_the_routing_rules() {
    let opts = Opts::new().resume().expiry(600);
    let no_local = tern_codec::SubscriptionOptions {
        no_local: true,
        ..support::opts(Q1)
    };
    let subscribe = subscribe_with(1, &[("t/+", no_local), ("t/#", no_local)], None);
    let session = subscribed_and_handed_over("nl", &opts, subscribe);

    let mut b = claiming_broker();
    let id = send_connect(&mut b, "nl", &opts);
    let mut own = remote_on("t/x", "mine", Q1);
    own.publisher = Some(mstr("nl"));
    let backlog = vec![own, remote_on("t/x", "theirs", Q1)];
    b.broker.claim_settled(id, owned(session, backlog), b.now);
    let packets = b.drain(id);
    assert_eq!(payloads(&packets), ["theirs"], "{packets:?}");
}

/// The record's session, as the last `SessionSaved` of `ops` wrote it, with its cursor.
fn last_saved(ops: &[ClusterOp]) -> (tern_core::store::SessionRecord, Option<u64>) {
    ops.iter()
        .rev()
        .find_map(|op| match op {
            ClusterOp::SessionSaved { record, cursor, .. } => Some(((**record).clone(), *cursor)),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no record written: {ops:?}"))
}

/// A remote QoS 1 message the log stored at `seq`.
fn stored_at(topic_name: &str, payload: &str, seq: u64) -> RemoteMessage {
    RemoteMessage {
        seq: Some(seq),
        ..remote_on(topic_name, payload, Q1)
    }
}

/// The cursor written with a session's record stands at the first message from the log it
/// holds unacknowledged (7 in flight and 9 queued; then 9 in flight), and past the last one
/// routed here when it holds none.
#[test]
fn the_cursor_stands_at_the_first_message_not_acknowledged() {
    let mut tb = cluster_broker();
    let client = tb.connect("c", V5, Opts::new().expiry(600).receive_maximum(1));
    tb.subscribe(&client, "t", Q1);
    tb.cluster_ops();
    tb.broker
        .deliver_from_cluster(stored_at("t", "7", 7), tb.now);
    tb.broker
        .deliver_from_cluster(stored_at("t", "9", 9), tb.now);
    tb.broker
        .deliver_from_cluster(stored_at("u", "12", 12), tb.now);
    for (expected, subscribe_to) in [(Some(7), "v"), (Some(9), "w"), (Some(13), "x")] {
        let packets = tb.recv(&client);
        tb.subscribe(&client, subscribe_to, Q1);
        let (_, cursor) = last_saved(&tb.cluster_ops());
        assert_eq!(cursor, expected, "{packets:?}");
        if let Some(Packet::Publish(publish)) = packets.first() {
            let id = publish.packet_id.unwrap().get();
            tb.send(&client, Packet::PubAck(ack(id, ReasonCode::Success)));
        }
    }
}

/// A session adopted from a dead node keeps its will, which goes out once after its Will
/// Delay Interval counted from the adoption, marked as a will so the log stores it once; its
/// backlog waits for its client.
#[test]
fn an_adopted_session_publishes_its_will_after_its_delay_and_keeps_its_backlog() {
    let mut a = cluster_broker();
    let opts = Opts::new()
        .resume()
        .expiry(600)
        .will(delayed_will("gone", "bye", 5));
    let old = a.connect("w", V5, opts.clone());
    a.subscribe(&old, "t", Q1);
    let (record, _) = last_saved(&a.cluster_ops());
    assert!(record.will.is_some(), "the record carries the will");

    let mut b = cluster_broker();
    let session = StoredSession {
        record,
        deliveries: Vec::new(),
        incoming_qos2: Vec::new(),
    };
    b.broker
        .session_adopted(session, vec![stored_at("t", "owed", 3)], Vec::new(), b.now);
    let ops = b.cluster_ops();
    assert!(
        ops.iter().any(
            |op| matches!(op, ClusterOp::AdoptDone { client_id } if client_id.as_str() == "w")
        ),
        "{ops:?}"
    );
    b.advance_secs(4);
    assert!(!b
        .cluster_ops()
        .iter()
        .any(|op| matches!(op, ClusterOp::Publish(_))));
    b.advance_secs(2);
    let wills: Vec<bool> = b
        .cluster_ops()
        .iter()
        .filter_map(|op| match op {
            ClusterOp::Publish(p) if p.message.topic.as_str() == "gone" => Some(p.will),
            _ => None,
        })
        .collect();
    assert_eq!(wills, [true], "published once, as a will");
    b.advance_secs(60);
    assert!(!b
        .cluster_ops()
        .iter()
        .any(|op| matches!(op, ClusterOp::Publish(_))));

    let back = b.connect("w", V5, opts);
    assert!(back.connack.session_present);
    let packets = b.recv(&back);
    assert_eq!(payloads(&packets), ["owed"], "{packets:?}");
}

/// A session that ends with its connection is recorded when it has a will, which a node
/// adopting it would publish.
#[test]
fn a_clean_session_with_a_will_is_recorded_for_it() {
    let mut tb = cluster_broker();
    let opts = Opts::new().will(will("gone", "bye", Q1, false));
    tb.connect("clean-will", V5, opts);
    let (record, _) = last_saved(&tb.cluster_ops());
    assert_eq!(record.expiry_secs, 0);
    assert!(record.will.is_some());
}

/// A session that loses its connection keeps none of the QoS 1 messages the log brings for it
/// after that, nor the node's interest: its record says where they resume in the log. Its
/// connection back takes them, and the interest, again.
#[test]
fn an_offline_session_leaves_its_messages_in_the_log() {
    let mut tb = cluster_broker();
    let opts = Opts::new().resume().expiry(600);
    let client = tb.connect("away", V5, opts.clone());
    tb.subscribe(&client, "t", Q1);
    tb.cluster_ops();
    tb.broker
        .deliver_from_cluster(stored_at("t", "seen", 4), tb.now);
    let packets = tb.recv(&client);
    assert_eq!(payloads(&packets), ["seen"]);
    let Some(Packet::Publish(seen)) = packets.first() else {
        panic!("{packets:?}");
    };
    let id = seen.packet_id.unwrap().get();
    tb.send(&client, Packet::PubAck(ack(id, ReasonCode::Success)));
    tb.lose(&client);
    let resume_from = |ops: &[ClusterOp]| {
        ops.iter().rev().find_map(|op| match op {
            ClusterOp::SessionSaved { resume_from, .. } => Some(*resume_from),
            _ => None,
        })
    };
    let ops = tb.cluster_ops();
    assert_eq!(last_saved(&ops).1, Some(5), "everything acknowledged");
    assert_eq!(resume_from(&ops), Some(Some(5)), "kept up to 4");
    let interest = |ops: &[ClusterOp]| -> Vec<(String, bool)> {
        ops.iter()
            .filter_map(|op| match op {
                ClusterOp::Interest { filter, present } => {
                    Some((filter.as_str().to_owned(), *present))
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        interest(&ops),
        [("t".to_owned(), false)],
        "interest for online sessions"
    );

    let held = tb.broker.held_bytes();
    tb.broker
        .deliver_from_cluster(stored_at("t", "later", 9), tb.now);
    assert_eq!(tb.broker.held_bytes(), held, "no copy kept");
    let back = tb.connect("away", V5, opts);
    assert!(back.connack.session_present);
    tb.expect_silent(&back);
    let ops = tb.cluster_ops();
    assert_eq!(resume_from(&ops), Some(None), "online again");
    assert_eq!(interest(&ops), [("t".to_owned(), true)]);
    tb.broker
        .deliver_from_cluster(stored_at("t", "live", 10), tb.now);
    assert_eq!(payloads(&tb.recv(&back)), ["live"]);
}

/// A session's backlog (what the stream kept for it while it moved) leaves its `$share`
/// filters out: the cluster gave each of their messages to one member, maybe another.
#[test]
fn the_backlog_passes_over_shared_subscriptions() {
    let opts = Opts::new().resume().expiry(600);
    let subscribe = subscribe(1, &[("$share/g/s/#", Q1), ("p/#", Q1)]);
    let session = subscribed_and_handed_over("member", &opts, subscribe);

    let mut b = claiming_broker();
    let id = send_connect(&mut b, "member", &opts);
    let backlog = vec![remote_on("s/1", "group", Q1), remote_on("p/1", "plain", Q1)];
    b.broker.claim_settled(id, owned(session, backlog), b.now);
    let packets = b.drain(id);
    assert_eq!(payloads(&packets), ["plain"], "{packets:?}");
}

/// A checkpoint writes the record of a connected session whose cursor moved since it was last
/// written, holding none of its packets; one that did not move is not written again.
#[test]
fn a_checkpoint_writes_the_cursors_that_moved() {
    let mut tb = cluster_broker();
    let client = tb.connect("c", V5, Opts::new().expiry(600));
    tb.subscribe(&client, "t", Q1);
    tb.broker
        .deliver_from_cluster(stored_at("t", "3", 3), tb.now);
    let packets = tb.recv(&client);
    let Some(Packet::Publish(publish)) = packets.first() else {
        panic!("{packets:?}");
    };
    let id = publish.packet_id.unwrap().get();
    tb.send(&client, Packet::PubAck(ack(id, ReasonCode::Success)));
    tb.cluster_ops();
    tb.broker.cluster_checkpoint();
    let saved: Vec<(Option<u64>, bool)> = tb
        .cluster_ops()
        .iter()
        .filter_map(|op| match op {
            ClusterOp::SessionSaved {
                cursor, connection, ..
            } => Some((*cursor, connection.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(saved, [(Some(4), false)]);
    tb.broker.cluster_checkpoint();
    assert!(tb.cluster_ops().is_empty(), "nothing moved");
}

/// A session taken without its holder's hand-over (the holder died) resumes its QoS 2
/// deliveries as the holder recorded them: a message released goes out as its PUBREL, one
/// sent as its PUBLISH again under the same packet identifier (DUP), one completed not at
/// all; the rest of the backlog as new messages.
#[test]
fn qos2_deliveries_resume_as_recorded() {
    let mut a = cluster_broker();
    let opts = Opts::new().resume().expiry(600);
    let old = a.connect("q2", V5, opts.clone());
    a.subscribe(&old, "t/#", Q2);
    a.cluster_ops();
    a.broker
        .session_taken_over(&mstr("q2"), false, Some(5), a.now);
    a.expect_closed(&old);
    let session = handed_over(&a.cluster_ops(), 5);

    let mut b = claiming_broker();
    let id = send_connect(&mut b, "q2", &opts);
    let stored = |payload: &str, seq: u64| RemoteMessage {
        seq: Some(seq),
        ..remote_on("t/x", payload, Q2)
    };
    let record = |packet_id, seq, stage| OutboundQos2 {
        packet_id,
        seq,
        stage,
    };
    let outcome = ClaimOutcome::Owned {
        handed_over: session,
        backlog: vec![
            stored("b", 41),
            stored("c", 42),
            stored("d", 43),
            stored("e", 44),
        ],
        outbound: vec![
            record(7, 41, OutboundStage::Completed),
            record(8, 42, OutboundStage::Released),
            record(9, 43, OutboundStage::Sent),
        ],
    };
    b.broker.claim_settled(id, outcome, b.now);
    let sent: Vec<String> = b
        .drain(id)
        .iter()
        .filter_map(|packet| match packet {
            Packet::PubRel(ack) => Some(format!("PUBREL {}", ack.packet_id.get())),
            Packet::Publish(p) => Some(format!(
                "PUBLISH {} {} dup={}",
                String::from_utf8_lossy(&p.payload),
                p.packet_id.map_or(0, |id| id.get()),
                p.dup
            )),
            _ => None,
        })
        .collect();
    assert_eq!(sent[..2], ["PUBREL 8", "PUBLISH d 9 dup=true"], "{sent:?}");
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[2].starts_with("PUBLISH e ") && sent[2].ends_with("dup=false"));
}
