//! Key/value over retained messages (docs/http.md, "Key/value"): `GET|PUT|DELETE
//! /v1/kv/{key…}` and `GET /v1/kv/{prefix…}/?since=`. A KV entry *is* the topic's retained
//! message (`tern_core::broker::kv`): a PUT is a retained QoS 1 publish through the core's
//! one routing path, seen by MQTT subscribers; a retained message published over MQTT is an
//! entry. Its ETag is the message's id (`e:N`), given in the answer's body (signed) and in
//! the `ETag` header; `If-Match` and `If-None-Match: *` are signed too, so a write's
//! precondition cannot be stripped on the way.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::Serialize;
use tern_core::broker::kv::{Expect, KvListing, KvRefusal};
use tern_core::{Broker, RequestClient, RequestRefusal, SharedMessage, Time};

use crate::bridge::{json, refused, Op};
use crate::error::ApiError;
use crate::mailbox::{payload_of, Payload};
use crate::publish::{self, levels_of, Item, Query};
use crate::replay::Answer;
use crate::server::{signed, Shared};

/// What a key/value request does.
#[derive(Debug)]
pub(crate) enum KvOp {
    /// `GET /v1/kv/{key}`.
    Get { key: String, missing: Missing },
    /// `GET /v1/kv/{prefix}/`.
    List { prefix: String, since: Option<u64> },
    /// `PUT /v1/kv/{key}` (the item is the retained publish) or `DELETE` (an empty payload).
    Write {
        key: String,
        item: Box<Item>,
        expect: Expect,
        missing: Missing,
    },
}

/// How a missing key is answered: 404 `not_found`, or (`?missing=204`) 204 with no body, for
/// one-branch microcontroller code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    NotFound,
    NoContent,
}

impl KvOp {
    /// Whether it changes anything (then it is exactly-once: a retry is answered again).
    pub(crate) fn writes(&self) -> bool {
        matches!(self, Self::Write { .. })
    }
}

/// An entry as answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Entry {
    key: String,
    /// Its ETag: `e:` and the message id; a later change has a higher one.
    etag: String,
    /// The value.
    #[serde(flatten)]
    value: Payload,
}

/// A key deleted, with the ETag of its deletion.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Deleted {
    key: String,
    etag: String,
}

/// What changed under a prefix (a listing, or a sync's `kv`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Changes {
    /// Ask since this next time.
    etag: String,
    /// Entries set since (all of them, with `full`), oldest change first.
    changed: Vec<Entry>,
    /// Keys deleted since.
    deleted: Vec<Deleted>,
    /// The whole subtree: drop what you hold under the prefix that is not in `changed`.
    full: bool,
    /// More changes follow: ask again since `etag`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    more: bool,
}

/// `e:N`.
pub(crate) fn etag(id: u64) -> String {
    format!("e:{id}")
}

