//! The node's NATS subscriptions, one per subject, counted: the core's filters and, while a
//! claim settles, the filters of the session it claims; and one queue subscription per subject
//! of each `$share` group with members here, in a NATS queue group of its own, so that NATS
//! hands each of the group's messages to one node. Each subscription is handed to the
//! dispatcher, which merges them; the last holder of a subject ends its subscription.

use std::collections::HashMap;

use futures_util::stream::{AbortHandle, Abortable, BoxStream};
use futures_util::StreamExt;
use tern_codec::TopicFilter;
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use crate::dispatch::{Command, Received};

/// A subscription as the dispatcher merges it: it ends when its last holder lets go.
pub(crate) type Merged = Abortable<BoxStream<'static, Received>>;

/// The NATS queue group of the `$share` group of `shared` (its name and inner filter): a
/// hash, since a queue name is one token and a group's name and filter may hold anything.
pub(crate) fn queue_group(shared: &TopicFilter) -> String {
    format!(
        "q{:032x}",
        xxhash_rust::xxh3::xxh3_128(shared.as_str().as_bytes())
    )
}

/// One subject's subscription and how many hold it.
struct Held {
    count: u32,
    abort: AbortHandle,
}

/// The node's subscriptions.
pub(crate) struct Interest {
    client: async_nats::Client,
    boot: u64,
    dispatch: mpsc::UnboundedSender<Command>,
    held: Mutex<HashMap<String, Held>>,
}

impl Interest {
    pub(crate) fn new(
        client: async_nats::Client,
        boot: u64,
        dispatch: mpsc::UnboundedSender<Command>,
    ) -> Self {
        Self {
            client,
            boot,
            dispatch,
            held: Mutex::new(HashMap::new()),
        }
    }

    /// One more holder of `subject`; the first subscribes.
    pub(crate) async fn hold(&self, subject: String) {
        self.hold_for(subject, None).await;
    }

    /// One more holder of `subject` for the `$share` group of `shared` (in its queue group),
    /// or for the node's plain subscriptions; the first subscribes.
    pub(crate) async fn hold_for(&self, subject: String, shared: Option<&TopicFilter>) {
        let key = held_key(&subject, shared);
        let mut held = self.held.lock().await;
        if let Some(entry) = held.get_mut(&key) {
            entry.count += 1;
            return;
        }
        let subscribed = match shared {
            None => self.client.subscribe(subject.clone()).await,
            Some(shared) => {
                let queue = queue_group(shared);
                self.client.queue_subscribe(subject.clone(), queue).await
            }
        };
        let subscriber = match subscribed {
            Ok(subscriber) => subscriber,
            Err(error) => {
                warn!("cannot subscribe to {key}: {error}");
                return;
            }
        };
        debug!("subscribed to {key}");
        let stream = match shared {
            None => subscriber.map(Received::new).boxed(),
            Some(shared) => {
                let shared = shared.clone();
                subscriber
                    .map(move |message| Received::for_group(message, &shared))
                    .boxed()
            }
        };
        let (merged, abort) = futures_util::stream::abortable(stream);
        if self.dispatch.send(Command::Subscribe(merged)).is_err() {
            return;
        }
        held.insert(key, Held { count: 1, abort });
    }

    /// One holder fewer of `subject`; after the last the subscription ends.
    pub(crate) async fn release(&self, subject: &str) {
        self.release_for(subject, None).await;
    }

    /// One holder fewer of `subject` for the group of `shared`, or for the plain
    /// subscriptions; after the last the subscription ends.
    pub(crate) async fn release_for(&self, subject: &str, shared: Option<&TopicFilter>) {
        let key = held_key(subject, shared);
        let mut held = self.held.lock().await;
        let Some(entry) = held.get_mut(&key) else {
            return;
        };
        entry.count -= 1;
        if entry.count == 0 {
            if let Some(entry) = held.remove(&key) {
                // The dispatcher drops the subscriber, which unsubscribes.
                entry.abort.abort();
                debug!("unsubscribed from {key}");
            }
        }
    }

    /// Returns once the NATS server has handled every subscription made so far: a request to a
    /// subject nobody answers comes back "no responders" after everything this connection sent
    /// before it.
    pub(crate) async fn sync(&self) {
        let subject = format!("tern.sync.{:016x}", self.boot);
        let _ = self.client.request(subject, bytes::Bytes::new()).await;
    }

    /// Ends every subscription.
    pub(crate) async fn clear(&self) {
        for (_, entry) in self.held.lock().await.drain() {
            entry.abort.abort();
        }
    }
}

/// What a subscription is held under: its subject, and the queue group of a `$share` group's.
fn held_key(subject: &str, shared: Option<&TopicFilter>) -> String {
    match shared {
        None => subject.to_owned(),
        Some(shared) => format!("{subject} {}", queue_group(shared)),
    }
}
