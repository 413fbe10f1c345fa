//! Actionable notifications: a device raises several on its status channel, each with its own
//! id; each answer is checked against its response type and goes to the device once, at QoS 2,
//! on its own channel (with the Correlation Data of the raise under MQTT 5), through its
//! session when it is away; the device's PUBCOMP marks it delivered; a second answer, or one
//! after the notification expired, is refused. An owner answers over MQTT on the device's
//! answer topic; an operator asks a device, and the device answers on its status channel.
//! Everything survives a restart through the store.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use serde_json::{json, Value};
use support::*;
use tern_codec::{Packet, Publish};
use tern_core::broker::fleet_notify::Ask;
use tern_core::fleet_notify::{Direction, Notification, NotifyError, NotifyState, ResponseType};
use tern_core::{Broker, Config, Event, MemoryStore, Store};

fn config() -> Config {
    Config {
        persistence: true,
        ..Config::default()
    }
}

/// A broker with devices acme/d1 and globex/g1 (firmware subscribed to its own channel at
/// QoS 2, as THiNX firmware does) and a console of acme watching its events.
fn fleet(version: tern_codec::ProtocolVersion) -> (TestBroker, TestClient, TestClient) {
    let mut t = TestBroker::with_config(config());
    t.broker.set_authenticator(Box::new(AsFleet));
    // The console is granted the fleet by rule.
    t.broker.set_authorizer(Box::new(RulesAllowingAll));
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    t.broker.fleet_add(device("globex", "g1")).expect("added");
    let console = t.connect("console", V5, Opts::new());
    t.subscribe(&console, "$events/acme/+/notification", Q1);
    let d1 = t.connect("d1", version, Opts::new().resume().expiry(3600));
    t.subscribe(&d1, "/acme/d1", Q2);
    (t, console, d1)
}

fn raise(t: &mut TestBroker, device: &TestClient, notification: Value) {
    let payload = json!({ "notification": notification }).to_string();
    let pid = t.fresh_packet_id();
    t.send(device, publish("/acme/d1/status", &payload, Q1, pid));
    let packets = t.recv(device);
    assert!(
        matches!(packets.as_slice(), [Packet::PubAck(_)]),
        "{packets:?}"
    );
}

/// The notifications the device was sent, completing each QoS 2 exchange as firmware does.
fn received(t: &mut TestBroker, device: &TestClient) -> Vec<(Value, Publish)> {
    let mut got = Vec::new();
    for packet in t.recv(device) {
        let Packet::Publish(p) = packet else {
            continue;
        };
        assert_eq!(p.qos, Q2, "notifications go at QoS 2");
        assert_eq!(p.topic.as_str(), "/acme/d1");
        let id = p.packet_id.expect("QoS 2").get();
        t.send(device, pubrec(id));
        assert_eq!(t.recv(device), vec![pubrel(id)]);
        t.send(device, pubcomp(id));
        let value: Value = serde_json::from_slice(&p.payload).expect("JSON");
        got.push((value["notification"].clone(), p));
    }
    got
}

/// Whether an answer was refused because the notification is in `state` already.
fn closed(answer: &Result<Notification, NotifyError>, state: NotifyState) -> bool {
    matches!(answer, Err(NotifyError::Finished { state: s, .. }) if *s == state)
}

fn ids(t: &TestBroker, state: NotifyState) -> Vec<String> {
    let all = t.broker.fleet_notifications().iter();
    all.filter(|n| n.state == state)
        .map(|n| n.nid.clone())
        .collect()
}

#[test]
fn three_pending_answered_out_of_order_each_go_once_at_qos_2_with_their_own_id() {
    for version in [V311, V5] {
        let (mut t, _console, d1) = fleet(version);
        raise(
            &mut t,
            &d1,
            json!({"body": "Door open 3 h: close it?", "nid": "door"}),
        );
        let kinds = json!({"body": "Which mode?", "response_type": "choice",
                           "choices": ["eco", "boost"]});
        raise(&mut t, &d1, kinds);
        raise(
            &mut t,
            &d1,
            json!({"body": "Name it", "response_type": "string"}),
        );
        let mut pending = ids(&t, NotifyState::Pending);
        pending.sort();
        assert_eq!(
            pending,
            ["door", "n1", "n2"],
            "the device's id, else the broker's"
        );
        // Answered out of order; the device sees each answer once, with its own id.
        let n2 = t
            .broker
            .fleet_notify_answer("d1", "n2", json!("porch"), t.now);
        assert_eq!(n2.expect("answered").state, NotifyState::Answered);
        t.broker
            .fleet_notify_answer("d1", "door", json!(true), t.now)
            .expect("answered");
        t.broker
            .fleet_notify_answer("d1", "n1", json!("boost"), t.now)
            .expect("answered");
        let got: Vec<Value> = received(&mut t, &d1).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            got,
            [
                json!({"nid": "n2", "response": "porch"}),
                json!({"nid": "door", "response": true}),
                json!({"nid": "n1", "response": "boost"}),
            ]
        );
        t.expect_silent(&d1);
        // Each PUBCOMP marked its answer delivered.
        let all = t.broker.fleet_notifications();
        assert!(all.iter().all(|n| n.delivered.is_some()), "{all:?}");
        // A second answer is refused, and nothing more goes to the device.
        let again = t
            .broker
            .fleet_notify_answer("d1", "door", json!(false), t.now);
        assert!(closed(&again, NotifyState::Answered), "{again:?}");
        t.expect_silent(&d1);
    }
}

