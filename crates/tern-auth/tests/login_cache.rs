//! Remembered logins, through the broker core: the first login of a user waits for its argon2
//! check (a job); once it succeeded, the same user with the same password is let in at once,
//! with no job; a wrong password, a check whose client left, and a reloaded password file (a
//! new service, as SIGHUP builds) all mean a check again.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

use std::sync::Arc;

use bytes::Bytes;
use tern_auth::{AuthService, PasswordFile, Profile};
use tern_codec::{Connect, ConnectProperties, MqttString, Packet, ProtocolVersion, ReasonCode};
use tern_core::{Broker, Config, ConnectionId, Time, Transmit};

struct Harness {
    broker: Broker,
    next: u64,
}

/// What a CONNECT got at once: a CONNACK code, or a check to run.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Now(ReasonCode),
    Checked(ReasonCode),
}

impl Harness {
    fn new(service: AuthService) -> Self {
        let mut broker = Broker::new(Config::default(), Time::from_millis(0));
        broker.set_authenticator(Box::new(service));
        Self { broker, next: 1 }
    }

    fn open(&mut self, user: &str, password: &'static [u8]) -> ConnectionId {
        let id = ConnectionId(self.next);
        self.next += 1;
        let now = Time::from_millis(0);
        self.broker.connection_opened(id, now);
        let connect = Connect {
            protocol_version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 0,
            properties: ConnectProperties::default(),
            client_id: MqttString::new(&format!("c{}", id.0)).unwrap(),
            will: None,
            username: Some(MqttString::new(user).unwrap()),
            password: Some(Bytes::from_static(password)),
        };
        self.broker
            .handle_packet(id, Packet::Connect(Box::new(connect)), now);
        id
    }

    fn login(&mut self, user: &str, password: &'static [u8]) -> Answer {
        let id = self.open(user, password);
        if let Some(code) = self.connack(id) {
            return Answer::Now(code);
        }
        let now = Time::from_millis(0);
        let (job_id, job) = self.broker.poll_auth_job(now).expect("a check");
        assert_eq!(job_id, id);
        self.broker.auth_finished(id, job.run(), now);
        Answer::Checked(self.connack(id).expect("a CONNACK"))
    }

    fn connack(&mut self, id: ConnectionId) -> Option<ReasonCode> {
        match self.broker.poll_transmit(id)? {
            Transmit::Packet(packet) => match *packet {
                Packet::ConnAck(connack) => Some(connack.reason_code),
                other => panic!("expected CONNACK, got {other:?}"),
            },
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
}

fn service(password: &str) -> AuthService {
    let mut file = PasswordFile::default();
    file.set_password("alice", password).unwrap();
    file.set_password("bob", "builder").unwrap();
    AuthService::new(vec![Profile {
        passwords: Some(Arc::new(file)),
        ..Profile::default()
    }])
}

#[test]
fn a_login_that_succeeded_is_let_in_at_once_until_the_file_is_reloaded() {
    use Answer::{Checked, Now};
    let ok = ReasonCode::Success;
    let bad = ReasonCode::BadUserNameOrPassword;
    let mut t = Harness::new(service("wonderland"));
    assert_eq!(t.login("alice", b"wonderland"), Checked(ok));
    assert_eq!(t.login("alice", b"wonderland"), Now(ok));
    assert_eq!(t.login("alice", b"wonderland"), Now(ok));
    // A wrong password, another user, and unknown users are checked as before.
    assert_eq!(t.login("alice", b"Wonderland"), Checked(bad));
    assert_eq!(t.login("bob", b"wonderland"), Checked(bad));
    assert_eq!(t.login("carol", b"wonderland"), Checked(bad));
    assert_eq!(t.login("alice", b"wonderland"), Now(ok));

    // A check whose client left before it answered is not remembered.
    let id = t.open("bob", b"builder");
    let (_, job) = t
        .broker
        .poll_auth_job(Time::from_millis(0))
        .expect("a check");
    t.broker.connection_lost(id, Time::from_millis(0));
    t.broker.auth_finished(id, job.run(), Time::from_millis(0));
    assert_eq!(t.login("bob", b"builder"), Checked(ok));
    assert_eq!(t.login("bob", b"builder"), Now(ok));

    // SIGHUP builds a new service from the file: nothing remembered, and a changed password
    // is checked (and the old one refused).
    t.broker
        .set_authenticator(Box::new(service("looking-glass")));
    assert_eq!(t.login("alice", b"wonderland"), Checked(bad));
    assert_eq!(t.login("alice", b"looking-glass"), Checked(ok));
    assert_eq!(t.login("alice", b"looking-glass"), Now(ok));
    assert_eq!(t.login("bob", b"builder"), Checked(ok));
}

#[test]
fn a_cache_of_zero_entries_checks_every_login() {
    let mut t = Harness::new(service("wonderland").with_login_cache(0));
    for _ in 0..2 {
        assert_eq!(
            t.login("alice", b"wonderland"),
            Answer::Checked(ReasonCode::Success)
        );
    }
}
