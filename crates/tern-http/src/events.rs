//! `GET /v1/events`: live messages and broker events as Server-Sent Events, for operators
//! (scope `events`). The HTTP side checks the token and its filters (the token's topics cover
//! each filter as a subscription is checked, by the ACL engine) and opens the stream; the
//! bridge task on the broker thread keeps the watchers, tells the core's tap what to copy
//! (`tern_core::broker::tap`) and, when the core says the tap holds something, words each item
//! once and offers it to every watcher whose realm and filters admit it. A watcher's queue is
//! small and bounded: one that is full is a reader too slow to keep up, and is dropped (its
//! stream ends) and counted, so no reader ever holds a publisher or the broker's memory.
//!
//! Which events a stream gets is its token's realm (`realm.rs`): events of clients it holds,
//! the device fleet's changes (`event: fleet`) of owners it sees, and events of no client
//! only for a token of the whole broker.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tern_codec::TopicFilter;
use tern_core::broker::tap::Tapped;
use tern_core::fleet::Registry;
use tern_core::{Broker, Event, Time};
use tokio::sync::mpsc;

use crate::admin::authorize;
use crate::error::ApiError;
use crate::realm::Realm;
use crate::server::Shared;
use crate::tokens::Scope;

/// Frames waiting for one reader, at most; a reader that lets more pile up is dropped.
const STREAM_QUEUE_MAX: usize = 64;
/// Streams open at once, at most (more are refused, `rate_limited`).
const STREAMS_MAX: usize = 1000;
/// Filters per stream, at most.
const FILTERS_MAX: usize = 16;
/// Seconds between keep-alive comments, unless `keepalive` says.
const KEEPALIVE_DEFAULT_SECS: u64 = 15;

/// What the event streams count, shared by the HTTP threads and the bridge task.
#[derive(Debug, Default)]
pub(crate) struct StreamCounts {
    /// Streams open now.
    pub(crate) open: AtomicUsize,
    /// Streams dropped because their reader fell behind.
    pub(crate) dropped_slow: AtomicU64,
    /// Frames offered to readers.
    pub(crate) frames: AtomicU64,
}

/// What the HTTP side asks of the bridge task for observers.
#[derive(Debug)]
pub(crate) enum Observe {
    /// Open an event stream.
    Watch(Watcher),
    /// Read the figures of a metrics scrape.
    Metrics(tokio::sync::oneshot::Sender<crate::metrics::CoreFigures>),
    /// An event of the HTTP side (an access request's change), of a client.
    Event {
        client_id: String,
        name: &'static str,
        data: Value,
    },
}

/// One open stream, as the bridge task keeps it.
#[derive(Debug)]
pub(crate) struct Watcher {
    /// The token's realm: events of other clients and owners are not its to see.
    realm: Realm,
    /// Messages on topics these match are sent (each already checked against the token).
    filters: Vec<TopicFilter>,
    /// Whether broker events are sent.
    events: bool,
    /// The token: a notification's event goes only to one whose topics cover its device.
    operator: crate::tokens::Operator,
    sender: mpsc::Sender<Bytes>,
}

/// The streams open, on the broker thread.
#[derive(Debug)]
pub(crate) struct Watchers {
    watchers: Vec<Watcher>,
    counts: Arc<StreamCounts>,
}

impl Watchers {
    pub(crate) fn new(counts: Arc<StreamCounts>) -> Self {
        Self {
            watchers: Vec::new(),
            counts,
        }
    }

    /// Opens a stream: the tap copies what it asks for from now on, and its first frames say
    /// so (a reader knows from them that nothing after is missed): a comment for a reader of
    /// the text, and an event `ready` for a browser's `EventSource`, which shows no comments.
    pub(crate) fn watch(&mut self, broker: &mut Broker, watcher: Watcher) {
        for filter in &watcher.filters {
            broker.tap_watch(filter);
        }
        if watcher.events {
            broker.tap_events(true);
        }
        let _ = watcher.sender.try_send(Bytes::from_static(
            b": watching\n\nevent: ready\ndata: {}\n\n",
        ));
        self.watchers.push(watcher);
    }

