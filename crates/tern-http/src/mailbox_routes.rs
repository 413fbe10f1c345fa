//! The `/v1/mbox` routes: each reads its request (query, path, body) into a mailbox operation
//! and hands it, signed and verified, to the broker thread (see `mailbox`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use tern_codec::QoS;

use crate::bridge::Op;
use crate::error::ApiError;
use crate::mailbox::{
    MailboxOp, Poll, RequeueBody, SettleBody, BYTES_DEFAULT, LEASE_DEFAULT_SECS, LEASE_MAX_SECS,
    LIMIT_DEFAULT, LIMIT_MAX, WAIT_MAX_SECS,
};

/// Kept messages one subscription queues again at most.
pub(crate) const REPLAY_MAX: usize = 1000;
use crate::publish::{levels_of, Query};
use crate::server::{signed, Shared};

/// A number within `range`, or `default`.
fn within<T>(
    name: &str,
    value: Option<T>,
    range: std::ops::RangeInclusive<T>,
    default: T,
) -> Result<T, ApiError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    let value = value.unwrap_or(default);
    if !range.contains(&value) {
        return Err(ApiError::bad_request(format!(
            "{name} is {}..={}",
            range.start(),
            range.end()
        )));
    }
    Ok(value)
}

pub(crate) fn poll_op(raw: &str) -> Result<MailboxOp, ApiError> {
    let query = Query::parse(raw)?;
    let number = |name: &str| query.number::<u64>(name);
    Ok(MailboxOp::Poll(poll_params(
        number("ack")?,
        query.number("limit")?,
        query.number("max_bytes")?,
        number("lease")?,
        number("wait")?,
    )?))
}

/// A poll's parameters, each within its range or its default.
pub(crate) fn poll_params(
    ack: Option<u64>,
    limit: Option<usize>,
    bytes_max: Option<usize>,
    lease: Option<u64>,
    wait: Option<u64>,
) -> Result<Poll, ApiError> {
    Ok(Poll {
        ack,
        limit: within("limit", limit, 1..=LIMIT_MAX, LIMIT_DEFAULT)?,
        bytes_max: within("max_bytes", bytes_max, 1..=usize::MAX, BYTES_DEFAULT)?,
        lease: Duration::from_secs(within(
            "lease",
            lease,
            1..=LEASE_MAX_SECS,
            LEASE_DEFAULT_SECS,
        )?),
        wait: Duration::from_secs(within("wait", wait, 0..=WAIT_MAX_SECS, 0)?),
    })
}

/// The filter named by the path after `/v1/mbox/subs/` (each level percent-decoded once: `#`
/// is sent as `%23`).
fn filter_of(path: &str) -> Result<String, ApiError> {
    let rest = path.strip_prefix("/v1/mbox/subs/").unwrap_or_default();
    levels_of(rest, "filter_invalid")
}

/// A JSON body, or its default when the body is empty.
fn body_or_default<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::new(400, "payload_invalid", e.to_string()))
}

/// Polls the mailbox: acknowledges (`ack`), then hands out and leases what waits.
#[utoipa::path(
    get,
    path = "/v1/mbox",
    tag = "mailbox",
    params(
        ("ack" = Option<u64>, Query, description = "Completes every message up to this sequence number first (the next_ack of the last poll)."),
        ("limit" = Option<usize>, Query, description = "Messages handed out at most: 1-100, default 10."),
        ("max_bytes" = Option<usize>, Query, description = "Bytes handed out at most (the first message goes whatever its size); default 65536."),
        ("wait" = Option<u64>, Query, description = "Long poll: seconds (0-60, default 0) to wait for a message when none waits."),
        ("lease" = Option<u64>, Query, description = "Seconds (1-3600, default 60) before an unacknowledged message is handed out again."),
    ),
    responses(
        (status = 200, description = "What was handed out (none: nothing arrived within wait).", body = crate::mailbox::Polled),
        (status = "4XX", description = "Refused: no_mailbox (404), mailbox_in_use (409), ...", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn poll(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    signed(shared, request, |_, parts, _| {
        Ok(Op::Mailbox(poll_op(parts.query)?))
    })
    .await
}

/// Settles what polls handed out: acknowledged (cumulative), given back, or rejected.
#[utoipa::path(
    post,
    path = "/v1/mbox/ack",
    tag = "mailbox",
    request_body(content = SettleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "{\"acked\": N, \"nacked\": N, \"rejected\": N}"),
        (status = "4XX", description = "Refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn settle(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    signed(shared, request, |_, _, body| {
        let settle: SettleBody = body_or_default(&body)?;
        Ok(Op::Mailbox(MailboxOp::Settle(settle)))
    })
    .await
}

