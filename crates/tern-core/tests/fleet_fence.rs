//! The device fleet's namespaces are closed to every identity that is not of the fleet: on a
//! broker without any ACL rules, a client let in by another method neither reads nor writes
//! `/<owner>/...` or `$events/<owner>/...` of a registered owner, through any filter (`#`,
//! `+/#`, `/+/+/status`, `$share/g/#`, `$tree/#`), retained or live, nor sets a will there;
//! what lies outside the fleet stays open to it. Rules an operator configured open the fleet
//! to the clients they grant it (a monitoring client); a credential's own restriction does not.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Packet, Publish, ReasonCode};
use tern_core::{
    Access, Authorizer, ConnectionId, Identity, Method, Permissions, Principal, RequestRefusal,
};

/// Everything, as a credential's own restriction allows it: that opens nothing of the fleet.
#[derive(Debug)]
struct OnlyNarrowing;

impl Permissions for OnlyNarrowing {
    fn allows(&self, _access: Access, _topic: &str) -> bool {
        true
    }

    fn opens_fleet(&self) -> bool {
        false
    }
}

/// Gives client `monitor` rules that allow everything, client `narrow` a restriction that
/// allows everything, and everyone else nothing to compile (an open broker).
#[derive(Debug)]
struct Monitor;

impl Authorizer for Monitor {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        match principal.client_id.as_str() {
            "monitor" => Some(Box::new(Everything)),
            "narrow" => Some(Box::new(OnlyNarrowing)),
            _ => None,
        }
    }
}

const STATUS: &str = "{\"status\":\"connected\"}";

/// A broker without rules with device acme/d1 connected (its online event and retained
/// status published) and a retained message outside the fleet.
fn fleet() -> (TestBroker, TestClient) {
    let mut t = TestBroker::new();
    t.broker.set_authenticator(Box::new(AsFleet));
    t.broker.set_authorizer(Box::new(Monitor));
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    let d1 = t.connect("d1", V311, Opts::new());
    t.send(&d1, retained("/acme/d1/status", STATUS, Q1, 1));
    assert_eq!(t.recv(&d1), [puback(1)]);
    let other = t.connect("other", V311, Opts::new());
    t.send(&other, retained("news/today", "open", Q1, 1));
    assert_eq!(t.recv(&other), [puback(1)]);
    (t, d1)
}

fn topics(packets: &[Packet]) -> Vec<String> {
    publishes(packets)
        .iter()
        .map(|p| p.topic.as_str().to_owned())
        .collect()
}

fn acks(packets: &[Packet]) -> Vec<ReasonCode> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(ack) => Some(ack.reason_code),
            _ => None,
        })
        .collect()
}

fn suback_codes(packets: &[Packet]) -> Vec<ReasonCode> {
    match packets.first() {
        Some(Packet::SubAck(suback)) => suback.reason_codes.clone(),
        other => panic!("no SUBACK: {other:?}"),
    }
}

#[test]
fn wildcards_of_a_client_outside_the_fleet_get_nothing_of_it_retained_or_live() {
    let (mut t, d1) = fleet();
    let eve = t.connect("eve", V5, Opts::new());
    let filters = ["#", "+/#", "/+/+/status", "$share/g/#", "$events/#"].map(|f| (f, Q1));
    t.send(&eve, subscribe(1, &filters));
    // Granted, with the retained messages it is owed: only those outside the fleet.
    let (packets, _) = t.read_all(&eve);
    assert_eq!(suback_codes(&packets), [granted(Q1); 5]);
    let got = topics(&packets);
    assert!(got.iter().all(|topic| topic == "news/today"), "{got:?}");
    assert!(!got.is_empty(), "the subscriptions work outside the fleet");
    // Live: the device's status and the broker's events about it reach no one outside.
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 2));
    assert_eq!(t.recv(&d1), [puback(2)]);
    t.lose(&d1);
    t.connect("d1", V311, Opts::new());
    t.send(&eve, publish("news/later", "still open", Q1, 1));
    let (packets, _) = t.read_all(&eve);
    let got = topics(&packets);
    assert!(got.iter().all(|topic| topic == "news/later"), "{got:?}");
    // One delivery for the overlapping # and +/#, one for $share/g/#.
    assert_eq!(got.len(), 2, "{got:?}");
}

