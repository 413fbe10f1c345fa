//! The HTTP side: a runtime of its own threads, the listeners (HTTP and HTTPS), the routes,
//! and the limits every request meets before it costs anything: a body larger than allowed is
//! refused from its `Content-Length` before a byte of it is read, and a client that is slow
//! to send its headers or body is cut off.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Response, StatusCode};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tower::ServiceExt;
use tracing::debug;

use crate::admin_ops::OperatorEnvelope;
use crate::bridge::{self, Envelope, Op};
use crate::error::ApiError;
use crate::keys::Keys;
use crate::refusals::Refusals;
use crate::replay::{Answer, ReplayLimits};
use crate::signing::{self, RequestParts};
use crate::tokens::Tokens;
use crate::verify::{self, Verified};
use crate::{admin, mailbox_routes, publish, HttpConfig, HttpError};

/// Requests waiting for the broker thread, at most; HTTP tasks wait for room beyond it.
const BRIDGE_QUEUE_MAX: usize = 1024;
/// HTTP threads, at most (one per core but one, at least one).
const THREADS_MAX: usize = 4;

/// What every HTTP task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    keys: Arc<Keys>,
    bridge: mpsc::Sender<Envelope>,
    pub(crate) config: HttpConfig,
    refusals: Refusals,
    /// Operator tokens (`tokens.rs`).
    pub(crate) tokens: Tokens,
    /// Operator requests on their way to the broker thread.
    pub(crate) operator: mpsc::Sender<OperatorEnvelope>,
    /// Held while a file of the data directory (keys, bans) is read, changed and written.
    pub(crate) file_edits: tokio::sync::Mutex<()>,
    /// Event streams and metrics scrapes on their way to the broker thread; what they count.
    pub(crate) observe: mpsc::Sender<crate::events::Observe>,
    pub(crate) stream_counts: Arc<crate::events::StreamCounts>,
    pub(crate) request_counts: Arc<crate::metrics::RequestCounts>,
    /// Devices of app keys awaiting approval (`access.rs`).
    pub(crate) access: crate::access::AccessRequests,
}

/// The peer address of a request's connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Peer(pub(crate) SocketAddr);

/// The running bridge's HTTP side: its threads and bound listeners.
#[derive(Debug)]
pub struct HttpBridge {
    runtime: Option<tokio::runtime::Runtime>,
    listeners: Vec<(SocketAddr, bool)>,
    shared: Arc<Shared>,
}