#[test]
fn an_answer_must_fit_the_response_type() {
    let (mut t, _console, d1) = fleet(V5);
    raise(&mut t, &d1, json!({"body": "Close?", "nid": "a"}));
    let choices = json!({"body": "Mode?", "nid": "b", "response_type": "choice",
                         "choices": ["eco", "boost"]});
    raise(&mut t, &d1, choices);
    for (nid, wrong) in [("a", json!("yes")), ("b", json!("turbo")), ("b", json!(1))] {
        let answer = t.broker.fleet_notify_answer("d1", nid, wrong, t.now);
        assert!(
            matches!(answer, Err(NotifyError::BadResponse(_))),
            "{answer:?}"
        );
    }
    assert_eq!(ids(&t, NotifyState::Pending).len(), 2, "still pending");
    t.expect_silent(&d1);
    let missing = t.broker.fleet_notify_answer("d1", "zz", json!(true), t.now);
    assert!(matches!(missing, Err(NotifyError::NoNotification(_))));
}

#[test]
fn under_mqtt_5_the_answer_carries_the_correlation_data_of_the_raise() {
    let (mut t, _console, d1) = fleet(V5);
    let payload = json!({"notification": {"body": "Close?"}}).to_string();
    let pid = t.fresh_packet_id();
    let raise = publish_with("/acme/d1/status", &payload, Q1, pid, |p| {
        p.properties.correlation_data = Some(Bytes::from_static(b"req-7"));
    });
    t.send(&d1, raise);
    t.recv(&d1);
    t.broker
        .fleet_notify_answer("d1", "n1", json!(false), t.now)
        .expect("answered");
    let got = received(&mut t, &d1);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].1.properties.correlation_data.as_deref(),
        Some(&b"req-7"[..])
    );
}

#[test]
fn an_answer_waits_in_the_session_of_a_sleeping_device() {
    let (mut t, _console, d1) = fleet(V311);
    raise(&mut t, &d1, json!({"body": "Close?", "nid": "door"}));
    t.disconnect(&d1);
    t.broker
        .fleet_notify_answer("d1", "door", json!(true), t.now)
        .expect("answered while it sleeps");
    let note = t
        .broker
        .fleet_notifications()
        .get("d1", "door")
        .expect("kept");
    assert!(note.delivered.is_none(), "not delivered while asleep");
    let d1 = t.connect("d1", V311, Opts::new().resume().expiry(3600));
    let got = received(&mut t, &d1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, json!({"nid": "door", "response": true}));
    let note = t
        .broker
        .fleet_notifications()
        .get("d1", "door")
        .expect("kept");
    assert!(note.delivered.is_some(), "its PUBCOMP marks it delivered");
}

#[test]
fn an_unanswered_notification_expires_and_is_then_refused() {
    let (mut t, console, d1) = fleet(V5);
    raise(
        &mut t,
        &d1,
        json!({"body": "Close?", "nid": "door", "ttl": 60}),
    );
    t.read_all(&console);
    // The runtime is asked to come back when it expires.
    let expires = t.now.plus_secs(60);
    assert_eq!(t.broker.next_timeout(), Some(expires));
    t.advance_secs(61);
    assert_eq!(ids(&t, NotifyState::Expired), ["door"]);
    let (packets, _) = t.read_all(&console);
    let told = payloads(&packets);
    assert!(
        told.iter().any(|p| p.contains("\"change\":\"expired\"")),
        "{told:?}"
    );
    let late = t
        .broker
        .fleet_notify_answer("d1", "door", json!(true), t.now);
    assert!(closed(&late, NotifyState::Expired), "{late:?}");
    t.expect_silent(&d1);
}

