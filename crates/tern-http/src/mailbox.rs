//! Mailboxes over HTTP (docs/http.md, "Receiving"): the routes under `/v1/mbox`, read into
//! requests, what each does in the core (the mailbox is the client's MQTT persistent session,
//! `tern_core::broker::mailbox`), and their JSON answers.

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};
use tern_codec::{MqttString, QoS};
use tern_core::broker::mailbox::{Fetch, Fetched, MailboxMessage, Settle};
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
    Poll {
        ack: Option<u64>,
        limit: usize,
        bytes_max: usize,
        lease: Duration,
        wait: Duration,
    },
    /// `POST /v1/mbox/ack`.
    Settle(SettleBody),
    /// `PUT /v1/mbox/subs/{filter}`.
    Subscribe {
        filter: String,
        qos: QoS,
        retained: bool,
    },
    /// `DELETE /v1/mbox/subs/{filter}`.
    Unsubscribe { filter: String },
    /// `GET /v1/mbox/subs` (all) or `GET /v1/mbox/subs/{filter}` (one).
    Subscriptions { filter: Option<String> },
    /// `GET /v1/mbox/dead`.
    DeadLetters,
    /// `POST /v1/mbox/dead/requeue`.
    Requeue { seqs: Option<Vec<u64>> },
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
    /// The payload, when it is UTF-8 text.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<String>,
    /// The payload, base64, when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_b64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
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
            MailboxOp::Poll {
                ack,
                limit,
                bytes_max,
                lease,
                wait,
            } => {
                let waits = !wait.is_zero() && !last;
                let fetch = Fetch {
                    ack: if again { None } else { *ack },
                    limit: *limit,
                    bytes_max: *bytes_max,
                    lease_millis: millis(*lease),
                    deliveries_max: settings.deliveries_max,
                    dead_max: settings.dead_letters_max,
                    watch: waits,
                };
                match broker.mailbox_fetch(client, &fetch, now) {
                    Ok(fetched) if waits && fetched.messages.is_empty() => {
                        let recheck = fetched
                            .lease_ends
                            .map(|at| Duration::from_millis(at.as_millis() - now.as_millis()));
                        return Outcome::Wait {
                            client_id: client.client_id().clone(),
                            deadline: *wait,
                            recheck,
                        };
                    }
                    Ok(fetched) => Ok(json(200, &polled(fetched))),
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
            } => broker
                .mailbox_subscribe(client, filter, *qos, *retained, settings.expiry_secs, now)
                .map(|qos| {
                    json(
                        200,
                        &serde_json::json!({"filter": filter, "qos": qos as u8}),
                    )
                }),
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
    let (payload, payload_b64) = match std::str::from_utf8(&message.payload) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(STANDARD.encode(&message.payload))),
    };
    MboxMessage {
        seq: delivery.seq,
        topic: message.topic.as_str().to_owned(),
        qos: delivery.qos as u8,
        retain: delivery.retain,
        payload,
        payload_b64,
        content_type: properties
            .content_type
            .as_ref()
            .map(|c| c.as_str().to_owned()),
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