    /// Words what the tap held and offers it to the watchers it concerns.
    pub(crate) fn deliver(&mut self, broker: &mut Broker, tapped: Vec<Tapped>, now: Time) {
        for item in tapped {
            match item {
                Tapped::Message(message) => {
                    let frame = frame("message", &message_json(&message, now));
                    let topic = message.topic.as_str();
                    self.offer(&frame, |w| w.filters.iter().any(|f| f.matches(topic)));
                }
                Tapped::Event(Event::FleetNotification {
                    notification,
                    change,
                }) => {
                    let (channel, data) =
                        crate::fleet_notify::event(broker, &notification, change, now);
                    let frame = frame("notification", &data);
                    let udid = notification.udid.as_str();
                    self.offer(&frame, |w| {
                        w.events
                            && w.realm.holds_device(&notification.owner, udid)
                            && w.operator.sees_topic(&channel)
                    });
                }
                Tapped::Event(event) => {
                    if let Some((subject, name, data)) = event_json(&event) {
                        self.offer_event(broker.fleet(), &subject, name, &data);
                    }
                }
            }
        }
        self.sweep(broker);
    }

    /// Offers a broker event to the watchers of events whose realm holds what it concerns.
    pub(crate) fn offer_event(
        &mut self,
        fleet: &Registry,
        subject: &Subject,
        name: &str,
        data: &Value,
    ) {
        let frame = frame(name, data);
        self.offer(&frame, |w| {
            w.events
                && match subject {
                    Subject::Client(id) => w.realm.holds_client(fleet, id),
                    Subject::Owner(owner) => w.realm.sees_owner(owner),
                    Subject::Broker => w.realm.is_whole_broker(),
                }
        });
    }