#[test]
fn a_filter_inside_the_fleet_publishes_retained_writes_and_wills_are_refused() {
    let (mut t, _d1) = fleet();
    let eve = t.connect("eve", V5, Opts::new());
    for filter in [
        "/acme/d1/status",
        "/acme/#",
        "$share/g//acme/#",
        "$events/acme/#",
    ] {
        t.send(&eve, subscribe(9, &[(filter, Q1)]));
        let codes = suback_codes(&t.recv(&eve));
        assert_eq!(codes, [ReasonCode::NotAuthorized], "{filter}");
    }
    // Publishing into the namespace, retained or not: refused, and nothing changes.
    t.send(&eve, publish("/acme/d1", "take over", Q1, 1));
    t.send(&eve, retained("/acme/d1/status", "{}", Q1, 2));
    t.send(&eve, publish("$events/acme/d1/online", "{}", Q1, 3));
    assert_eq!(acks(&t.recv(&eve)), [ReasonCode::NotAuthorized; 3]);
    let kept = t.broker.admin_retained("/acme/#", 10);
    assert_eq!(kept.len(), 1);
    assert_eq!(&kept[0].payload[..], STATUS.as_bytes());
    // A will into the namespace refuses the CONNECT.
    let opts = Opts::new().will(will("/acme/d1/status", "{}", Q0, true));
    let (_, packets, closed) = t.try_connect(connect_packet("mallory", V5, &opts));
    assert!(closed);
    assert!(
        matches!(packets.first(), Some(Packet::ConnAck(c)) if c.reason_code == ReasonCode::NotAuthorized),
        "{packets:?}"
    );
    // A topic whose owner level names no registered owner is no one's namespace.
    t.send(&eve, publish("/nobody/x", "free", Q1, 4));
    assert_eq!(acks(&t.recv(&eve)), [ReasonCode::NoMatchingSubscribers]);
}

#[test]
fn a_tree_view_outside_the_fleet_shows_nothing_of_it() {
    let (mut t, d1) = fleet();
    let eve = t.connect("eve", V5, Opts::new());
    t.send(&eve, subscribe(3, &[("$tree/#", Q1)]));
    let packets = t.recv(&eve);
    assert_eq!(suback_codes(&packets), [granted(Q1)]);
    let snapshot: Vec<String> = publishes(&packets)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect();
    assert_eq!(snapshot.len(), 1, "{snapshot:?}");
    assert!(
        snapshot[0].contains("news") && !snapshot[0].contains("acme"),
        "{snapshot:?}"
    );
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 2));
    t.recv(&d1);
    t.advance_secs(5);
    let (packets, _) = t.read_all(&eve);
    assert!(publishes(&packets).is_empty(), "{packets:?}");
}

#[test]
fn an_offline_session_outside_the_fleet_keeps_nothing_of_it() {
    let (mut t, d1) = fleet();
    let eve = t.connect("eve", V5, Opts::new().resume().expiry(3600));
    t.subscribe(&eve, "#", Q1);
    t.read_all(&eve);
    t.disconnect(&eve);
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 2));
    t.recv(&d1);
    let eve = t.connect("eve", V5, Opts::new().resume().expiry(3600));
    let (packets, _) = t.read_all(&eve);
    assert!(topics(&packets).is_empty(), "{packets:?}");
}

#[test]
fn rules_an_operator_configured_open_the_fleet_and_a_credentials_restriction_does_not() {
    let (mut t, d1) = fleet();
    let monitor = t.connect("monitor", V5, Opts::new());
    t.subscribe(&monitor, "#", Q1);
    let narrow = t.connect("narrow", V5, Opts::new());
    t.subscribe(&narrow, "#", Q1);
    let (packets, _) = t.read_all(&monitor);
    assert!(topics(&packets).contains(&"/acme/d1/status".to_owned()));
    let (packets, _) = t.read_all(&narrow);
    assert_eq!(topics(&packets), ["news/today"]);
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 2));
    t.recv(&d1);
    let (packets, _) = t.read_all(&monitor);
    assert_eq!(topics(&packets), ["/acme/d1/status"]);
    let (packets, _) = t.read_all(&narrow);
    assert!(topics(&packets).is_empty(), "{packets:?}");
    t.send(&monitor, publish("/acme/d1", "hello", Q1, 1));
    assert_eq!(acks(&t.recv(&monitor)), [ReasonCode::Success]);
}

fn http_key(name: &str) -> Identity {
    Identity {
        method: Method::HttpKey,
        username: Some(name.to_owned()),
        ..Identity::default()
    }
}

fn request(topic_name: &str) -> Publish {
    let mut publish = Publish::new(topic(topic_name), Bytes::from_static(b"{}"));
    publish.qos = Q1;
    publish
}

