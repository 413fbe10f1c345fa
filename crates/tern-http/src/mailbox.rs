//! Mailboxes over HTTP (docs/http.md, "Receiving"): the routes under `/v1/mbox`, read into
//! requests, what each does in the core (the mailbox is the client's MQTT persistent session,
//! `tern_core::broker::mailbox`), and their JSON answers.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tern_codec::{MqttString, QoS};
use tern_core::broker::history::Reset;
use tern_core::broker::mailbox::{Fetch, Fetched, MailboxMessage, Settle};
use tern_core::history::kept_time;
use tern_core::{Broker, RequestClient, RequestRefusal, Time};

use crate::bridge::{json, refused};
use crate::error::ApiError;
use crate::replay::Answer;

/// Messages one poll hands out at most, and by default.
pub(crate) const LIMIT_MAX: usize = 100;
pub(crate) const LIMIT_DEFAULT: usize = 10;
/// Bytes one poll hands out by default (the first message goes whatever its size).
pub(crate) const BYTES_DEFAULT: usize = 64 * 1024;
/// The longest long poll, in seconds.
pub(crate) const WAIT_MAX_SECS: u64 = 60;
/// Leases, in seconds: the default and the range.
pub(crate) const LEASE_DEFAULT_SECS: u64 = 60;
pub(crate) const LEASE_MAX_SECS: u64 = 3600;

/// How mailboxes behave (from `[http]`).
#[derive(Debug, Clone, Copy)]
pub struct MailboxSettings {
    /// How long a mailbox made by HTTP outlives its last request (its session expiry).
    pub expiry_secs: u32,
    /// Hand-outs of a message without an acknowledgement before it becomes a dead letter.
    pub deliveries_max: u32,
    /// Dead letters kept per mailbox; the oldest go past it.
    pub dead_letters_max: usize,
}

impl Default for MailboxSettings {
    fn default() -> Self {
        Self {
            expiry_secs: 7 * 86_400,
            deliveries_max: 10,
            dead_letters_max: 1000,
        }
    }
}

/// What a mailbox request does.
#[derive(Debug, Clone)]
pub(crate) enum MailboxOp {
    /// `GET /v1/mbox`.
    Poll(Poll),
    /// `POST /v1/mbox/ack`.
    Settle(SettleBody),
    /// `PUT /v1/mbox/subs/{filter}`.
    Subscribe {
        filter: String,
        qos: QoS,
        retained: bool,
        /// Kept messages of the filter's topics to queue (the last N).
        replay: usize,
    },
    /// `POST /v1/mbox/reset`.
    Reset(ResetBody),
    /// `DELETE /v1/mbox/subs/{filter}`.
    Unsubscribe { filter: String },
    /// `GET /v1/mbox/subs` (all) or `GET /v1/mbox/subs/{filter}` (one).
    Subscriptions { filter: Option<String> },
    /// `GET /v1/mbox/dead`.
    DeadLetters,
    /// `POST /v1/mbox/dead/requeue`.
    Requeue { seqs: Option<Vec<u64>> },
}

/// What a poll asks for (`GET /v1/mbox`, or a sync's `receive`).
#[derive(Debug, Clone)]
pub(crate) struct Poll {
    pub(crate) ack: Option<u64>,
    pub(crate) limit: usize,
    pub(crate) bytes_max: usize,
    pub(crate) lease: Duration,
    pub(crate) wait: Duration,
}

/// What a poll came to.
#[derive(Debug)]
pub(crate) enum Polling {
    /// Answer with these.
    Answered(Polled),
    /// Nothing yet: wait, looking again at `recheck` (when a lease ends).
    Wait { recheck: Option<Duration> },
}

/// Polls `client`'s mailbox. `again` is a long poll looked at again (its acknowledgement was
/// applied the first time); `last` is its last look (it waits no more).
pub(crate) fn poll(
    broker: &mut Broker,
    client: &RequestClient,
    poll: &Poll,
    settings: &MailboxSettings,
    (again, last): (bool, bool),
    now: Time,
) -> Result<Polling, RequestRefusal> {
    let waits = !poll.wait.is_zero() && !last;
    let fetch = Fetch {
        ack: if again { None } else { poll.ack },
        limit: poll.limit,
        bytes_max: poll.bytes_max,
        lease_millis: millis(poll.lease),
        deliveries_max: settings.deliveries_max,
        dead_max: settings.dead_letters_max,
        watch: waits,
    };
    let fetched = broker.mailbox_fetch(client, &fetch, now)?;
    if waits && fetched.messages.is_empty() {
        let recheck = fetched
            .lease_ends
            .map(|at| Duration::from_millis(at.as_millis() - now.as_millis()));
        return Ok(Polling::Wait { recheck });
    }
    Ok(Polling::Answered(polled(fetched)))
}

