//! `$share` groups across `tern serve` nodes joined through a real `nats-server`: each message
//! of a group goes to exactly one member in the whole cluster, spread over the members of every
//! node; two groups on one filter each get every message; a member's node killed, the group
//! goes on with the members left.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::cluster::{client, join, persistent, send, three_nodes, WAIT};
use support::mqtt::RawClient;
use support::nats::NatsServer;
use tern_codec::{Ack, Packet, QoS};

/// Subscribes `client` to `filter`, waiting for the SUBACK.
fn subscribe(client: &mut RawClient, filter: &str, qos: QoS) {
    client.subscribe(filter, qos).unwrap();
}

/// Reads what every one of `members` receives (acknowledging QoS 1) until `done` says the
/// messages seen so far, by member, are enough, or [`WAIT`] passes; a member whose connection
/// ends keeps what it got.
fn collect(
    members: &mut [(&str, &mut RawClient)],
    mut done: impl FnMut(&BTreeMap<String, Vec<String>>) -> bool,
) -> BTreeMap<String, Vec<String>> {
    let deadline = Instant::now() + WAIT;
    let mut seen: BTreeMap<String, Vec<String>> = members
        .iter()
        .map(|(name, _)| ((*name).to_owned(), Vec::new()))
        .collect();
    let mut closed = vec![false; members.len()];
    while !done(&seen) {
        assert!(Instant::now() < deadline, "only got {seen:#?}");
        for (index, (name, client)) in members.iter_mut().enumerate() {
            if closed[index] {
                continue;
            }
            // A short wait on each in turn: every member's socket is read within a round.
            match client.recv(Duration::from_millis(20)) {
                Ok(Some(Packet::Publish(publish))) => {
                    if let Some(id) = publish.packet_id {
                        let _ = client.send(&Packet::PubAck(Ack::new(id)));
                    }
                    let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
                    seen.get_mut(*name).unwrap().push(payload);
                }
                Ok(Some(other)) => panic!("{name} got {other:?}"),
                Ok(None) => {}
                Err(_) => closed[index] = true,
            }
        }
    }
    // Nothing more: a second copy would come within milliseconds of the first.
    for (name, client) in members.iter_mut() {
        if let Ok(Some(extra)) = client.recv(Duration::from_millis(300)) {
            panic!("{name} got more than expected: {extra:?}");
        }
    }
    seen
}

fn total(seen: &BTreeMap<String, Vec<String>>) -> usize {
    seen.values().map(Vec::len).sum()
}

/// Every payload the members saw, sorted, with how many members saw it.
fn union(seen: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut all: Vec<String> = seen.values().flatten().cloned().collect();
    all.sort();
    all
}

