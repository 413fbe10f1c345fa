//! The bridge task: the HTTP bridge's side on the broker thread. HTTP tasks (on their own
//! threads) verify a request's signature and read its body, then send it here over a bounded
//! channel; this task takes every request waiting, checks its nonce, acts on all of them in one
//! input to the core (as a connection hands over a read batch) and answers each, once its
//! effect is durable when it promises that (QoS 1 and 2, as a PUBACK does). No lock is taken:
//! the core is called on its own thread, with one routing path for MQTT and HTTP alike.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use serde::Serialize;
use tern_codec::{MqttString, QoS};
use tern_core::{ConnectionId, Permissions, RequestOutcome};
use tern_net::BrokerHandle;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::publish::Item;
use crate::replay::{Admission, Answer, Nonce, ReplayGuard, ReplayLimits};

/// Requests taken from the channel for one input to the core, at most.
const REQUESTS_PER_INPUT_MAX: usize = 256;

/// A verified request on its way to the broker thread.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(crate) request: Request,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// A verified request: who, under which nonce, doing what.
#[derive(Debug)]
pub(crate) struct Request {
    /// The key and client, as nonces are counted.
    pub(crate) principal: String,
    pub(crate) nonce: Nonce,
    pub(crate) signature: [u8; 32],
    /// `Tern-Time`; `None` for `-`.
    pub(crate) time: Option<u64>,
    pub(crate) credential: tern_auth::Credential,
    pub(crate) op: Op,
}

/// What a request does.
#[derive(Debug)]
pub(crate) enum Op {
    /// Publish one message (`batch` false) or several.
    Publish {
        items: Vec<Item>,
        atomic: bool,
        batch: bool,
    },
}

impl Op {
    /// Whether the request is exactly-once (answered again, never applied twice, on retry).
    fn exactly_once(&self) -> bool {
        match self {
            Self::Publish { items, .. } => items.iter().any(|item| {
                item.publish
                    .as_ref()
                    .is_some_and(|p| p.qos == QoS::ExactlyOnce)
            }),
        }
    }

    /// Whether the answer must wait until the effect is durable.
    fn durable(&self) -> bool {
        match self {
            Self::Publish { items, .. } => items.iter().any(|item| {
                item.publish
                    .as_ref()
                    .is_some_and(|p| p.qos != QoS::AtMostOnce)
            }),
        }
    }
}

/// Runs the bridge on the broker thread until every HTTP task is gone.
pub(crate) async fn run(
    handle: BrokerHandle,
    mut requests: mpsc::Receiver<Envelope>,
    limits: ReplayLimits,
) {
    let edge = handle.connection_id();
    let guard = Rc::new(RefCell::new(ReplayGuard::new(limits)));
    let mut taken = Vec::new();
    while requests.recv_many(&mut taken, REQUESTS_PER_INPUT_MAX).await > 0 {
        let now_unix = unix_now();
        let mut fresh = Vec::new();
        for envelope in taken.drain(..) {
            let request = &envelope.request;
            let admission = guard.borrow_mut().admit(
                &request.principal,
                &request.nonce,
                &request.signature,
                request.time,
                now_unix,
                request.op.exactly_once(),
            );
            match admission {
                Admission::Fresh => fresh.push(envelope),
                // The same request again: what it was answered, once durable, as then.
                Admission::Replay(answer) => {
                    let _ = envelope.reply.send(answer);
                }
                Admission::Refused(error) => {
                    let _ = envelope.reply.send(refused(&error));
                }
            }
        }
        if fresh.is_empty() {
            continue;
        }
        let (answers, batch) = handle.input(|broker, now| {
            fresh
                .iter()
                .map(|envelope| apply(broker, edge, &envelope.request, now))
                .collect::<Vec<Answer>>()
        });
        let mut waiting = Vec::new();
        for (envelope, answer) in fresh.into_iter().zip(answers) {
            if batch.is_some() && envelope.request.op.durable() {
                waiting.push((envelope, answer));
            } else {
                finish(&guard, envelope, answer);
            }
        }
        if let (Some(batch), false) = (batch, waiting.is_empty()) {
            let (handle, guard) = (handle.clone(), Rc::clone(&guard));
            tokio::task::spawn_local(async move {
                handle.durable(batch).await;
                for (envelope, answer) in waiting {
                    finish(&guard, envelope, answer);
                }
            });
        }
    }
}

