//! A signed request's way through, for every device route: the body read within its size
//! and time limits, the signature verified, the request read into an operation for the broker
//! thread, and the answer signed over the request's signature.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Response, StatusCode};
use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::bridge::{self, Envelope, Op};
use crate::error::ApiError;
use crate::replay::Answer;
use crate::server::{Peer, RequestLine, Shared};
use crate::signing::{self, RequestParts};
use crate::verify::{self, Verified};
use crate::HttpConfig;

/// What the answer to a verified request is signed with, and the key named in the log.
#[derive(Debug)]
pub(crate) struct Signer {
    secret: [u8; 32],
    /// What the response is bound to: the request's signature.
    signature: [u8; 32],
    key: String,
}

impl Signer {
    /// The signed response to a verified request (a refusal counted and logged).
    pub(crate) fn answer(
        &self,
        shared: &Shared,
        line: &RequestLine,
        answer: Result<Answer, ApiError>,
    ) -> Response<Body> {
        match answer {
            Ok(answer) => {
                if answer.status >= 400 {
                    shared.refuse(&error_of(&answer), line, Some(&self.key));
                }
                respond(answer.status, answer.body, Some(self), answer.replayed)
            }
            Err(error) => {
                shared.refuse(&error, line, Some(&self.key));
                respond(error.status, error.body(), Some(self), false)
            }
        }
    }
}

/// A response with a JSON body, signed when the request verified.
pub(crate) fn respond(
    status: u16,
    body: Bytes,
    signer: Option<&Signer>,
    replayed: bool,
) -> Response<Body> {
    let now = bridge::unix_now();
    let mut response = Response::new(Body::from(body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("tern-time", HeaderValue::from(now));
    if replayed {
        headers.insert("tern-replayed", HeaderValue::from_static("1"));
    }
    if let Some(signer) = signer {
        let bound_to = signing::hex(&signer.signature);
        let signed = signing::response_string(status, &bound_to, &body, now);
        let signature =
            signing::signature_header(&signing::sign(&signer.secret, signed.as_bytes()));
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert("tern-response-signature", value);
        }
    }
    response
}

/// A signed request's way through: size and time limits, the signature, reading it into an
/// operation, the broker thread, the signed answer.
pub(crate) async fn signed(
    shared: Arc<Shared>,
    request: Request,
    read: impl FnOnce(&Verified, &RequestParts<'_>, Bytes) -> Result<Op, ApiError>,
) -> Response<Body> {
    let (line, parts, body) = match received(&shared, request).await {
        Ok(received) => received,
        Err(response) => return *response,
    };
    // `parts` (the head and URI, slices of hyper's read buffer) is consumed here, before the
    // request waits on the broker thread: a waiting long poll pins no read buffer.
    match prepare(&shared, parts, body, read) {
        Ok(prepared) => prepared.finish(&shared, &line).await,
        Err(error) => refuse_unsigned(&shared, &line, error),
    }
}

/// What is sent instead of the broker thread's answer (a file's bytes), signed over its body.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) status: u16,
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
}

/// A refusal with the headers it carries.
pub(crate) type Refusal = (ApiError, Vec<(HeaderName, HeaderValue)>);

/// [`signed`], the broker thread's successful answer turned by `then` into what is sent.
pub(crate) async fn signed_then<F, Fut>(
    shared: Arc<Shared>,
    request: Request,
    read: impl FnOnce(&Verified, &RequestParts<'_>, Bytes) -> Result<Op, ApiError>,
    then: F,
) -> Response<Body>
where
    F: FnOnce(Answer) -> Fut,
    Fut: std::future::Future<Output = Result<Served, Refusal>>,
{
    let (line, parts, body) = match received(&shared, request).await {
        Ok(received) => received,
        Err(response) => return *response,
    };
    let Prepared { signer, next } = match prepare(&shared, parts, body, read) {
        Ok(prepared) => prepared,
        Err(error) => return refuse_unsigned(&shared, &line, error),
    };
    let answer = match next {
        Next::Bridge(request) => to_bridge(&shared, request).await,
        next => return Prepared { signer, next }.finish(&shared, &line).await,
    };
    match answer {
        Ok(answer) if answer.status < 400 => match then(answer).await {
            Ok(served) => served.into_response(Some(&signer)),
            Err((error, headers)) => {
                let mut response = signer.answer(&shared, &line, Err(error));
                response.headers_mut().extend(headers);
                response
            }
        },
        answer => signer.answer(&shared, &line, answer),
    }
}

/// A request's line and head, and its body read within the size and time limits (or the
/// refusal).
async fn received(
    shared: &Shared,
    request: Request,
) -> Result<(RequestLine, axum::http::request::Parts, Bytes), Box<Response<Body>>> {
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |peer| peer.0);
    let (parts, body) = request.into_parts();
    let line = RequestLine {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        peer,
    };
    let limit = shared.config.body_max_bytes;
    match read_body(&shared.config, &parts.headers, body, limit).await {
        Ok(body) => Ok((line, parts, body)),
        Err(error) => Err(Box::new(refuse_unsigned(shared, &line, error))),
    }
}

/// Counts, logs and answers (unsigned) a request refused before its signature verified.
pub(crate) fn refuse_unsigned(
    shared: &Shared,
    line: &RequestLine,
    error: ApiError,
) -> Response<Body> {
    shared.refuse(&error, line, None);
    respond(error.status, error.body(), None, false)
}

/// A verified request, read: what its answer is signed with, and where it goes next.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) signer: Signer,
    pub(crate) next: Next,
}