#[test]
fn requests_outside_the_fleet_are_kept_out_and_a_devices_own_key_is_the_device() {
    let (mut t, _d1) = fleet();
    let edge = ConnectionId(1_000_000);
    let now = t.now;
    // A key of the HTTP bridge that is no fleet device's: kept out, as over MQTT.
    let eve = t
        .broker
        .request_client(edge, mstr("eve"), http_key("eve"), None);
    assert!(eve.fleet_fenced());
    let outcomes = t.broker.publish_for(
        &eve,
        vec![request("/acme/d1/status"), request("news/x")],
        false,
        now,
    );
    assert_eq!(outcomes[0], Err(RequestRefusal::NotAuthorized));
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
    // An operator, whose token's topics the edge checked, is let in.
    let operator = t
        .broker
        .request_client(edge, mstr("tern-console-ops"), http_key("ops"), None)
        .opened_to_fleet();
    let outcomes = t
        .broker
        .publish_for(&operator, vec![request("/acme/d1")], false, now);
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    // The device's own key (d:d1 speaks for client d1) is the device: its namespace is its.
    t.broker.fleet_add(device("acme", "k1")).expect("added");
    let k1 = t
        .broker
        .request_client(edge, mstr("k1"), http_key("k1"), None);
    assert_eq!(k1.identity().method, Method::FleetDevice);
    assert_eq!(k1.identity().owner.as_deref(), Some("acme"));
    let outcomes = t
        .broker
        .publish_for(&k1, vec![request("/acme/k1/status")], false, now);
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    // Disabled, it is refused every request.
    t.broker.fleet_disable("k1", true, now).expect("disabled");
    let k1 = t
        .broker
        .request_client(edge, mstr("k1"), http_key("k1"), None);
    let outcomes = t
        .broker
        .publish_for(&k1, vec![request("/acme/k1/status")], false, now);
    assert_eq!(outcomes, [Err(RequestRefusal::Banned)]);
}

/// A client kept out of the fleet that joins a monitor's `$share` group must not take the
/// fleet's messages away from it: the group passes over the outsider for a fleet topic (and
/// still shares everything else with it).
#[test]
fn an_outsider_in_a_monitors_shared_group_takes_none_of_the_fleets_messages() {
    let (mut t, d1) = fleet();
    let monitor = t.connect("monitor", V5, Opts::new());
    t.subscribe(&monitor, "$share/g/#", Q1);
    let eve = t.connect("eve", V5, Opts::new());
    t.subscribe(&eve, "$share/g/#", Q1);
    t.read_all(&monitor);
    t.read_all(&eve);
    for id in 2..6 {
        t.send(&d1, publish("/acme/d1/status", STATUS, Q1, id));
        assert_eq!(t.recv(&d1), [puback(id)]);
    }
    let (packets, _) = t.read_all(&monitor);
    assert_eq!(topics(&packets), ["/acme/d1/status"; 4], "{packets:?}");
    let (packets, _) = t.read_all(&eve);
    assert!(topics(&packets).is_empty(), "{packets:?}");
    // Outside the fleet the group still takes turns.
    let other = t.connect("other", V311, Opts::new());
    for id in 1..5 {
        t.send(&other, publish("news/more", "open", Q1, id));
        assert_eq!(t.recv(&other), [puback(id)]);
    }
    let (to_monitor, _) = t.read_all(&monitor);
    let (to_eve, _) = t.read_all(&eve);
    assert_eq!(topics(&to_monitor).len() + topics(&to_eve).len(), 4);
    assert!(!topics(&to_eve).is_empty(), "{to_eve:?}");
}

/// A monitoring client the rules open the fleet to keeps its messages while it is away, as
/// its subscriptions allow, and finds them when it comes back.
#[test]
fn a_monitors_offline_session_keeps_the_fleets_messages_for_its_return() {
    let (mut t, d1) = fleet();
    let monitor = t.connect("monitor", V5, Opts::new().resume().expiry(3600));
    t.subscribe(&monitor, "/acme/#", Q1);
    t.read_all(&monitor);
    t.disconnect(&monitor);
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 2));
    assert_eq!(t.recv(&d1), [puback(2)]);
    let monitor = t.connect("monitor", V5, Opts::new().resume().expiry(3600));
    let (packets, _) = t.read_all(&monitor);
    assert_eq!(topics(&packets), ["/acme/d1/status"], "{packets:?}");
    // Rules replaced while it is away: what the old ones opened is not known to hold, so it
    // keeps the fleet's messages again from its next connection only.
    t.disconnect(&monitor);
    let now = t.now;
    t.broker.replace_authorizer(Box::new(Monitor), now);
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 3));
    assert_eq!(t.recv(&d1), [puback(3)]);
    let monitor = t.connect("monitor", V5, Opts::new().resume().expiry(3600));
    let (packets, _) = t.read_all(&monitor);
    assert!(topics(&packets).is_empty(), "{packets:?}");
    t.disconnect(&monitor);
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 4));
    assert_eq!(t.recv(&d1), [puback(4)]);
    let monitor = t.connect("monitor", V5, Opts::new().resume().expiry(3600));
    let (packets, _) = t.read_all(&monitor);
    assert_eq!(topics(&packets), ["/acme/d1/status"], "{packets:?}");
}