/// Remembers the answer of an exactly-once request, and sends it.
fn finish(guard: &RefCell<ReplayGuard>, envelope: Envelope, answer: Answer) {
    let request = &envelope.request;
    if request.op.exactly_once() {
        guard.borrow_mut().answered(
            &request.principal,
            &request.nonce,
            answer.clone(),
            unix_now(),
        );
    }
    let _ = envelope.reply.send(answer);
}

fn refused(error: &ApiError) -> Answer {
    Answer {
        status: error.status,
        body: error.body(),
        replayed: false,
    }
}

/// Acts on one request in the core and words its answer.
fn apply(
    broker: &mut tern_core::Broker,
    edge: ConnectionId,
    request: &Request,
    now: tern_core::Time,
) -> Answer {
    let credential = &request.credential;
    let Ok(client_id) = MqttString::new(&credential.client_id) else {
        return refused(&ApiError::bad_request(
            "the client identifier is not an MQTT string",
        ));
    };
    let restriction = credential
        .restriction
        .clone()
        .map(|acl| Box::new(acl) as Box<dyn Permissions>);
    let client = broker.request_client(edge, client_id, credential.identity.clone(), restriction);
    match &request.op {
        Op::Publish {
            items,
            atomic,
            batch,
        } => {
            let live: Vec<_> = items.iter().filter_map(|i| i.publish.clone()).collect();
            let mut outcomes = broker.publish_for(&client, live, *atomic, now).into_iter();
            let results: Vec<(usize, &Item, Option<RequestOutcome>)> = items
                .iter()
                .enumerate()
                .map(|(i, item)| (i, item, item.publish.as_ref().and_then(|_| outcomes.next())))
                .collect();
            published(&results, *batch, *atomic)
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Published {
    /// The message's QoS.
    qos: u8,
    /// Subscriptions that got a copy (zero is not an error); absent on a cluster node for QoS 1
    /// and 2, routed once the cluster has replicated them.
    #[serde(skip_serializing_if = "Option::is_none")]
    matched: Option<usize>,
    /// True when the message expired before it arrived (its `age` reached its `ttl`): it was
    /// not published.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    expired: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ItemResult {
    /// The item's position in the batch.
    i: usize,
    /// Whether it was published.
    ok: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    published: Option<Published>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    error: Option<serde_json::Value>,
}

/// The answer to a publish: a single message's own, or a batch's list of results.
fn published(
    results: &[(usize, &Item, Option<RequestOutcome>)],
    batch: bool,
    atomic: bool,
) -> Answer {
    let result = |(i, item, outcome): &(usize, &Item, Option<RequestOutcome>)| {
        let qos = item.publish.as_ref().map_or(0, |p| p.qos as u8);
        match outcome {
            None => Ok(Published {
                qos,
                matched: Some(0),
                expired: true,
            }),
            Some(Ok(matched)) => Ok(Published {
                qos,
                matched: *matched,
                expired: false,
            }),
            Some(Err(refusal)) => Err((*i, ApiError::from_refusal(*refusal, &item.topic))),
        }
    };
    if !batch {
        return match results.first().map(result) {
            Some(Ok(published)) => json(200, &published),
            Some(Err((_, error))) => refused(&error),
            None => refused(&ApiError::bad_request("nothing to publish")),
        };
    }
    let mut first_error = None;
    let items: Vec<ItemResult> = results
        .iter()
        .map(|entry| match result(entry) {
            Ok(published) => ItemResult {
                i: entry.0,
                ok: true,
                published: Some(published),
                error: None,
            },
            Err((i, error)) => {
                let body = serde_json::from_slice::<serde_json::Value>(&error.body())
                    .ok()
                    .and_then(|v| v.get("error").cloned());
                if first_error.is_none() && error.code != "not_applied" {
                    first_error = Some(error);
                }
                ItemResult {
                    i,
                    ok: false,
                    published: None,
                    error: body,
                }
            }
        })
        .collect();
    match first_error {
        None => json(200, &serde_json::json!({ "results": items })),
        // All or nothing: the request failed as its first refused message did.
        Some(error) if atomic => json(
            error.status,
            &serde_json::json!({
                "error": {"code": error.code, "message": error.message},
                "results": items,
            }),
        ),
        Some(_) => json(207, &serde_json::json!({ "results": items })),
    }
}

fn json(status: u16, value: &impl Serialize) -> Answer {
    Answer {
        status,
        body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        replayed: false,
    }
}

/// Seconds since the Unix epoch by the system clock.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