/// Where a verified request goes.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Moved once, never kept: a box would cost an allocation.
pub(crate) enum Next {
    /// To the broker thread.
    Bridge(bridge::Request),
    /// A device of an app key not approved (yet): its request becomes an access request.
    Awaiting(tern_auth::Credential),
    /// Nowhere: it did not read (refused, signed).
    Refused(ApiError),
}

impl Prepared {
    /// Takes the request to its answer, signed.
    pub(crate) async fn finish(self, shared: &Shared, line: &RequestLine) -> Response<Body> {
        let answer = match self.next {
            Next::Bridge(request) => to_bridge(shared, request).await,
            Next::Awaiting(credential) => {
                Err(crate::access::awaiting(shared, &credential, line.peer.to_string()).await)
            }
            Next::Refused(error) => Err(error),
        };
        self.signer.answer(shared, line, answer)
    }
}

/// Verifies a request and reads it into what the broker thread is handed; `Err` when the
/// signature does not verify.
pub(crate) fn prepare(
    shared: &Shared,
    parts: axum::http::request::Parts,
    body: Bytes,
    read: impl FnOnce(&Verified, &RequestParts<'_>, Bytes) -> Result<Op, ApiError>,
) -> Result<Prepared, ApiError> {
    let (verified, op) = verify_and_read(shared, parts, body, read)?;
    let principal = verified.principal();
    let Verified {
        mut credential,
        secret,
        signature,
        nonce,
        time,
    } = verified;
    let signer = Signer {
        secret,
        signature,
        key: credential.key_id.clone(),
    };
    // Checked: not carried along while the request waits.
    credential.secrets = Vec::new();
    let next = match op {
        _ if credential.awaiting_approval => Next::Awaiting(credential),
        Ok(op) => Next::Bridge(bridge::Request {
            principal,
            nonce,
            signature,
            time,
            credential,
            op,
            first: None,
        }),
        Err(error) => Next::Refused(error),
    };
    Ok(Prepared { signer, next })
}

/// Verifies a request's signature and reads it into an operation (or the refusal, signed
/// since the signature verified); `Err` when the signature does not verify.
fn verify_and_read(
    shared: &Shared,
    parts: axum::http::request::Parts,
    body: Bytes,
    read: impl FnOnce(&Verified, &RequestParts<'_>, Bytes) -> Result<Op, ApiError>,
) -> Result<(Verified, Result<Op, ApiError>), ApiError> {
    let headers: Vec<(&str, &[u8])> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let request_parts = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or_default(),
        headers: &headers,
        body: &body,
    };
    let verified = verify::verify(&shared.keys, &request_parts)?;
    let op = read(&verified, &request_parts, body.clone());
    Ok((verified, op))
}

/// The error a refusal the broker thread worded says, for the log and the counts.
pub(crate) fn error_of(answer: &Answer) -> ApiError {
    let body = serde_json::from_slice::<serde_json::Value>(&answer.body).unwrap_or_default();
    let text = |field: &str| body["error"][field].as_str().unwrap_or_default().to_owned();
    ApiError::new(answer.status, refused_code(&text("code")), text("message"))
}

/// Reads a JSON body within the size and time limits.
pub(crate) async fn read_json<T: serde::de::DeserializeOwned>(
    shared: &Shared,
    request: Request,
) -> Result<T, ApiError> {
    let (parts, body) = request.into_parts();
    let body = read_body(
        &shared.config,
        &parts.headers,
        body,
        shared.config.body_max_bytes,
    )
    .await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body: {e}")))
}

/// The stable code of a refusal the broker thread worded (for counting).
fn refused_code(code: &str) -> &'static str {
    const CODES: [&str; 35] = [
        "banned",
        "no_session",
        "no_retained",
        "not_banned",
        "unavailable",
        "acl_denied",
        "access_denied",
        "topic_invalid",
        "bad_request",
        "quota_exceeded",
        "not_applied",
        "time_skew",
        "nonce_replayed",
        "nonce_reused",
        "request_in_progress",
        "rate_limited",
        "payload_invalid",
        "no_mailbox",
        "mailbox_in_use",
        "filter_invalid",
        "not_subscribed",
        "poll_superseded",
        "precondition_failed",
        "not_found",
        "no_device",
        "device_exists",
        "realm_denied",
        "no_notification",
        "notification_closed",
        "response_invalid",
        "ambiguous_nid",
        "too_many_pending",
        "no_release",
        "range_not_satisfiable",
        "no_password",
    ];
    CODES.into_iter().find(|c| *c == code).unwrap_or("refused")
}

