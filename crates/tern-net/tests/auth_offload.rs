//! A slow credential check runs off the broker thread: while one client's CONNECT waits on a
//! check that is blocked (here until the test releases it, as a long password hash would be),
//! another client's publishes go round the broker as usual; once released, the waiting client
//! gets its CONNACK and the packets it sent after CONNECT are served. Checks of clients that
//! left before their turn are never run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use support::{connect, loopback_config, publish, spawn_server, subscribe, Client, WAIT};
use tern_codec::{Packet, ReasonCode};
use tern_core::{AllowAll, AuthDecision, AuthJob, AuthRequest, Authenticator, ConnectionId};
use tern_net::AdmissionLimits;

/// Lets clients without a user name in at once; a client with one waits for the test to send
/// a verdict on the channel, inside a blocking job.
#[derive(Debug)]
struct Gate {
    verdicts: Arc<Mutex<mpsc::Receiver<bool>>>,
}

impl Authenticator for Gate {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        if request.username.is_none() {
            return AuthDecision::Accept { data: None };
        }
        let verdicts = Arc::clone(&self.verdicts);
        AuthDecision::Pending(AuthJob::new(move || {
            let verdict = verdicts.lock().map(|rx| rx.recv_timeout(WAIT));
            match verdict {
                Ok(Ok(true)) => AuthDecision::Accept { data: None },
                _ => AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword),
            }
        }))
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod)
    }
}

