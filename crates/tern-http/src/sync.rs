//! `POST /v1/sync` (docs/http.md, "Sync"): a device's whole wake in one exchange. Its parts
//! apply in order, each through the core as its own route would: the mailbox acknowledgement,
//! the publishes (all or none with `atomic`), the key/value changes under a prefix since an
//! ETag, and the messages waiting (a long poll with `wait`). A sync is exactly-once: the same
//! request sent again (a device that lost the answer) gets the same answer, marked replayed,
//! from the request guard's record (durable with the effects), and is never applied twice.
//! A sync that waits for messages has taken effect already: what it answers besides the
//! messages is kept with it while it waits, and given with them.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::Deserialize;
use tern_core::broker::mailbox::Settle;
use tern_core::{Broker, RequestClient, RequestOutcome, Time};
use tracing::debug;

use crate::answers::item_results;
use crate::bridge::{json, refused, unix_now, Op};
use crate::error::ApiError;
use crate::kv::{changes, parse_etag, refusal_error};
use crate::mailbox::{self, MailboxSettings, Outcome, Poll, Polling};
use crate::mailbox_routes::poll_params;
use crate::publish::{batch_items, BatchItem, Item};
use crate::server::{signed, Shared};

/// The body of `POST /v1/sync`; every part is optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncBody {
    /// Completes every mailbox message up to this sequence number (the last `next_ack`).
    #[serde(default)]
    ack: Option<u64>,
    /// Messages to publish, as a batch of `POST /v1/pub`.
    #[serde(default)]
    publish: Vec<BatchItem>,
    /// Publish every message or none.
    #[serde(default)]
    atomic: bool,
    /// Key/value entries changed under a prefix.
    #[serde(default)]
    kv: Option<KvSince>,
    /// Messages to receive from the mailbox.
    #[serde(default)]
    receive: Option<Receive>,
    /// Seconds until the device's next wake (accepted; kept for the fleet layer to come).
    #[serde(default)]
    next_wake: Option<u32>,
}

/// A sync's `kv`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KvSince {
    /// A key prefix (`a/b/`: everything under `a/b`).
    prefix: String,
    /// The `etag` of the last sync's `kv` answer: only what changed since; all without it.
    #[serde(default)]
    since: Option<String>,
}

/// A sync's `receive`, as the parameters of `GET /v1/mbox`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Receive {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    max_bytes: Option<usize>,
    #[serde(default)]
    wait: Option<u64>,
    #[serde(default)]
    lease: Option<u64>,
}

/// A sync, read.
#[derive(Debug)]
pub(crate) struct SyncOp {
    ack: Option<u64>,
    items: Vec<Item>,
    atomic: bool,
    kv: Option<(String, Option<u64>)>,
    receive: Option<Poll>,
    next_wake: Option<u32>,
}

impl SyncOp {
    fn read(body: &[u8], items_max: usize) -> Result<Self, ApiError> {
        let body: SyncBody = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, "payload_invalid", format!("the sync: {e}")))?;
        let kv = match body.kv {
            None => None,
            Some(KvSince { prefix, since }) => {
                if prefix.starts_with('$') || !(prefix.is_empty() || prefix.ends_with('/')) {
                    return Err(ApiError::new(
                        400,
                        "topic_invalid",
                        "a key prefix ends in / and does not begin with $",
                    ));
                }
                Some((prefix, since.as_deref().map(parse_etag).transpose()?))
            }
        };
        let receive = match body.receive {
            None => None,
            Some(r) => Some(poll_params(None, r.limit, r.max_bytes, r.lease, r.wait)?),
        };
        Ok(Self {
            ack: body.ack,
            items: batch_items(body.publish, items_max, unix_now())?,
            atomic: body.atomic,
            kv,
            receive,
            next_wake: body.next_wake,
        })
    }
}