#[test]
fn each_message_of_a_group_reaches_one_member_in_the_cluster_spread_over_every_node() {
    let nats = NatsServer::start();
    let (n1, n2, n3) = three_nodes(&nats);
    let nodes = [&n1, &n2, &n3];
    // Group g has a member on each node, group h on two; a plain subscriber shares n2.
    let mut g: Vec<RawClient> = (0..3)
        .map(|n| client(nodes[n], &format!("g{}", n + 1)))
        .collect();
    for member in &mut g {
        subscribe(member, "$share/g/s/#", QoS::AtLeastOnce);
    }
    let mut h: Vec<RawClient> = (1..3)
        .map(|n| client(nodes[n], &format!("h{}", n + 1)))
        .collect();
    for member in &mut h {
        subscribe(member, "$share/h/s/#", QoS::AtLeastOnce);
    }
    let mut plain = client(&n2, "plain");
    subscribe(&mut plain, "s/#", QoS::AtLeastOnce);

    // A publisher on each node, at QoS 0 and QoS 1.
    const EACH: usize = 30;
    let mut expected = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        let mut publisher = client(node, &format!("p{}", n + 1));
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            for i in 0..EACH {
                let level = usize::from(qos != QoS::AtMostOnce);
                let payload = format!("p{}-q{level}-{i:02}", n + 1);
                send(&mut publisher, &format!("s/{n}/{i}"), &payload, qos);
                expected.push(payload);
            }
        }
    }
    expected.sort();

    let [g1, g2, g3] = &mut g[..] else {
        unreachable!()
    };
    let mut members = [("g1", g1), ("g2", g2), ("g3", g3)];
    let seen_g = collect(&mut members, |seen| total(seen) >= expected.len());
    let [h2, h3] = &mut h[..] else { unreachable!() };
    let mut members = [("h2", h2), ("h3", h3)];
    let seen_h = collect(&mut members, |seen| total(seen) >= expected.len());
    let mut members = [("plain", &mut plain)];
    let seen_plain = collect(&mut members, |seen| total(seen) >= expected.len());

    let spread = |seen: &BTreeMap<String, Vec<String>>| {
        seen.iter()
            .map(|(name, got)| format!("{name} {}", got.len()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "{} messages from 3 publishers on 3 nodes: group g spread {}; group h spread {}",
        expected.len(),
        spread(&seen_g),
        spread(&seen_h)
    );
    assert_eq!(union(&seen_g), expected, "group g: each message once");
    assert_eq!(union(&seen_h), expected, "group h: each message once");
    assert_eq!(
        union(&seen_plain),
        expected,
        "the plain subscriber: each once"
    );
    for (name, got) in seen_g.iter().chain(&seen_h) {
        for qos in [0, 1] {
            let count = got
                .iter()
                .filter(|p| p.contains(&format!("-q{qos}-")))
                .count();
            assert!(
                count > 0,
                "{name} got no QoS {qos} message: {seen_g:?} {seen_h:?}"
            );
        }
    }
}

#[test]
fn a_member_node_killed_mid_stream_the_group_goes_on_with_the_others() {
    let nats = NatsServer::start();
    let (n1, n2, n3) = three_nodes(&nats);
    let mut m1 = client(&n1, "m1");
    let mut m2 = client(&n2, "m2");
    let mut m3 = client(&n3, "m3");
    for member in [&mut m1, &mut m2, &mut m3] {
        subscribe(member, "$share/g/k/#", QoS::AtLeastOnce);
    }
    let mut publisher = client(&n1, "publisher");
    const BEFORE: usize = 20;
    const AFTER: usize = 40;
    for i in 0..BEFORE {
        send(
            &mut publisher,
            "k/x",
            &format!("before-{i:02}"),
            QoS::AtLeastOnce,
        );
    }
    // The node dies right after the last PUBACK, its member's last messages maybe still on
    // their way (those are lost with it; the count is printed).
    let killed = Instant::now();
    n3.kill();
    // NATS hands the group's messages to the others once it has seen the connection go.
    let deadline = Instant::now() + WAIT;
    while nats.serves("tern n3") {
        assert!(Instant::now() < deadline, "NATS still lists n3");
        std::thread::sleep(Duration::from_millis(5));
    }
    let noticed = killed.elapsed();
    for i in 0..AFTER {
        send(
            &mut publisher,
            "k/x",
            &format!("after-{i:02}"),
            QoS::AtLeastOnce,
        );
    }
    let mut members = [("m1", &mut m1), ("m2", &mut m2), ("m3", &mut m3)];
    let seen = collect(&mut members, |seen| {
        seen.values()
            .flatten()
            .filter(|p| p.starts_with("after-"))
            .count()
            >= AFTER
    });
    let recovered = killed.elapsed();
    let all = union(&seen);
    let after: Vec<&String> = all.iter().filter(|p| p.starts_with("after-")).collect();
    let expected: Vec<String> = (0..AFTER).map(|i| format!("after-{i:02}")).collect();
    assert_eq!(
        after,
        expected.iter().collect::<Vec<_>>(),
        "each later one once"
    );
    assert!(
        seen["m3"].iter().all(|p| p.starts_with("before-")),
        "nothing after reached the dead node's member"
    );
    // Those before: what n3 had pulled and not acknowledged comes again to the others after
    // JetStream's acknowledgement wait (at least once); what it had handed its member's
    // session and acknowledged died with it.
    let mut before: Vec<&String> = all.iter().filter(|p| p.starts_with("before-")).collect();
    let copies = before.len();
    before.dedup();
    let after_on = |member: &str| {
        seen[member]
            .iter()
            .filter(|p| p.starts_with("after-"))
            .count()
    };
    println!(
        "n3 killed: NATS dropped it after {} ms; all {AFTER} later messages reached m1 ({}) and \
         m2 ({}) {} ms after the kill; of the {BEFORE} before, {} reached the group ({copies} \
         copies, {} to m3)",
        noticed.as_millis(),
        after_on("m1"),
        after_on("m2"),
        recovered.as_millis(),
        before.len(),
        seen["m3"].len()
    );
}

/// A group's QoS 1 messages wait in the stream while none of its members is online, and reach
/// the first to come back, on any node.
#[test]
fn a_group_whose_members_are_all_away_gets_its_messages_when_one_comes_back() {
    let nats = NatsServer::start();
    let (n1, n2, _n3) = three_nodes(&nats);
    let (mut member, _) = join(n2.port, persistent("away", true, 100));
    subscribe(&mut member, "$share/g/o/#", QoS::AtLeastOnce);
    member.disconnect().unwrap();
    let mut publisher = client(&n1, "publisher");
    const COUNT: usize = 10;
    for i in 0..COUNT {
        send(&mut publisher, "o/x", &format!("{i:02}"), QoS::AtLeastOnce);
    }
    let back = Instant::now();
    let (mut member, present) = join(n1.port, persistent("away", false, 100));
    assert!(present, "the session is resumed");
    let mut members = [("away", &mut member)];
    let seen = collect(&mut members, |seen| total(seen) >= COUNT);
    let expected: Vec<String> = (0..COUNT).map(|i| format!("{i:02}")).collect();
    assert_eq!(union(&seen), expected);
    println!(
        "{COUNT} messages published while the group's only member was away reached it {} ms \
         after it came back on another node",
        back.elapsed().as_millis()
    );
}
