//! A damaged data directory is never taken for a fresh one. Each kind of damage a disk, a
//! careless hand or a bad copy can do to a stopped store (the engine's `version` file removed,
//! the journal emptied, deleted or with bytes flipped in its middle, a partition folder
//! deleted) stops `tern serve` with an error naming the directory and what is wrong, and a
//! non-zero exit status; `tern serve --recover` starts anyway with what reads back and logs
//! what was lost. A directory that does not exist, or is empty, is a fresh start.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::mqtt::{publish, RawClient};
use support::Tern;
use tern_codec::{Packet, QoS};

/// What the recovering broker logs once it has salvaged a store.
const RECOVERED: &str = "recovered the store in";

/// The payloads of the next `count` PUBLISH packets (see [`RawClient::receive_acked`]).
fn receive(client: &mut RawClient, count: usize) -> Vec<String> {
    let got = client.receive_acked(count).unwrap();
    got.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

/// Publishes each payload to `kept/a` at QoS 1, waiting for its PUBACK (so it is durable).
fn publish_all(port: u16, payloads: &[&str]) {
    let (mut publisher, _) = RawClient::connect(port, "pub", true, 0).unwrap();
    for payload in payloads {
        let id = publisher.fresh_id();
        publisher
            .send(&publish(
                "kept/a",
                payload.as_bytes().to_vec(),
                QoS::AtLeastOnce,
                false,
                Some(id),
            ))
            .unwrap();
        match publisher.recv(Duration::from_secs(10)).unwrap() {
            Some(Packet::PubAck(a)) => assert_eq!(a.packet_id, id),
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
}

/// The messages still owed to `keeper` after [`populate`].
const OWED: [&str; 3] = ["m5", "m6", "m7"];

/// Leaves in `dir` a stopped store whose journal holds a persistent session `keeper`
/// (subscribed to `kept/#`) that was queued m0..m4 and acknowledged them all (so the journal
/// also holds their deletions), then had m5..m7 queued.
fn populate(dir: &Path) {
    let tern = Tern::start_with_data(dir);
    let (mut keeper, _) = RawClient::connect(tern.port, "keeper", true, 3600).unwrap();
    keeper.subscribe("kept/#", QoS::AtLeastOnce).unwrap();
    keeper.disconnect().unwrap();
    publish_all(tern.port, &["m0", "m1", "m2", "m3", "m4"]);
    let (mut keeper, connack) = RawClient::connect(tern.port, "keeper", false, 3600).unwrap();
    assert!(connack.session_present);
    assert_eq!(receive(&mut keeper, 5), ["m0", "m1", "m2", "m3", "m4"]);
    // The SUBACK of a persistent session waits until its batch is durable, and that batch
    // holds the acknowledgements read before the SUBSCRIBE.
    keeper.subscribe("kept/more", QoS::AtLeastOnce).unwrap();
    keeper.disconnect().unwrap();
    publish_all(tern.port, &OWED);
    assert!(tern.terminate().success(), "clean stop");
}

/// The one journal file of a small store.
fn journal(dir: &Path) -> std::path::PathBuf {
    let journals: Vec<_> = std::fs::read_dir(dir.join("journals"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(journals.len(), 1, "one journal: {journals:?}");
    journals.into_iter().next().unwrap()
}

/// Asserts that `stderr` names the directory and contains `problem`.
fn names(stderr: &str, dir: &Path, problem: &str) {
    let dir = dir.to_str().unwrap();
    assert!(stderr.contains(dir), "the directory is named: {stderr}");
    assert!(stderr.contains(problem), "{problem:?} in: {stderr}");
    assert!(
        stderr.contains("--recover"),
        "the way out is named: {stderr}"
    );
}

/// Starts with `--recover`, checks the broker logs `loss` (what it salvaged or reset) as a
/// warning and its summary, and returns it running.
fn recovered(dir: &Path, loss: &str) -> Tern {
    let tern = Tern::start_recovering(dir);
    assert!(
        tern.wait_for_log(loss, Duration::from_secs(10)),
        "the recovery logs {loss:?}"
    );
    assert!(tern.wait_for_log(RECOVERED, Duration::from_secs(10)));
    assert!(tern.wait_for_log("WARN", Duration::from_secs(10)));
    tern
}

#[test]
fn a_missing_or_empty_directory_is_a_fresh_start() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("new").join("data");
    drop(Tern::start_with_data(&missing));
    assert!(missing.join("version").exists(), "the store was created");

    let empty = tempfile::tempdir().unwrap();
    drop(Tern::start_with_data(empty.path()));
    // And the store it made is taken back.
    drop(Tern::start_with_data(empty.path()));

    // With no --data-dir: ./tern-data, created.
    let cwd = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--bind", "127.0.0.1", "--port", "0"])
        .current_dir(cwd.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening for MQTT") {
        line.clear();
        let read = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(read > 0, "tern serve exited before listening");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(cwd.path().join("tern-data").join("version").exists());
}

#[test]
fn a_directory_holding_other_files_is_not_taken_for_a_store() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"not a store").unwrap();
    let stderr = Tern::refused(dir.path(), &[]);
    assert!(stderr.contains("holds no Tern store"), "{stderr}");
    // Nothing to salvage: --recover does not make a store of it either.
    let stderr = Tern::refused(dir.path(), &["--recover"]);
    assert!(stderr.contains("holds no Tern store"), "{stderr}");
    let entries = std::fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(entries, 1, "the directory is left as it was");
}

#[test]
fn a_removed_version_file_is_refused_and_recovered_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let journal = journal(dir.path());
    let before = std::fs::read(&journal).unwrap();
    std::fs::remove_file(dir.path().join("version")).unwrap();

    let stderr = Tern::refused(dir.path(), &[]);
    names(&stderr, dir.path(), "`version` file is missing");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        before,
        "the refused start left the journal as it was"
    );

    let tern = recovered(dir.path(), "`version` file is missing: rewrote it");
    let (mut keeper, connack) = RawClient::connect(tern.port, "keeper", false, 3600).unwrap();
    assert!(connack.session_present, "nothing was lost");
    assert_eq!(receive(&mut keeper, 3), OWED);
}

#[test]
fn an_emptied_journal_is_refused_and_recovery_logs_the_lost_batches() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    std::fs::File::options()
        .write(true)
        .open(journal(dir.path()))
        .unwrap()
        .set_len(0)
        .unwrap();

    let stderr = Tern::refused(dir.path(), &[]);
    names(&stderr, dir.path(), "committed batches are missing");

    let tern = recovered(dir.path(), "committed batches lost");
    let (_, connack) = RawClient::connect(tern.port, "keeper", false, 3600).unwrap();
    assert!(!connack.session_present, "the session was in the journal");
    drop(tern);
    // Recovered once, the store starts again without --recover.
    drop(Tern::start_with_data(dir.path()));
}

