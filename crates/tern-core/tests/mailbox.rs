//! Mailboxes (a session read by polling, the HTTP bridge's receive side): a subscription made
//! by request creates the client's persistent session; a poll hands out its deliveries in
//! sequence order and leases them; a cumulative acknowledgement completes them; a lease that
//! ends, or a `nack`, hands them out again; `reject` and too many hand-outs make dead letters,
//! which are kept and re-queued; sequence numbers and dead letters survive a restart; the same
//! client identifier over MQTT reads the same queue; another identity reads nothing. A mailbox
//! keeps QoS 0 messages too, within its class's limits (the oldest QoS 0 goes first, then new
//! messages are refused, counted); `[[history]]` keeps topics' last messages, which a
//! subscription (`replay`) or a reset queues again, across a restart too.
#![allow(clippy::expect_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Publish, QoS};
use tern_core::broker::history::{Reset, ResetDone};
use tern_core::broker::mailbox::{Fetch, Fetched, Settle};
use tern_core::history::HistoryConfig;
use tern_core::mailbox::MailboxClass;
use tern_core::{
    Access, Broker, Config, ConnectionId, Identity, MemoryStore, Method, Permissions,
    RequestClient, RequestRefusal, Store, StoreOp,
};

const EDGE: ConnectionId = ConnectionId(1_000_000);
const LEASE_MILLIS: u64 = 30_000;

fn persistent() -> TestBroker {
    TestBroker::with_config(Config {
        persistence: true,
        assigned_id_prefix: "auto-".to_owned(),
        ..Config::default()
    })
}

fn client(broker: &mut TestBroker, name: &str) -> RequestClient {
    broker
        .broker
        .request_client(EDGE, mstr(name), key_identity(name), None)
}

fn fetch(limit: usize) -> Fetch {
    Fetch {
        ack: None,
        limit,
        bytes_max: usize::MAX,
        lease_millis: LEASE_MILLIS,
        deliveries_max: 10,
        dead_max: 100,
        watch: false,
    }
}

fn poll(broker: &mut TestBroker, name: &str, fetch: Fetch) -> Fetched {
    let dev = client(broker, name);
    let now = broker.now;
    broker
        .broker
        .mailbox_fetch(&dev, &fetch, now)
        .expect("the mailbox polls")
}

fn seqs(fetched: &Fetched) -> Vec<u64> {
    fetched.messages.iter().map(|m| m.delivery.seq).collect()
}

