//! What a console sees of the fleet: every change of a device (added, online, offline,
//! changed, deleted) is an event observers get; each device keeps its last status changes
//! (bounded), its MQTT message counts and when it was last seen, over MQTT or in a signed
//! HTTP request of its own key; the registry lists in pages by udid from a cursor.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use support::*;
use tern_core::fleet::{Registry, STATUS_HISTORY_MAX};
use tern_core::{Config, Event, FleetChange, Identity, Method};

fn fleet() -> TestBroker {
    let mut t = TestBroker::with_config(Config {
        persistence: true,
        ..Config::default()
    });
    t.broker.set_authenticator(Box::new(AsFleet));
    // The console is granted the fleet by rule.
    t.broker.set_authorizer(Box::new(RulesAllowingAll));
    t
}

fn fleet_changes(t: &mut TestBroker) -> Vec<(String, FleetChange)> {
    t.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::FleetChanged { udid, change, .. } => Some((udid, change)),
            _ => None,
        })
        .collect()
}

#[test]
fn every_change_of_a_device_is_an_event_in_order() {
    let mut t = fleet();
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    let d1 = t.connect("d1", V5, Opts::new());
    t.lose(&d1);
    t.broker.fleet_disable("d1", true, t.now).expect("disabled");
    t.broker.fleet_delete("d1", t.now).expect("deleted");
    let d1 = |change| ("d1".to_owned(), change);
    assert_eq!(
        fleet_changes(&mut t),
        [
            d1(FleetChange::Added),
            d1(FleetChange::Online),
            d1(FleetChange::Offline),
            d1(FleetChange::Changed),
            d1(FleetChange::Deleted)
        ]
    );
    // A client that is no device makes none.
    let other = t.connect("other", V5, Opts::new());
    t.lose(&other);
    assert_eq!(fleet_changes(&mut t), []);
}

#[test]
fn a_device_keeps_its_last_status_changes_and_counts_its_messages() {
    let mut t = fleet();
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    let console = t.connect("console", V5, Opts::new());
    t.subscribe(&console, "/acme/d1", Q1);
    for _ in 0..STATUS_HISTORY_MAX {
        let d1 = t.connect("d1", V5, Opts::new());
        t.advance(100_000);
        t.lose(&d1);
        t.advance(100_000);
    }
    let d1 = t.connect("d1", V5, Opts::new());
    t.subscribe(&d1, "/acme/d1", Q1);
    t.send(&d1, publish("/acme/d1/status", "up", Q1, 1));
    t.send(&console, publish("/acme/d1", "cmd", Q1, 2));
    t.send(&console, publish("/acme/d1", "cmd", Q0, 0));
    t.read_all(&d1);
    let status = t.broker.fleet_status("d1").expect("a status");
    assert_eq!(status.history.len(), STATUS_HISTORY_MAX);
    // The oldest went: the newest is this connection, and they alternate before it.
    let newest = status.history.back().expect("a change");
    assert!(newest.online && newest.at == t.now);
    assert!(status
        .history
        .iter()
        .zip(status.history.iter().skip(1))
        .all(|(a, b)| a.online != b.online && a.at < b.at));
    assert_eq!((status.messages_in, status.messages_out), (1, 2));
    // The console is no device: nothing counted for it anywhere.
    assert!(t.broker.fleet_status("console").is_none());
}

#[test]
fn a_signed_request_of_the_devices_own_key_is_seen_and_no_other() {
    let mut t = fleet();
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    let key = |username: &str, owner: Option<&str>| Identity {
        method: Method::HttpKey,
        username: Some(username.to_owned()),
        owner: owner.map(str::to_owned),
        ..Identity::default()
    };
    t.advance(5_000);
    // An app key speaking for d1, and another device's key, are not d1.
    t.broker
        .fleet_seen_over_http("d1", &key("meters/d1", None), t.now);
    t.broker.fleet_seen_over_http("d1", &key("d2", None), t.now);
    t.broker.fleet_seen_over_http("d9", &key("d9", None), t.now);
    assert!(t.broker.fleet_status("d1").is_none());
    assert!(t.broker.fleet_status("d9").is_none());
    t.broker.fleet_seen_over_http("d1", &key("d1", None), t.now);
    let status = t.broker.fleet_status("d1").expect("a status");
    assert_eq!(status.last_seen_http, Some(t.now));
    assert_eq!(status.last_seen, t.now);
    assert!(!status.online && status.history.is_empty());
}

#[test]
fn the_registry_lists_in_pages_by_udid_from_a_cursor() {
    let devices = (0..25)
        .map(|n| {
            device(
                if n % 2 == 0 { "acme" } else { "globex" },
                &format!("d{n:02}"),
            )
        })
        .collect();
    let fleet = Registry::from_records(Vec::new(), devices);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = fleet.page(after.as_deref(), 4, |d, _| d.owner == "acme");
        assert!(page.len() <= 4);
        seen.extend(page.iter().map(|d| d.udid.clone()));
        if !more {
            break;
        }
        after = page.last().map(|d| d.udid.clone());
    }
    let acme: Vec<String> = (0..25)
        .filter(|n| n % 2 == 0)
        .map(|n| format!("d{n:02}"))
        .collect();
    assert_eq!(seen, acme);
    // A cursor that is no udid (a device deleted meanwhile) goes on after where it was.
    let (page, _) = fleet.page(Some("d05x"), 2, |_, _| true);
    let udids: Vec<&str> = page.iter().map(|d| d.udid.as_str()).collect();
    assert_eq!(udids, ["d06", "d07"]);
    let (page, more) = fleet.page(Some("d24"), 10, |_, _| true);
    assert!(page.is_empty() && !more);
}