/// What a mailbox request came to.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answer now (once durable).
    Answer(Answer),
    /// A long poll found nothing: wait for a delivery until `deadline`, looking again at
    /// `recheck` (when a lease ends).
    Wait {
        client_id: MqttString,
        deadline: Duration,
        recheck: Option<Duration>,
        /// What a sync answers besides the messages, worked out before it waits.
        first: Option<serde_json::Value>,
    },
}

/// The body of `POST /v1/mbox/ack`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SettleBody {
    /// Completes every message up to this sequence number.
    #[serde(default)]
    ack: Option<u64>,
    /// Gives these back at once: handed out again on the next poll.
    #[serde(default)]
    nack: Vec<u64>,
    /// Makes these dead letters (kept, listed at `/v1/mbox/dead`, re-queueable).
    #[serde(default)]
    reject: Vec<u64>,
}

/// The body of `POST /v1/mbox/reset`: exactly one of its fields.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResetBody {
    /// `"latest"`: complete everything the mailbox holds; it receives from now on.
    #[serde(default)]
    pub(crate) to: Option<String>,
    /// Complete everything, then queue the last N kept messages of its subscriptions.
    #[serde(default)]
    pub(crate) replay: Option<usize>,
    /// Complete what it holds below this sequence number; hand the rest out again.
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    /// Complete everything, then queue the kept messages of its subscriptions kept at or
    /// after this time (Unix seconds).
    #[serde(default)]
    pub(crate) time: Option<u64>,
}

impl ResetBody {
    /// The reset it asks for, with `now` the core's time and `now_unix_ms` the clock's.
    pub(crate) fn reset(&self, now: Time, now_unix_ms: u64) -> Result<Reset, ApiError> {
        let reset = match (self.to.as_deref(), self.replay, self.seq, self.time) {
            (Some("latest"), None, None, None) => Reset::Latest,
            (None, Some(count), None, None) => Reset::Replay(count),
            (None, None, Some(seq), None) => Reset::Seq(seq),
            (None, None, None, Some(time)) => {
                let ago = i64::try_from(now_unix_ms.saturating_sub(time.saturating_mul(1000)))
                    .unwrap_or(i64::MAX);
                Reset::Since(kept_time(now).saturating_sub(ago))
            }
            _ => {
                return Err(ApiError::bad_request(
                    "a reset is one of {\"to\": \"latest\"}, {\"replay\": N}, {\"seq\": N} or \
                     {\"time\": UNIX_SECONDS}",
                ))
            }
        };
        Ok(reset)
    }
}

/// The body of `POST /v1/mbox/dead/requeue`; without `seqs`, every dead letter.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequeueBody {
    /// The dead letters to queue again; all without it.
    #[serde(default)]
    pub(crate) seqs: Option<Vec<u64>>,
}

/// A message as a poll hands it out.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct MboxMessage {
    /// Its sequence number in the mailbox: acknowledge it (or a later one) to complete it.
    seq: u64,
    topic: String,
    /// The QoS it was delivered with (1 or 2).
    qos: u8,
    /// Set for a retained message queued by a new subscription.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    retain: bool,
    #[serde(flatten)]
    payload: Payload,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_topic: Option<String>,
    /// Correlation Data, base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_data_b64: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    user_properties: Vec<(String, String)>,
    /// Seconds left of its Message Expiry Interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<u32>,
    /// How many times it was handed out (more than 1: a lease ended, or it was given back).
    deliveries: u32,
}

/// The answer to a poll.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Polled {
    /// The messages handed out, oldest first (none: nothing arrived within `wait`).
    messages: Vec<MboxMessage>,
    /// What to send as `ack` once these are handled: the last sequence number handed out.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_ack: Option<u64>,
    /// Messages waiting beyond this poll's `limit` or `max_bytes`.
    waiting: usize,
    /// Messages handed out and not yet acknowledged, these included.
    leased: usize,
    /// Dead letters.
    dead: usize,
}