fn texts(fetched: &Fetched) -> Vec<String> {
    let payloads = fetched.messages.iter().map(|m| &m.delivery.message.payload);
    payloads
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

fn subscribe(broker: &mut TestBroker, name: &str, filter: &str) {
    subscribe_at(broker, name, filter, QoS::AtLeastOnce);
}

fn subscribe_at(broker: &mut TestBroker, name: &str, filter: &str, qos: QoS) {
    let dev = client(broker, name);
    let now = broker.now;
    let granted = broker
        .broker
        .mailbox_subscribe(&dev, filter, qos, true, 3600, now);
    assert_eq!(granted, Ok(qos));
}

/// Publishes `payloads` at QoS 1 to `topic` from a request client `pub`.
fn publish(broker: &mut TestBroker, topic_name: &str, payloads: &[&str]) {
    publish_at(broker, topic_name, payloads, QoS::AtLeastOnce);
}

/// Publishes `payloads` at `qos` to `topic` from a request client `pub`.
fn publish_at(broker: &mut TestBroker, topic_name: &str, payloads: &[&str], qos: QoS) {
    let publisher = client(broker, "pub");
    let messages = payloads
        .iter()
        .map(|payload| {
            let mut publish = Publish::new(topic(topic_name), Bytes::from(payload.to_string()));
            publish.qos = qos;
            publish
        })
        .collect();
    let now = broker.now;
    broker.broker.publish_for(&publisher, messages, false, now);
}

fn store_ops(broker: &mut TestBroker) -> Vec<StoreOp> {
    std::iter::from_fn(|| broker.broker.poll_store_op()).collect()
}

#[test]
fn a_poll_hands_out_in_order_leases_and_a_cumulative_ack_completes() {
    let mut broker = persistent();
    subscribe(&mut broker, "dev", "m/#");
    publish(&mut broker, "m/a", &["zero", "one", "two"]);

    let first = poll(&mut broker, "dev", fetch(2));
    assert_eq!(seqs(&first), [0, 1]);
    assert_eq!(texts(&first), ["zero", "one"]);
    assert_eq!((first.waiting, first.leased), (1, 2));
    // Leased: a second poll hands out only what was not.
    let second = poll(&mut broker, "dev", fetch(10));
    assert_eq!(seqs(&second), [2]);
    assert_eq!(second.leased, 3);
    // The acknowledgement of 1 completes 0 and 1 (and writes their completion to the store).
    store_ops(&mut broker);
    let acked = poll(
        &mut broker,
        "dev",
        Fetch {
            ack: Some(1),
            ..fetch(10)
        },
    );
    assert!(acked.messages.is_empty());
    assert_eq!(acked.leased, 1);
    let done: Vec<u64> = store_ops(&mut broker)
        .into_iter()
        .filter_map(|op| match op {
            StoreOp::DeliveryDone { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(done, [0, 1]);
    // When its lease ends, 2 is handed out again, counted.
    broker.advance(LEASE_MILLIS);
    let again = poll(&mut broker, "dev", fetch(10));
    assert_eq!(seqs(&again), [2]);
    assert_eq!(again.messages[0].deliveries, 2);
    let last = poll(
        &mut broker,
        "dev",
        Fetch {
            ack: Some(2),
            ..fetch(10)
        },
    );
    assert_eq!((last.messages.len(), last.leased, last.waiting), (0, 0, 0));
}

#[test]
fn nacked_leases_go_again_and_rejected_or_overdelivered_ones_are_dead_letters() {
    let mut broker = persistent();
    subscribe(&mut broker, "dev", "m/#");
    publish(&mut broker, "m/a", &["a", "b", "c"]);
    assert_eq!(seqs(&poll(&mut broker, "dev", fetch(10))), [0, 1, 2]);
    let dev = client(&mut broker, "dev");
    let now = broker.now;
    let settle = Settle {
        ack: None,
        nack: vec![0],
        reject: vec![1],
        dead_max: 100,
    };
    let settled = broker.broker.mailbox_settle(&dev, &settle, now).unwrap();
    assert_eq!((settled.nacked, settled.rejected), (1, 1));
    // Given back: handed out at once; rejected: a dead letter, no longer handed out.
    let next = poll(&mut broker, "dev", fetch(10));
    assert_eq!(seqs(&next), [0]);
    assert_eq!(next.dead, 1);
    let dead = broker.broker.mailbox_dead_letters(&dev, now).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].delivery.message.payload[..], b"b");

    // Handed out too often: at most twice, 0 has been, 2 may be once more.
    let twice = |f: Fetch| Fetch {
        deliveries_max: 2,
        ..f
    };
    broker.advance(LEASE_MILLIS);
    let once_more = poll(&mut broker, "dev", twice(fetch(10)));
    assert_eq!(seqs(&once_more), [2]);
    assert_eq!(once_more.dead, 2);
    broker.advance(LEASE_MILLIS);
    let over = poll(&mut broker, "dev", twice(fetch(10)));
    assert!(over.messages.is_empty(), "{:?}", seqs(&over));
    assert_eq!(over.dead, 3);

    // Re-queued under new numbers, handed out again.
    let now = broker.now;
    let requeued = broker
        .broker
        .mailbox_requeue(&dev, Some(&[1]), now)
        .unwrap();
    assert_eq!(requeued, 1);
    let back = poll(&mut broker, "dev", fetch(10));
    assert_eq!(seqs(&back), [3]);
    assert_eq!(texts(&back), ["b"]);
    assert_eq!(back.dead, 2);
    broker.check_held_bytes();
}

#[test]
fn sequence_numbers_and_dead_letters_survive_a_restart() {
    let mut broker = persistent();
    let mut store = MemoryStore::default();
    subscribe(&mut broker, "dev", "m/#");
    publish(&mut broker, "m/a", &["a", "b"]);
    let fetched = poll(&mut broker, "dev", fetch(10));
    assert_eq!(seqs(&fetched), [0, 1]);
    let dev = client(&mut broker, "dev");
    let now = broker.now;
    let settle = Settle {
        ack: Some(0),
        reject: vec![1],
        dead_max: 100,
        ..Settle::default()
    };
    broker.broker.mailbox_settle(&dev, &settle, now).unwrap();
    store.apply(&store_ops(&mut broker)).unwrap();

    let snapshot = store.load().unwrap();
    let config = broker.broker.config().clone();
    broker.broker = Broker::restore(config, broker.now, snapshot);
    // The mailbox held only a dead letter, yet numbering goes on from where it was.
    publish(&mut broker, "m/a", &["c"]);
    let after = poll(&mut broker, "dev", fetch(10));
    assert_eq!(seqs(&after), [2]);
    assert_eq!(after.dead, 1);
    broker.check_held_bytes();
}

#[test]
fn a_watched_mailbox_is_noted_once_when_a_delivery_is_queued() {
    let mut broker = persistent();
    subscribe(&mut broker, "dev", "m/#");
    let empty = poll(
        &mut broker,
        "dev",
        Fetch {
            watch: true,
            ..fetch(10)
        },
    );
    assert!(empty.messages.is_empty());
    assert!(!broker.broker.mailboxes_ready());
    publish(&mut broker, "m/a", &["a", "b"]);
    assert!(broker.broker.mailboxes_ready());
    assert_eq!(broker.broker.take_ready_mailboxes(), [mstr("dev")]);
    assert!(!broker.broker.mailboxes_ready());
    // A poll that does not wait leaves it watched (a long poll may be waiting)...
    poll(&mut broker, "dev", fetch(1));
    publish(&mut broker, "m/a", &["c"]);
    assert_eq!(broker.broker.take_ready_mailboxes(), [mstr("dev")]);
    // ...a long poll that gets something ends it, as does the edge when its poll is answered.
    let waiting = Fetch {
        watch: true,
        ..fetch(10)
    };
    assert!(!poll(&mut broker, "dev", waiting.clone())
        .messages
        .is_empty());
    publish(&mut broker, "m/a", &["d"]);
    assert!(!broker.broker.mailboxes_ready());
    let drained = poll(
        &mut broker,
        "dev",
        Fetch {
            ack: Some(u64::MAX),
            ..waiting
        },
    );
    assert!(
        drained.messages.is_empty(),
        "all acknowledged: it waits again"
    );
    broker.broker.mailbox_watch(&mstr("dev"), false);
    publish(&mut broker, "m/a", &["e"]);
    assert!(!broker.broker.mailboxes_ready());
}

#[test]
fn the_same_client_over_mqtt_reads_the_same_queue_and_polls_wait_while_it_is_connected() {
    let mut broker = persistent();
    broker.broker.set_authenticator(Box::new(AsKey));
    subscribe(&mut broker, "dev", "m/#");
    publish(&mut broker, "m/a", &["a", "b"]);
    assert_eq!(seqs(&poll(&mut broker, "dev", fetch(1))), [0]);
    // Over MQTT, the same session: both come (the one leased over HTTP too), and the
    // subscription made by request is there.
    let mqtt = broker.connect("dev", V5, Opts::new().resume().expiry(3600));
    assert_eq!(payloads(&broker.recv(&mqtt)), ["a", "b"]);
    let dev = client(&mut broker, "dev");
    let now = broker.now;
    let refused = broker.broker.mailbox_fetch(&dev, &fetch(10), now);
    assert_eq!(refused.err(), Some(RequestRefusal::MailboxInUse));
    // Acknowledged over MQTT: 0. Left unacknowledged: 1, handed out again to the poller.
    broker.send(&mqtt, puback(1));
    broker.disconnect(&mqtt);
    publish(&mut broker, "m/a", &["c"]);
    let polled = poll(&mut broker, "dev", fetch(10));
    assert_eq!(texts(&polled), ["b", "c"]);
    assert_eq!(seqs(&polled), [1, 2]);
}

/// Allows nothing.
#[derive(Debug)]
struct Nothing;

impl Permissions for Nothing {
    fn allows(&self, _access: Access, _topic: &str) -> bool {
        false
    }
}

#[test]
fn another_identity_reads_nothing_and_denied_filters_are_refused() {
    let mut broker = persistent();
    subscribe(&mut broker, "dev", "m/#");
    publish(&mut broker, "m/a", &["a"]);
    let now = broker.now;
    let stranger = broker.broker.request_client(
        EDGE,
        mstr("dev"),
        Identity {
            method: Method::HttpKey,
            username: Some("fleet/dev".to_owned()),
            owner: Some("fleet".to_owned()),
            ..Identity::default()
        },
        None,
    );
    for refused in [
        broker
            .broker
            .mailbox_fetch(&stranger, &fetch(10), now)
            .err(),
        broker.broker.mailbox_subscriptions(&stranger).err(),
    ] {
        assert_eq!(refused, Some(RequestRefusal::SessionOfAnotherIdentity));
    }
    let limited = broker.broker.request_client(
        EDGE,
        mstr("ltd"),
        key_identity("ltd"),
        Some(Box::new(Nothing)),
    );
    let denied =
        broker
            .broker
            .mailbox_subscribe(&limited, "m/#", QoS::AtLeastOnce, true, 3600, now);
    assert_eq!(denied, Err(RequestRefusal::NotAuthorized));
    for filter in ["$share/g/m/#", "m/#/x", "$tree/m/#"] {
        let dev = client(&mut broker, "dev");
        let refused =
            broker
                .broker
                .mailbox_subscribe(&dev, filter, QoS::AtLeastOnce, true, 3600, now);
        assert!(
            matches!(refused, Err(RequestRefusal::FilterInvalid(_))),
            "{filter}: {refused:?}"
        );
    }
    let never = broker.broker.mailbox_fetch(&limited, &fetch(10), now);
    assert_eq!(never.err(), Some(RequestRefusal::NoMailbox));
}

#[test]
fn a_subscription_queues_the_retained_messages_and_unsubscribing_stops_the_flow() {
    let mut broker = persistent();
    let publisher = client(&mut broker, "pub");
    let mut kept = Publish::new(topic("cfg/dev"), Bytes::from_static(b"interval=60"));
    kept.qos = QoS::AtLeastOnce;
    kept.retain = true;
    let now = broker.now;
    broker
        .broker
        .publish_for(&publisher, vec![kept], false, now);
    subscribe(&mut broker, "dev", "cfg/#");
    let dev = client(&mut broker, "dev");
    let subscriptions = broker.broker.mailbox_subscriptions(&dev).unwrap();
    assert_eq!(subscriptions.len(), 1);
    assert_eq!(subscriptions[0].0.as_str(), "cfg/#");
    let fetched = poll(&mut broker, "dev", fetch(10));
    assert_eq!(texts(&fetched), ["interval=60"]);
    assert!(fetched.messages[0].delivery.retain);
    let removed = broker
        .broker
        .mailbox_unsubscribe(&dev, "cfg/#", now)
        .unwrap();
    assert!(removed);
    publish(&mut broker, "cfg/dev", &["later"]);
    let after = poll(
        &mut broker,
        "dev",
        Fetch {
            ack: Some(0),
            ..fetch(10)
        },
    );
    assert!(after.messages.is_empty());
}

/// Allows what does not start with one prefix.
#[derive(Debug)]
struct Except(&'static str);

impl Permissions for Except {
    fn allows(&self, _access: Access, topic: &str) -> bool {
        !topic.starts_with(self.0)
    }
}

#[test]
fn a_poll_meets_the_permissions_of_now_and_never_hands_out_what_they_deny() {
    let mut broker = persistent();
    subscribe(&mut broker, "dev", "m/#");
    subscribe(&mut broker, "dev", "m/secret/#");
    publish(&mut broker, "m/open", &["a"]);
    publish(&mut broker, "m/secret/x", &["b"]);
    publish(&mut broker, "m/open", &["c"]);
    // The key's grants narrowed since: the same client, now without m/secret/.
    let narrowed = broker.broker.request_client(
        EDGE,
        mstr("dev"),
        key_identity("dev"),
        Some(Box::new(Except("m/secret"))),
    );
    let now = broker.now;
    let fetched = broker
        .broker
        .mailbox_fetch(&narrowed, &fetch(10), now)
        .expect("the mailbox polls");
    assert_eq!(texts(&fetched), ["a", "c"]);
    assert_eq!(
        drops(&broker.events()),
        [("dev".to_owned(), tern_core::DropReason::NotAuthorized)]
    );
    let subscriptions = broker.broker.mailbox_subscriptions(&narrowed).unwrap();
    let filters: Vec<&str> = subscriptions.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(filters, ["m/#"]);
    broker.check_held_bytes();
}

/// A broker keeping the last `kept` messages of `h/#` topics for 60 s, and mailboxes of
/// clients named `small-...` to 3 messages.
fn with_history(kept: usize) -> TestBroker {
    TestBroker::with_config(Config {
        persistence: true,
        history: vec![HistoryConfig {
            filter: filter("h/#"),
            max_messages: kept,
            max_age_millis: 60_000,
            max_topics: 100,
        }],
        mailbox_classes: vec![MailboxClass {
            prefix: "small-".to_owned(),
            queued_count_max: 3,
            queued_bytes_max: 1 << 20,
        }],
        ..Config::default()
    })
}

fn reset(broker: &mut TestBroker, name: &str, reset: Reset) -> ResetDone {
    let dev = client(broker, name);
    let now = broker.now;
    broker
        .broker
        .mailbox_reset(&dev, reset, now)
        .expect("the mailbox resets")
}

#[test]
fn a_full_mailbox_drops_its_oldest_qos0_first_then_refuses_and_counts() {
    let mut broker = with_history(10);
    subscribe_at(&mut broker, "small-1", "m/#", QoS::ExactlyOnce);
    subscribe(&mut broker, "big-1", "m/#");
    publish_at(&mut broker, "m/a", &["q0-a", "q0-b"], QoS::AtMostOnce);
    publish(&mut broker, "m/a", &["q1-a"]);
    broker.events();
    // Full (3, its class's limit): the oldest QoS 0 makes room, twice.
    publish(&mut broker, "m/a", &["q1-b", "q1-c"]);
    assert_eq!(broker.stats().publish_dropped, 2);
    // Full of QoS 1: a new message is refused, counted and told.
    publish_at(&mut broker, "m/a", &["q0-c"], QoS::AtMostOnce);
    assert_eq!(broker.stats().publish_dropped, 3);
    let dropped = broker.events().into_iter().filter(|event| {
        matches!(event, tern_core::Event::Dropped { client_id, reason: tern_core::DropReason::MailboxFull } if client_id.as_str() == "small-1")
    });
    assert_eq!(dropped.count(), 3);
    let polled = poll(&mut broker, "small-1", fetch(10));
    assert_eq!(texts(&polled), ["q1-a", "q1-b", "q1-c"]);
    // A mailbox of no class keeps all six, QoS 0 at QoS 0, in order.
    let big = poll(&mut broker, "big-1", fetch(10));
    assert_eq!(
        texts(&big),
        ["q0-a", "q0-b", "q1-a", "q1-b", "q1-c", "q0-c"]
    );
    assert_eq!(big.messages[0].delivery.qos, QoS::AtMostOnce);
    let big_seqs = seqs(&big);
    // QoS 0 messages are not written to the store, nor their dead letters; QoS 1 ones are.
    let queued = store_ops(&mut broker).into_iter().filter(|op| {
        matches!(op, StoreOp::DeliveryQueued { client_id, .. } if client_id.as_str() == "big-1")
    });
    assert_eq!(queued.count(), 3, "the three QoS 1 messages");
    let big = client(&mut broker, "big-1");
    let now = broker.now;
    let settle = Settle {
        reject: vec![big_seqs[0], big_seqs[2]],
        dead_max: 100,
        ..Settle::default()
    };
    let settled = broker.broker.mailbox_settle(&big, &settle, now).unwrap();
    assert_eq!(settled.rejected, 2);
    let staged: Vec<u64> = store_ops(&mut broker)
        .into_iter()
        .filter_map(|op| match op {
            StoreOp::DeliveryStage { seq, .. } => Some(seq),
            _ => None,
        })
        .collect();
    assert_eq!(staged, [big_seqs[2]], "only the QoS 1 dead letter");
    broker.check_held_bytes();
}

#[test]
fn qos0_messages_a_mailbox_kept_go_to_its_client_when_it_connects_over_mqtt() {
    let mut broker = persistent();
    broker.broker.set_authenticator(Box::new(AsKey));
    subscribe(&mut broker, "dev", "m/#");
    publish_at(&mut broker, "m/a", &["zero"], QoS::AtMostOnce);
    publish(&mut broker, "m/a", &["one"]);
    let mqtt = broker.connect("dev", V5, Opts::new().resume().expiry(3600));
    assert_eq!(
        payloads(&broker.recv(&mqtt)),
        ["zero", "one"],
        "in their order"
    );
    broker.check_held_bytes();
}

#[test]
fn a_subscription_replays_the_last_kept_messages_and_only_those() {
    let mut broker = with_history(3);
    publish(&mut broker, "h/a", &["a1", "a2", "a3", "a4"]);
    publish(&mut broker, "h/b", &["b1"]);
    publish(&mut broker, "other", &["o1"]);
    assert_eq!(
        broker.broker.history_len(),
        4,
        "3 of h/a, 1 of h/b, none of other"
    );
    subscribe(&mut broker, "dev", "h/a");
    let dev = client(&mut broker, "dev");
    let now = broker.now;
    assert_eq!(broker.broker.mailbox_replay(&dev, "h/a", 2, now), Ok(2));
    let polled = poll(&mut broker, "dev", fetch(10));
    assert_eq!(texts(&polled), ["a3", "a4"]);
    // Not subscribed: nothing.
    assert_eq!(broker.broker.mailbox_replay(&dev, "h/#", 2, now), Ok(0));
}

#[test]
fn a_reset_goes_to_the_latest_a_sequence_number_a_count_or_a_time() {
    let mut broker = with_history(10);
    subscribe(&mut broker, "dev", "h/#");
    publish(&mut broker, "h/a", &["a", "b"]);
    broker.advance(10_000);
    publish(&mut broker, "h/b", &["c", "d"]);
    assert_eq!(seqs(&poll(&mut broker, "dev", fetch(10))), [0, 1, 2, 3]);
    // To a sequence number: what is below it is complete, the rest handed out again at once.
    assert_eq!(reset(&mut broker, "dev", Reset::Seq(2)).completed, 2);
    assert_eq!(texts(&poll(&mut broker, "dev", fetch(10))), ["c", "d"]);
    // To the latest: nothing is left.
    assert_eq!(reset(&mut broker, "dev", Reset::Latest).completed, 2);
    assert!(poll(&mut broker, "dev", fetch(10)).messages.is_empty());
    // The last 3 kept, under new sequence numbers.
    let done = reset(&mut broker, "dev", Reset::Replay(3));
    assert_eq!(
        done,
        ResetDone {
            completed: 0,
            queued: 3
        }
    );
    let replayed = poll(&mut broker, "dev", fetch(10));
    assert_eq!(texts(&replayed), ["b", "c", "d"]);
    assert_eq!(seqs(&replayed), [4, 5, 6]);
    // Since a time: the two kept at 10 s and after.
    let done = reset(&mut broker, "dev", Reset::Since(5_000));
    assert_eq!(
        done,
        ResetDone {
            completed: 3,
            queued: 2
        }
    );
    assert_eq!(texts(&poll(&mut broker, "dev", fetch(10))), ["c", "d"]);
}

#[test]
fn history_is_kept_in_the_store_within_its_bounds_across_a_restart() {
    let mut broker = with_history(2);
    let mut store = MemoryStore::default();
    publish(&mut broker, "h/a", &["a1", "a2", "a3"]);
    store.apply(&store_ops(&mut broker)).unwrap();
    assert_eq!(
        store.load().unwrap().history.len(),
        2,
        "the oldest went from the store too"
    );
    broker.advance(50_000);
    let config = broker.broker.config().clone();
    broker.broker = Broker::restore(config.clone(), broker.now, store.load().unwrap());
    assert_eq!(broker.broker.history_len(), 2);
    subscribe(&mut broker, "dev", "h/#");
    assert_eq!(reset(&mut broker, "dev", Reset::Replay(5)).queued, 2);
    assert_eq!(texts(&poll(&mut broker, "dev", fetch(10))), ["a2", "a3"]);
    // New messages get ids above the kept ones, and past max_age the kept ones go.
    publish(&mut broker, "h/a", &["a4"]);
    broker.advance(20_000);
    assert_eq!(reset(&mut broker, "dev", Reset::Replay(5)).queued, 1);
    assert_eq!(texts(&poll(&mut broker, "dev", fetch(10))), ["a4"]);
    store.apply(&store_ops(&mut broker)).unwrap();
    assert_eq!(store.load().unwrap().history.len(), 1);
}