/// Hands a verified request to the broker thread and waits for its answer.
pub(crate) async fn to_bridge(
    shared: &Shared,
    request: bridge::Request,
) -> Result<Answer, ApiError> {
    let (reply, answer) = oneshot::channel();
    let gone = || ApiError::unavailable("the broker is shutting down");
    shared
        .bridge
        .send(Envelope { request, reply })
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

/// Reads a body within `limit` bytes (refused by its declared length before any of it is
/// read) and the time limit.
pub(crate) async fn read_body(
    config: &HttpConfig,
    headers: &axum::http::HeaderMap,
    body: Body,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "payload_too_large",
            format!("the body is over {limit} bytes"),
        )
    };
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(config.body_timeout, limited.collect()).await {
        // A copy: hyper hands a small body out as a slice of the connection's read buffer,
        // which a payload kept (queued, retained) would otherwise keep alive whole.
        Ok(Ok(collected)) => Ok(Bytes::copy_from_slice(&collected.to_bytes())),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(error)) => Err(ApiError::bad_request(format!("reading the body: {error}"))),
        Err(_) => Err(ApiError::new(
            408,
            "request_timeout",
            format!("the body did not arrive within {:?}", config.body_timeout),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    /// hyper hands a small body out as a slice of its connection's read buffer: kept as a
    /// payload (queued, retained), it would keep that whole buffer alive.
    #[tokio::test]
    async fn a_body_read_does_not_keep_the_connections_buffer() {
        let buffer = Bytes::from(vec![7u8; 8192]);
        let config = HttpConfig::new(Vec::new(), std::path::PathBuf::new());
        let body = Body::from(buffer.slice(100..164));
        let read = read_body(&config, &axum::http::HeaderMap::new(), body, 1024)
            .await
            .unwrap();
        assert_eq!(read.len(), 64);
        let range = buffer.as_ptr_range();
        assert!(
            !range.contains(&read.as_ptr()),
            "the body is a slice of the buffer"
        );
    }
}
