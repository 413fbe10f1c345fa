//! Registrations and firmware offers: a device's THiNX registration on its status channel
//! updates the registry (kept by the store) and is answered on its channel, OK or with the
//! newest matching release of the catalogue; with MQTT 5 the Correlation Data comes back, and
//! a Response Topic is answered only inside the device's namespace. A registration someone
//! else publishes on a device's status channel is not the device's. Over a request (the HTTP
//! bridge), only the device's own key registers, answered with the same words.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Packet, Publish};
use tern_core::broker::fleet_register::RegisterRefusal;
use tern_core::firmware::Release;
use tern_core::{
    Access, Authorizer, Broker, Config, ConnectionId, Identity, MemoryStore, Method, Permissions,
    Principal, Store, StoreOp,
};

/// A device's namespace, as the fleet's rules give it: its channel, its status, its owner's
/// shared topics.
#[derive(Debug)]
struct Namespace(String);

impl Permissions for Namespace {
    fn allows(&self, _access: Access, topic: &str) -> bool {
        let Some(rest) = topic.strip_prefix("/acme/") else {
            return false;
        };
        rest == self.0 || rest == format!("{}/status", self.0) || rest.starts_with("shared/")
    }
}

/// Devices get their namespace.
#[derive(Debug)]
struct DeviceNamespaces;

impl Authorizer for DeviceNamespaces {
    fn permissions(&mut self, principal: &Principal<'_>) -> Option<Box<dyn Permissions>> {
        Some(Box::new(Namespace(principal.client_id.as_str().to_owned())))
    }
}

const REGISTRATION: &str = r#"{"registration":{"mac":"5CCF7FE4631D","firmware":"thinx-firmware-esp8266-1.7.24:2017-07-25","version":"1.7.24","commit":"24e715f","owner":"acme","alias":"robot","platform":"esp32"}}"#;

fn config() -> Config {
    Config {
        persistence: true,
        wall_clock_epoch_ms: 1_767_225_600_000,
        ..Config::default()
    }
}

fn fleet() -> TestBroker {
    let mut t = TestBroker::with_config(config());
    t.broker.set_authenticator(Box::new(AsFleet));
    t.broker.fleet_add(device("acme", "d1")).expect("added");
    t.broker.fleet_add(device("acme", "d2")).expect("added");
    t
}

fn release(id: &str, version: &str) -> Release {
    Release {
        id: id.into(),
        platform: "esp32".into(),
        version: version.into(),
        url: format!("https://firmware.example/{id}.bin"),
        sha256: "0f".repeat(32),
        size: 412_345,
        owner: None,
        tags: Vec::new(),
        rollout_percent: 100,
        created_unix: 1_767_225_600,
    }
}

fn answers(packets: &[Packet]) -> Vec<&Publish> {
    publishes(packets)
        .into_iter()
        .filter(|p| p.topic.as_str() == "/acme/d1")
        .collect()
}

fn json(publish: &Publish) -> serde_json::Value {
    serde_json::from_slice(&publish.payload).expect("the answer is JSON")
}

