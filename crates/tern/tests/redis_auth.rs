//! The `redis-auth` feature against a real `redis-server`: a THiNX fleet kept in
//! mosquitto-go-auth's Redis layout logs in to Tern unchanged. Devices log in with their bcrypt
//! passwords, read and write only what their `racls`/`wacls`/`rwacls` and the `common:*` sets
//! allow (with `%u`, `%c`, `+` and `#`), a superuser may do anything, a user removed from Redis
//! is refused once the cache lets go of it, and while Redis is down logins are refused with
//! 0x88 Server unavailable (3.1.1: 3), not let in.
#![cfg(feature = "redis-auth")]
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::mqtt::{publish, RawClient};
use support::redis::RedisServer;
use support::Tern;
use tern_codec::{
    Connect, ConnectProperties, MqttString, Packet, ProtocolVersion, QoS, ReasonCode, Subscribe,
    SubscribeProperties, Subscription, SubscriptionList, SubscriptionOptions, TopicFilter,
};

const OWNER: &str = "cedc16bb6bb06daaa3ff6d30666d91aacd6e3efbf9abbc151b4dcade59af7c12";
const UDID: &str = "41528570-6965-11e7-9b6d-6924bbc83a7c";
const PASSWORD: &str = "device api key";
/// How long a test waits for the cache to let go of an answer (1 s here) before failing.
const CACHE_WAIT: Duration = Duration::from_secs(20);

/// A broker whose users are in `redis`, and its configuration file (kept for SIGHUP).
fn broker(redis: &RedisServer, key_prefix: &str) -> (Tern, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("tern.toml");
    let config = format!(
        "[[listener]]\nbind = \"127.0.0.1:0\"\n\
         [auth.default.redis]\nurl = \"redis://127.0.0.1:{}/0\"\n\
         key_prefix = \"{key_prefix}\"\ncache_secs = 1\n",
        redis.port
    );
    std::fs::write(&path, config).expect("write the configuration");
    (Tern::start_with_config_file(&path), dir)
}

/// Stores a user as mosquitto-go-auth's Redis backend reads it (a cheap bcrypt cost: tests).
fn add_user(redis: &RedisServer, prefix: &str, user: &str, password: &str) {
    let hash = bcrypt::hash(password, 4).expect("bcrypt");
    redis.command(&["SET", &format!("{prefix}{user}"), &hash]);
}

fn add_patterns(redis: &RedisServer, key: &str, patterns: &[&str]) {
    let mut args = vec!["SADD", key];
    args.extend_from_slice(patterns);
    redis.command(&args);
}

fn connect(
    tern: &Tern,
    version: ProtocolVersion,
    client_id: &str,
    user: &str,
    password: &str,
) -> (RawClient, ReasonCode) {
    let connect = Connect {
        protocol_version: version,
        clean_start: true,
        keep_alive: 0,
        properties: ConnectProperties::default(),
        client_id: MqttString::new(client_id).unwrap(),
        will: None,
        username: Some(MqttString::new(user).unwrap()),
        password: Some(Bytes::from(password.as_bytes().to_vec())),
    };
    let (client, connack) = RawClient::connect_with(tern.port, connect).expect("a CONNACK");
    (client, connack.reason_code)
}