#[test]
fn a_deleted_journal_is_refused_and_recovery_logs_the_lost_batches() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    std::fs::remove_file(journal(dir.path())).unwrap();

    let stderr = Tern::refused(dir.path(), &[]);
    names(&stderr, dir.path(), "holds no journal");

    let tern = recovered(dir.path(), "committed batches lost");
    let (_, connack) = RawClient::connect(tern.port, "keeper", false, 3600).unwrap();
    assert!(!connack.session_present);
}

#[test]
fn a_deleted_partition_folder_is_refused_and_recovered_empty() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    std::fs::remove_dir_all(dir.path().join("partitions").join("sessions")).unwrap();

    let stderr = Tern::refused(dir.path(), &[]);
    names(&stderr, dir.path(), "partition `sessions` is missing");

    let tern = recovered(dir.path(), "partition `sessions` recreated empty");
    let (_, connack) = RawClient::connect(tern.port, "keeper", false, 3600).unwrap();
    assert!(!connack.session_present, "the sessions were lost with it");
}

#[test]
fn bytes_flipped_in_the_middle_of_the_journal_are_refused_not_loaded_in_part() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path());
    let journal = journal(dir.path());
    let mut bytes = std::fs::read(&journal).unwrap();
    // The journal is preallocated with zeros past what was written.
    let written = bytes.iter().rposition(|b| *b != 0).unwrap() + 1;
    let middle = written / 2;
    for byte in &mut bytes[middle..middle + 20] {
        *byte ^= 0xFF;
    }
    std::fs::write(&journal, &bytes).unwrap();

    let stderr = Tern::refused(dir.path(), &[]);
    names(&stderr, dir.path(), "is damaged at byte");
    assert!(stderr.contains(journal.to_str().unwrap()), "{stderr}");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        bytes,
        "the refused start left the journal as it was"
    );

    // Salvaged: the journal up to the damage; what follows it is logged as lost.
    let tern = recovered(dir.path(), "cannot be read back: dropped");
    let (_, connack) = RawClient::connect(tern.port, "keeper", false, 3600).unwrap();
    assert!(
        connack.session_present,
        "the session came before the damage"
    );
}
