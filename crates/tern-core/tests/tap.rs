//! The event tap an observer edge reads (`GET /v1/events`): messages copied at routing time
//! only when a watched filter matches (`#` not matching `$SYS/...`), events copied as they are
//! taken, nothing while nobody watches, and a bounded queue that drops the newest and counts
//! it rather than grow.

mod support;

use support::*;
use tern_codec::{QoS, TopicFilter};
use tern_core::broker::tap::{Tapped, TAP_QUEUE_MAX};
use tern_core::Event;

fn filter(text: &str) -> TopicFilter {
    text.parse().unwrap_or_else(|_| panic!("{text}"))
}

fn topics(tapped: &[Tapped]) -> Vec<String> {
    tapped
        .iter()
        .filter_map(|item| match item {
            Tapped::Message(message) => Some(message.topic.as_str().to_owned()),
            Tapped::Event(_) => None,
        })
        .collect()
}

#[test]
fn only_watched_topics_are_copied_and_unwatching_stops_it() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::default());
    tb.send(&publisher, publish("a/1", "before", QoS::AtMostOnce, 0));
    assert!(
        !tb.broker.tap_ready(),
        "nothing is copied while nobody watches"
    );

    tb.broker.tap_watch(&filter("a/#"));
    tb.broker.tap_watch(&filter("#"));
    tb.broker.tap_watch(&filter("a/#"));
    for topic in ["a/2", "b/1", "$SYS/x"] {
        tb.send(&publisher, publish(topic, "m", QoS::AtMostOnce, 0));
    }
    let mut tapped = Vec::new();
    tb.broker.take_tapped(&mut tapped);
    assert_eq!(topics(&tapped), ["a/2", "b/1"], "# does not match $SYS/");

    // Two watchers of a/#: one leaving keeps it watched.
    tb.broker.tap_unwatch(&filter("#"));
    tb.broker.tap_unwatch(&filter("a/#"));
    tb.send(&publisher, publish("a/3", "m", QoS::AtMostOnce, 0));
    tb.send(&publisher, publish("b/2", "m", QoS::AtMostOnce, 0));
    tapped.clear();
    tb.broker.take_tapped(&mut tapped);
    assert_eq!(topics(&tapped), ["a/3"]);
    tb.broker.tap_unwatch(&filter("a/#"));
    tb.send(&publisher, publish("a/4", "m", QoS::AtMostOnce, 0));
    assert!(!tb.broker.tap_ready());
}

#[test]
fn events_are_copied_while_watched() {
    let mut tb = TestBroker::new();
    tb.broker.tap_events(true);
    let client = tb.connect("c", V5, Opts::default());
    tb.disconnect(&client);
    let _ = tb.events();
    let mut tapped = Vec::new();
    tb.broker.take_tapped(&mut tapped);
    let names: Vec<&str> = tapped
        .iter()
        .filter_map(|item| match item {
            Tapped::Event(Event::Connected { .. }) => Some("connected"),
            Tapped::Event(Event::Disconnected { .. }) => Some("disconnected"),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["connected", "disconnected"]);
    tb.broker.tap_events(false);
    let _client = tb.connect("d", V5, Opts::default());
    let _ = tb.events();
    assert!(!tb.broker.tap_ready());
}

#[test]
fn a_full_tap_drops_the_newest_and_counts_them() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::default());
    tb.broker.tap_watch(&filter("t"));
    for _ in 0..TAP_QUEUE_MAX + 5 {
        tb.send(&publisher, publish("t", "m", QoS::AtMostOnce, 0));
    }
    let mut tapped = Vec::new();
    tb.broker.take_tapped(&mut tapped);
    assert_eq!(tapped.len(), TAP_QUEUE_MAX);
    assert_eq!(tb.broker.tap_dropped(), 5);
}
