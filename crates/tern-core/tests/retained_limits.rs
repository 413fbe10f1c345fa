//! What retained messages may hold: replacing or clearing one leaves no expiry behind, and a
//! retained PUBLISH past `retained_count_max` or `retained_bytes_max` is refused as a whole
//! (MQTT 5: PUBACK/PUBREC 0x97; 3.1.1 and QoS 0: acknowledged as usual and dropped, as a
//! denied publish is), counted and reported.

mod support;

use tern_codec::{Packet, ReasonCode};
use tern_core::{Event, Limits};

use support::*;

fn with_expiry(secs: u32) -> impl FnOnce(&mut tern_codec::Publish) {
    move |p| {
        p.retain = true;
        p.properties.message_expiry_interval = Some(secs);
    }
}

/// A replaced or cleared retained message takes its expiry with it: the broker's next deadline
/// is that of the message the topic holds now, and none once it holds none.
#[test]
fn replaced_and_cleared_retained_messages_leave_no_expiry_behind() {
    let mut tb = TestBroker::new();
    let publisher = tb.connect("p", V5, Opts::new());
    for secs in 10..110 {
        tb.send(&publisher, publish_with("r", "x", Q0, 0, with_expiry(secs)));
    }
    assert_eq!(tb.broker.next_timeout(), Some(tb.now.plus_secs(109)));
    tb.send(&publisher, retained("r", "kept", Q0, 0));
    assert_eq!(tb.broker.next_timeout(), None);
    tb.send(&publisher, publish_with("r", "x", Q0, 0, with_expiry(30)));
    tb.send(&publisher, retained("r", "", Q0, 0));
    assert_eq!(tb.broker.next_timeout(), None);
    assert_eq!(tb.stats().retained, 0);
    assert_eq!(tb.stats().retained_bytes, 0);
}

fn limits(count: usize, bytes: usize) -> Limits {
    Limits {
        retained_count_max: count,
        retained_bytes_max: bytes,
        ..Limits::default()
    }
}

fn refusals(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::PublishRefused {
                    reason: ReasonCode::QuotaExceeded,
                    ..
                }
            )
        })
        .count()
}

/// Past `retained_count_max` a retained PUBLISH to a new topic is refused with 0x97 (PUBACK,
/// PUBREC) and neither stored nor delivered; replacing a topic already held, clearing one and
/// publishing without RETAIN still work.
#[test]
fn v5_retained_publish_past_the_count_is_refused_with_quota_exceeded() {
    let mut tb = TestBroker::with_limits(limits(2, 0));
    let publisher = tb.connect("p", V5, Opts::new());
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "r/#", Q0);
    tb.send(&publisher, retained("r/a", "1", Q1, 1));
    tb.send(&publisher, retained("r/b", "2", Q1, 2));
    assert_eq!(tb.recv(&publisher), [puback(1), puback(2)]);
    assert_eq!(payloads(&tb.recv(&watcher)), ["1", "2"]);
    tb.events();

    tb.send(&publisher, retained("r/c", "3", Q1, 3));
    tb.send(&publisher, retained("r/c", "3", Q2, 4));
    assert_eq!(
        tb.recv(&publisher),
        [
            Packet::PubAck(ack(3, ReasonCode::QuotaExceeded)),
            Packet::PubRec(ack(4, ReasonCode::QuotaExceeded))
        ]
    );
    // QoS 0 has no acknowledgement to refuse with: dropped all the same.
    tb.send(&publisher, retained("r/c", "3", Q0, 0));
    tb.expect_silent(&watcher);
    assert_eq!(refusals(&tb.events()), 3);
    assert_eq!(tb.stats().retained_refused, 3);
    assert_eq!(tb.stats().retained, 2);

    tb.send(&publisher, retained("r/a", "1b", Q1, 5));
    tb.send(&publisher, publish("r/c", "live", Q1, 6));
    assert_eq!(tb.recv(&publisher), [puback(5), puback(6)]);
    assert_eq!(payloads(&tb.recv(&watcher)), ["1b", "live"]);
    tb.send(&publisher, retained("r/b", "", Q1, 7));
    tb.send(&publisher, retained("r/c", "3", Q1, 8));
    assert_eq!(tb.recv(&publisher), [puback(7), puback(8)]);
    let late = tb.connect("late", V5, Opts::new());
    tb.subscribe(&late, "r/#", Q0);
    assert_eq!(payloads(&tb.recv(&late)), ["1b", "3"]);
}

/// `retained_bytes_max` counts topic and payload, and what a replacement frees; 3.1.1 cannot be
/// told no, so its refused retained PUBLISH is acknowledged as usual and dropped.
#[test]
fn retained_bytes_limit_in_both_versions() {
    for version in VERSIONS {
        // "r/a" + "12345" = 8 bytes, twice = 16.
        let mut tb = TestBroker::with_limits(limits(0, 16));
        let publisher = tb.connect("p", version, Opts::new());
        let watcher = tb.connect("w", version, Opts::new());
        tb.subscribe(&watcher, "r/#", Q0);
        tb.send(&publisher, retained("r/a", "12345", Q1, 1));
        tb.send(&publisher, retained("r/b", "12345", Q1, 2));
        tb.send(&publisher, retained("r/b", "123456", Q1, 3));
        let refused = match version {
            V5 => Packet::PubAck(ack(3, ReasonCode::QuotaExceeded)),
            _ => puback(3),
        };
        assert_eq!(
            tb.recv(&publisher),
            [puback(1), puback(2), wire(&refused, version)],
            "{version:?}"
        );
        assert_eq!(payloads(&tb.recv(&watcher)), ["12345", "12345"]);
        assert_eq!(tb.stats().retained_bytes, 16);
        // Smaller fits: the replaced message's bytes are freed.
        tb.send(&publisher, retained("r/b", "1234", Q1, 4));
        assert_eq!(tb.recv(&publisher), [puback(4)]);
        assert_eq!(tb.stats().retained_bytes, 15);
        assert_eq!(tb.stats().retained_refused, 1);
    }
}

/// A will has nobody to be refused to: past the limit it is delivered but not retained.
#[test]
fn a_will_past_the_limit_is_delivered_not_retained() {
    let mut tb = TestBroker::with_limits(limits(1, 0));
    let publisher = tb.connect("p", V5, Opts::new());
    tb.send(&publisher, retained("r/a", "held", Q0, 0));
    let watcher = tb.connect("w", V5, Opts::new());
    tb.subscribe(&watcher, "w/#", Q0);
    let dying = tb.connect("d", V5, Opts::new().will(will("w/d", "gone", Q0, true)));
    tb.events();
    tb.lose(&dying);
    assert_eq!(payloads(&tb.recv(&watcher)), ["gone"]);
    assert_eq!(refusals(&tb.events()), 1);
    assert_eq!(tb.stats().retained, 1);
}
