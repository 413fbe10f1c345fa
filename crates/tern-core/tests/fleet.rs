//! The device fleet on the broker thread: a registered udid is used only by its device, logged
//! in as itself (whatever an authenticator let in under that client identifier otherwise);
//! disabling closes the device's connection at once and refuses it after; deleting ends its
//! session and clears its retained status; every change reaches the store and a broker rebuilt
//! from it knows the same fleet.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use support::*;
use tern_codec::{Packet, ProtocolVersion, ReasonCode};
use tern_core::{Broker, CloseReason, Config, Event, MemoryStore, Store, StoreOp};

fn persistent_config() -> Config {
    Config {
        persistence: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..Config::default()
    }
}

fn refused_with(t: &mut TestBroker, client_id: &str, version: ProtocolVersion) -> ReasonCode {
    let connect = connect_packet(client_id, version, &Opts::new());
    let (_, packets, closed) = t.try_connect(connect);
    assert!(closed, "{client_id} was let in: {packets:?}");
    match packets.first() {
        Some(Packet::ConnAck(connack)) => connack.reason_code,
        other => panic!("no CONNACK: {other:?}"),
    }
}

fn fleet_refusals(t: &mut TestBroker) -> Vec<&'static str> {
    t.events()
        .into_iter()
        .filter_map(|event| match event {
            Event::Refused {
                reason: CloseReason::FleetRefused(why),
                ..
            } => Some(why),
            _ => None,
        })
        .collect()
}

#[test]
fn a_registered_udid_is_refused_to_every_other_identity() {
    let mut t = TestBroker::new();
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    // The default authenticator lets everyone in, unverified: not as the device.
    for version in VERSIONS {
        let code = refused_with(&mut t, "d1", version);
        assert_eq!(code, ReasonCode::NotAuthorized, "{version:?}");
    }
    assert!(fleet_refusals(&mut t).contains(&"the client identifier is a registered device's udid"));
    t.connect("d2", V5, Opts::new());
    // The device itself gets in, as itself.
    t.broker.set_authenticator(Box::new(AsFleet));
    t.connect("d1", V5, Opts::new());
}

#[test]
fn disabling_closes_the_connection_at_once_and_refuses_the_device_after() {
    let mut t = TestBroker::new();
    t.broker.set_authenticator(Box::new(AsFleet));
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    let d1 = t.connect("d1", V5, Opts::new());
    let now = t.now;
    t.broker.fleet_disable("d1", true, now).expect("disabled");
    let packets = t.expect_closed(&d1);
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::AdministrativeAction),
        "{packets:?}"
    );
    assert_eq!(refused_with(&mut t, "d1", V311), ReasonCode::NotAuthorized);
    assert!(fleet_refusals(&mut t).contains(&"the device is disabled"));
    t.broker.fleet_disable("d1", false, now).expect("enabled");
    t.connect("d1", V5, Opts::new());
    assert!(t.broker.fleet_disable("nope", true, now).is_err());
}

#[test]
fn deleting_ends_the_session_clears_the_retained_status_and_the_store_follows() {
    let mut store = MemoryStore::default();
    let mut t = TestBroker::with_config(persistent_config());
    t.broker.set_authenticator(Box::new(AsFleet));
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    t.broker.fleet_add(device("acme", "d2")).expect("added");
    assert!(
        t.broker.fleet_add(device("globex", "d1")).is_err(),
        "udids are unique"
    );
    assert!(t.broker.fleet_add(device("acme", "shared")).is_err());
    assert!(t.broker.fleet_add(device("acme", "a/b")).is_err());
    let d1 = t.connect("d1", V5, Opts::new().resume().expiry(3600));
    t.send(
        &d1,
        retained("/acme/d1/status", "{\"status\":\"connected\"}", Q1, 1),
    );
    t.recv(&d1);
    let now = t.now;
    let deleted = t.broker.fleet_delete("d1", now).expect("deleted");
    assert_eq!(deleted.udid, "d1");
    t.expect_closed(&d1);
    assert!(
        t.broker.admin_session("d1", 0).is_none(),
        "its session ended"
    );
    assert!(t.broker.admin_retained("/acme/#", 10).is_empty());
    let ops: Vec<StoreOp> = std::iter::from_fn(|| t.broker.poll_store_op()).collect();
    assert!(ops
        .iter()
        .any(|op| matches!(op, StoreOp::FleetDeviceRemove(u) if u == "d1")));
    assert!(ops
        .iter()
        .any(|op| matches!(op, StoreOp::SessionRemove(c) if c.as_str() == "d1")));
    store.apply(&ops).expect("memory store applies");
    // Rebuilt from the store: d2 and its owner are there, d1 is not (and its udid is free).
    let snapshot = store.load().expect("memory store loads");
    t.broker = Broker::restore(persistent_config(), t.now, snapshot);
    let udids: Vec<&str> = t
        .broker
        .fleet()
        .devices(None)
        .iter()
        .map(|d| d.udid.as_str())
        .collect();
    assert_eq!(udids, ["d2"]);
    assert!(t.broker.fleet().owner("acme").is_some());
    t.connect("d1", V5, Opts::new());
    assert_eq!(refused_with(&mut t, "d2", V5), ReasonCode::NotAuthorized);
}

