//! Guards around slow credential checks: the queue of waiting checks is bounded (past it,
//! CONNACK 0x89 Server busy, 3.1.1 0x03), the check of a connection that closed before its
//! turn is never handed out, and failed logins are throttled per source address and per user
//! name, with blocks that double and end, and without running a slow check; what the
//! authenticator settles at once (a login it verified recently) still gets in.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use std::cell::Cell;
use std::net::IpAddr;
use std::rc::Rc;

use bytes::Bytes;
use support::*;
use tern_codec::{DecodeError, Packet, ProtocolVersion, ReasonCode};
use tern_core::throttle::LOGIN_BLOCK_FIRST_MILLIS;
use tern_core::{CloseReason, ConnectionId, ConnectionInfo, Event, Limits, Throttled, Time};

fn broker(limits: Limits) -> (TestBroker, Rc<Cell<u32>>) {
    let mut t = TestBroker::with_limits(limits);
    let asked = Rc::new(Cell::new(0));
    t.broker.set_authenticator(Box::new(Deferred {
        asked: Rc::clone(&asked),
    }));
    (t, asked)
}

/// Sends CONNECT from `address` as `user` with `password`; returns the connection and what
/// was answered at once.
fn login(
    t: &mut TestBroker,
    version: ProtocolVersion,
    address: [u8; 4],
    user: &str,
    password: &'static [u8],
) -> (ConnectionId, Vec<Packet>) {
    let id = t.open_with(ConnectionInfo {
        peer_address: Some(IpAddr::from(address)),
        ..ConnectionInfo::default()
    });
    let mut connect = connect_packet(&format!("c{}", id.0), version, &Opts::new());
    connect.username = Some(mstr(user));
    connect.password = Some(Bytes::from_static(password));
    t.send_to(id, version, Packet::Connect(Box::new(connect)));
    (id, t.drain(id))
}

/// Runs every queued check and returns the CONNACK code each connection got.
fn run_checks(t: &mut TestBroker) -> Vec<(ConnectionId, ReasonCode)> {
    let mut answers = Vec::new();
    while let Some((id, job)) = t.broker.poll_auth_job(t.now) {
        t.broker.auth_finished(id, job.run(), t.now);
        answers.push((id, connack_code(&t.drain(id))));
    }
    answers
}