impl Drop for HttpBridge {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl HttpBridge {
    /// Binds the listeners, loads the keys and starts the HTTP threads; the returned task
    /// must run on the broker thread (`tern_net::Server::add_edge`): it is the bridge's side
    /// there. `restored` is what the store kept of the request guard (the snapshot's).
    pub fn start(
        config: HttpConfig,
        restored: Vec<tern_core::GuardRecord>,
    ) -> Result<(Self, tern_net::EdgeTask), HttpError> {
        let keys =
            Keys::load(&config.data_dir, config.window.as_secs()).map_err(HttpError::Keys)?;
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .saturating_sub(1)
            .clamp(1, THREADS_MAX);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("tern-http")
            .enable_all()
            .build()
            .map_err(HttpError::Runtime)?;
        let tokens =
            Tokens::load(&config.data_dir, config.tokens.clone()).map_err(HttpError::Keys)?;
        let (sender, receiver) = mpsc::channel(BRIDGE_QUEUE_MAX);
        let (operator, operator_receiver) = mpsc::channel(BRIDGE_QUEUE_MAX);
        let (observe, observe_receiver) = mpsc::channel(BRIDGE_QUEUE_MAX);
        let stream_counts = Arc::default();
        let bans = admin::kept_bans(&config.data_dir);
        let limits = ReplayLimits {
            window_secs: config.window.as_secs(),
            idempotency_secs: config.idempotency.as_secs(),
            ..ReplayLimits::default()
        };
        let shared = Arc::new(Shared {
            keys: Arc::new(keys),
            bridge: sender,
            config: config.clone(),
            refusals: Refusals::new(),
            tokens,
            operator,
            file_edits: tokio::sync::Mutex::new(()),
            observe,
            stream_counts: Arc::clone(&stream_counts),
            request_counts: Arc::default(),
            access: crate::access::AccessRequests::load(&config.data_dir),
        });
        let router = router(Arc::clone(&shared));
        let connections = Arc::new(Semaphore::new(config.connections_max.max(1)));
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let address = listener.bind;
            let tls = match &listener.tls {
                Some(settings) => Some(tokio_rustls::TlsAcceptor::from(
                    tern_net::tls_server_config(settings)
                        .map_err(|source| HttpError::Tls { address, source })?,
                )),
                None => None,
            };
            let bind = |address| {
                let socket = std::net::TcpListener::bind(address)?;
                socket.set_nonblocking(true)?;
                let _guard = runtime.enter();
                TcpListener::from_std(socket)
            };
            let socket = bind(address).map_err(|source| HttpError::Bind { address, source })?;
            let local = socket.local_addr().unwrap_or(address);
            listeners.push((local, tls.is_some()));
            runtime.spawn(accept_loop(
                socket,
                tls,
                router.clone(),
                Arc::clone(&connections),
                config.header_timeout,
            ));
        }
        let watched = Arc::clone(&shared);
        runtime.spawn(async move {
            let mut poll = tokio::time::interval(watched.config.keys_poll);
            loop {
                poll.tick().await;
                watched.keys.reload_if_changed();
                watched.tokens.reload_if_changed();
            }
        });
        let mailboxes = config.mailboxes;
        let edge: tern_net::EdgeTask = Box::new(move |handle| {
            let channels = bridge::Channels {
                requests: receiver,
                operator: operator_receiver,
                observe: observe_receiver,
                stream_counts,
            };
            Box::pin(bridge::run(
                handle, channels, limits, restored, mailboxes, bans,
            ))
        });
        let bridge = Self {
            runtime: Some(runtime),
            listeners,
            shared,
        };
        Ok((bridge, edge))
    }

    /// The addresses bound (port 0 resolved), in configuration order.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(address, _)| *address).collect()
    }

    /// One line per listener, for the log: `ADDRESS (http)` or `ADDRESS (https)`.
    pub fn describe(&self) -> Vec<String> {
        self.listeners
            .iter()
            .map(|(address, tls)| format!("{address} ({})", if *tls { "https" } else { "http" }))
            .collect()
    }

    /// The keys in force, for MQTT logins with them (`tern_auth::key_login`).
    pub fn key_logins(&self) -> Arc<dyn tern_auth::KeyLogins> {
        Arc::clone(&self.shared.keys) as Arc<dyn tern_auth::KeyLogins>
    }

    /// Refused requests so far, by error code.
    pub fn refused_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.shared.refused_counts()
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/time", get(time))
        .route("/v1/pub", post(publish_batch))
        .route("/v1/pub/{*topic}", post(publish_one))
        .route("/v1/mbox", get(mailbox_routes::poll))
        .route("/v1/mbox/ack", post(mailbox_routes::settle))
        .route("/v1/mbox/reset", post(mailbox_routes::reset))
        .route("/v1/mbox/dead", get(mailbox_routes::dead_letters))
        .route("/v1/mbox/dead/requeue", post(mailbox_routes::requeue))
        .route("/v1/mbox/subs", get(mailbox_routes::subscriptions))
        .route(
            "/v1/mbox/subs/{*filter}",
            put(mailbox_routes::subscribe)
                .get(mailbox_routes::subscription)
                .delete(mailbox_routes::unsubscribe),
        )
        .route("/v1/sync", post(crate::sync::sync))
        .route(
            "/v1/kv/{*key}",
            get(crate::kv::get)
                .put(crate::kv::put)
                .delete(crate::kv::delete),
        )
        .route("/v1/openapi.json", get(openapi_document))
        .route("/v1/events", get(crate::events::events))
        .route("/metrics", get(crate::metrics::metrics))
        .merge(admin::routes())
        .merge(crate::access::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared.request_counts),
            crate::metrics::count_requests,
        ))
        .with_state(shared)
}

