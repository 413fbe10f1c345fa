//! `tern sub -c` as a resilient subscriber: through a link that blackholes for 10 s and then
//! resets, and across a restart of the process, it prints every QoS 1 message published
//! meanwhile, because it resumes its persistent session.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

mod faults;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use faults::LinkProxy;
use support::cli;
use support::Tern;
use tern_client::{Client, ClientOptions, QoS, TcpTransport};

/// How long the link stays dark: the requirement's figure.
const BLACKHOLE: Duration = Duration::from_secs(10);
/// Messages published while the link is dark.
const MESSAGES: usize = 20;
/// An upper bound on any wait for output, never a pause.
const WAIT: Duration = Duration::from_secs(60);

async fn publisher(port: u16, id: &str) -> Client {
    let (client, _task) = Client::start(
        ClientOptions::new(id),
        TcpTransport::new(format!("127.0.0.1:{port}")),
    )
    .unwrap();
    client.wait_connected(WAIT).await.unwrap();
    client
}

/// Reads standard output lines until every expected payload was seen; returns how often
/// each line was printed, counting from `seen`.
fn collect(
    sub: &mut cli::Running,
    expected: &[String],
    mut seen: HashMap<String, usize>,
) -> HashMap<String, usize> {
    while expected.iter().any(|m| !seen.contains_key(m)) {
        let Some(line) = sub.line(WAIT) else {
            let missing: Vec<_> = expected.iter().filter(|m| !seen.contains_key(*m)).collect();
            panic!("tern sub printed nothing for {WAIT:?}; missing {missing:?}");
        };
        *seen.entry(line).or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_sub_c_receives_every_qos1_message_through_a_blackhole_and_reset() {
    let broker = Tern::start();
    let proxy = LinkProxy::start(broker.port).await;
    let port = proxy.port.to_string();
    let mut sub = cli::tern(&[
        "sub",
        "-c",
        "-q",
        "1",
        "-k",
        "5",
        "-i",
        "cli-blackhole",
        "-t",
        "cli/blackhole",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-d",
    ]);
    assert!(sub.wait_stderr("subscribed", WAIT), "{:?}", sub.errors);
    let publisher = publisher(broker.port, "cli-blackhole-pub").await;
    publisher
        .publish("cli/blackhole", QoS::AtLeastOnce, false, "before")
        .await
        .unwrap();
    assert_eq!(sub.line(WAIT).as_deref(), Some("before"));

    proxy.blackhole_then_reset(BLACKHOLE);
    assert!(proxy.blackholed());
    // Published straight to the broker, each acknowledged by it, while the subscriber's link
    // is dark: the broker sends them into the blackhole, then keeps them in the session.
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("during-{i}")).collect();
    for payload in &expected {
        publisher
            .publish("cli/blackhole", QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
    }
    let seen = tokio::task::spawn_blocking(move || {
        let before = HashMap::from([("before".to_owned(), 1)]);
        let seen = collect(&mut sub, &expected, before);
        (seen, sub)
    })
    .await
    .unwrap();
    let (seen, mut sub) = seen;
    // A QoS 1 message whose PUBACK the blackhole swallowed is sent again: at least once is
    // QoS 1's promise, so repeats are reported, not refused.
    let repeated: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        seen.keys()
            .all(|line| line == "before" || line.starts_with("during-")),
        "{seen:?}"
    );
    eprintln!(
        "{} messages through the blackhole; printed more than once: {repeated:?}; \
         {} bytes dropped, {} connections",
        seen.len() - 1,
        proxy.dropped.load(std::sync::atomic::Ordering::Relaxed),
        proxy.connections.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(!proxy.blackholed(), "delivered only once the link was back");
    assert!(proxy.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0);
    // It came back by reconnecting and resuming its session, not by luck.
    assert!(
        sub.wait_stderr("Connected { session_present: true }", WAIT),
        "{:?}",
        sub.errors
    );
    publisher.disconnect().await;
    sub.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_sub_c_prints_what_was_queued_while_it_was_not_running() {
    let broker = Tern::start();
    let port = broker.port.to_string();
    let args = [
        "sub",
        "-c",
        "-q",
        "1",
        "-i",
        "cli-restart",
        "-t",
        "cli/restart",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-d",
    ];
    let mut first = cli::tern(&args);
    assert!(first.wait_stderr("subscribed", WAIT), "{:?}", first.errors);
    first.kill();
    let publisher = publisher(broker.port, "cli-restart-pub").await;
    for payload in ["one", "two", "three"] {
        publisher
            .publish("cli/restart", QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
    }
    // The queued messages arrive right after CONNACK, before the SUBSCRIBE is even answered.
    let mut args = args.to_vec();
    args.extend(["-C", "3"]);
    let second = cli::tern(&args);
    let (status, out, err) = tokio::task::spawn_blocking(move || second.finish(WAIT))
        .await
        .unwrap();
    assert!(status.success(), "{err}");
    assert_eq!(String::from_utf8_lossy(&out), "one\ntwo\nthree\n");
    assert!(err.contains("session_present: true"), "{err}");
    publisher.disconnect().await;
}