/// Acts on a mailbox request in the core. `again` is a long poll looked at again (its
/// acknowledgement was applied the first time); `last` is its last look (it waits no more).
pub(crate) fn apply(
    broker: &mut Broker,
    client: &RequestClient,
    op: &MailboxOp,
    settings: &MailboxSettings,
    (again, last): (bool, bool),
    now: Time,
) -> Outcome {
    let answer =
        match op {
            MailboxOp::Poll(params) => {
                match poll(broker, client, params, settings, (again, last), now) {
                    Ok(Polling::Wait { recheck }) => {
                        return Outcome::Wait {
                            client_id: client.client_id().clone(),
                            deadline: params.wait,
                            recheck,
                            first: None,
                        }
                    }
                    Ok(Polling::Answered(polled)) => Ok(json(200, &polled)),
                    Err(refusal) => Err(refusal),
                }
            }
            MailboxOp::Settle(body) => {
                let settle = Settle {
                    ack: body.ack,
                    nack: body.nack.clone(),
                    reject: body.reject.clone(),
                    dead_max: settings.dead_letters_max,
                };
                broker.mailbox_settle(client, &settle, now).map(|settled| {
                let value = serde_json::json!({
                    "acked": settled.acked, "nacked": settled.nacked, "rejected": settled.rejected,
                });
                json(200, &value)
            })
            }
            MailboxOp::Subscribe {
                filter,
                qos,
                retained,
                replay,
            } => broker
                .mailbox_subscribe(client, filter, *qos, *retained, settings.expiry_secs, now)
                .and_then(|qos| {
                    let replayed = match replay {
                        0 => 0,
                        count => broker.mailbox_replay(client, filter, *count, now)?,
                    };
                    let mut answer = serde_json::json!({"filter": filter, "qos": qos as u8});
                    if *replay > 0 {
                        answer["replayed"] = replayed.into();
                    }
                    Ok(json(200, &answer))
                }),
            MailboxOp::Reset(body) => match body.reset(now, crate::bridge::unix_now_ms()) {
                Err(error) => Ok(refused(&error)),
                Ok(reset) => broker.mailbox_reset(client, reset, now).map(|done| {
                    let value = serde_json::json!({
                        "completed": done.completed, "queued": done.queued,
                    });
                    json(200, &value)
                }),
            },
            MailboxOp::Unsubscribe { filter } => broker
                .mailbox_unsubscribe(client, filter, now)
                .map(|removed| {
                    json(
                        200,
                        &serde_json::json!({"filter": filter, "removed": removed}),
                    )
                }),
            MailboxOp::Subscriptions { filter } => {
                broker.mailbox_subscriptions(client).map(|subscriptions| {
                    let listed = subscriptions.iter().map(
                        |(f, qos)| serde_json::json!({"filter": f.as_str(), "qos": *qos as u8}),
                    );
                    match filter {
                        None => json(
                            200,
                            &serde_json::json!({"subscriptions": listed.collect::<Vec<_>>()}),
                        ),
                        Some(filter) => {
                            match subscriptions.iter().find(|(f, _)| f.as_str() == filter) {
                                Some((f, qos)) => json(
                                    200,
                                    &serde_json::json!({"filter": f.as_str(), "qos": *qos as u8}),
                                ),
                                None => refused(&ApiError::new(
                                    404,
                                    "not_subscribed",
                                    format!("the mailbox is not subscribed to {filter:?}"),
                                )),
                            }
                        }
                    }
                })
            }
            MailboxOp::DeadLetters => broker.mailbox_dead_letters(client, now).map(|dead| {
                let messages: Vec<MboxMessage> = dead.iter().map(message).collect();
                json(200, &serde_json::json!({"messages": messages}))
            }),
            MailboxOp::Requeue { seqs } => broker
                .mailbox_requeue(client, seqs.as_deref(), now)
                .map(|requeued| json(200, &serde_json::json!({"requeued": requeued}))),
        };
    Outcome::Answer(answer.unwrap_or_else(|refusal| refused(&refusal_error(refusal, op))))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn polled(fetched: Fetched) -> Polled {
    let messages: Vec<MboxMessage> = fetched.messages.iter().map(message).collect();
    Polled {
        next_ack: messages.iter().map(|m| m.seq).max(),
        messages,
        waiting: fetched.waiting,
        leased: fetched.leased,
        dead: fetched.dead,
    }
}

pub(crate) fn message(handed: &MailboxMessage) -> MboxMessage {
    let delivery = &handed.delivery;
    let message = &delivery.message;
    let properties = &message.properties;
    let payload = payload_of(message);
    MboxMessage {
        seq: delivery.seq,
        topic: message.topic.as_str().to_owned(),
        qos: delivery.qos as u8,
        retain: delivery.retain,
        payload,
        response_topic: properties
            .response_topic
            .as_ref()
            .map(|t| t.as_str().to_owned()),
        correlation_data_b64: properties
            .correlation_data
            .as_ref()
            .map(|data| URL_SAFE_NO_PAD.encode(data)),
        user_properties: properties
            .user_properties
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        expires_in: handed.expires_in,
        deliveries: handed.deliveries,
    }
}

/// A message's payload as JSON fields, and its Content Type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Payload {
    /// The payload, when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// The payload, base64, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
}

/// The payload of `message` as JSON fields (the text when it is UTF-8, else base64).
pub(crate) fn payload_of(message: &tern_core::Message) -> Payload {
    let (payload, payload_b64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(STANDARD.encode(&message.payload))),
    };
    let content_type = message.properties.content_type.as_ref();
    Payload {
        payload,
        payload_b64,
        content_type: content_type.map(|c| c.as_str().to_owned()),
    }
}

/// How a refused mailbox request is answered.
fn refusal_error(refusal: RequestRefusal, op: &MailboxOp) -> ApiError {
    let filter = match op {
        MailboxOp::Subscribe { filter, .. } | MailboxOp::Unsubscribe { filter } => filter.as_str(),
        _ => "",
    };
    match refusal {
        RequestRefusal::NotAuthorized => ApiError::new(
            403,
            "acl_denied",
            format!("not allowed to subscribe to {filter:?}"),
        ),
        other => ApiError::from_refusal(other, filter),
    }
}
