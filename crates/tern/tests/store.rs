//! The durable store seen from outside: state survives a restart of the real binary, and a
//! store that cannot be read stops `tern serve` with a clear error instead of a silent reset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use support::mqtt::{publish, RawClient};
use support::Tern;
use tern_codec::{Packet, QoS};

fn start(dir: &std::path::Path) -> Tern {
    Tern::start_with_data(dir)
}

/// The topic, payload and retain flag of the next `count` PUBLISH packets (see
/// [`RawClient::receive_acked`]).
fn receive(client: &mut RawClient, count: usize) -> Vec<(String, String, bool)> {
    let got = client.receive_acked(count).unwrap();
    got.iter()
        .map(|p| {
            let payload = String::from_utf8_lossy(&p.payload).into_owned();
            (p.topic.as_str().to_owned(), payload, p.retain)
        })
        .collect()
}

#[test]
fn sessions_queued_and_retained_messages_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let tern = start(dir.path());
    let (mut sub, connack) = RawClient::connect(tern.port, "keeper", true, 3600).unwrap();
    assert!(!connack.session_present);
    sub.subscribe("kept/#", QoS::AtLeastOnce).unwrap();
    sub.disconnect().unwrap();

    let (mut publisher, _) = RawClient::connect(tern.port, "pub", true, 0).unwrap();
    for (i, (topic, retain)) in [("kept/a", false), ("kept/b", true), ("kept/a", false)]
        .into_iter()
        .enumerate()
    {
        let id = publisher.fresh_id();
        let payload = format!("m{i}").into_bytes();
        publisher
            .send(&publish(topic, payload, QoS::AtLeastOnce, retain, Some(id)))
            .unwrap();
        match publisher.recv(Duration::from_secs(10)).unwrap() {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    let status = tern.terminate();
    assert!(status.success(), "clean stop: {status}");

    let tern = start(dir.path());
    let (mut sub, connack) = RawClient::connect(tern.port, "keeper", false, 3600).unwrap();
    assert!(connack.session_present, "the session survived the restart");
    let got = receive(&mut sub, 3);
    let expected: Vec<(String, String, bool)> =
        [("kept/a", "m0"), ("kept/b", "m1"), ("kept/a", "m2")]
            .iter()
            .map(|(t, p)| ((*t).to_owned(), (*p).to_owned(), false))
            .collect();
    assert_eq!(got, expected, "queued messages, in order");

    // The subscription itself survived: a new message still reaches the session.
    let (mut publisher, _) = RawClient::connect(tern.port, "pub", true, 0).unwrap();
    let id = publisher.fresh_id();
    publisher
        .send(&publish(
            "kept/c",
            b"live".to_vec(),
            QoS::AtLeastOnce,
            false,
            Some(id),
        ))
        .unwrap();
    assert_eq!(
        receive(&mut sub, 1),
        [("kept/c".to_owned(), "live".to_owned(), false)]
    );

    // And the retained message.
    let (mut late, _) = RawClient::connect(tern.port, "late", true, 0).unwrap();
    late.subscribe("kept/b", QoS::AtMostOnce).unwrap();
    assert_eq!(
        receive(&mut late, 1),
        [("kept/b".to_owned(), "m1".to_owned(), true)]
    );
}

/// A store with one session in it, stopped.
fn populated_store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tern = start(dir.path());
    let (mut sub, _) = RawClient::connect(tern.port, "keeper", true, 3600).unwrap();
    sub.subscribe("kept/#", QoS::AtLeastOnce).unwrap();
    assert!(tern.terminate().success());
    dir
}

#[test]
fn a_store_from_an_unknown_version_stops_the_broker_with_an_error() {
    let dir = populated_store();
    {
        let keyspace = fjall::Config::new(dir.path()).open().unwrap();
        let meta = keyspace
            .open_partition("meta", fjall::PartitionCreateOptions::default())
            .unwrap();
        meta.insert("format", 99u32.to_be_bytes()).unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let stderr = Tern::refused(dir.path(), &[]);
    assert!(stderr.contains("format version 99"), "{stderr}");
}

#[test]
fn a_corrupt_store_stops_the_broker_with_an_error() {
    // A damaged record.
    let dir = populated_store();
    {
        let keyspace = fjall::Config::new(dir.path()).open().unwrap();
        let sessions = keyspace
            .open_partition("sessions", fjall::PartitionCreateOptions::default())
            .unwrap();
        sessions.insert("keeper", [0xFFu8; 5]).unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let stderr = Tern::refused(dir.path(), &[]);
    assert!(stderr.contains("corrupt"), "{stderr}");

    // Damaged engine files.
    let dir = populated_store();
    std::fs::write(dir.path().join("version"), b"garbage").unwrap();
    let stderr = Tern::refused(dir.path(), &[]);
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}
