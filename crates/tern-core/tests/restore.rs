//! The storage seam: everything that must survive a restart leaves the core as store
//! operations, and a broker rebuilt from them resumes sessions, re-sends in-flight messages,
//! delivers queued ones, keeps retained messages and keeps QoS 2 exactly-once.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use support::*;
use tern_codec::{Ack, Packet, ProtocolVersion};
use tern_core::{Broker, Config, MemoryStore, Store};

fn persistent_config() -> Config {
    Config {
        persistence: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..Config::default()
    }
}

/// Applies every store operation the broker emitted so far to `store`.
fn flush_ops(t: &mut TestBroker, store: &mut MemoryStore) -> usize {
    let mut ops = Vec::new();
    while let Some(op) = t.broker.poll_store_op() {
        ops.push(op);
    }
    store.apply(&ops).expect("memory store applies");
    ops.len()
}

/// A broker "restarted": rebuilt from the store at the same time.
fn restart(t: &mut TestBroker, store: &mut MemoryStore) {
    let snapshot = store.load().expect("memory store loads");
    t.broker = Broker::restore(persistent_config(), t.now, snapshot);
}

fn persistent_opts(version: ProtocolVersion) -> Opts {
    match version {
        V31 | V311 => Opts::new().resume(),
        V5 => Opts::new().resume().expiry(3600),
    }
}