    fn offer(&mut self, frame: &Bytes, wants: impl Fn(&Watcher) -> bool) {
        for watcher in self.watchers.iter().filter(|w| wants(w)) {
            // A full queue is a reader that fell behind; it is dropped by the sweep.
            if watcher.sender.try_send(frame.clone()).is_ok() {
                self.counts.frames.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Forgets the streams whose readers went away or fell behind (their streams end), and
    /// what the tap copied for them alone.
    pub(crate) fn sweep(&mut self, broker: &mut Broker) {
        let counts = Arc::clone(&self.counts);
        self.watchers.retain(|watcher| {
            let closed = watcher.sender.is_closed();
            let full = watcher.sender.capacity() == 0;
            if !(closed || full) {
                return true;
            }
            if full && !closed {
                counts.dropped_slow.fetch_add(1, Ordering::Relaxed);
                tracing::info!("event stream dropped: its reader fell behind");
            }
            for filter in &watcher.filters {
                broker.tap_unwatch(filter);
            }
            if watcher.events {
                broker.tap_events(false);
            }
            false
        });
    }
}

/// One Server-Sent Event.
fn frame(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn message_json(message: &tern_core::SharedMessage, now: Time) -> Value {
    let mut value =
        serde_json::to_value(crate::admin_ops::message_view(message, now)).unwrap_or_default();
    if let Some(fields) = value.as_object_mut() {
        // A live message has no place in a mailbox.
        fields.remove("seq");
        fields.remove("deliveries");
    }
    value
}

/// What an event concerns, for whom it is to see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Subject {
    /// A client, by its identifier.
    Client(String),
    /// A device of an owner's fleet.
    Owner(String),
    /// The broker (a connection that named no client).
    Broker,
}

/// What an event concerns, its name and its data; `None` for events not streamed.
fn event_json(event: &Event) -> Option<(Subject, &'static str, Value)> {
    let client = |id: &tern_codec::MqttString| Subject::Client(id.as_str().to_owned());
    Some(match event {
        Event::FleetChanged {
            owner,
            udid,
            change,
        } => (
            Subject::Owner(owner.clone()),
            "fleet",
            json!({"owner": owner, "udid": udid, "change": change.as_str()}),
        ),
        Event::FleetFlapping {
            owner,
            udid,
            connects,
        } => (
            Subject::Owner(owner.clone()),
            "fleet",
            json!({"owner": owner, "udid": udid, "change": "flapping", "connects": connects}),
        ),
        Event::Connected {
            client_id,
            version,
            session_present,
            ..
        } => (
            client(client_id),
            "connected",
            json!({"client_id": client_id.as_str(), "protocol": version.level(),
                   "session_present": session_present}),
        ),
        Event::Disconnected {
            client_id,
            reason,
            will_triggered,
            ..
        } => (
            client(client_id),
            "disconnected",
            json!({"client_id": client_id.as_str(), "reason": tern_net::describe_close(reason),
                   "will": will_triggered}),
        ),
        Event::Refused { reason, .. } => (
            Subject::Broker,
            "refused",
            json!({"reason": tern_net::describe_close(reason)}),
        ),
        Event::SessionRefused {
            client_id,
            identity,
            ..
        } => (
            client(client_id),
            "refused",
            json!({"client_id": client_id.as_str(),
                   "reason": format!("the session belongs to another identity than {identity}")}),
        ),
        _ => return None,
    })
}

/// What a stream asks for, read from the query: `filter` (repeatable), `events` (0 or 1,
/// default 1) and `keepalive` (seconds, 1-300).
struct Asked {
    filters: Vec<TopicFilter>,
    events: bool,
    keepalive: Duration,
}

fn asked(raw_query: &str, sees_topic: impl Fn(&str) -> bool) -> Result<Asked, ApiError> {
    let mut filters = Vec::new();
    let mut events = true;
    let mut keepalive = Duration::from_secs(KEEPALIVE_DEFAULT_SECS);
    let decoded = |text: &str| {
        crate::signing::decode(text)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| ApiError::bad_request("the query is not percent-encoded UTF-8"))
    };
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decoded(value)?;
        match decoded(name)?.as_str() {
            "filter" => filters.push(stream_filter(&value, &sees_topic)?),
            "events" => {
                events = match value.as_str() {
                    "1" => true,
                    "0" => false,
                    _ => return Err(ApiError::bad_request("events: 0 or 1")),
                }
            }
            "keepalive" => {
                let secs = value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=300).contains(s))
                    .ok_or_else(|| ApiError::bad_request("keepalive: 1-300 seconds"))?;
                keepalive = Duration::from_secs(secs);
            }
            _ => {}
        }
    }
    if filters.len() > FILTERS_MAX {
        return Err(ApiError::bad_request(format!(
            "at most {FILTERS_MAX} filters"
        )));
    }
    if filters.is_empty() && !events {
        return Err(ApiError::bad_request(
            "nothing to stream: give a filter, or events=1",
        ));
    }
    Ok(Asked {
        filters,
        events,
        keepalive,
    })
}

/// A filter a stream may watch: a valid topic filter, not a shared subscription or a tree
/// view (an observer takes no share of a group's messages, and views need a connection), and
/// covered by the token's topics as a subscription with it would be.
fn stream_filter(text: &str, sees_topic: impl Fn(&str) -> bool) -> Result<TopicFilter, ApiError> {
    let filter = text
        .parse::<TopicFilter>()
        .map_err(|e| ApiError::new(400, "filter_invalid", format!("{text:?}: {e}")))?;
    if filter.is_shared() || text.starts_with("$tree/") {
        return Err(ApiError::new(
            400,
            "filter_invalid",
            format!("{text:?}: $share/ and $tree/ filters need an MQTT connection"),
        ));
    }
    if !sees_topic(text) {
        return Err(ApiError::new(
            403,
            "acl_denied",
            format!("{text:?} is outside the token's topics"),
        ));
    }
    Ok(filter)
}

