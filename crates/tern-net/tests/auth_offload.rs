//! A slow credential check runs off the broker thread: while one client's CONNECT waits on a
//! check that is blocked (here until the test releases it, as a long password hash would be),
//! another client's publishes go round the broker as usual; once released, the waiting client
//! gets its CONNACK and the packets it sent after CONNECT are served.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use support::{connect, loopback_config, publish, spawn_server, subscribe, Client, WAIT};
use tern_codec::{Packet, ReasonCode};
use tern_core::{AllowAll, AuthDecision, AuthJob, AuthRequest, Authenticator};

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