/// Acts on a sync in the core (see the module). `look` is as for a poll; `first` is what a
/// sync that waited answered besides its messages.
pub(crate) fn apply(
    broker: &mut Broker,
    client: &RequestClient,
    op: &SyncOp,
    settings: &MailboxSettings,
    look: (bool, bool),
    first: Option<&serde_json::Value>,
    now: Time,
) -> Outcome {
    if let (Some(secs), None) = (op.next_wake, first) {
        debug!("{:?} wakes again in {secs} s", client.client_id());
    }
    let mut answer = match first {
        Some(first) => first.clone(),
        None => match first_parts(broker, client, op, settings, now) {
            Ok(parts) => parts,
            Err(error) => return Outcome::Answer(refused(&error)),
        },
    };
    if let Some(poll) = &op.receive {
        match mailbox::poll(broker, client, poll, settings, look, now) {
            Ok(Polling::Wait { recheck }) => {
                return Outcome::Wait {
                    client_id: client.client_id().clone(),
                    deadline: poll.wait,
                    recheck,
                    first: Some(answer),
                }
            }
            Ok(Polling::Answered(polled)) => {
                if let (Ok(serde_json::Value::Object(polled)), Some(answer)) =
                    (serde_json::to_value(polled), answer.as_object_mut())
                {
                    answer.extend(polled);
                }
            }
            Err(refusal) => {
                answer["receive_error"] = error_value(&ApiError::from_refusal(refusal, ""))
            }
        }
    }
    answer["time"] = unix_now().into();
    Outcome::Answer(json(200, &answer))
}

/// The parts before receiving: the acknowledgement (refusing the whole sync if the mailbox
/// cannot be read: nothing is applied then), the publishes and the key/value changes.
fn first_parts(
    broker: &mut Broker,
    client: &RequestClient,
    op: &SyncOp,
    settings: &MailboxSettings,
    now: Time,
) -> Result<serde_json::Value, ApiError> {
    if op.ack.is_some() || op.receive.is_some() {
        let settle = Settle {
            ack: op.ack,
            dead_max: settings.dead_letters_max,
            ..Settle::default()
        };
        broker
            .mailbox_settle(client, &settle, now)
            .map_err(|refusal| ApiError::from_refusal(refusal, ""))?;
    }
    let mut answer = serde_json::json!({});
    if !op.items.is_empty() {
        let results = publish_items(broker, client, &op.items, op.atomic, now);
        answer["published"] = serde_json::to_value(item_results(&results).0).unwrap_or_default();
    }
    if let Some((prefix, since)) = &op.kv {
        answer["kv"] = match broker.kv_list(client, prefix, *since) {
            Ok(listing) => serde_json::to_value(changes(listing)).unwrap_or_default(),
            Err(refusal) => error_value(&refusal_error(refusal, prefix, true)),
        };
    }
    Ok(answer)
}

/// Publishes `items` for `client` (those whose `age` passed their `ttl` are not), and pairs
/// each with what became of it.
pub(crate) fn publish_items<'a>(
    broker: &mut Broker,
    client: &RequestClient,
    items: &'a [Item],
    atomic: bool,
    now: Time,
) -> Vec<(usize, &'a Item, Option<RequestOutcome>)> {
    let live: Vec<_> = items.iter().filter_map(|i| i.publish.clone()).collect();
    let mut outcomes = broker.publish_for(client, live, atomic, now).into_iter();
    items
        .iter()
        .enumerate()
        .map(|(i, item)| (i, item, item.publish.as_ref().and_then(|_| outcomes.next())))
        .collect()
}

fn error_value(error: &ApiError) -> serde_json::Value {
    serde_json::json!({"error": {"code": error.code, "message": error.message}})
}

/// A device's wake in one exchange: acknowledge, publish, read key/value changes, receive.
#[utoipa::path(
    post,
    path = "/v1/sync",
    tag = "sync",
    request_body(content = SyncBody, content_type = "application/json"),
    responses(
        (status = 200, description = "{\"published\": [results], \"kv\": {\"etag\", \"changed\", \"deleted\", \"full\"}, \"messages\": [...], \"next_ack\": N, \"waiting\", \"leased\", \"dead\", \"time\": UNIX_SECONDS}: each part that was asked for. The same request again is answered the same, with Tern-Replayed: 1."),
        (status = "4XX", description = "Refused as a whole (nothing applied): no_mailbox (404) for ack or receive without a mailbox, ...", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn sync(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let items_max = shared.config.batch_items_max;
    signed(shared, request, move |_, _, body| {
        Ok(Op::Sync(SyncOp::read(&body, items_max)?))
    })
    .await
}
