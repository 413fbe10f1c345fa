//! The node's NATS subscriptions, one per subject, counted: the core's filters and, while a
//! claim settles, the filters of the session it claims. Each subscription is handed to the
//! dispatcher, which merges them; the last holder of a subject ends its subscription.

use std::collections::HashMap;

use futures_util::stream::{AbortHandle, Abortable};
use tokio::sync::{mpsc, Mutex};
use tracing::{debug, warn};

use crate::dispatch::Command;

/// A subscription as the dispatcher merges it: it ends when its last holder lets go.
pub(crate) type Merged = Abortable<async_nats::Subscriber>;

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
        let mut held = self.held.lock().await;
        if let Some(entry) = held.get_mut(&subject) {
            entry.count += 1;
            return;
        }
        let subscriber = match self.client.subscribe(subject.clone()).await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                warn!("cannot subscribe to {subject}: {error}");
                return;
            }
        };
        debug!("subscribed to {subject}");
        let (merged, abort) = futures_util::stream::abortable(subscriber);
        if self.dispatch.send(Command::Subscribe(merged)).is_err() {
            return;
        }
        held.insert(subject, Held { count: 1, abort });
    }

    /// One holder fewer of `subject`; after the last the subscription ends.
    pub(crate) async fn release(&self, subject: &str) {
        let mut held = self.held.lock().await;
        let Some(entry) = held.get_mut(subject) else {
            return;
        };
        entry.count -= 1;
        if entry.count == 0 {
            if let Some(entry) = held.remove(subject) {
                // The dispatcher drops the subscriber, which unsubscribes.
                entry.abort.abort();
                debug!("unsubscribed from {subject}");
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
