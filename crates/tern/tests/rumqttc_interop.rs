//! `rumqttc`, a widely used Rust client, against the real `tern serve`: publish and subscribe at
//! every QoS in MQTT 3.1.1 and 5.0, retained messages, wills, shared subscriptions and session
//! resumption.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod support;

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS};
use support::Tern;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// What the tests need to see from a client's event loop.
#[derive(Debug, PartialEq)]
enum Incoming {
    ConnAck,
    SubAck,
    Publish {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
        retain: bool,
    },
}

type Inbox = mpsc::UnboundedReceiver<Incoming>;

/// Drives a 3.1.1 event loop in the background, forwarding what the tests look at.
fn drive(eventloop: EventLoop) -> Inbox {
    drive_with_handle(eventloop).0
}

/// Like [`drive`]; aborting the returned task drops the socket without a DISCONNECT.
fn drive_with_handle(mut eventloop: EventLoop) -> (Inbox, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        while let Ok(event) = eventloop.poll().await {
            let incoming = match event {
                Event::Incoming(Packet::ConnAck(_)) => Incoming::ConnAck,
                Event::Incoming(Packet::SubAck(_)) => Incoming::SubAck,
                Event::Incoming(Packet::Publish(p)) => Incoming::Publish {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    retain: p.retain,
                },
                _ => continue,
            };
            if tx.send(incoming).is_err() {
                break;
            }
        }
    });
    (rx, task)
}

async fn next(inbox: &mut Inbox) -> Incoming {
    timeout(WAIT, inbox.recv())
        .await
        .expect("event in time")
        .expect("event loop running")
}

async fn next_publish(inbox: &mut Inbox) -> (String, Vec<u8>, u8, bool) {
    loop {
        if let Incoming::Publish {
            topic,
            payload,
            qos,
            retain,
        } = next(inbox).await
        {
            return (topic, payload, qos, retain);
        }
    }
}

async fn connected(
    id: &str,
    port: u16,
    configure: impl FnOnce(&mut MqttOptions),
) -> (AsyncClient, Inbox) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    configure(&mut options);
    let (client, eventloop) = AsyncClient::new(options, 100);
    let mut inbox = drive(eventloop);
    assert_eq!(next(&mut inbox).await, Incoming::ConnAck);
    (client, inbox)
}

async fn subscribed(client: &AsyncClient, inbox: &mut Inbox, filter: &str, qos: QoS) {
    client.subscribe(filter, qos).await.unwrap();
    assert_eq!(next(inbox).await, Incoming::SubAck);
}

#[tokio::test]
async fn v311_publish_subscribe_every_qos_in_order() {
    let tern = Tern::start();
    let (subscriber, mut inbox) = connected("rumqttc-sub", tern.port, |_| {}).await;
    let (publisher, _pub_events) = connected("rumqttc-pub", tern.port, |_| {}).await;
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let topic = format!("interop/{qos:?}");
        subscribed(&subscriber, &mut inbox, &topic, qos).await;
        for i in 0..50 {
            publisher
                .publish(&topic, qos, false, format!("m{i}"))
                .await
                .unwrap();
        }
        for i in 0..50 {
            let (got_topic, payload, got_qos, retain) = next_publish(&mut inbox).await;
            assert_eq!(
                (got_topic.as_str(), got_qos, retain),
                (topic.as_str(), qos as u8, false)
            );
            assert_eq!(payload, format!("m{i}").into_bytes(), "in order at {qos:?}");
        }
    }
}

