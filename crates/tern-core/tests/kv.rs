//! Key/value over retained messages (the HTTP bridge's `/v1/kv`): an entry is a topic's
//! retained message, set by a request or by MQTT alike; its ETag is the message id; writes
//! compare and set; a listing since an ETag gives what changed and what was deleted, across a
//! restart too, and ids (ETags) are never given twice; a client reads only what it may
//! subscribe to.
#![allow(clippy::expect_used, clippy::unwrap_used)] // Test code: a panic is a failure.

mod support;

use bytes::Bytes;
use support::*;
use tern_codec::{Publish, QoS};
use tern_core::broker::kv::{Expect, KvRefusal, LISTING_MAX};
use tern_core::{
    Access, Broker, Config, ConnectionId, MemoryStore, Permissions, RequestClient, RequestRefusal,
    Store,
};

const EDGE: ConnectionId = ConnectionId(1_000_000);

fn persistent() -> TestBroker {
    TestBroker::with_config(Config {
        persistence: true,
        ..Config::default()
    })
}

fn client(broker: &mut TestBroker, name: &str) -> RequestClient {
    broker
        .broker
        .request_client(EDGE, mstr(name), key_identity(name), None)
}

fn value(key: &str, payload: &str) -> Publish {
    let mut publish = Publish::new(topic(key), Bytes::from(payload.to_owned()));
    publish.qos = QoS::AtLeastOnce;
    publish
}

fn write(
    broker: &mut TestBroker,
    key: &str,
    payload: &str,
    expect: Expect,
) -> Result<u64, KvRefusal> {
    let dev = client(broker, "dev");
    let now = broker.now;
    broker
        .broker
        .kv_write(&dev, value(key, payload), expect, now)
}

fn listed(
    broker: &mut TestBroker,
    prefix: &str,
    since: Option<u64>,
) -> (Vec<String>, Vec<String>, u64, bool) {
    let dev = client(broker, "dev");
    let listing = broker.broker.kv_list(&dev, prefix, since).unwrap();
    let changed = listing
        .changed
        .iter()
        .map(|m| {
            format!(
                "{}={}",
                m.topic.as_str(),
                String::from_utf8_lossy(&m.payload)
            )
        })
        .collect();
    let deleted = listing
        .deleted
        .iter()
        .map(|(t, _)| t.as_str().to_owned())
        .collect();
    (changed, deleted, listing.etag, listing.full)
}

#[test]
fn writes_compare_and_set_and_an_entry_is_the_retained_message_mqtt_sees() {
    let mut broker = persistent();
    let subscriber = broker.connect("sub", V5, Opts::new());
    broker.subscribe(&subscriber, "kv/#", QoS::AtLeastOnce);
    let first = write(&mut broker, "kv/dev/interval", "60", Expect::Absent).unwrap();
    assert_eq!(payloads(&broker.recv(&subscriber)), ["60"]);
    // Created only once; replaced only from the ETag it has.
    assert_eq!(
        write(&mut broker, "kv/dev/interval", "30", Expect::Absent),
        Err(KvRefusal::Precondition(Some(first)))
    );
    assert_eq!(
        write(
            &mut broker,
            "kv/dev/interval",
            "30",
            Expect::Etag(first + 1000)
        ),
        Err(KvRefusal::Precondition(Some(first)))
    );
    let second = write(&mut broker, "kv/dev/interval", "30", Expect::Etag(first)).unwrap();
    assert!(second > first);
    assert_eq!(
        write(&mut broker, "kv/dev/missing", "1", Expect::Present),
        Err(KvRefusal::Precondition(None))
    );
    // What MQTT publishes retained is an entry; what a write sets, a new subscriber gets.
    broker.send(
        &subscriber,
        retained("kv/dev/mode", "eco", QoS::AtMostOnce, 0),
    );
    let dev = client(&mut broker, "dev");
    let mode = broker
        .broker
        .kv_get(&dev, "kv/dev/mode")
        .unwrap()
        .expect("an entry");
    assert_eq!(&mode.payload[..], b"eco");
    let late = broker.connect("late", V5, Opts::new());
    broker.subscribe(&late, "kv/dev/interval", QoS::AtLeastOnce);
    assert_eq!(payloads(&broker.recv(&late)), ["30"]);
    // Deleting a missing key is refused; deleting one clears the retained message.
    assert_eq!(
        write(&mut broker, "kv/dev/none", "", Expect::Any),
        Err(KvRefusal::Missing)
    );
    write(&mut broker, "kv/dev/mode", "", Expect::Any).unwrap();
    assert!(broker.broker.kv_get(&dev, "kv/dev/mode").unwrap().is_none());
}