#[test]
fn an_owner_answers_over_mqtt_on_the_devices_answer_topic() {
    let (mut t, console, d1) = fleet(V5);
    raise(&mut t, &d1, json!({"body": "Close?", "nid": "door"}));
    let answer = json!({"notification": {"nid": "door", "response": true}}).to_string();
    let pid = t.fresh_packet_id();
    t.send(&console, publish("/acme/d1/answer", &answer, Q1, pid));
    let got = received(&mut t, &d1);
    assert_eq!(got[0].0, json!({"nid": "door", "response": true}));
    // A wrong one is refused and logged; the notification is answered once.
    let pid = t.fresh_packet_id();
    t.send(&console, publish("/acme/d1/answer", &answer, Q1, pid));
    t.expect_silent(&d1);
    let refused = t.events().into_iter().any(|e| {
        matches!(e, Event::FleetNotifyRefused { ref reason, .. } if reason.contains("answered"))
    });
    assert!(refused, "the second answer is refused");
}

#[test]
fn a_device_cannot_raise_for_another_or_answer_its_own() {
    let (mut t, _console, d1) = fleet(V5);
    // On another device's status channel, or answering itself: not a notification of d1.
    let raise = json!({"notification": {"body": "Close?"}}).to_string();
    let pid = t.fresh_packet_id();
    t.send(&d1, publish("/globex/g1/status", &raise, Q1, pid));
    t.recv(&d1);
    assert!(t.broker.fleet_notifications().is_empty());
    raise_and_answer_self(&mut t, &d1);
}

fn raise_and_answer_self(t: &mut TestBroker, d1: &TestClient) {
    raise(t, d1, json!({"body": "Close?", "nid": "door"}));
    let answer = json!({"notification": {"nid": "door", "response": true}}).to_string();
    let pid = t.fresh_packet_id();
    t.send(d1, publish("/acme/d1/status", &answer, Q1, pid));
    t.recv(d1);
    assert_eq!(
        ids(t, NotifyState::Pending),
        ["door"],
        "a device does not answer itself"
    );
}