#[tokio::test]
async fn v311_retained_and_will() {
    let tern = Tern::start();
    let (publisher, mut pub_inbox) = connected("rumqttc-retainer", tern.port, |_| {}).await;
    publisher
        .publish("interop/retained", QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    // A subscription on the publisher's own connection orders the retained publish before it.
    subscribed(
        &publisher,
        &mut pub_inbox,
        "interop/retained",
        QoS::AtLeastOnce,
    )
    .await;
    let mut options = MqttOptions::new("rumqttc-doomed", "127.0.0.1", tern.port);
    options.set_last_will(LastWill::new(
        "interop/will",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (_doomed, eventloop) = AsyncClient::new(options, 10);
    let (mut doomed_inbox, doomed_task) = drive_with_handle(eventloop);
    assert_eq!(next(&mut doomed_inbox).await, Incoming::ConnAck);
    let (watcher, mut inbox) = connected("rumqttc-watcher", tern.port, |_| {}).await;
    subscribed(&watcher, &mut inbox, "interop/#", QoS::AtLeastOnce).await;
    let (topic, payload, _, retain) = next_publish(&mut inbox).await;
    assert_eq!(
        (topic.as_str(), payload.as_slice(), retain),
        ("interop/retained", &b"kept"[..], true)
    );
    // Aborting the driver drops the event loop and its socket without a DISCONNECT: the broker
    // must publish the will.
    doomed_task.abort();
    let (topic, payload, _, retain) = next_publish(&mut inbox).await;
    assert_eq!(
        (topic.as_str(), payload.as_slice(), retain),
        ("interop/will", &b"gone"[..], false)
    );
}

#[tokio::test]
async fn v311_persistent_session_receives_what_was_published_offline() {
    let tern = Tern::start();
    let (subscriber, mut inbox) = connected("rumqttc-persistent", tern.port, |o| {
        o.set_clean_session(false);
    })
    .await;
    subscribed(&subscriber, &mut inbox, "interop/offline", QoS::AtLeastOnce).await;
    subscriber.disconnect().await.unwrap();
    // The channel closes once the event loop has sent DISCONNECT and stopped.
    while inbox.recv().await.is_some() {}
    let (publisher, mut pub_inbox) = connected("rumqttc-offline-pub", tern.port, |_| {}).await;
    for i in 0..5 {
        publisher
            .publish(
                "interop/offline",
                QoS::AtLeastOnce,
                false,
                format!("queued{i}"),
            )
            .await
            .unwrap();
    }
    // Order the publishes before the reconnect: a round trip on the publisher's connection.
    subscribed(
        &publisher,
        &mut pub_inbox,
        "interop/nothing",
        QoS::AtMostOnce,
    )
    .await;
    let (_again, mut inbox) = connected("rumqttc-persistent", tern.port, |o| {
        o.set_clean_session(false);
    })
    .await;
    for i in 0..5 {
        assert_eq!(
            next_publish(&mut inbox).await.1,
            format!("queued{i}").into_bytes()
        );
    }
}

#[tokio::test]
async fn v5_publish_subscribe_every_qos_and_shared_subscription() {
    use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    let tern = Tern::start();
    let port = tern.port;
    let connect = |id: &'static str| async move {
        let mut options = Options5::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut eventloop) = Client5::new(options, 100);
        let (tx, mut rx) = mpsc::unbounded_channel::<Incoming>();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                let incoming = match event {
                    Event5::Incoming(Packet5::ConnAck(_)) => Incoming::ConnAck,
                    Event5::Incoming(Packet5::SubAck(_)) => Incoming::SubAck,
                    Event5::Incoming(Packet5::Publish(p)) => Incoming::Publish {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        qos: p.qos as u8,
                        retain: p.retain,
                    },
                    _ => continue,
                };
                if tx.send(incoming).is_err() {
                    break;
                }
            }
        });
        assert_eq!(next(&mut rx).await, Incoming::ConnAck);
        (client, rx)
    };
    let (sub_a, mut inbox_a) = connect("rumqttc5-a").await;
    let (sub_b, mut inbox_b) = connect("rumqttc5-b").await;
    let (publisher, _events) = connect("rumqttc5-pub").await;
    for qos in [QoS5::AtMostOnce, QoS5::AtLeastOnce, QoS5::ExactlyOnce] {
        let topic = format!("interop5/{qos:?}");
        sub_a.subscribe(&topic, qos).await.unwrap();
        assert_eq!(next(&mut inbox_a).await, Incoming::SubAck);
        for i in 0..20 {
            publisher
                .publish(&topic, qos, false, format!("m{i}"))
                .await
                .unwrap();
        }
        for i in 0..20 {
            let (got_topic, payload, got_qos, _) = next_publish(&mut inbox_a).await;
            assert_eq!((got_topic.as_str(), got_qos), (topic.as_str(), qos as u8));
            assert_eq!(payload, format!("m{i}").into_bytes());
        }
    }
    sub_a
        .subscribe("$share/workers/jobs/+", QoS5::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next(&mut inbox_a).await, Incoming::SubAck);
    sub_b
        .subscribe("$share/workers/jobs/+", QoS5::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(next(&mut inbox_b).await, Incoming::SubAck);
    for i in 0..20 {
        publisher
            .publish("jobs/x", QoS5::AtLeastOnce, false, format!("job{i}"))
            .await
            .unwrap();
    }
    let (mut count_a, mut count_b) = (0, 0);
    while count_a + count_b < 20 {
        tokio::select! {
            m = inbox_a.recv() => if let Some(Incoming::Publish { .. }) = m { count_a += 1 },
            m = inbox_b.recv() => if let Some(Incoming::Publish { .. }) = m { count_b += 1 },
            () = tokio::time::sleep(WAIT) => panic!("only {} of 20 jobs delivered", count_a + count_b),
        }
    }
    assert_eq!(count_a + count_b, 20, "each job goes to exactly one member");
    assert!(
        count_a > 0 && count_b > 0,
        "the group spreads jobs over its members: {count_a}/{count_b}"
    );
}
