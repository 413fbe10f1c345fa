//! Answers as the bridge words them: JSON bodies with their status, a refusal's error body,
//! and the answers to publishes (a single message's own, a batch's list of results).

use bytes::Bytes;
use serde::Serialize;
use tern_core::RequestOutcome;

use crate::error::ApiError;
use crate::publish::Item;
use crate::replay::Answer;

/// A refusal as an answer.
pub(crate) fn refused(error: &ApiError) -> Answer {
    Answer {
        status: error.status,
        body: error.body(),
        replayed: false,
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
pub(crate) fn published(
    results: &[(usize, &Item, Option<RequestOutcome>)],
    batch: bool,
    atomic: bool,
) -> Answer {
    if !batch {
        return match results.first().map(result_of) {
            Some(Ok(published)) => json(200, &published),
            Some(Err((_, error))) => refused(&error),
            None => refused(&ApiError::bad_request("nothing to publish")),
        };
    }
    let (items, first_error) = item_results(results);
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

/// What became of one message: published, or refused (with its position).
fn result_of(
    (i, item, outcome): &(usize, &Item, Option<RequestOutcome>),
) -> Result<Published, (usize, ApiError)> {
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
}

/// Each message's result, and the first refusal (but `not_applied`) if any.
pub(crate) fn item_results(
    results: &[(usize, &Item, Option<RequestOutcome>)],
) -> (Vec<ItemResult>, Option<ApiError>) {
    let mut first_error = None;
    let items: Vec<ItemResult> = results
        .iter()
        .map(|entry| match result_of(entry) {
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
    (items, first_error)
}

pub(crate) fn json(status: u16, value: &impl Serialize) -> Answer {
    Answer {
        status,
        body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        replayed: false,
    }
}
