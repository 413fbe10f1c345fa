//! The client over an in-memory duplex transport, against a scripted broker: QoS 1 and 2
//! flows, resending with DUP and PUBREL after an outage, resubscribing when the broker kept no
//! session, topic aliases and Receive Maximum in both directions, keep-alive detecting a
//! silent link, and the inbox of messages no receiver takes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_client::codec::{
    Ack, ConnAck, Decoder, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode, SubAck,
    TopicName,
};
use tern_client::{Client, ClientOptions, ConnectionState, DownReason, FnTransport};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// The broker's end of one connection.
struct Peer {
    stream: DuplexStream,
    decoder: Decoder,
    buf: BytesMut,
    version: ProtocolVersion,
}

impl Peer {
    async fn recv(&mut self) -> Packet {
        loop {
            if let Some(packet) = self.decoder.decode(&mut self.buf).unwrap() {
                return packet;
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("the client sends within the deadline")
                .unwrap();
            assert!(n > 0, "the client closed the link");
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut buf = BytesMut::new();
        packet.encode(self.version, &mut buf).unwrap();
        self.stream.write_all(&buf).await.unwrap();
    }

    /// Reads CONNECT, answers CONNACK with these properties.
    async fn accept(&mut self, session_present: bool, edit: impl FnOnce(&mut ConnAck)) -> bool {
        let Packet::Connect(connect) = self.recv().await else {
            panic!("expected CONNECT")
        };
        self.version = connect.protocol_version;
        self.decoder.set_version(self.version);
        let mut connack = ConnAck {
            session_present,
            reason_code: ReasonCode::Success,
            properties: Default::default(),
        };
        edit(&mut connack);
        self.send(Packet::ConnAck(Box::new(connack))).await;
        connect.clean_start
    }
}

/// A client whose every connection attempt hands the broker's end to the test.
fn start(options: ClientOptions) -> (Client, mpsc::UnboundedReceiver<Peer>) {
    let (transport, peers) = transport();
    let (client, _task) = Client::start(options, transport).unwrap();
    (client, peers)
}

/// A transport whose every connection attempt hands the broker's end to the test.
fn transport() -> (FnTransport, mpsc::UnboundedReceiver<Peer>) {
    let (peers_tx, peers) = mpsc::unbounded_channel();
    let transport = FnTransport::new(move || {
        let (client_end, broker_end) = tokio::io::duplex(64 * 1024);
        let _ = peers_tx.send(Peer {
            stream: broker_end,
            decoder: Decoder::new(ProtocolVersion::V5, 1 << 20),
            buf: BytesMut::new(),
            version: ProtocolVersion::V5,
        });
        async move { Ok(client_end) }
    });
    (transport, peers)
}

fn options() -> ClientOptions {
    let mut options = ClientOptions::new("duplex");
    options.quiet_period = Duration::from_millis(10);
    options.backoff_min = Duration::from_millis(10);
    options.session_expiry_secs = 60;
    options
}

async fn next_peer(peers: &mut mpsc::UnboundedReceiver<Peer>) -> Peer {
    tokio::time::timeout(WAIT, peers.recv())
        .await
        .unwrap()
        .unwrap()
}

fn topic(name: &str) -> TopicName {
    tern_client::message(name, "").unwrap().topic
}

#[tokio::test]
async fn qos1_and_qos2_complete_at_their_acknowledgements() {
    let (client, mut peers) = start(options());
    let mut peer = next_peer(&mut peers).await;
    assert!(
        peer.accept(false, |_| {}).await,
        "first CONNECT starts clean"
    );

    let c = client.clone();
    let qos1 = tokio::spawn(async move { c.publish("a", QoS::AtLeastOnce, false, "1").await });
    let Packet::Publish(p) = peer.recv().await else {
        panic!()
    };
    assert_eq!(
        (p.qos, p.dup, &p.payload[..]),
        (QoS::AtLeastOnce, false, &b"1"[..])
    );
    let mut ack = Ack::new(p.packet_id.unwrap());
    ack.reason_code = ReasonCode::NoMatchingSubscribers;
    peer.send(Packet::PubAck(ack)).await;
    assert_eq!(qos1.await.unwrap(), Ok(ReasonCode::NoMatchingSubscribers));

    let c = client.clone();
    let qos2 = tokio::spawn(async move { c.publish("b", QoS::ExactlyOnce, false, "2").await });
    let Packet::Publish(p) = peer.recv().await else {
        panic!()
    };
    let id = p.packet_id.unwrap();
    peer.send(Packet::PubRec(Ack::new(id))).await;
    let Packet::PubRel(rel) = peer.recv().await else {
        panic!("expected PUBREL")
    };
    assert_eq!(rel.packet_id, id);
    assert!(!qos2.is_finished(), "QoS 2 completes only at PUBCOMP");
    peer.send(Packet::PubComp(Ack::new(id))).await;
    assert_eq!(qos2.await.unwrap(), Ok(ReasonCode::Success));

    // A refused publish is a typed error carrying the reason code.
    let c = client.clone();
    let refused = tokio::spawn(async move { c.publish("c", QoS::AtLeastOnce, false, "3").await });
    let Packet::Publish(p) = peer.recv().await else {
        panic!()
    };
    let mut ack = Ack::new(p.packet_id.unwrap());
    ack.reason_code = ReasonCode::NotAuthorized;
    peer.send(Packet::PubAck(ack)).await;
    assert_eq!(
        refused.await.unwrap(),
        Err(tern_client::PublishError::Refused(
            ReasonCode::NotAuthorized
        ))
    );
}

#[tokio::test]
async fn outage_resends_with_dup_and_pubrel_and_resubscribes() {
    let (client, mut peers) = start(options());
    let mut peer = next_peer(&mut peers).await;
    peer.accept(false, |_| {}).await;

    let c = client.clone();
    let sub = tokio::spawn(async move { c.subscribe("s/#", QoS::ExactlyOnce).await });
    let Packet::Subscribe(s) = peer.recv().await else {
        panic!()
    };
    peer.send(Packet::SubAck(SubAck {
        packet_id: s.packet_id,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::GrantedQos2],
    }))
    .await;
    let mut messages = sub.await.unwrap().unwrap();

    let c = client.clone();
    let qos1 = tokio::spawn(async move { c.publish("a", QoS::AtLeastOnce, false, "1").await });
    let c = client.clone();
    let qos2 = tokio::spawn(async move { c.publish("a", QoS::ExactlyOnce, false, "2").await });
    let Packet::Publish(first) = peer.recv().await else {
        panic!()
    };
    let Packet::Publish(second) = peer.recv().await else {
        panic!()
    };
    let (id1, id2) = (first.packet_id.unwrap(), second.packet_id.unwrap());
    peer.send(Packet::PubRec(Ack::new(id2))).await;
    let Packet::PubRel(_) = peer.recv().await else {
        panic!()
    };

    // The link dies; the client reconnects without clean start and the broker lost the session.
    drop(peer);
    let mut peer = next_peer(&mut peers).await;
    assert!(
        !peer.accept(false, |_| {}).await,
        "reconnection resumes the session"
    );
    let mut resent = Vec::new();
    for _ in 0..3 {
        resent.push(peer.recv().await);
    }
    assert!(
        resent.iter().any(|p| matches!(p, Packet::Subscribe(s)
            if s.subscriptions.iter().any(|x| x.filter.as_str() == "s/#"))),
        "subscription restored: {resent:?}"
    );
    assert!(resent.iter().any(|p| matches!(p, Packet::Publish(p)
        if p.dup && p.packet_id == Some(id1))));
    assert!(
        resent
            .iter()
            .any(|p| matches!(p, Packet::PubRel(a) if a.packet_id == id2)),
        "{resent:?}"
    );
    for packet in &resent {
        if let Packet::Subscribe(s) = packet {
            peer.send(Packet::SubAck(SubAck {
                packet_id: s.packet_id,
                properties: Default::default(),
                reason_codes: vec![ReasonCode::GrantedQos2],
            }))
            .await;
        }
    }
    peer.send(Packet::PubAck(Ack::new(id1))).await;
    peer.send(Packet::PubComp(Ack::new(id2))).await;
    assert_eq!(qos1.await.unwrap(), Ok(ReasonCode::Success));
    assert_eq!(qos2.await.unwrap(), Ok(ReasonCode::Success));

    // An incoming QoS 2 message resent before PUBREL is delivered once.
    let mut incoming = Publish::new(topic("s/x"), Bytes::from_static(b"once"));
    incoming.qos = QoS::ExactlyOnce;
    incoming.packet_id = PacketId::new(9);
    peer.send(Packet::Publish(incoming.clone())).await;
    assert!(matches!(peer.recv().await, Packet::PubRec(_)));
    incoming.dup = true;
    peer.send(Packet::Publish(incoming)).await;
    assert!(matches!(peer.recv().await, Packet::PubRec(_)));
    peer.send(Packet::PubRel(Ack::new(PacketId::new(9).unwrap())))
        .await;
    assert!(
        matches!(peer.recv().await, Packet::PubComp(a) if a.reason_code == ReasonCode::Success)
    );
    let got = messages.recv().await.unwrap();
    assert_eq!(&got.payload[..], b"once");
    let extra = tokio::time::timeout(Duration::from_millis(100), messages.recv()).await;
    assert!(
        extra.is_err(),
        "the resent QoS 2 message was delivered twice"
    );
}

#[tokio::test]
async fn keep_alive_detects_a_silent_link() {
    let mut opts = options();
    opts.keep_alive = Duration::from_millis(100);
    opts.ping_timeout = Some(Duration::from_millis(100));
    let (client, mut peers) = start(opts);
    let mut peer = next_peer(&mut peers).await;
    peer.accept(false, |_| {}).await;
    let mut state = client.state();
    assert!(matches!(peer.recv().await, Packet::PingReq));
    // Never answer: the link stays open but silent, as a blackholed TCP connection would.
    let down = tokio::time::timeout(
        WAIT,
        state.wait_for(|s| matches!(s, ConnectionState::Down(_))),
    )
    .await
    .unwrap()
    .unwrap()
    .clone();
    assert_eq!(down, ConnectionState::Down(DownReason::KeepAlive));
    // And it reconnects after the quiet period.
    let mut again = next_peer(&mut peers).await;
    again.accept(true, |_| {}).await;
    client.wait_connected(WAIT).await.unwrap();
    drop(peer);
}

#[tokio::test]
async fn receive_maximum_and_topic_aliases_towards_the_broker() {
    let (client, mut peers) = start(options());
    let mut peer = next_peer(&mut peers).await;
    peer.accept(false, |c| {
        c.properties.receive_maximum = Some(1);
        c.properties.topic_alias_maximum = Some(4);
    })
    .await;
    let c = client.clone();
    let both = tokio::spawn(async move {
        let first = c
            .send(
                tern_client::message("long/topic/name", "1")
                    .map(|mut p| {
                        p.qos = QoS::AtLeastOnce;
                        p
                    })
                    .unwrap(),
            )
            .await
            .unwrap();
        let second = c
            .send(
                tern_client::message("long/topic/name", "2")
                    .map(|mut p| {
                        p.qos = QoS::AtLeastOnce;
                        p
                    })
                    .unwrap(),
            )
            .await
            .unwrap();
        (first.await, second.await)
    });
    let Packet::Publish(p1) = peer.recv().await else {
        panic!()
    };
    assert_eq!(p1.topic.as_str(), "long/topic/name");
    let alias = p1.properties.topic_alias.expect("an alias is assigned");
    // Receive Maximum 1: the second waits for the first PUBACK.
    let early = tokio::time::timeout(Duration::from_millis(100), peer.recv()).await;
    assert!(
        early.is_err(),
        "second publish sent before the window opened"
    );
    peer.send(Packet::PubAck(Ack::new(p1.packet_id.unwrap())))
        .await;
    let Packet::Publish(p2) = peer.recv().await else {
        panic!()
    };
    assert_eq!(
        (p2.topic.as_str(), p2.properties.topic_alias),
        ("", Some(alias))
    );
    peer.send(Packet::PubAck(Ack::new(p2.packet_id.unwrap())))
        .await;
    let (a, b) = both.await.unwrap();
    assert!(a.is_ok() && b.is_ok());
}

#[tokio::test]
async fn incoming_topic_aliases_are_resolved() {
    let (client, mut peers) = start(options());
    let mut peer = next_peer(&mut peers).await;
    peer.accept(false, |_| {}).await;
    let c = client.clone();
    let sub = tokio::spawn(async move { c.subscribe("t/#", QoS::AtMostOnce).await });
    let Packet::Subscribe(s) = peer.recv().await else {
        panic!()
    };
    peer.send(Packet::SubAck(SubAck {
        packet_id: s.packet_id,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::Success],
    }))
    .await;
    let mut messages = sub.await.unwrap().unwrap();
    let mut first = Publish::new(topic("t/aliased"), Bytes::from_static(b"1"));
    first.properties.topic_alias = Some(3);
    peer.send(Packet::Publish(first)).await;
    let mut second = Publish::new(TopicName::empty(), Bytes::from_static(b"2"));
    second.properties.topic_alias = Some(3);
    peer.send(Packet::Publish(second)).await;
    for payload in [b"1", b"2"] {
        let m = tokio::time::timeout(WAIT, messages.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.topic.as_str(), &m.payload[..]),
            ("t/aliased", &payload[..])
        );
        assert_eq!(m.properties.topic_alias, None);
    }
}