/// An ETag as sent: `e:N`, quoted or not.
pub(crate) fn parse_etag(text: &str) -> Result<u64, ApiError> {
    let text = text.trim().trim_matches('"');
    text.strip_prefix("e:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError::bad_request(format!("{text:?} is not an ETag (e:N)")))
}

fn entry(message: &SharedMessage) -> Entry {
    Entry {
        key: message.topic.as_str().to_owned(),
        etag: etag(message.id),
        value: payload_of(message),
    }
}

/// A listing as answered.
pub(crate) fn changes(listing: KvListing) -> Changes {
    Changes {
        etag: etag(listing.etag),
        changed: listing.changed.iter().map(entry).collect(),
        deleted: listing
            .deleted
            .into_iter()
            .map(|(topic, id)| Deleted {
                key: topic.as_str().to_owned(),
                etag: etag(id),
            })
            .collect(),
        full: listing.full,
        more: listing.more,
    }
}

/// How a refused KV request is answered.
pub(crate) fn refusal_error(refusal: RequestRefusal, key: &str, reading: bool) -> ApiError {
    match refusal {
        RequestRefusal::NotAuthorized if reading => {
            ApiError::new(403, "acl_denied", format!("not allowed to read {key:?}"))
        }
        other => ApiError::from_refusal(other, key),
    }
}

fn missing(key: &str, how: Missing) -> Answer {
    match how {
        Missing::NoContent => Answer {
            status: 204,
            body: bytes::Bytes::new(),
            replayed: false,
        },
        Missing::NotFound => refused(&ApiError::new(
            404,
            "not_found",
            format!("no entry {key:?}"),
        )),
    }
}

/// Acts on a key/value request in the core.
pub(crate) fn apply(broker: &mut Broker, client: &RequestClient, op: &KvOp, now: Time) -> Answer {
    match op {
        KvOp::Get { key, missing: how } => match broker.kv_get(client, key) {
            Ok(Some(message)) => json(200, &entry(&message)),
            Ok(None) => missing(key, *how),
            Err(refusal) => refused(&refusal_error(refusal, key, true)),
        },
        KvOp::List { prefix, since } => match broker.kv_list(client, prefix, *since) {
            Ok(listing) => json(200, &changes(listing)),
            Err(refusal) => refused(&refusal_error(refusal, prefix, true)),
        },
        KvOp::Write {
            key,
            item,
            expect,
            missing: how,
        } => {
            let Some(publish) = item.publish.clone() else {
                // Its `age` passed its `ttl`: nothing to keep.
                return refused(&ApiError::bad_request(
                    "the value expired before it arrived",
                ));
            };
            let deleting = publish.payload.is_empty();
            match broker.kv_write(client, publish, *expect, now) {
                Ok(id) if deleting => json(
                    200,
                    &serde_json::json!({"key": key, "deleted": true, "etag": etag(id)}),
                ),
                Ok(id) => json(200, &serde_json::json!({"key": key, "etag": etag(id)})),
                Err(KvRefusal::Missing) => missing(key, *how),
                Err(KvRefusal::Precondition(current)) => json(
                    412,
                    &serde_json::json!({
                        "error": {
                            "code": "precondition_failed",
                            "message": format!("{key:?} is not as If-Match or If-None-Match expects"),
                        },
                        "etag": current.map(etag),
                    }),
                ),
                Err(KvRefusal::Request(refusal)) => refused(&refusal_error(refusal, key, false)),
            }
        }
    }
}

/// The key after `/v1/kv/`, each level percent-decoded once; a trailing `/` names a prefix.
fn key_of(path: &str) -> Result<String, ApiError> {
    let key = levels_of(
        path.strip_prefix("/v1/kv/").unwrap_or_default(),
        "topic_invalid",
    )?;
    if key.is_empty() || key.starts_with('$') {
        return Err(ApiError::new(
            400,
            "topic_invalid",
            "a key is a topic name not beginning with $",
        ));
    }
    Ok(key)
}

fn missing_of(query: &Query) -> Result<Missing, ApiError> {
    match query.get("missing") {
        None | Some("404") => Ok(Missing::NotFound),
        Some("204") => Ok(Missing::NoContent),
        Some(other) => Err(ApiError::bad_request(format!(
            "missing is 404 or 204, not {other:?}"
        ))),
    }
}

/// What `If-Match` / `If-None-Match: *` ask of the entry a write replaces.
fn expect_of(headers: &[(&str, &[u8])]) -> Result<Expect, ApiError> {
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
    };
    match (header("if-match"), header("if-none-match")) {
        (None, None) => Ok(Expect::Any),
        (Some(tag), None) if tag == "*" => Ok(Expect::Present),
        (Some(tag), None) => Ok(Expect::Etag(parse_etag(&tag)?)),
        (None, Some(tag)) if tag == "*" => Ok(Expect::Absent),
        _ => Err(ApiError::bad_request(
            "If-Match: \"e:N\" (or *), or If-None-Match: *, not both",
        )),
    }
}

