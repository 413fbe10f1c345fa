//! The fleet's live status, from the broker's own connects and disconnects: each change is an
//! event on `$events/<owner>/<udid>/online|offline`, and for a device that set no will of its
//! own the retained THiNX status on `/<owner>/<udid>/status`; a device with a will speaks for
//! itself. A flapping device is reported once; after a restart a status left saying
//! "connected" says "disconnected".
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Packet, Publish};
use tern_core::broker::mailbox::Fetch;
use tern_core::fleet::{STATUS_CONNECTED, STATUS_DISCONNECTED};
use tern_core::{Broker, Config, ConnectionId, Event, MemoryStore, Store};

fn published(packets: &[Packet]) -> Vec<(String, String, bool)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((
                p.topic.as_str().to_owned(),
                String::from_utf8_lossy(&p.payload).into_owned(),
                p.retain,
            )),
            _ => None,
        })
        .collect()
}

fn status(payload: &[u8]) -> String {
    String::from_utf8_lossy(payload).into_owned()
}

/// A broker with device acme/d1 and a console subscribed to its events and status.
fn fleet() -> (TestBroker, TestClient) {
    let mut t = TestBroker::with_config(Config {
        persistence: true,
        ..Config::default()
    });
    t.broker.set_authenticator(Box::new(AsFleet));
    // The console is granted the fleet by rule.
    t.broker.set_authorizer(Box::new(RulesAllowingAll));
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    let console = t.connect("console", V5, Opts::new());
    t.subscribe(&console, "$events/acme/#", Q1);
    t.subscribe(&console, "/acme/d1/status", Q1);
    (t, console)
}

#[test]
fn a_device_without_a_will_is_online_then_offline_in_events_and_its_retained_status() {
    for version in [V311, V5] {
        let (mut t, console) = fleet();
        let d1 = t.connect("d1", version, Opts::new());
        let (packets, _) = t.read_all(&console);
        let got = published(&packets);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].0, "$events/acme/d1/online");
        assert!(got[0].1.contains("\"udid\":\"d1\""), "{}", got[0].1);
        assert_eq!(
            (got[1].0.as_str(), got[1].1.clone()),
            ("/acme/d1/status", status(STATUS_CONNECTED))
        );
        let live = t.broker.fleet_status("d1").expect("a status");
        assert!(live.online && !live.own_will && !live.flapping);
        assert_eq!(live.version, Some(version));
        t.lose(&d1);
        let (packets, _) = t.read_all(&console);
        let got = published(&packets);
        assert_eq!(got[0].0, "$events/acme/d1/offline");
        assert_eq!(got[1].1, status(STATUS_DISCONNECTED));
        assert!(!t.broker.fleet_status("d1").expect("a status").online);
        // The status is retained: a console that subscribes later sees it.
        let late = t.connect("late", V5, Opts::new());
        t.subscribe(&late, "/acme/d1/status", Q1);
        let (packets, _) = t.read_all(&late);
        assert_eq!(published(&packets)[0].1, status(STATUS_DISCONNECTED));
    }
}

#[test]
fn a_device_with_its_own_will_speaks_for_itself() {
    let (mut t, console) = fleet();
    let will = will("/acme/d1/status", "{\"status\":\"disconnected\"}", Q0, true);
    let d1 = t.connect("d1", V311, Opts::new().will(will));
    let (packets, _) = t.read_all(&console);
    let topics: Vec<String> = published(&packets).into_iter().map(|p| p.0).collect();
    assert_eq!(topics, ["$events/acme/d1/online"]);
    assert!(t.broker.fleet_status("d1").expect("a status").own_will);
    t.lose(&d1);
    let (packets, _) = t.read_all(&console);
    let got = published(&packets);
    // Its own will, and the broker's event; no second status.
    assert_eq!(
        got.iter().filter(|p| p.0 == "/acme/d1/status").count(),
        1,
        "{got:?}"
    );
    assert!(got.iter().any(|p| p.0 == "$events/acme/d1/offline"));
}

#[test]
fn a_flapping_device_is_reported_once() {
    let (mut t, _console) = fleet();
    let mut flapping = 0;
    for _ in 0..12 {
        let d1 = t.connect("d1", V311, Opts::new());
        t.lose(&d1);
        t.advance(1000);
        flapping += t
            .events()
            .iter()
            .filter(|e| matches!(e, Event::FleetFlapping { udid, .. } if udid == "d1"))
            .count();
    }
    assert_eq!(flapping, 1);
    assert!(t.broker.fleet_status("d1").expect("a status").flapping);
    // A quiet minute later, it is not.
    t.advance(61_000);
    let d1 = t.connect("d1", V311, Opts::new());
    assert!(!t.broker.fleet_status("d1").expect("a status").flapping);
    t.lose(&d1);
}

#[test]
fn after_a_restart_a_status_left_connected_says_disconnected() {
    let (mut t, _console) = fleet();
    let mut store = MemoryStore::default();
    t.connect("d1", V311, Opts::new());
    let ops: Vec<_> = std::iter::from_fn(|| t.broker.poll_store_op()).collect();
    store.apply(&ops).expect("memory store applies");
    // The broker stops without the device's connection ending.
    let snapshot = store.load().expect("memory store loads");
    let config = Config {
        persistence: true,
        ..Config::default()
    };
    t.broker = Broker::restore(config, t.now, snapshot);
    let retained = t.broker.admin_retained("/acme/d1/status", 1);
    assert_eq!(retained[0].payload.as_ref(), STATUS_DISCONNECTED);
}

/// A device speaking HTTP with its own key: its signed publishes and the messages its mailbox
/// hands out are counted in its status, apart from its MQTT packets; another key speaking for
/// its udid is not the device and counts nothing.
#[test]
fn a_devices_http_publishes_and_mailbox_deliveries_are_counted() {
    let (mut t, console) = fleet();
    t.broker.fleet_add(device("acme", "k1")).expect("added");
    let (edge, now) = (ConnectionId(1_000_000), t.now);
    let k1 = t
        .broker
        .request_client(edge, mstr("k1"), key_identity("k1"), None);
    assert_eq!(
        t.broker
            .mailbox_subscribe(&k1, "/acme/k1", Q1, false, 3600, now),
        Ok(Q1)
    );
    let status = |name: &str| {
        let mut publish = Publish::new(topic(name), Bytes::from_static(b"{}"));
        publish.qos = Q1;
        publish
    };
    let sent = vec![status("/acme/k1/status"), status("/acme/k1/status")];
    let outcomes = t.broker.publish_for(&k1, sent, false, now);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    for id in 1..=3 {
        t.send(&console, publish("/acme/k1", "hello", Q1, id));
        assert_eq!(t.recv(&console), [puback(id)]);
    }
    let fetch = Fetch {
        ack: None,
        limit: 2,
        bytes_max: usize::MAX,
        lease_millis: 30_000,
        deliveries_max: 10,
        dead_max: 100,
        watch: false,
    };
    let fetched = t.broker.mailbox_fetch(&k1, &fetch, now).expect("polled");
    assert_eq!(fetched.messages.len(), 2);
    let app = t
        .broker
        .request_client(edge, mstr("k1"), key_identity("app"), None);
    t.broker
        .publish_for(&app, vec![status("/acme/k1/status")], false, now);
    let seen = t.broker.fleet_status("k1").expect("seen");
    assert_eq!((seen.http_messages_in, seen.http_messages_out), (2, 2));
    assert_eq!((seen.messages_in, seen.messages_out), (0, 0));
}