fn publish_packet(name: &str, id: u16, payload: &'static str) -> Packet {
    let mut publish = Publish::new(topic(name), Bytes::from_static(payload.as_bytes()));
    publish.qos = QoS::AtLeastOnce;
    publish.packet_id = PacketId::new(id);
    Packet::Publish(publish)
}

fn granted(packet_id: PacketId) -> Packet {
    Packet::SubAck(SubAck {
        packet_id,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::GrantedQos1],
    })
}

async fn next_payload(messages: &mut tern_client::Messages) -> Bytes {
    tokio::time::timeout(WAIT, messages.recv())
        .await
        .unwrap()
        .unwrap()
        .payload
}

#[tokio::test]
async fn the_inbox_gets_what_no_receiver_takes() {
    use tern_client::codec::{
        DisconnectProperties, MqttString, SubscribeProperties, SubscriptionOptions,
        UnsubscribeProperties,
    };
    let (transport, mut peers) = transport();
    let mut resume = options();
    resume.clean_start = false;
    let (client, mut inbox, _task) = Client::start_with_inbox(resume, transport).unwrap();
    let mut peer = next_peer(&mut peers).await;
    assert!(!peer.accept(true, |_| {}).await);
    // A resumed session's queue arrives before the application has subscribed to anything.
    peer.send(publish_packet("queued", 7, "from the session"))
        .await;
    assert_eq!(&next_payload(&mut inbox).await[..], b"from the session");
    assert!(matches!(peer.recv().await, Packet::PubAck(ack) if ack.packet_id.get() == 7));

    let qos1 = SubscriptionOptions::qos(QoS::AtLeastOnce);
    let c = client.clone();
    let into_inbox = tokio::spawn(async move {
        c.subscribe_to_inbox(&[("live", qos1)], SubscribeProperties::default())
            .await
    });
    let Packet::Subscribe(subscribe) = peer.recv().await else {
        panic!("expected SUBSCRIBE")
    };
    peer.send(granted(subscribe.packet_id)).await;
    assert_eq!(
        into_inbox.await.unwrap().unwrap(),
        [ReasonCode::GrantedQos1]
    );
    let c = client.clone();
    let routed = tokio::spawn(async move { c.subscribe("routed", QoS::AtLeastOnce).await });
    let Packet::Subscribe(subscribe) = peer.recv().await else {
        panic!("expected SUBSCRIBE")
    };
    peer.send(granted(subscribe.packet_id)).await;
    let mut routed = routed.await.unwrap().unwrap();

    peer.send(publish_packet("routed", 8, "to its receiver"))
        .await;
    peer.send(publish_packet("live", 9, "to the inbox")).await;
    assert_eq!(&next_payload(&mut routed).await[..], b"to its receiver");
    assert_eq!(&next_payload(&mut inbox).await[..], b"to the inbox");
    // Once a subscription's receiver is dropped, its messages go to the inbox too.
    drop(routed);
    peer.send(publish_packet("routed", 10, "no receiver left"))
        .await;
    assert_eq!(&next_payload(&mut inbox).await[..], b"no receiver left");

    // UNSUBSCRIBE and DISCONNECT carry the properties given.
    let mut properties = UnsubscribeProperties::default();
    let name = MqttString::new("why").unwrap();
    properties
        .user_properties
        .push(&name, &MqttString::new("done").unwrap());
    let c = client.clone();
    let unsubscribed = tokio::spawn(async move { c.unsubscribe_with(&["live"], properties).await });
    let unsubscribe = loop {
        match peer.recv().await {
            Packet::Unsubscribe(unsubscribe) => break unsubscribe,
            Packet::PubAck(_) => {}
            other => panic!("expected UNSUBSCRIBE, got {other:?}"),
        }
    };
    let pairs: Vec<_> = unsubscribe.properties.user_properties.iter().collect();
    assert_eq!(pairs, [("why", "done")]);
    let unsuback = tern_client::codec::UnsubAck {
        packet_id: unsubscribe.packet_id,
        properties: Default::default(),
        reason_codes: vec![ReasonCode::Success],
    };
    peer.send(Packet::UnsubAck(unsuback)).await;
    unsubscribed.await.unwrap().unwrap();
    let c = client.clone();
    let disconnected = tokio::spawn(async move {
        c.disconnect_with(DisconnectProperties {
            session_expiry_interval: Some(0),
            ..DisconnectProperties::default()
        })
        .await
    });
    let Packet::Disconnect(disconnect) = peer.recv().await else {
        panic!("expected DISCONNECT")
    };
    assert_eq!(disconnect.properties.session_expiry_interval, Some(0));
    disconnected.await.unwrap();
}