/// Reads an entry, or (a path ending in `/`) lists a subtree or what changed in it.
#[utoipa::path(
    get,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key (a topic name), each level percent-decoded once; ending in / lists the subtree."),
        ("since" = Option<String>, Query, description = "A listing: only what changed (set or deleted) after this ETag (e:N)."),
        ("missing" = Option<u16>, Query, description = "404 (default) or 204: how a missing key is answered."),
    ),
    responses(
        (status = 200, description = "The entry, or the listing.", body = Entry),
        (status = 204, description = "No such key (?missing=204)."),
        (status = "4XX", description = "not_found (404), acl_denied (403), ...", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn get(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    with_etag(
        signed(shared, request, |_, parts, _| {
            let query = Query::parse(parts.query)?;
            let key = key_of(parts.path)?;
            if key.ends_with('/') {
                let since = query.get("since").map(parse_etag).transpose()?;
                return Ok(Op::Kv(KvOp::List { prefix: key, since }));
            }
            let missing = missing_of(&query)?;
            Ok(Op::Kv(KvOp::Get { key, missing }))
        })
        .await,
    )
    .await
}

/// Sets an entry: a retained QoS 1 publish of the body, answered once durable.
#[utoipa::path(
    put,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key (a topic name), each level percent-decoded once."),
        ("ttl" = Option<u32>, Query, description = "Seconds the entry lives (Message Expiry Interval)."),
        ("If-Match" = Option<String>, Header, description = "Only if the entry's ETag is this (e:N), or with *, if it exists: else 412."),
        ("If-None-Match" = Option<String>, Header, description = "*: only if there is no entry: else 412."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The value (not empty: DELETE removes). Content-Type becomes the message's."),
    responses(
        (status = 200, description = "{\"key\": ..., \"etag\": \"e:N\"}"),
        (status = 412, description = "precondition_failed, with the entry's current etag.", body = crate::error::ErrorBody),
        (status = "4XX", description = "Refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn put(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    with_etag(
        signed(shared, request, |_, parts, body| {
            if body.is_empty() {
                return Err(ApiError::bad_request(
                    "an entry's value is not empty (DELETE removes it)",
                ));
            }
            write(parts, body)
        })
        .await,
    )
    .await
}

/// Deletes an entry: clears the retained message (an empty retained QoS 1 publish).
#[utoipa::path(
    delete,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "The key, as for GET."),
        ("missing" = Option<u16>, Query, description = "404 (default) or 204: how a missing key is answered."),
        ("If-Match" = Option<String>, Header, description = "Only if the entry's ETag is this (e:N): else 412."),
    ),
    responses(
        (status = 200, description = "{\"key\": ..., \"deleted\": true, \"etag\": \"e:N\"}"),
        (status = 204, description = "No such key (?missing=204)."),
        (status = "4XX", description = "not_found (404), precondition_failed (412), ...", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn delete(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    with_etag(
        signed(shared, request, |_, parts, body| {
            if !body.is_empty() {
                return Err(ApiError::bad_request("a DELETE has no body"));
            }
            write(parts, body)
        })
        .await,
    )
    .await
}

/// A PUT or DELETE: the retained publish (QoS 1; `ttl`, Content-Type and `Mqtt-*` headers as
/// for a publish) and its precondition.
fn write(parts: &crate::signing::RequestParts<'_>, body: bytes::Bytes) -> Result<Op, ApiError> {
    let query = Query::parse(parts.query)?;
    let key = key_of(parts.path)?;
    if key.ends_with('/') {
        return Err(ApiError::new(
            400,
            "topic_invalid",
            "a key does not end in /",
        ));
    }
    if query.get("qos").is_some() || query.get("retain").is_some() {
        return Err(ApiError::bad_request(
            "an entry is a retained QoS 1 message: no qos or retain",
        ));
    }
    let mut item = publish::single(
        key.clone(),
        &query,
        parts.headers,
        body,
        crate::bridge::unix_now(),
    )?;
    if let Some(publish) = item.publish.as_mut() {
        publish.retain = true;
    }
    Ok(Op::Kv(KvOp::Write {
        key,
        item: Box::new(item),
        expect: expect_of(parts.headers)?,
        missing: missing_of(&query)?,
    }))
}

/// The answer with an `ETag` header when its body names one (an entry, a write, a listing):
/// the same ETag the signed body carries.
async fn with_etag(response: Response<Body>) -> Response<Body> {
    let (mut head, body) = response.into_parts();
    let Ok(collected) = http_body_util::BodyExt::collect(body).await else {
        return Response::from_parts(head, Body::empty());
    };
    let bytes = collected.to_bytes();
    let tag = (head.status == 200)
        .then(|| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .flatten()
        .and_then(|value| value.get("etag")?.as_str().map(|tag| format!("\"{tag}\"")));
    if let Some(value) = tag.and_then(|tag| axum::http::HeaderValue::from_str(&tag).ok()) {
        head.headers.insert("etag", value);
    }
    Response::from_parts(head, Body::from(bytes))
}