#[test]
fn a_blocked_credential_check_does_not_stall_other_clients() {
    let (verdict_tx, verdict_rx) = mpsc::channel();
    let gate = Gate {
        verdicts: Arc::new(Mutex::new(verdict_rx)),
    };
    let config = loopback_config(tern_core::Config::default());
    let server = spawn_server(config, move |server| {
        server.set_auth(Box::new(gate), Box::new(AllowAll));
    });
    let addr = server.addr;

    let mut slow = Client::open(addr);
    slow.send(connect("slow", Some("user")));
    // Sent before CONNACK, as clients may: held until the check answers.
    slow.send(subscribe("held/#", 1));

    let mut fast = Client::open(addr);
    fast.send(connect("fast", None));
    assert!(matches!(fast.recv(), Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));
    fast.send(subscribe("loop/#", 1));
    assert!(matches!(fast.recv(), Packet::SubAck(_)));
    for round in 0..20_u16 {
        fast.send(publish("loop/x", b"ping", round + 10));
        // The PUBACK and the delivery both arrive, in either order, while the check is blocked.
        let mut got_ack = false;
        let mut got_message = false;
        while !(got_ack && got_message) {
            match fast.recv() {
                Packet::PubAck(_) => got_ack = true,
                Packet::Publish(p) => {
                    got_message = true;
                    if let Some(id) = p.packet_id {
                        fast.send(Packet::PubAck(tern_codec::Ack::new(id)));
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    verdict_tx.send(true).unwrap();
    assert!(matches!(slow.recv(), Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));
    assert!(matches!(slow.recv(), Packet::SubAck(_)));
    fast.send(publish("held/x", b"after", 99));
    assert!(matches!(slow.recv(), Packet::Publish(p) if p.payload.as_ref() == b"after"));

    // A refused check answers CONNACK 0x86.
    let mut wrong = Client::open(addr);
    wrong.send(connect("wrong", Some("user")));
    verdict_tx.send(false).unwrap();
    assert!(
        matches!(wrong.recv(), Packet::ConnAck(c) if c.reason_code == ReasonCode::BadUserNameOrPassword)
    );

    drop((slow, fast, wrong));
    server.stop();
}

/// Counts the checks it hands out that run; a check for a user other than "alice" blocks (as a
/// long hash would) until the test opens `open`, then refuses. Reports every closed connection.
#[derive(Debug)]
struct Flood {
    ran: Arc<AtomicUsize>,
    open: Arc<(Mutex<bool>, Condvar)>,
    closed: mpsc::Sender<ConnectionId>,
}

impl Authenticator for Flood {
    fn authenticate(&mut self, request: &AuthRequest<'_>) -> AuthDecision {
        if request.username.map(|u| u.as_str()) == Some("alice") {
            return AuthDecision::Pending(AuthJob::new(|| AuthDecision::Accept { data: None }));
        }
        let (ran, open) = (Arc::clone(&self.ran), Arc::clone(&self.open));
        AuthDecision::Pending(AuthJob::new(move || {
            ran.fetch_add(1, Ordering::SeqCst);
            let (lock, opened) = &*open;
            let guard = lock.lock().unwrap();
            let _ = opened
                .wait_timeout_while(guard, WAIT, |open| !*open)
                .unwrap();
            AuthDecision::Refuse(ReasonCode::BadUserNameOrPassword)
        }))
    }

    fn continue_auth(&mut self, _request: &AuthRequest<'_>) -> AuthDecision {
        AuthDecision::Refuse(ReasonCode::BadAuthenticationMethod)
    }

    fn connection_closed(&mut self, connection: ConnectionId) {
        let _ = self.closed.send(connection);
    }
}

/// 400 CONNECTs whose sockets close at once: only the few checks taken before their client
/// left run (at most one per slot), the others are dropped unrun and counted, and a real login
/// afterwards is checked at once instead of waiting behind them.
#[test]
fn checks_of_clients_that_left_are_skipped() {
    const FLOOD: u64 = 400;
    let ran = Arc::new(AtomicUsize::new(0));
    let open = Arc::new((Mutex::new(false), Condvar::new()));
    let (closed_tx, closed_rx) = mpsc::channel();
    let flood = Flood {
        ran: Arc::clone(&ran),
        open: Arc::clone(&open),
        closed: closed_tx,
    };
    let mut config = loopback_config(tern_core::Config::default());
    config.sys_interval = Some(Duration::from_millis(50));
    // Loopback connections come from one address: no per-address cap for this test.
    config.admission = AdmissionLimits {
        connections_per_address_max: 0,
        connection_rate_per_address_max: 0,
        ..AdmissionLimits::default()
    };
    let server = spawn_server(config, move |server| {
        server.set_auth(Box::new(flood), Box::new(AllowAll));
    });
    for n in 0..FLOOD {
        let mut client = Client::open(server.addr);
        client.send(connect(&format!("flood-{n}"), Some("mallory")));
    }
    // Every close has reached the broker before the checks blocked so far are let go.
    for _ in 0..FLOOD {
        closed_rx.recv_timeout(WAIT).unwrap();
    }
    let (lock, opened) = &*open;
    *lock.lock().unwrap() = true;
    opened.notify_all();

    let mut alice = Client::open(server.addr);
    alice.send(connect("alice", Some("alice")));
    assert!(matches!(alice.recv(), Packet::ConnAck(c) if c.reason_code == ReasonCode::Success));

    // Each check of the flood was either run or skipped; only those that held a slot ran.
    alice.send(subscribe("$SYS/broker/clients/#", 1));
    let mut counters = std::collections::HashMap::new();
    let (run, skipped) = loop {
        if let Packet::Publish(p) = alice.recv() {
            let value = std::str::from_utf8(&p.payload)
                .unwrap()
                .parse()
                .unwrap_or(0);
            counters.insert(p.topic.as_str().to_owned(), value);
        }
        let count = |name: &str| {
            counters
                .get(&format!("$SYS/broker/clients/{name}"))
                .copied()
        };
        if let (Some(run), Some(skipped)) = (count("auth_checks_run"), count("auth_checks_skipped"))
        {
            if run + skipped == FLOOD + 1 {
                break (run, skipped);
            }
        }
    };
    assert!(run <= 1 + 4, "{run} checks ran, {skipped} skipped");
    assert_eq!(ran.load(Ordering::SeqCst) as u64, run - 1);
    drop(alice);
    server.stop();
}