fn payloads(packets: &[Packet]) -> Vec<String> {
    publishes(packets)
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

/// A tree view shared by a monitor and an outsider: the monitor gets the fleet's changes,
/// the outsider the same deltas without them, including those recorded before it joined and
/// a fleet message that expired.
#[test]
fn an_outsider_sharing_a_monitors_tree_view_gets_no_delta_of_the_fleet() {
    let (mut t, d1) = fleet();
    let monitor = t.connect("monitor", V5, Opts::new());
    t.send(&monitor, subscribe(1, &[("$tree/#", Q1)]));
    t.read_all(&monitor);
    // Recorded for the view while the monitor is its only member.
    t.send(
        &d1,
        publish("/acme/d1/status", "{\"status\":\"early\"}", Q1, 2),
    );
    assert_eq!(t.recv(&d1), [puback(2)]);
    let eve = t.connect("eve", V5, Opts::new());
    t.send(&eve, subscribe(1, &[("$tree/#", Q1)]));
    let (packets, _) = t.read_all(&eve);
    assert!(
        payloads(&packets).iter().all(|p| !p.contains("acme")),
        "{packets:?}"
    );
    // And once both are members.
    t.send(
        &d1,
        publish("/acme/d1/status", "{\"status\":\"late\"}", Q1, 3),
    );
    assert_eq!(t.recv(&d1), [puback(3)]);
    let other = t.connect("other", V311, Opts::new());
    t.send(&other, publish("news/now", "open", Q1, 2));
    assert_eq!(t.recv(&other), [puback(2)]);
    t.advance_secs(5);
    let (packets, _) = t.read_all(&eve);
    let seen = payloads(&packets);
    assert!(seen.iter().all(|p| !p.contains("acme")), "{seen:?}");
    assert!(seen.iter().any(|p| p.contains("news")), "{seen:?}");
    let (packets, _) = t.read_all(&monitor);
    let seen = payloads(&packets).concat();
    assert!(seen.contains("late") && seen.contains("news"), "{seen:?}");
    // A retained fleet message that expires is not told to the outsider either.
    let expiring = publish_with("/acme/d1/x", "soon gone", Q1, 4, |p| {
        p.retain = true;
        p.properties.message_expiry_interval = Some(1);
    });
    t.send(&monitor, expiring);
    t.advance_secs(5);
    t.read_all(&monitor);
    t.advance_secs(2);
    let (packets, _) = t.read_all(&eve);
    assert!(
        payloads(&packets).iter().all(|p| !p.contains("acme")),
        "{packets:?}"
    );
}

/// The same over HTTP: a key the rules open the fleet to keeps its messages in its mailbox
/// (a session without a connection); a key outside the fleet keeps nothing of it there.
#[test]
fn a_monitors_mailbox_keeps_the_fleets_messages_and_an_outsiders_does_not() {
    let (mut t, d1) = fleet();
    let (edge, now) = (ConnectionId(1_000_000), t.now);
    let fetch = tern_core::broker::mailbox::Fetch {
        ack: None,
        limit: 10,
        bytes_max: usize::MAX,
        lease_millis: 30_000,
        deliveries_max: 10,
        dead_max: 100,
        watch: false,
    };
    let monitor = t
        .broker
        .request_client(edge, mstr("monitor"), http_key("monitor"), None);
    let eve = t
        .broker
        .request_client(edge, mstr("eve"), http_key("eve"), None);
    assert!(!monitor.fleet_fenced() && eve.fleet_fenced());
    for client in [&monitor, &eve] {
        let granted = t
            .broker
            .mailbox_subscribe(client, "#", Q1, false, 3600, now);
        assert_eq!(granted, Ok(Q1));
    }
    t.send(&d1, publish("/acme/d1/status", STATUS, Q1, 2));
    assert_eq!(t.recv(&d1), [puback(2)]);
    let other = t.connect("other", V311, Opts::new());
    t.send(&other, publish("news/now", "open", Q1, 2));
    assert_eq!(t.recv(&other), [puback(2)]);
    let polled = |t: &mut TestBroker, client| {
        let fetched = t.broker.mailbox_fetch(client, &fetch, now).expect("polled");
        fetched
            .messages
            .iter()
            .map(|m| m.delivery.message.topic.as_str().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(polled(&mut t, &monitor), ["/acme/d1/status", "news/now"]);
    assert_eq!(polled(&mut t, &eve), ["news/now"]);
}