#[test]
fn an_operator_asks_a_device_which_acknowledges_and_answers() {
    let (mut t, console, d1) = fleet(V5);
    let ask = Ask {
        body: "Reboot now?".into(),
        response_type: ResponseType::Bool,
        nid: None,
        ttl: None,
    };
    let asked = t.broker.fleet_notify_ask("d1", ask, t.now).expect("asked");
    assert_eq!(asked.direction, Direction::ToDevice);
    let got = received(&mut t, &d1);
    assert_eq!(
        got[0].0,
        json!({"nid": asked.nid, "body": "Reboot now?", "response_type": "bool"})
    );
    let note = t
        .broker
        .fleet_notifications()
        .get("d1", &asked.nid)
        .expect("kept");
    assert!(note.delivered.is_some() && note.state == NotifyState::Pending);
    // Nor can the device withdraw it: only what it raised.
    raise(&mut t, &d1, json!({"nid": asked.nid, "cancel": true}));
    assert_eq!(
        ids(&t, NotifyState::Pending),
        std::slice::from_ref(&asked.nid)
    );
    // The operator cannot answer it; the device does, on its status channel.
    let wrong = t
        .broker
        .fleet_notify_answer("d1", &asked.nid, json!(true), t.now);
    assert!(matches!(wrong, Err(NotifyError::BadRequest(_))));
    raise(&mut t, &d1, json!({"nid": asked.nid, "response": true}));
    let note = t
        .broker
        .fleet_notifications()
        .get("d1", &asked.nid)
        .expect("kept");
    assert_eq!(note.state, NotifyState::Answered);
    assert_eq!(note.response_value(), Some(json!(true)));
    let (packets, _) = t.read_all(&console);
    let changes: Vec<String> = payloads(&packets)
        .iter()
        .filter_map(|p| serde_json::from_str::<Value>(p).ok())
        .filter_map(|v| v["change"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(changes, ["asked", "delivered", "answered"]);
}

#[test]
fn notifications_and_their_answers_survive_a_restart() {
    let (mut t, _console, d1) = fleet(V311);
    let mut store = MemoryStore::default();
    raise(&mut t, &d1, json!({"body": "Close?", "nid": "door"}));
    raise(&mut t, &d1, json!({"body": "Open?", "nid": "gate"}));
    t.disconnect(&d1);
    t.broker
        .fleet_notify_answer("d1", "gate", json!(false), t.now)
        .expect("answered");
    let ops: Vec<_> = std::iter::from_fn(|| t.broker.poll_store_op()).collect();
    store.apply(&ops).expect("memory store applies");
    t.broker = Broker::restore(config(), t.now, store.load().expect("loads"));
    t.broker.set_authenticator(Box::new(AsFleet));
    t.broker.set_authorizer(Box::new(RulesAllowingAll));
    assert_eq!(ids(&t, NotifyState::Pending), ["door"]);
    assert_eq!(ids(&t, NotifyState::Answered), ["gate"]);
    // The answer queued before the restart reaches the device, and is marked delivered.
    let d1 = t.connect("d1", V311, Opts::new().resume().expiry(3600));
    let got = received(&mut t, &d1);
    assert_eq!(got[0].0, json!({"nid": "gate", "response": false}));
    let gate = t
        .broker
        .fleet_notifications()
        .get("d1", "gate")
        .expect("kept");
    assert!(gate.delivered.is_some());
    t.broker
        .fleet_notify_answer("d1", "door", json!(true), t.now)
        .expect("still pending after the restart");
    assert_eq!(received(&mut t, &d1).len(), 1);
}

#[test]
fn a_repeated_raise_is_the_same_notification_and_a_taken_id_gets_the_brokers() {
    let (mut t, _console, d1) = fleet(V311);
    raise(&mut t, &d1, json!({"body": "Close?", "nid": "door"}));
    // A resend of the same raise (QoS 1 after a reconnect) is the same notification.
    raise(&mut t, &d1, json!({"body": "Close?", "nid": "door"}));
    assert_eq!(ids(&t, NotifyState::Pending), ["door"]);
    // Another question under an id the device has: the broker gives it its own.
    raise(&mut t, &d1, json!({"body": "Lock?", "nid": "door"}));
    let mut pending = ids(&t, NotifyState::Pending);
    pending.sort();
    assert_eq!(pending, ["door", "n1"]);
    let n1 = t
        .broker
        .fleet_notifications()
        .get("d1", "n1")
        .expect("kept");
    assert_eq!(n1.body, "Lock?");
}

#[test]
fn a_device_withdraws_its_own_and_a_deleted_device_takes_its_notifications_along() {
    let (mut t, _console, d1) = fleet(V5);
    raise(&mut t, &d1, json!({"body": "Close?", "nid": "door"}));
    raise(&mut t, &d1, json!({"body": "Open?", "nid": "gate"}));
    raise(&mut t, &d1, json!({"nid": "door", "cancel": true}));
    assert_eq!(ids(&t, NotifyState::Cancelled), ["door"]);
    let late = t
        .broker
        .fleet_notify_answer("d1", "door", json!(true), t.now);
    assert!(closed(&late, NotifyState::Cancelled), "{late:?}");
    std::iter::from_fn(|| t.broker.poll_store_op()).for_each(drop);
    t.broker.fleet_delete("d1", t.now).expect("deleted");
    assert!(t.broker.fleet_notifications().is_empty());
    let forgotten = std::iter::from_fn(|| t.broker.poll_store_op())
        .filter(|op| matches!(op, tern_core::StoreOp::FleetNotifyRemove { .. }))
        .count();
    assert_eq!(forgotten, 2, "the store forgets them too");
}

#[test]
fn a_device_keeps_a_bounded_number_of_notifications() {
    let (mut t, _console, d1) = fleet(V311);
    let kept_max = tern_core::fleet_notify::NOTIFY_KEPT_PER_DEVICE_MAX;
    for n in 0..kept_max + 10 {
        let nid = format!("q{n}");
        raise(&mut t, &d1, json!({"body": "Close?", "nid": nid}));
        raise(&mut t, &d1, json!({"nid": nid, "cancel": true}));
        t.advance(1);
    }
    let all = t.broker.fleet_notifications();
    assert_eq!(all.iter().count(), kept_max);
    // The oldest finished went first.
    assert!(all.get("d1", "q9").is_none() && all.get("d1", "q10").is_some());
}

/// A device speaking HTTP with its own key and no session at all (no mailbox) raises a
/// notification by publishing on its status channel, as over MQTT.
#[test]
fn a_device_without_a_mailbox_raises_one_over_a_request() {
    let (mut t, console, _d1) = fleet(V5);
    t.broker.fleet_add(device("acme", "k1")).expect("added");
    t.read_all(&console);
    let (edge, now) = (tern_core::ConnectionId(1_000_000), t.now);
    let k1 = t
        .broker
        .request_client(edge, mstr("k1"), key_identity("k1"), None);
    let payload = json!({"notification": {"body": "Close?", "nid": "door"}}).to_string();
    let mut publish = Publish::new(topic("/acme/k1/status"), payload.into());
    publish.qos = Q1;
    let outcomes = t.broker.publish_for(&k1, vec![publish], false, now);
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    let note = t
        .broker
        .fleet_notifications()
        .get("k1", "door")
        .expect("raised");
    assert_eq!(note.state, NotifyState::Pending);
    let (packets, _) = t.read_all(&console);
    let events: Vec<&str> = publishes(&packets)
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(events, ["$events/acme/k1/notification"]);
}