#[test]
fn a_listing_since_an_etag_gives_changes_and_deletions_across_a_restart() {
    let mut broker = persistent();
    let mut store = MemoryStore::default();
    write(&mut broker, "kv/a", "1", Expect::Any).unwrap();
    write(&mut broker, "kv/b", "2", Expect::Any).unwrap();
    write(&mut broker, "other/c", "3", Expect::Any).unwrap();
    let (all, deleted, etag, full) = listed(&mut broker, "kv/", None);
    assert_eq!(
        (all, deleted, full),
        (vec!["kv/a=1".to_owned(), "kv/b=2".to_owned()], vec![], true)
    );
    write(&mut broker, "kv/a", "10", Expect::Any).unwrap();
    write(&mut broker, "kv/b", "", Expect::Any).unwrap();
    let deleted_last = write(&mut broker, "kv/d", "", Expect::Any);
    assert_eq!(deleted_last, Err(KvRefusal::Missing));
    store
        .apply(&std::iter::from_fn(|| broker.broker.poll_store_op()).collect::<Vec<_>>())
        .unwrap();
    // After a restart: the same answer, and new ids above every one given before.
    let config = broker.broker.config().clone();
    broker.broker = Broker::restore(config, broker.now, store.load().unwrap());
    let (changed, deleted, since_etag, full) = listed(&mut broker, "kv/", Some(etag));
    assert_eq!(changed, ["kv/a=10"]);
    assert_eq!(deleted, ["kv/b"]);
    assert!(!full);
    let next = write(&mut broker, "kv/e", "5", Expect::Any).unwrap();
    assert!(next > since_etag, "{next} after {since_etag}");
    // Set again: no longer deleted.
    write(&mut broker, "kv/b", "20", Expect::Any).unwrap();
    let (changed, deleted, _, _) = listed(&mut broker, "kv/", Some(etag));
    assert_eq!(changed, ["kv/a=10", "kv/e=5", "kv/b=20"]);
    assert!(deleted.is_empty());
}

#[test]
fn the_last_deletion_keeps_its_id_from_being_given_again_after_a_restart() {
    let mut broker = persistent();
    let mut store = MemoryStore::default();
    let set = write(&mut broker, "kv/x", "1", Expect::Any).unwrap();
    let gone = write(&mut broker, "kv/x", "", Expect::Any).unwrap();
    assert!(gone > set);
    store
        .apply(&std::iter::from_fn(|| broker.broker.poll_store_op()).collect::<Vec<_>>())
        .unwrap();
    let config = broker.broker.config().clone();
    broker.broker = Broker::restore(config, broker.now, store.load().unwrap());
    // A device holding `set` must not find it valid again for another value.
    let again = write(&mut broker, "kv/x", "2", Expect::Absent).unwrap();
    assert!(again > gone);
    assert_eq!(
        write(&mut broker, "kv/x", "3", Expect::Etag(set)),
        Err(KvRefusal::Precondition(Some(again)))
    );
}

#[test]
fn a_long_listing_comes_in_pages() {
    let mut broker = TestBroker::new();
    for i in 0..=LISTING_MAX {
        write(&mut broker, &format!("kv/{i}"), "v", Expect::Any).unwrap();
    }
    let dev = client(&mut broker, "dev");
    let first = broker.broker.kv_list(&dev, "kv/", None).unwrap();
    assert_eq!((first.changed.len(), first.more), (LISTING_MAX, true));
    let rest = broker
        .broker
        .kv_list(&dev, "kv/", Some(first.etag))
        .unwrap();
    assert_eq!((rest.changed.len(), rest.more), (1, false));
    assert_eq!(rest.changed[0].topic.as_str(), format!("kv/{LISTING_MAX}"));
}

/// Allows subscribing under `kv/dev/` only.
#[derive(Debug)]
struct OwnKeys;

impl Permissions for OwnKeys {
    fn allows(&self, access: Access, topic: &str) -> bool {
        access == Access::Publish || topic.starts_with("kv/dev/")
    }
}

#[test]
fn a_client_reads_and_lists_only_what_it_may_subscribe_to() {
    let mut broker = TestBroker::new();
    write(&mut broker, "kv/dev/a", "mine", Expect::Any).unwrap();
    write(&mut broker, "kv/other/a", "theirs", Expect::Any).unwrap();
    let limited = broker.broker.request_client(
        EDGE,
        mstr("dev"),
        key_identity("dev"),
        Some(Box::new(OwnKeys)),
    );
    assert_eq!(
        broker.broker.kv_get(&limited, "kv/other/a").err(),
        Some(RequestRefusal::NotAuthorized)
    );
    assert_eq!(
        broker.broker.kv_list(&limited, "kv/", None).err(),
        Some(RequestRefusal::NotAuthorized)
    );
    let own = broker.broker.kv_list(&limited, "kv/dev/", None).unwrap();
    assert_eq!(own.changed.len(), 1);
    // A prefix is whole levels: `kv/de` would be the filter `kv/de#`, which is none.
    assert!(matches!(
        broker.broker.kv_list(&limited, "kv/de", None).err(),
        Some(RequestRefusal::FilterInvalid(_))
    ));
}

#[test]
fn a_listing_since_before_the_deletions_remembered_is_the_whole_subtree() {
    // A store whose oldest deletions were let go up to id 50 (`meta` `kv_horizon`).
    let snapshot = tern_core::Snapshot {
        kv_horizon: 50,
        ..tern_core::Snapshot::default()
    };
    let mut broker = persistent();
    let config = broker.broker.config().clone();
    broker.broker = Broker::restore(config, broker.now, snapshot);
    let set = write(&mut broker, "kv/a", "1", Expect::Any).unwrap();
    assert!(set > 50, "ids stay above the horizon: {set}");
    // Since 10: deletions between 10 and 50 cannot be told, so all of it, marked full.
    let (changed, deleted, _, full) = listed(&mut broker, "kv/", Some(10));
    assert_eq!(
        (changed, deleted, full),
        (vec!["kv/a=1".to_owned()], vec![], true)
    );
    let (_, _, _, full) = listed(&mut broker, "kv/", Some(50));
    assert!(!full);
}