/// Connects again and again until the CONNACK says `want` (at most [`CACHE_WAIT`]).
fn connect_until(tern: &Tern, version: ProtocolVersion, user: &str, want: ReasonCode) {
    let deadline = Instant::now() + CACHE_WAIT;
    loop {
        let (_, code) = connect(tern, version, user, user, PASSWORD);
        if code == want {
            return;
        }
        assert!(Instant::now() < deadline, "still {code:?}, never {want:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Publishes at QoS 1 and returns the PUBACK's reason code.
fn publish_code(client: &mut RawClient, topic: &str) -> ReasonCode {
    let id = client.fresh_id();
    let packet = publish(
        topic,
        topic.as_bytes().to_vec(),
        QoS::AtLeastOnce,
        false,
        Some(id),
    );
    client.send(&packet).unwrap();
    loop {
        match client.recv(Duration::from_secs(10)).unwrap() {
            Some(Packet::PubAck(ack)) if ack.packet_id == id => return ack.reason_code,
            Some(_) => continue,
            None => panic!("no PUBACK for {topic}"),
        }
    }
}

/// Subscribes and returns the SUBACK's reason code.
fn subscribe_code(client: &mut RawClient, filter: &str) -> ReasonCode {
    let packet_id = client.fresh_id();
    let filter = TopicFilter::new(MqttString::new(filter).unwrap()).unwrap();
    let subscription = Subscription {
        filter,
        options: SubscriptionOptions::qos(QoS::AtLeastOnce),
    };
    client
        .send(&Packet::Subscribe(Subscribe {
            packet_id,
            properties: SubscribeProperties::default(),
            subscriptions: SubscriptionList::new([&subscription]),
        }))
        .unwrap();
    loop {
        match client.recv(Duration::from_secs(10)).unwrap() {
            Some(Packet::SubAck(ack)) if ack.packet_id == packet_id => {
                return ack.reason_codes[0];
            }
            Some(_) => continue,
            None => panic!("no SUBACK"),
        }
    }
}

/// The topics of the next `count` messages `client` receives.
fn received(client: &mut RawClient, count: usize) -> Vec<String> {
    let got = client.receive_acked(count).unwrap();
    got.iter().map(|p| p.topic.as_str().to_owned()).collect()
}

#[test]
fn a_thinx_fleet_logs_in_and_stays_in_its_topics() {
    let redis = RedisServer::start();
    let own = format!("/{OWNER}/{UDID}/#");
    let statuses = format!("/{OWNER}/+/status");
    let shared = format!("/{OWNER}/shared/%u");
    add_user(&redis, "", UDID, PASSWORD);
    add_patterns(&redis, &format!("{UDID}:rwacls"), &[&own]);
    add_patterns(&redis, &format!("{UDID}:racls"), &[&statuses]);
    add_patterns(&redis, &format!("{UDID}:wacls"), &[&shared]);
    add_patterns(&redis, "common:racls", &["/notify/%c/#"]);
    add_patterns(&redis, "common:wacls", &["/telemetry/%u"]);
    add_user(&redis, "", "admin", PASSWORD);
    redis.command(&["SET", "admin:su", "true"]);
    let (tern, _config) = broker(&redis, "");
    let v5 = ProtocolVersion::V5;

    // Wrong passwords and unknown users are refused as such.
    let (_, code) = connect(&tern, v5, UDID, UDID, "wrong");
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);
    let (_, code) = connect(&tern, v5, "nobody", "nobody", PASSWORD);
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);

    // The superuser hears everything.
    let (mut admin, code) = connect(&tern, v5, "console", "admin", PASSWORD);
    assert_eq!(code, ReasonCode::Success);
    assert_eq!(subscribe_code(&mut admin, "#"), ReasonCode::GrantedQos1);

    let (mut device, code) = connect(&tern, v5, UDID, UDID, PASSWORD);
    assert_eq!(code, ReasonCode::Success);
    // Writes: its own channel (rwacls), its shared topic (%u in its wacls), its telemetry
    // (%u in common:wacls); nothing of another device, nothing it may only read.
    let status = format!("/{OWNER}/{UDID}/status");
    let other_status = format!("/{OWNER}/other-device/status");
    let mine_shared = format!("/{OWNER}/shared/{UDID}");
    let others_shared = format!("/{OWNER}/shared/other-device");
    let telemetry = format!("/telemetry/{UDID}");
    let denied = ReasonCode::NotAuthorized;
    for topic in [
        &other_status,
        &others_shared,
        &"/telemetry/other-device".to_owned(),
    ] {
        assert_eq!(publish_code(&mut device, topic), denied, "{topic}");
    }
    for topic in [&status, &mine_shared, &telemetry] {
        assert_eq!(
            publish_code(&mut device, topic),
            ReasonCode::Success,
            "{topic}"
        );
    }
    // The superuser got exactly the allowed ones, in order.
    assert_eq!(
        received(&mut admin, 3),
        [status.clone(), mine_shared.clone(), telemetry]
    );

    // Reads: every device's status (`+`), its own channel (`#`), its notifications (%c in
    // common:racls); not its owner's whole tree, not everything, not another's notifications,
    // not what it may only write.
    for filter in [
        statuses.as_str(),
        &own,
        &format!("/{OWNER}/{UDID}"),
        &format!("/notify/{UDID}/#"),
    ] {
        assert_eq!(
            subscribe_code(&mut device, filter),
            ReasonCode::GrantedQos1,
            "{filter}"
        );
    }
    for filter in [
        format!("/{OWNER}/#"),
        "#".to_owned(),
        "/notify/other-device/#".to_owned(),
        mine_shared.clone(),
    ] {
        assert_eq!(subscribe_code(&mut device, &filter), denied, "{filter}");
    }
    // The superuser writes where the device listens; the device hears it.
    let notification = format!("/notify/{UDID}/n1");
    assert_eq!(publish_code(&mut admin, &notification), ReasonCode::Success);
    assert_eq!(received(&mut device, 1), [notification]);

    // SIGHUP compiles every connection's permissions anew: from the topics its login found,
    // so the device keeps its own (and no more) without Redis being asked.
    redis.command(&["DEL", &format!("{UDID}:rwacls")]);
    support::signal_process(tern.pid(), "HUP");
    assert!(tern.wait_for_log("reloaded authentication", Duration::from_secs(10)));
    assert_eq!(publish_code(&mut device, &status), ReasonCode::Success);
    assert_eq!(publish_code(&mut device, &other_status), denied);

    // Removed from Redis: refused once the cache (1 s) lets go of the answer.
    redis.command(&["DEL", UDID]);
    connect_until(&tern, v5, UDID, ReasonCode::BadUserNameOrPassword);
}

#[test]
fn redis_down_refuses_with_server_unavailable_until_it_is_back() {
    let mut redis = RedisServer::start();
    let prefix = "mqtt:";
    add_user(&redis, prefix, UDID, PASSWORD);
    let (tern, _config) = broker(&redis, prefix);
    let (_, code) = connect(&tern, ProtocolVersion::V5, UDID, UDID, PASSWORD);
    assert_eq!(code, ReasonCode::Success);
    // A key without the prefix is not a user.
    add_user(&redis, "", "plain", PASSWORD);
    let (_, code) = connect(&tern, ProtocolVersion::V5, "plain", "plain", PASSWORD);
    assert_eq!(code, ReasonCode::BadUserNameOrPassword);

    redis.stop();
    connect_until(
        &tern,
        ProtocolVersion::V5,
        UDID,
        ReasonCode::ServerUnavailable,
    );
    // MQTT 3.1.1: return code 3, Server unavailable.
    let (_, code) = connect(&tern, ProtocolVersion::V311, UDID, UDID, PASSWORD);
    assert_eq!(code, ReasonCode::ServerUnavailable);
    assert!(tern.wait_for_log("the user directory did not answer", Duration::from_secs(10)));

    // Back (empty, as it was started without persistence): in again once the data is.
    redis.restart();
    add_user(&redis, prefix, UDID, PASSWORD);
    connect_until(&tern, ProtocolVersion::V5, UDID, ReasonCode::Success);
}