/// Subscribes the mailbox (made, a persistent session, if the client has none).
#[utoipa::path(
    put,
    path = "/v1/mbox/subs/{filter}",
    tag = "mailbox",
    params(
        ("filter" = String, Path, description = "The topic filter: the rest of the path, each level percent-decoded once (# as %23)."),
        ("qos" = Option<u8>, Query, description = "0, 1 (default) or 2: the highest QoS the mailbox receives the filter's messages with (a mailbox keeps QoS 0 messages too, in memory)."),
        ("retained" = Option<u8>, Query, description = "1 (default): queue the matching retained messages; 0: not."),
        ("replay" = Option<usize>, Query, description = "Queue the last N (0-1000) messages kept in history for the filter's topics ([[history]])."),
    ),
    responses(
        (status = 200, description = "{\"filter\": ..., \"qos\": GRANTED, \"replayed\": N (with replay)}"),
        (status = "4XX", description = "Refused: acl_denied (403), filter_invalid (400), ...", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn subscribe(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    signed(shared, request, |_, parts, _| {
        let query = Query::parse(parts.query)?;
        let qos = match query.number::<u8>("qos")?.unwrap_or(1) {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err(ApiError::bad_request("qos is 0, 1 or 2")),
        };
        let retained = match query.get("retained") {
            None => true,
            Some(_) => query.flag("retained")?,
        };
        Ok(Op::Mailbox(MailboxOp::Subscribe {
            filter: filter_of(parts.path)?,
            qos,
            retained,
            replay: within("replay", query.number("replay")?, 0..=REPLAY_MAX, 0)?,
        }))
    })
    .await
}

/// One subscription of the mailbox.
#[utoipa::path(
    get,
    path = "/v1/mbox/subs/{filter}",
    tag = "mailbox",
    params(("filter" = String, Path, description = "The topic filter, as for PUT.")),
    responses(
        (status = 200, description = "{\"filter\": ..., \"qos\": N}"),
        (status = "4XX", description = "not_subscribed or no_mailbox (404), or refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn subscription(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    signed(shared, request, |_, parts, _| {
        let filter = Some(filter_of(parts.path)?);
        Ok(Op::Mailbox(MailboxOp::Subscriptions { filter }))
    })
    .await
}

/// The mailbox's subscriptions (its session's, whether made over HTTP or MQTT).
#[utoipa::path(
    get,
    path = "/v1/mbox/subs",
    tag = "mailbox",
    responses(
        (status = 200, description = "{\"subscriptions\": [{\"filter\": ..., \"qos\": N}]}"),
        (status = "4XX", description = "Refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn subscriptions(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    signed(shared, request, |_, _, _| {
        Ok(Op::Mailbox(MailboxOp::Subscriptions { filter: None }))
    })
    .await
}

/// Unsubscribes the mailbox, so its queue stops growing with that filter's messages.
#[utoipa::path(
    delete,
    path = "/v1/mbox/subs/{filter}",
    tag = "mailbox",
    params(("filter" = String, Path, description = "The topic filter, as for PUT.")),
    responses(
        (status = 200, description = "{\"filter\": ..., \"removed\": BOOL}"),
        (status = "4XX", description = "Refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn unsubscribe(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    signed(shared, request, |_, parts, _| {
        let filter = filter_of(parts.path)?;
        Ok(Op::Mailbox(MailboxOp::Unsubscribe { filter }))
    })
    .await
}

/// The mailbox's dead letters.
#[utoipa::path(
    get,
    path = "/v1/mbox/dead",
    tag = "mailbox",
    responses(
        (status = 200, description = "{\"messages\": [...]}, oldest first."),
        (status = "4XX", description = "Refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn dead_letters(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    signed(shared, request, |_, _, _| {
        Ok(Op::Mailbox(MailboxOp::DeadLetters))
    })
    .await
}

/// Queues dead letters again (`seqs`, or all), under new sequence numbers.
#[utoipa::path(
    post,
    path = "/v1/mbox/dead/requeue",
    tag = "mailbox",
    request_body(content = RequeueBody, content_type = "application/json"),
    responses(
        (status = 200, description = "{\"requeued\": N}"),
        (status = "4XX", description = "Refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn requeue(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    signed(shared, request, |_, _, body| {
        let RequeueBody { seqs } = body_or_default(&body)?;
        Ok(Op::Mailbox(MailboxOp::Requeue { seqs }))
    })
    .await
}

/// Resets the mailbox: to the latest message, to the last N kept, to a sequence number or to a
/// time.
#[utoipa::path(
    post,
    path = "/v1/mbox/reset",
    tag = "mailbox",
    request_body(content = crate::mailbox::ResetBody, content_type = "application/json"),
    responses(
        (status = 200, description = "{\"completed\": N, \"queued\": N}"),
        (status = "4XX", description = "Refused: no_mailbox (404), mailbox_in_use (409), ...", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn reset(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    signed(shared, request, |_, _, body| {
        let reset: crate::mailbox::ResetBody = body_or_default(&body)?;
        if let Some(count) = reset.replay.filter(|count| *count > REPLAY_MAX) {
            return Err(ApiError::bad_request(format!(
                "replay is 0..={REPLAY_MAX}, not {count}"
            )));
        }
        Ok(Op::Mailbox(MailboxOp::Reset(reset)))
    })
    .await
}