async fn accept_loop(
    socket: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    connections: Arc<Semaphore>,
    header_timeout: Duration,
) {
    loop {
        // At the limit, connections wait in the listen backlog rather than being accepted.
        let Ok(slot) = Arc::clone(&connections).acquire_owned().await else {
            return;
        };
        let (stream, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!("HTTP accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |mut request: Request<_>| {
            request.extensions_mut().insert(Peer(peer));
            request
        });
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout);
                builder
            };
            let service = TowerToHyperService::new(service);
            let served = match tls {
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                        }
                        Ok(Err(error)) => {
                            debug!("HTTPS handshake with {peer} failed: {error}");
                            Ok(())
                        }
                        Err(_) => {
                            debug!("HTTPS handshake with {peer} not finished in time");
                            Ok(())
                        }
                    }
                }
            };
            if let Err(error) = served {
                debug!("HTTP connection from {peer} ended: {error}");
            }
            drop(slot);
        });
    }
}

/// The signing and timing headers of an answer to a verified request.
struct Signer<'a> {
    secret: &'a [u8; 32],
    /// What the response is bound to: the request's signature, in hex.
    bound_to: String,
}

/// A response with a JSON body, not signed (the operator API's: its tokens are bearer
/// credentials over a channel the operator chose, HTTPS where it matters).
pub(crate) fn unsigned(status: u16, body: Bytes) -> Response<Body> {
    respond(status, body, None, false)
}

/// A response with a JSON body, signed when the request verified.
fn respond(
    status: u16,
    body: Bytes,
    signer: Option<&Signer<'_>>,
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
        let signed = signing::response_string(status, &signer.bound_to, &body, now);
        let signature = signing::signature_header(&signing::sign(signer.secret, signed.as_bytes()));
        if let Ok(value) = HeaderValue::from_str(&signature) {
            headers.insert("tern-response-signature", value);
        }
    }
    response
}

impl Shared {
    /// The keys in force.
    pub(crate) fn key_ring(&self) -> Arc<tern_auth::KeyRing> {
        self.keys.ring()
    }

    /// Refused requests so far, by error code.
    pub(crate) fn refused_counts(&self) -> std::collections::BTreeMap<&'static str, u64> {
        self.refusals.counts()
    }

    /// Reads the key file again now (after an edit through the operator API).
    pub(crate) fn reload_keys(&self) {
        self.keys.reload_if_changed();
    }

    /// Counts and logs a refusal, and words it.
    pub(crate) fn refuse(&self, error: &ApiError, request: &RequestLine, key: Option<&str>) {
        self.refusals.refused(error.code, || {
            let key = key.map(|k| format!(" key {k}")).unwrap_or_default();
            format!(
                "{} ({}) {} {} from {}{key}: {}",
                error.code, error.status, request.method, request.path, request.peer, error.message
            )
        });
    }
}

/// What the log says of a request.
pub(crate) struct RequestLine {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) peer: SocketAddr,
}

/// A signed request's way through: size and time limits, the signature, reading it into an
/// operation, the broker thread, the signed answer.
pub(crate) async fn signed(
    shared: Arc<Shared>,
    request: Request,
    read: impl FnOnce(&Verified, &RequestParts<'_>, Bytes) -> Result<Op, ApiError>,
) -> Response<Body> {
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
    let unsigned = |error: ApiError| {
        shared.refuse(&error, &line, None);
        respond(error.status, error.body(), None, false)
    };
    let body = match read_body(&shared.config, &parts.headers, body).await {
        Ok(body) => body,
        Err(error) => return unsigned(error),
    };
    // `parts` (the head and URI, slices of hyper's read buffer) is consumed here, before the
    // request waits on the broker thread: a waiting long poll pins no read buffer.
    let (verified, op) = match verify_and_read(&shared, parts, body, read) {
        Ok(verified) => verified,
        Err(error) => return unsigned(error),
    };
    let secret = verified.secret;
    let signer = Signer {
        secret: &secret,
        bound_to: signing::hex(&verified.signature),
    };
    let key = verified.credential.key_id.clone();
    let answer = if verified.credential.awaiting_approval {
        Err(crate::access::awaiting(&shared, &verified.credential, peer.to_string()).await)
    } else {
        match op {
            Ok(op) => to_bridge(&shared, verified, op).await,
            Err(error) => Err(error),
        }
    };
    match answer {
        Ok(answer) => {
            if answer.status >= 400 {
                shared.refuse(&error_of(&answer), &line, Some(&key));
            }
            respond(answer.status, answer.body, Some(&signer), answer.replayed)
        }
        Err(error) => {
            shared.refuse(&error, &line, Some(&key));
            respond(error.status, error.body(), Some(&signer), false)
        }
    }
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
    let body = read_body(&shared.config, &parts.headers, body).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("the body: {e}")))
}