fn payload(packet: &Packet) -> (String, bool, Option<u16>) {
    match packet {
        Packet::Publish(p) => (
            String::from_utf8_lossy(&p.payload).into_owned(),
            p.dup,
            p.packet_id.map(|id| id.get()),
        ),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[test]
fn sessions_queues_inflight_and_retained_survive_a_restart() {
    for version in VERSIONS {
        let mut store = MemoryStore::default();
        let mut t = TestBroker::with_config(persistent_config());
        let sub = t.connect("sub", version, persistent_opts(version));
        t.subscribe(&sub, "a/#", Q1);
        let publisher = t.connect("pub", version, Opts::new());
        t.send(&publisher, retained("a/r", "kept", Q1, 1));
        t.send(&publisher, publish("a/x", "one", Q1, 2));
        // The subscriber receives both but acknowledges neither: they stay in flight.
        let first = t.recv(&sub);
        assert_eq!(first.len(), 2, "{version:?}: {first:?}");
        t.lose(&sub);
        t.send(&publisher, publish("a/x", "two", Q1, 3));
        t.send(&publisher, publish("a/x", "three", Q1, 4));
        assert!(flush_ops(&mut t, &mut store) > 0);

        restart(&mut t, &mut store);
        let sub = t.connect("sub", version, persistent_opts(version));
        assert!(
            sub.connack.session_present,
            "{version:?}: session resumed after restart"
        );
        let packets = t.recv(&sub);
        let got: Vec<(String, bool)> = packets
            .iter()
            .map(|p| {
                let (text, dup, _) = payload(p);
                (text, dup)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("kept".to_owned(), true),
                ("one".to_owned(), true),
                ("two".to_owned(), false),
                ("three".to_owned(), false)
            ],
            "{version:?}: in-flight re-sent with DUP first, then the queue, in order"
        );
        // A new subscriber still finds the retained message.
        let late = t.connect("late", version, Opts::new());
        t.subscribe(&late, "a/r", Q0);
        let retained = t.recv(&late);
        assert_eq!(retained.len(), 1, "{version:?}");
        assert_eq!(payload(&retained[0]).0, "kept");
    }
}

#[test]
fn incoming_qos2_is_exactly_once_across_a_restart() {
    for version in VERSIONS {
        let mut store = MemoryStore::default();
        let mut t = TestBroker::with_config(persistent_config());
        let sub = t.connect("sub", version, Opts::new());
        t.subscribe(&sub, "q2", Q2);
        let publisher = t.connect("pub", version, persistent_opts(version));
        t.send(&publisher, publish("q2", "once", Q2, 9));
        assert_eq!(t.recv(&publisher), [Packet::PubRec(Ack::new(pid(9)))]);
        assert_eq!(t.recv(&sub).len(), 1, "{version:?}: delivered once");
        t.lose(&publisher);
        t.lose(&sub);
        flush_ops(&mut t, &mut store);

        restart(&mut t, &mut store);
        let sub = t.connect("sub2", version, Opts::new());
        t.subscribe(&sub, "q2", Q2);
        let publisher = t.connect("pub", version, persistent_opts(version));
        assert!(publisher.connack.session_present);
        // The publisher did not see PUBREC before the crash, so it sends the PUBLISH again.
        t.send(
            &publisher,
            publish_with("q2", "once", Q2, 9, |p| p.dup = true),
        );
        assert_eq!(t.recv(&publisher), [Packet::PubRec(Ack::new(pid(9)))]);
        t.expect_silent(&sub);
        t.send(&publisher, Packet::PubRel(Ack::new(pid(9))));
        assert_eq!(t.recv(&publisher), [Packet::PubComp(Ack::new(pid(9)))]);
    }
}

#[test]
fn nothing_is_recorded_without_persistence_or_for_clean_sessions() {
    let mut t = TestBroker::new();
    let sub = t.connect("sub", V5, Opts::new().resume().expiry(60));
    t.subscribe(&sub, "x", Q1);
    assert!(
        t.broker.poll_store_op().is_none(),
        "persistence is off by default"
    );

    let mut t = TestBroker::with_config(persistent_config());
    let sub = t.connect("clean", V5, Opts::new());
    t.subscribe(&sub, "x", Q1);
    let publisher = t.connect("pub", V5, Opts::new());
    t.send(&publisher, publish("x", "m", Q1, 1));
    assert!(
        t.broker.poll_store_op().is_none(),
        "a session that ends with its connection is never stored"
    );
}

#[test]
fn will_and_session_expiry_count_from_the_disconnect_not_from_the_restart() {
    let mut store = MemoryStore::default();
    let mut t = TestBroker::with_config(persistent_config());
    let watcher = t.connect("watcher", V5, Opts::new().resume().expiry(3600));
    t.subscribe(&watcher, "wills/#", Q1);
    let gone = t.connect(
        "gone",
        V5,
        Opts::new()
            .resume()
            .expiry(20)
            .will(delayed_will("wills/gone", "bye", 10)),
    );
    t.subscribe(&gone, "x", Q1);
    t.lose(&gone);
    t.lose(&watcher);
    t.skip(6_000);
    flush_ops(&mut t, &mut store);

    // Restarted 6 s after the disconnect: the will is due 4 s later, not 10.
    restart(&mut t, &mut store);
    t.advance(3_900);
    let watcher = t.connect("watcher", V5, Opts::new().resume().expiry(3600));
    t.expect_silent(&watcher);
    t.advance(200);
    let wills = t.recv(&watcher);
    assert_eq!(wills.len(), 1, "{wills:?}");
    assert_eq!(payload(&wills[0]).0, "bye");

    // The session expires 20 s after the disconnect; what the store removes goes with it.
    t.advance(9_800);
    flush_ops(&mut t, &mut store);
    restart(&mut t, &mut store);
    let again = t.connect("gone", V5, Opts::new().resume().expiry(20));
    assert!(
        again.connack.session_present,
        "still there 19.9 s after the disconnect"
    );
    t.lose(&again);
    t.advance(20_001);
    flush_ops(&mut t, &mut store);
    restart(&mut t, &mut store);
    let after = t.connect("gone", V5, Opts::new().resume().expiry(20));
    assert!(!after.connack.session_present, "expired and purged");
}

#[test]
fn sys_statistics_are_not_stored() {
    let mut t = TestBroker::with_config(persistent_config());
    let now = t.now;
    t.broker
        .publish_sys(now, tern_core::TrafficTotals::default(), "test");
    let ops: Vec<_> = std::iter::from_fn(|| t.broker.poll_store_op()).collect();
    assert!(ops.is_empty(), "{ops:?}");
    // A client's own retained message under `$` is stored as any other.
    let publisher = t.connect("pub", V5, Opts::new());
    t.send(&publisher, retained("$app/state", "on", Q1, 1));
    let ops: Vec<_> = std::iter::from_fn(|| t.broker.poll_store_op()).collect();
    assert_eq!(ops.len(), 1, "{ops:?}");
}

#[test]
fn expired_messages_leave_offline_queues_and_the_store_while_running() {
    let mut store = MemoryStore::default();
    let mut t = TestBroker::with_config(persistent_config());
    let sub = t.connect("sub", V5, Opts::new().resume().expiry(3600));
    t.subscribe(&sub, "q", Q1);
    t.lose(&sub);
    let publisher = t.connect("pub", V5, Opts::new());
    t.send(
        &publisher,
        publish_with("q", "brief", Q1, 1, |p| {
            p.properties.message_expiry_interval = Some(30)
        }),
    );
    t.send(&publisher, publish("q", "lasting", Q1, 2));
    flush_ops(&mut t, &mut store);
    assert_eq!(store.load().expect("loads").sessions[0].deliveries.len(), 2);

    // Nobody reconnects; within a sweep interval after the expiry the message is gone.
    t.advance_secs(31);
    t.advance_secs(60);
    flush_ops(&mut t, &mut store);
    let snapshot = store.load().expect("loads");
    let left: Vec<String> = snapshot.sessions[0]
        .deliveries
        .iter()
        .map(|(d, _)| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect();
    assert_eq!(left, ["lasting"]);
    let sub = t.connect("sub", V5, Opts::new().resume().expiry(3600));
    let got: Vec<String> = t.recv(&sub).iter().map(|p| payload(p).0).collect();
    assert_eq!(got, ["lasting"]);
}

/// MQTT-3.1.3-9 across a restart: a client that reconnects to its session within the Will Delay
/// Interval cancels the will, whether the broker restarted in between or restarts after
/// (Mosquitto's 07-will-delay-recover reconnects within the delay).
#[test]
fn reconnecting_within_the_will_delay_after_a_restart_cancels_the_will() {
    let mut store = MemoryStore::default();
    let mut t = TestBroker::with_config(persistent_config());
    let opts = Opts::new().resume().expiry(60);
    let watcher = t.connect("watcher", V5, opts.clone());
    t.subscribe(&watcher, "wills/#", Q1);
    let gone = t.connect(
        "gone",
        V5,
        opts.clone().will(delayed_will("wills/gone", "bye", 10)),
    );
    t.lose(&gone);
    t.skip(3_000);
    flush_ops(&mut t, &mut store);
    restart(&mut t, &mut store);
    t.advance(2_000);
    let back = t.connect("gone", V5, opts.clone());
    assert!(back.connack.session_present);
    flush_ops(&mut t, &mut store);
    restart(&mut t, &mut store);
    t.advance(20_000);
    let watcher = t.connect("watcher", V5, opts);
    t.expect_silent(&watcher);
}
