//! The durable store seen from outside: state survives a restart of the real binary, and a
//! store that cannot be read stops `tern serve` with a clear error instead of a silent reset.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::process::Command;
use std::time::Duration;

use support::mqtt::{ack, publish, RawClient};
use support::Tern;
use tern_codec::{Packet, QoS};

fn start(dir: &std::path::Path) -> Tern {
    Tern::start_with_data(dir)
}

/// Packets until `count` PUBLISH packets have arrived (each acknowledged), or 10 s pass.
fn receive(client: &mut RawClient, count: usize) -> Vec<(String, String, bool)> {
    let mut got = Vec::new();
    while got.len() < count {
        match client.recv(Duration::from_secs(10)).unwrap() {
            Some(Packet::Publish(p)) => {
                if let Some(id) = p.packet_id {
                    client.send(&Packet::PubAck(ack(id))).unwrap();
                }
                got.push((
                    p.topic.as_str().to_owned(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.retain,
                ));
            }
            Some(_) => {}
            None => break,
        }
    }
    got
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

/// Runs `tern serve` on `dir` expecting it to refuse to start; returns its error output.
fn refused(dir: &std::path::Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--bind", "127.0.0.1", "--port", "0", "--data-dir"])
        .arg(dir)
        .output()
        .expect("tern runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "tern must not start: {stderr}");
    assert!(
        !stderr.contains("listening for MQTT"),
        "refused before listening: {stderr}"
    );
    stderr
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
    let stderr = refused(dir.path());
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
    let stderr = refused(dir.path());
    assert!(stderr.contains("corrupt"), "{stderr}");

    // Damaged engine files.
    let dir = populated_store();
    std::fs::write(dir.path().join("version"), b"garbage").unwrap();
    let stderr = refused(dir.path());
    assert!(stderr.contains("cannot open the store"), "{stderr}");
}