fn connack_code(packets: &[Packet]) -> ReasonCode {
    match packets {
        [Packet::ConnAck(connack), ..] => connack.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

fn refusals(events: &[Event]) -> Vec<CloseReason> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Refused { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

#[test]
fn a_full_queue_of_checks_refuses_with_server_busy() {
    for version in VERSIONS {
        let limits = Limits {
            auth_checks_queued_max: 2,
            ..Limits::default()
        };
        let (mut t, _) = broker(limits);
        let (first, answered) = login(&mut t, version, [10, 0, 0, 1], "alice", b"secret");
        assert!(answered.is_empty());
        login(&mut t, version, [10, 0, 0, 2], "alice", b"secret");
        let (third, answered) = login(&mut t, version, [10, 0, 0, 3], "alice", b"secret");
        // 0x89 Server busy; 3.1.1 has only 0x03 Server unavailable (decoded as 0x88).
        let busy = match version {
            V5 => ReasonCode::ServerBusy,
            _ => ReasonCode::ServerUnavailable,
        };
        assert_eq!(connack_code(&answered), busy);
        assert!(t.take_closed(third));
        assert_eq!(t.stats().auth_queue_full, 1);
        assert_eq!(refusals(&t.events()), [CloseReason::AuthQueueFull]);
        // Once a check is handed out, there is room again.
        let (id, job) = t.broker.poll_auth_job(t.now).expect("a job");
        assert_eq!(id, first);
        let (_, answered) = login(&mut t, version, [10, 0, 0, 4], "alice", b"secret");
        assert!(answered.is_empty());
        t.broker.auth_finished(id, job.run(), t.now);
        assert_eq!(connack_code(&t.drain(id)), ReasonCode::Success);
        assert_eq!(run_checks(&mut t).len(), 2);
        assert_eq!(t.stats().auth_checks_run, 3);
    }
}

#[test]
fn checks_of_closed_connections_are_never_handed_out() {
    let (mut t, _) = broker(Limits::default());
    // Each of the flood's sockets closes right after its CONNECT, before its check's turn;
    // one is closed by the broker instead (a malformed packet while it waits).
    for n in 0..400_u32 {
        let (id, answered) = login(&mut t, V5, [10, 0, 0, 9], &format!("u{n}"), b"wrong");
        assert!(answered.is_empty());
        if n == 0 {
            let malformed = DecodeError::Malformed("test");
            t.broker.handle_decode_error(id, malformed, t.now);
        } else {
            t.broker.connection_lost(id, t.now);
        }
    }
    let (good, answered) = login(&mut t, V5, [10, 0, 0, 1], "alice", b"secret");
    assert!(answered.is_empty());
    let answers = run_checks(&mut t);
    assert_eq!(answers, [(good, ReasonCode::Success)]);
    let stats = t.stats();
    assert_eq!((stats.auth_checks_run, stats.auth_checks_skipped), (1, 400));
}

#[test]
fn failed_logins_are_throttled_per_address_and_per_user() {
    for version in VERSIONS {
        let limits = Limits {
            login_failures_per_address_max: 3,
            login_failures_per_user_max: 5,
            ..Limits::default()
        };
        let (mut t, asked) = broker(limits);
        let attacker = [10, 0, 0, 66];
        for n in 0..3 {
            login(&mut t, version, attacker, &format!("guess{n}"), b"wrong");
        }
        assert!(run_checks(&mut t)
            .iter()
            .all(|(_, code)| *code == ReasonCode::BadUserNameOrPassword));
        assert_eq!(asked.get(), 3);
        // The fourth attempt from that address is refused at once, even with the right
        // password, and no slow check is queued for it.
        let (id, answered) = login(&mut t, version, attacker, "alice", b"secret");
        let busy = connack_code(&answered);
        assert!(matches!(
            busy,
            ReasonCode::ServerBusy | ReasonCode::ServerUnavailable
        ));
        assert!(t.take_closed(id));
        assert_eq!(asked.get(), 4);
        assert!(t.broker.poll_auth_job(t.now).is_none());
        assert_eq!(t.stats().logins_throttled, 1);
        // A login the authenticator settles at once (verified recently) is not held back by
        // its address's block: the block only spares the slow checks.
        let (id, answered) = login(&mut t, version, attacker, "alice", b"cached");
        assert_eq!(connack_code(&answered), ReasonCode::Success);
        assert!(!t.take_closed(id));
        assert!(t.broker.poll_auth_job(t.now).is_none());
        let retry_after_secs = (LOGIN_BLOCK_FIRST_MILLIS / 1000) as u32;
        let throttled = CloseReason::LoginThrottled(Throttled::Address {
            address: IpAddr::from(attacker),
            retry_after_secs,
        });
        assert!(refusals(&t.events()).contains(&throttled));
        // Other addresses log in as usual.
        login(&mut t, version, [10, 0, 0, 1], "alice", b"secret");
        assert_eq!(run_checks(&mut t)[0].1, ReasonCode::Success);

        // Failures for one user name from many addresses block that name only.
        for n in 0..5 {
            login(&mut t, version, [10, 1, 0, n], "bob", b"wrong");
        }
        run_checks(&mut t);
        let (_, answered) = login(&mut t, version, [10, 2, 0, 1], "bob", b"wrong");
        assert_ne!(connack_code(&answered), ReasonCode::BadUserNameOrPassword);
        login(&mut t, version, [10, 2, 0, 1], "alice", b"secret");
        assert_eq!(run_checks(&mut t)[0].1, ReasonCode::Success);

        // The block ends with its time; the next one lasts twice as long.
        t.now = Time::from_millis(t.now.as_millis() + LOGIN_BLOCK_FIRST_MILLIS);
        login(&mut t, version, attacker, "alice", b"secret");
        assert_eq!(run_checks(&mut t)[0].1, ReasonCode::Success);
        for n in 0..3 {
            login(&mut t, version, attacker, &format!("again{n}"), b"wrong");
        }
        run_checks(&mut t);
        let blocked_at = t.now.as_millis();
        t.now = Time::from_millis(blocked_at + 2 * LOGIN_BLOCK_FIRST_MILLIS - 1);
        let (_, answered) = login(&mut t, version, attacker, "alice", b"secret");
        assert!(!answered.is_empty(), "still blocked");
        t.now = Time::from_millis(blocked_at + 2 * LOGIN_BLOCK_FIRST_MILLIS);
        let (_, answered) = login(&mut t, version, attacker, "alice", b"secret");
        assert!(answered.is_empty(), "waits for its check again");
        assert_eq!(run_checks(&mut t)[0].1, ReasonCode::Success);
    }
}

#[test]
fn queued_checks_of_a_client_throttled_meanwhile_are_refused_unrun() {
    let limits = Limits {
        login_failures_per_address_max: 2,
        ..Limits::default()
    };
    let (mut t, _) = broker(limits);
    let attacker = [10, 0, 0, 66];
    let waiting: Vec<ConnectionId> = (0..5)
        .map(|n| login(&mut t, V311, attacker, &format!("g{n}"), b"wrong").0)
        .collect();
    // Two checks fail; the address is blocked and the three still queued are refused unrun.
    let answers = run_checks(&mut t);
    assert_eq!(answers.len(), 2);
    assert_eq!(t.stats().auth_checks_run, 2);
    assert_eq!(t.stats().logins_throttled, 3);
    for id in &waiting[2..] {
        assert_eq!(connack_code(&t.drain(*id)), ReasonCode::ServerUnavailable);
        assert!(t.take_closed(*id));
    }
}