#[test]
fn a_password_device_gets_a_new_password_kept_by_the_store_and_others_are_refused_one() {
    let mut t = TestBroker::with_config(persistent_config());
    let mut d1 = device("acme", "d1");
    d1.credential = tern_core::fleet::DeviceCredential::Password("$argon2id$old".into());
    t.broker.fleet_add(d1).expect("added");
    t.broker.fleet_add(device("acme", "k1")).expect("added");
    let _ = t.events();
    while t.broker.poll_store_op().is_some() {}
    t.broker
        .fleet_set_password("d1", "$argon2id$new".into())
        .expect("a new password");
    let kept = t.broker.fleet().device("d1").map(|d| d.credential.clone());
    assert_eq!(
        kept,
        Some(tern_core::fleet::DeviceCredential::Password(
            "$argon2id$new".into()
        ))
    );
    let ops: Vec<StoreOp> = std::iter::from_fn(|| t.broker.poll_store_op()).collect();
    assert!(ops.iter().any(|op| matches!(op, StoreOp::FleetDeviceSet(d)
        if d.credential == tern_core::fleet::DeviceCredential::Password("$argon2id$new".into()))));
    assert!(t
        .events()
        .iter()
        .any(|e| matches!(e, Event::FleetChanged { udid, .. } if udid == "d1")));
    // A key device has no password to change; no device, none either.
    assert!(matches!(
        t.broker.fleet_set_password("k1", "$argon2id$x".into()),
        Err(tern_core::fleet::FleetError::NoPassword(_))
    ));
    assert!(t
        .broker
        .fleet_set_password("nope", "$argon2id$x".into())
        .is_err());
}

/// A device's recent messages are what `[[history]]` keeps of its own topics (its channel and
/// those under it), published by it or to it, newest last: not another device's, not its
/// owner's shared topics; none without a history.
#[test]
fn a_devices_recent_messages_are_its_own_topics_kept_by_the_history() {
    let history = vec![tern_core::history::HistoryConfig {
        filter: filter("/acme/#"),
        max_messages: 10,
        max_age_millis: 60_000,
        max_topics: 100,
    }];
    let mut t = TestBroker::with_config(Config {
        history,
        ..persistent_config()
    });
    t.broker.set_authenticator(Box::new(AsFleet));
    t.broker.set_authorizer(Box::new(RulesAllowingAll));
    for udid in ["d1", "d2"] {
        t.broker.fleet_add(device("acme", udid)).expect("added");
    }
    let console = t.connect("console", V5, Opts::new());
    let d1 = t.connect("d1", V5, Opts::new());
    let d2 = t.connect("d2", V5, Opts::new());
    t.send(&d1, publish("/acme/d1/status", "up", Q1, 1));
    t.send(&d2, publish("/acme/d2/status", "other", Q1, 1));
    t.send(&console, publish("/acme/d1", "cmd", Q1, 1));
    t.send(&console, publish("/acme/shared/all", "everyone", Q1, 2));
    t.send(&console, publish("/acme/d1x", "lookalike", Q1, 3));
    let now = t.now;
    let recent = |t: &TestBroker, count| {
        t.broker
            .fleet_recent_messages("d1", count, now)
            .iter()
            .map(|k| {
                (
                    k.message.topic.as_str().to_owned(),
                    k.message.payload.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    // The broker's own status for it (it set no will) is among them.
    assert_eq!(
        recent(&t, 20),
        [
            (
                "/acme/d1/status".to_owned(),
                "{\"status\":\"connected\"}".into()
            ),
            ("/acme/d1/status".to_owned(), "up".into()),
            ("/acme/d1".to_owned(), "cmd".into())
        ]
    );
    assert_eq!(recent(&t, 1), [("/acme/d1".to_owned(), "cmd".into())]);
    assert!(t.broker.fleet_recent_messages("nobody", 20, now).is_empty());
    // Without a history, nothing.
    let mut bare = TestBroker::with_config(persistent_config());
    bare.broker.fleet_add(device("acme", "d1")).expect("added");
    assert!(bare.broker.fleet_recent_messages("d1", 20, now).is_empty());
}