#[test]
fn a_registration_is_recorded_and_answered_ok_on_the_devices_channel() {
    let mut t = fleet();
    let d1 = t.connect("d1", V311, Opts::new());
    t.subscribe(&d1, "/acme/d1", Q1);
    t.send(&d1, publish("/acme/d1/status", REGISTRATION, Q1, 1));
    let packets = t.recv(&d1);
    let got = answers(&packets);
    assert_eq!(got.len(), 1, "{packets:?}");
    assert_eq!(got[0].qos, Q1);
    let answer = json(got[0]);
    assert_eq!(answer["registration"]["status"], "OK");
    assert_eq!(answer["registration"]["timestamp"], 1_767_225_600);
    assert!(got[0].payload.ends_with(b"}}"));
    let entry = t.broker.fleet().device("d1").expect("registered");
    assert_eq!(
        (
            entry.firmware.as_str(),
            entry.platform.as_str(),
            entry.alias.as_str()
        ),
        ("1.7.24", "esp32", "robot")
    );
    let registration = t.broker.fleet().registration("d1").expect("recorded");
    assert_eq!(registration.mac, "5CCF7FE4631D");
    assert_eq!(registration.commit, "24e715f");
    // A status message is not a registration.
    t.send(
        &d1,
        publish("/acme/d1/status", r#"{"status":"connected"}"#, Q1, 2),
    );
    assert!(answers(&t.recv(&d1)).is_empty());
}

#[test]
fn the_newest_matching_release_above_the_device_is_offered() {
    let mut t = fleet();
    t.broker
        .firmware_add(release("fw-25", "1.7.25"))
        .expect("added");
    t.broker
        .firmware_add(release("fw-100", "1.10.0"))
        .expect("added");
    let mut other = release("fw-8266", "9.0.0");
    other.platform = "esp8266".into();
    t.broker.firmware_add(other).expect("added");
    let mut none = release("fw-none", "9.1.0");
    none.rollout_percent = 0;
    t.broker.firmware_add(none).expect("added");
    assert!(t.broker.firmware_add(release("bad", "1.10")).is_err());
    let d1 = t.connect("d1", V311, Opts::new());
    t.subscribe(&d1, "/acme/d1", Q2);
    t.send(&d1, publish("/acme/d1/status", REGISTRATION, Q0, 0));
    let packets = t.recv(&d1);
    let got = answers(&packets);
    assert_eq!(got.len(), 1, "{packets:?}");
    // At the request's QoS.
    assert_eq!(got[0].qos, Q0);
    let answer = json(got[0]);
    assert_eq!(answer["registration"]["status"], "UPDATE_AVAILABLE");
    let update = &answer["registration"]["update"];
    assert_eq!(update["id"], "fw-100");
    assert_eq!(update["version"], "1.10.0");
    assert_eq!(update["size"], 412_345);
    assert_eq!(update["url"], "https://firmware.example/fw-100.bin");
}

#[test]
fn mqtt5_correlation_data_comes_back_and_a_response_topic_stays_in_the_namespace() {
    let mut t = fleet();
    t.broker.set_authorizer(Box::new(DeviceNamespaces));
    let d2 = t.connect("d2", V5, Opts::new());
    t.subscribe(&d2, "/acme/d2", Q1);
    let d1 = t.connect("d1", V5, Opts::new());
    t.subscribe(&d1, "/acme/d1", Q1);
    t.subscribe(&d1, "/acme/shared/replies", Q1);
    for (packet_id, response_topic) in [
        (1, "/acme/d1"),
        (2, "/acme/shared/replies"),
        (3, "/acme/d2"),
    ] {
        let request = publish_with("/acme/d1/status", REGISTRATION, Q1, packet_id, |p| {
            p.properties.correlation_data = Some(Bytes::from_static(b"req-7"));
            p.properties.response_topic = Some(topic(response_topic));
        });
        t.send(&d1, request);
        let packets = t.recv(&d1);
        let got: Vec<(&str, Option<&[u8]>)> = publishes(&packets)
            .into_iter()
            .map(|p| (p.topic.as_str(), p.properties.correlation_data.as_deref()))
            .collect();
        let want: Vec<(&str, Option<&[u8]>)> = match response_topic {
            // Its own channel is answered once; a shared topic it reads gets the answer too.
            "/acme/d1" => vec![("/acme/d1", Some(b"req-7"))],
            "/acme/shared/replies" => vec![
                ("/acme/shared/replies", Some(b"req-7")),
                ("/acme/d1", Some(b"req-7")),
            ],
            // Its sibling's channel is not its to read: only its own channel is answered.
            _ => vec![("/acme/d1", Some(b"req-7"))],
        };
        assert_eq!(got, want, "{response_topic}");
    }
    let (packets, _) = t.read_all(&d2);
    assert!(publishes(&packets).is_empty(), "{packets:?}");
}

#[test]
fn a_registration_published_by_another_client_is_not_the_devices() {
    let mut t = fleet();
    t.broker.set_authorizer(Box::new(RulesAllowingAll));
    let d1 = t.connect("d1", V311, Opts::new());
    t.subscribe(&d1, "/acme/d1", Q1);
    let console = t.connect("console", V311, Opts::new());
    t.send(&console, publish("/acme/d1/status", REGISTRATION, Q1, 1));
    t.recv(&console);
    let (packets, _) = t.read_all(&d1);
    assert!(answers(&packets).is_empty(), "{packets:?}");
    assert!(t.broker.fleet().registration("d1").is_none());
}

#[test]
fn registrations_and_the_catalogue_survive_a_restart_through_the_store() {
    let mut t = fleet();
    t.broker
        .firmware_add(release("fw-25", "1.7.25"))
        .expect("added");
    t.broker
        .firmware_add(release("gone", "1.7.26"))
        .expect("added");
    t.broker.firmware_delete("gone").expect("deleted");
    let d1 = t.connect("d1", V311, Opts::new());
    t.send(&d1, publish("/acme/d1/status", REGISTRATION, Q1, 1));
    t.recv(&d1);
    let ops: Vec<StoreOp> = std::iter::from_fn(|| t.broker.poll_store_op()).collect();
    let mut store = MemoryStore::default();
    store.apply(&ops).expect("memory store applies");
    let snapshot = store.load().expect("memory store loads");
    let restored = Broker::restore(config(), t.now, snapshot);
    let ids: Vec<&str> = restored
        .firmware()
        .releases()
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(ids, ["fw-25"]);
    let registration = restored.fleet().registration("d1").expect("kept");
    assert_eq!(registration.version, "1.7.24");
    assert_eq!(
        restored.fleet().device("d1").expect("kept").firmware,
        "1.7.24"
    );
}

fn http_key(name: &str) -> Identity {
    Identity {
        method: Method::HttpKey,
        username: Some(name.to_owned()),
        ..Identity::default()
    }
}

#[test]
fn a_registration_over_a_request_is_the_devices_own_and_answered_the_same() {
    let mut t = fleet();
    t.broker
        .firmware_add(release("fw-100", "1.10.0"))
        .expect("added");
    let edge = ConnectionId(1_000_000);
    let now = t.now;
    let d1 = t.connect("d1", V311, Opts::new());
    t.subscribe(&d1, "/acme/d1", Q1);
    // The device's own key is the device: recorded, and answered as over MQTT.
    let client = t
        .broker
        .request_client(edge, mstr("d1"), http_key("d1"), None);
    let answer = t
        .broker
        .fleet_register_for(&client, REGISTRATION.as_bytes(), now)
        .expect("registered");
    let parsed: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
    assert_eq!(parsed["registration"]["status"], "UPDATE_AVAILABLE");
    assert_eq!(parsed["registration"]["update"]["id"], "fw-100");
    assert_eq!(parsed["registration"]["timestamp"], 1_767_225_600);
    let entry = t.broker.fleet().device("d1").expect("registered");
    assert_eq!(
        (entry.firmware.as_str(), entry.alias.as_str()),
        ("1.7.24", "robot")
    );
    assert_eq!(
        t.broker.fleet().registration("d1").expect("recorded").mac,
        "5CCF7FE4631D"
    );
    // The answer is also published on the device's channel, as over MQTT, so a client
    // subscribed there (the device's session, its owner's console) sees it.
    let (packets, _) = t.read_all(&d1);
    let published = answers(&packets);
    assert_eq!(published.len(), 1, "{packets:?}");
    assert_eq!(published[0].payload.as_ref(), answer.as_bytes());
    // The same answer as the MQTT path words.
    t.send(&d1, publish("/acme/d1/status", REGISTRATION, Q1, 1));
    let packets = t.recv(&d1);
    assert_eq!(answers(&packets)[0].payload.as_ref(), answer.as_bytes());
    // Not a registration.
    assert_eq!(
        t.broker
            .fleet_register_for(&client, br#"{"status":"connected"}"#, now),
        Err(RegisterRefusal::NotARegistration)
    );
    // A key that is no device's, and an app's key speaking for the device, are refused.
    let eve = t
        .broker
        .request_client(edge, mstr("eve"), http_key("eve"), None);
    assert_eq!(
        t.broker
            .fleet_register_for(&eve, REGISTRATION.as_bytes(), now),
        Err(RegisterRefusal::NotADevice)
    );
    let app = t
        .broker
        .request_client(edge, mstr("d2"), http_key("app"), None);
    assert_eq!(
        t.broker
            .fleet_register_for(&app, REGISTRATION.as_bytes(), now),
        Err(RegisterRefusal::NotADevice)
    );
    assert!(t.broker.fleet().registration("d2").is_none());
    // Disabled, the device is refused.
    t.broker.fleet_disable("d2", true, now).expect("disabled");
    let d2 = t
        .broker
        .request_client(edge, mstr("d2"), http_key("d2"), None);
    assert_eq!(
        t.broker
            .fleet_register_for(&d2, REGISTRATION.as_bytes(), now),
        Err(RegisterRefusal::Banned)
    );
    assert!(t.broker.fleet().registration("d2").is_none());
}

#[test]
fn a_kept_firmware_file_is_the_devices_of_an_owner_it_is_for_only() {
    let mut t = fleet();
    t.broker.fleet_add(device("globex", "g1")).expect("added");
    let mut kept = release("fw-kept", "2.0.0");
    kept.url = tern_core::firmware::kept_file_url("fw-kept");
    kept.owner = Some("acme".into());
    t.broker.firmware_add(kept).expect("added");
    let mut everyone = release("fw-all", "2.0.1");
    everyone.url = tern_core::firmware::kept_file_url("fw-all");
    t.broker.firmware_add(everyone).expect("added");
    // An external URL: the broker keeps no file of it.
    t.broker
        .firmware_add(release("fw-ext", "2.0.2"))
        .expect("added");
    let edge = ConnectionId(1_000_000);
    let now = t.now;
    let d1 = t
        .broker
        .request_client(edge, mstr("d1"), http_key("d1"), None);
    let readable = |t: &TestBroker, client: &tern_core::RequestClient, id: &str| {
        t.broker.firmware_file_for(client, id).is_some()
    };
    assert!(readable(&t, &d1, "fw-kept") && readable(&t, &d1, "fw-all"));
    assert!(!readable(&t, &d1, "fw-ext") && !readable(&t, &d1, "nothing"));
    // Another owner's device reads the release for every owner, not acme's.
    let g1 = t
        .broker
        .request_client(edge, mstr("g1"), http_key("g1"), None);
    assert!(!readable(&t, &g1, "fw-kept") && readable(&t, &g1, "fw-all"));
    // A key that is no device's, and a disabled device, read nothing.
    let eve = t
        .broker
        .request_client(edge, mstr("eve"), http_key("eve"), None);
    assert!(!readable(&t, &eve, "fw-all"));
    t.broker.fleet_disable("d1", true, now).expect("disabled");
    let d1 = t
        .broker
        .request_client(edge, mstr("d1"), http_key("d1"), None);
    assert!(!readable(&t, &d1, "fw-kept"));
}

/// A device speaking HTTP with its own key and no session registers by publishing on its
/// status channel (`POST /v1/pub`), as over MQTT: recorded, and answered on its channel.
#[test]
fn a_registration_published_over_a_request_without_a_session_is_the_devices() {
    let mut t = fleet();
    t.broker.set_authorizer(Box::new(RulesAllowingAll));
    let owner = t.connect("console", V5, Opts::new());
    t.subscribe(&owner, "/acme/#", Q1);
    let (edge, now) = (ConnectionId(1_000_000), t.now);
    let d2 = t
        .broker
        .request_client(edge, mstr("d2"), http_key("d2"), None);
    let mut publish = Publish::new(topic("/acme/d2/status"), Bytes::from(REGISTRATION));
    publish.qos = tern_codec::QoS::AtLeastOnce;
    let outcomes = t.broker.publish_for(&d2, vec![publish], false, now);
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    assert_eq!(
        t.broker.fleet().registration("d2").expect("recorded").mac,
        "5CCF7FE4631D"
    );
    let (packets, _) = t.read_all(&owner);
    let seen: Vec<(&str, serde_json::Value)> = publishes(&packets)
        .into_iter()
        .map(|p| (p.topic.as_str(), json(p)))
        .collect();
    let answer = seen
        .iter()
        .find(|(topic, _)| *topic == "/acme/d2")
        .expect("answered on the device's channel");
    assert_eq!(answer.1["registration"]["status"], "OK");
}