/// The stable code of a refusal the broker thread worded (for counting).
fn refused_code(code: &str) -> &'static str {
    const CODES: [&str; 30] = [
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
        "no_notification",
        "notification_closed",
        "response_invalid",
        "ambiguous_nid",
        "too_many_pending",
    ];
    CODES.into_iter().find(|c| *c == code).unwrap_or("refused")
}

/// Hands a verified request to the broker thread and waits for its answer.
async fn to_bridge(shared: &Shared, verified: Verified, op: Op) -> Result<Answer, ApiError> {
    let (reply, answer) = oneshot::channel();
    let request = bridge::Request {
        principal: verified.principal(),
        nonce: verified.nonce,
        signature: verified.signature,
        time: verified.time,
        credential: verified.credential,
        op,
        first: None,
    };
    let gone = || ApiError::unavailable("the broker is shutting down");
    shared
        .bridge
        .send(Envelope { request, reply })
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

/// Reads a body within the size limit (refused by its declared length before any of it is
/// read) and the time limit.
async fn read_body(
    config: &HttpConfig,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<Bytes, ApiError> {
    let limit = config.body_max_bytes;
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

/// Publishes one message: the body is its payload.
#[utoipa::path(
    post,
    path = "/v1/pub/{topic}",
    tag = "publish",
    params(
        ("topic" = String, Path, description = "The topic name: the rest of the path, each level percent-decoded once (a leading empty level: a double slash)."),
        ("qos" = Option<u8>, Query, description = "0, 1 (default) or 2. QoS 1 and 2 are answered once durable; QoS 2 retried with the same nonce is answered again, not published again."),
        ("retain" = Option<u8>, Query, description = "1: keep as the topic's retained message."),
        ("ttl" = Option<u32>, Query, description = "Message Expiry Interval, seconds."),
        ("age" = Option<u32>, Query, description = "Seconds since the reading was taken: subtracted from ttl, kept as user property tern-captured-at."),
        ("topic" = Option<String>, Query, description = "The topic name, instead of the path's."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The payload. Content-Type becomes the message's Content Type (text and JSON: Payload Format Indicator 1, UTF-8 required); Mqtt-Response-Topic, Mqtt-Correlation-Data (base64url) and Mqtt-User-Property (key=value, repeatable) its properties."),
    responses(
        (status = 200, description = "Published; matched may be 0.", body = crate::answers::Published),
        (status = "4XX", description = "Refused.", body = crate::error::ErrorBody),
        (status = 503, description = "The broker is shutting down.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn publish_one(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    signed(shared, request, |_, parts, body| {
        let query = publish::Query::parse(parts.query)?;
        let topic = publish::topic_of(parts.path, &query)?;
        let item = publish::single(topic, &query, parts.headers, body, bridge::unix_now())?;
        Ok(Op::Publish {
            items: vec![item],
            atomic: false,
            batch: false,
        })
    })
    .await
}

/// Publishes a batch of messages (a JSON array).
#[utoipa::path(
    post,
    path = "/v1/pub",
    tag = "publish",
    params(
        ("atomic" = Option<u8>, Query, description = "1: publish every message or none."),
    ),
    request_body(content = Vec<publish::BatchItem>, content_type = "application/json"),
    responses(
        (status = 200, description = "Every message published: results in order."),
        (status = 207, description = "Some refused (not atomic): each result says."),
        (status = "4XX", description = "Refused as a whole.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn publish_batch(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let items_max = shared.config.batch_items_max;
    signed(shared, request, move |_, parts, body| {
        let query = publish::Query::parse(parts.query)?;
        let atomic = query.flag("atomic")?;
        let items = publish::batch(&body, items_max, bridge::unix_now())?;
        Ok(Op::Publish {
            items,
            atomic,
            batch: true,
        })
    })
    .await
}

/// The broker's time, signed over the device's challenge: a device without a clock learns it,
/// and can trust it, without knowing the time first.
#[utoipa::path(
    get,
    path = "/v1/time",
    tag = "time",
    params(("challenge" = String, Query, description = "16-64 hex digits the device chose.")),
    responses(
        (status = 200, description = "{\"time\": UNIX_SECONDS, \"challenge\": ...}; Tern-Response-Signature holds one signature per secret of the key (two, always), each over the challenge."),
        (status = "4XX", description = "No Tern-Key, or no valid challenge.", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn time(
    State(shared): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    request: Request,
) -> Response<Body> {
    let line = RequestLine {
        method: "GET".to_owned(),
        path: request.uri().path().to_owned(),
        peer,
    };
    let query = request.uri().query().unwrap_or_default();
    let challenge = publish::Query::parse(query)
        .ok()
        .and_then(|q| q.get("challenge").map(str::to_owned))
        .filter(|c| (16..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()));
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let (Some(challenge), Some(key_id)) = (challenge, header("tern-key")) else {
        let error = ApiError::bad_request("GET /v1/time needs Tern-Key and ?challenge=<16-64 hex>");
        shared.refuse(&error, &line, None);
        return respond(error.status, error.body(), None, false);
    };
    let client = header("tern-client");
    // Two signatures whatever the key (see `Keys::secrets`): the answer does not tell which
    // keys exist.
    let (_, secrets) = shared.keys.secrets(&key_id, client.as_deref());
    let now = bridge::unix_now();
    let body = Bytes::from(
        serde_json::to_vec(&serde_json::json!({"time": now, "challenge": challenge}))
            .unwrap_or_default(),
    );
    let signed = signing::response_string(200, &challenge.to_ascii_lowercase(), &body, now);
    let signatures: Vec<String> = secrets
        .iter()
        .map(|secret| signing::signature_header(&signing::sign(secret, signed.as_bytes())))
        .collect();
    let mut response = respond(200, body, None, false);
    let headers = response.headers_mut();
    headers.insert("tern-time", HeaderValue::from(now));
    if let Ok(value) = HeaderValue::from_str(&signatures.join(", ")) {
        headers.insert("tern-response-signature", value);
    }
    response
}

/// The OpenAPI 3.1 document of every route, generated from the code.
#[utoipa::path(get, path = "/v1/openapi.json", tag = "meta", responses((status = 200, description = "The document.")))]
pub(crate) async fn openapi_document() -> Response<Body> {
    respond(
        200,
        Bytes::from(crate::openapi::openapi_json()),
        None,
        false,
    )
}

async fn not_found(
    State(shared): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    request: Request,
) -> Response<Body> {
    let error = ApiError::new(404, "not_found", "no such route (see /v1/openapi.json)");
    refuse_route(&shared, error, peer, &request)
}

async fn method_not_allowed(
    State(shared): State<Arc<Shared>>,
    Extension(Peer(peer)): Extension<Peer>,
    request: Request,
) -> Response<Body> {
    let error = ApiError::new(405, "method_not_allowed", "this route takes another method");
    refuse_route(&shared, error, peer, &request)
}

fn refuse_route(
    shared: &Shared,
    error: ApiError,
    peer: SocketAddr,
    request: &Request,
) -> Response<Body> {
    let line = RequestLine {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        peer,
    };
    shared.refuse(&error, &line, None);
    respond(error.status, error.body(), None, false)
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
        let read = read_body(&config, &axum::http::HeaderMap::new(), body)
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