/// Live messages and broker events, as Server-Sent Events.
#[utoipa::path(get, path = "/v1/events", tag = "admin",
    params(("filter" = Option<Vec<String>>, Query, description = "A topic filter whose messages are sent (repeatable, at most 16), inside the token's topics; no $share/ or $tree/."),
           ("events" = Option<u8>, Query, description = "1 (default): broker events too (connected, disconnected, refused, access requests, the fleet's changes) of clients and owners in the token's realm; 0: messages only."),
           ("keepalive" = Option<u64>, Query, description = "Seconds between keep-alive comments, 1-300 (default 15).")),
    responses((status = 200, description = "text/event-stream: a comment `: watching` and an event `ready` (data `{}`) once the stream is open, then `event: message` (data: the message as a poll words it, without seq) and broker events (`event: connected`, `disconnected`, `refused`, `access_request`, and `fleet`: {owner, udid, change} with change online, offline, added, changed, deleted or flapping), and `: keep-alive` comments.", content_type = "text/event-stream"),
              (status = "4XX", description = "No token, a bad token, a scope it lacks, a filter outside its topics (acl_denied), an invalid filter, or too many streams (rate_limited).", body = crate::error::ErrorBody)),
    security(("bearer" = ["events"])))]
pub(crate) async fn events(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Events, "/v1/events") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let query = request.uri().query().unwrap_or_default();
    let asked = match asked(query, |topic| who.operator.sees_topic(topic)) {
        Ok(asked) => asked,
        Err(error) => return who.refuse(&shared, &error),
    };
    let counts = Arc::clone(&shared.stream_counts);
    if counts.open.fetch_add(1, Ordering::Relaxed) >= STREAMS_MAX {
        counts.open.fetch_sub(1, Ordering::Relaxed);
        let error = ApiError::new(429, "rate_limited", "too many event streams are open");
        return who.refuse(&shared, &error);
    }
    let open = OpenStream(Arc::clone(&counts));
    let (sender, receiver) = mpsc::channel(STREAM_QUEUE_MAX);
    let watcher = Watcher {
        realm: who.operator.realm().clone(),
        filters: asked.filters,
        events: asked.events,
        operator: who.operator.clone(),
        sender,
    };
    if shared.observe.send(Observe::Watch(watcher)).await.is_err() {
        return who.refuse(
            &shared,
            &ApiError::unavailable("the broker is shutting down"),
        );
    }
    let state = (receiver, asked.keepalive, open);
    let stream =
        futures_util::stream::unfold(state, |(mut receiver, keepalive, open)| async move {
            let frame = match tokio::time::timeout(keepalive, receiver.recv()).await {
                Ok(Some(frame)) => frame,
                // Dropped by the bridge (a reader that fell behind), or the broker stopped.
                Ok(None) => return None,
                Err(_) => Bytes::from_static(b": keep-alive\n\n"),
            };
            Some((Ok::<_, Infallible>(frame), (receiver, keepalive, open)))
        });
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    response
}

/// Counts a stream open while it lives.
struct OpenStream(Arc<StreamCounts>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn filters_are_checked_against_the_token_and_shared_or_tree_filters_refused() {
        let sees = |topic: &str| topic.starts_with("acme/");
        let read = asked("filter=acme%2F%23&events=0&keepalive=2", sees).unwrap();
        assert_eq!(read.filters.len(), 1);
        assert!(!read.events);
        assert_eq!(read.keepalive, Duration::from_secs(2));
        let code = |query: &str| asked(query, sees).err().map(|e| e.code);
        assert_eq!(code("filter=other%2F%23"), Some("acl_denied"));
        assert_eq!(
            code("filter=%24share%2Fg%2Facme%2F%23"),
            Some("filter_invalid")
        );
        assert_eq!(code("filter=%24tree%2Facme%2F%23"), Some("filter_invalid"));
        assert_eq!(code("filter=acme%2F%23%2Fx"), Some("filter_invalid"));
        assert_eq!(code("events=0"), Some("bad_request"));
        assert_eq!(code("keepalive=0"), Some("bad_request"));
        assert_eq!(code(""), None);
    }
}
