//! The HTTP side: a runtime of its own threads, the listeners (HTTP and HTTPS) and the routes.
//! A client that is slow to send its headers is cut off here; a body's limits (refused from
//! its `Content-Length` before a byte of it is read, cut off when slow) are `signed.rs`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Router};
use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tracing::debug;

use crate::admin_ops::OperatorEnvelope;
use crate::bridge::{self, Envelope, Op};
use crate::error::ApiError;
use crate::keys::Keys;
use crate::refusals::Refusals;
use crate::replay::ReplayLimits;
use crate::service::ConnectionService;
use crate::signed::respond;
pub(crate) use crate::signed::{
    error_of, prepare, read_json, refuse_unsigned, signed, Next, Prepared, Signer,
};
use crate::signing;
use crate::tokens::Tokens;
use crate::{admin, mailbox_routes, publish, HttpConfig, HttpError};

/// Requests waiting for the broker thread, at most; HTTP tasks wait for room beyond it.
const BRIDGE_QUEUE_MAX: usize = 1024;
/// HTTP threads, at most (one per core but one, at least one).
const THREADS_MAX: usize = 4;

/// What every HTTP task shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) keys: Arc<Keys>,
    pub(crate) bridge: mpsc::Sender<Envelope>,
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
    /// The web console's sessions (`console_session.rs`).
    pub(crate) console: crate::console_session::Sessions,
    /// The overview's history of the last hour (`metrics_history.rs`).
    pub(crate) history: crate::metrics_history::History,
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
        let first_admin = crate::console_session::first_start(
            &config.data_dir,
            &config.tokens,
            config.operator_users.is_some() || config.operator_jwt.is_some(),
            bridge::unix_now(),
        );
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
            console: crate::console_session::Sessions::default(),
            history: crate::metrics_history::History::new(config.metrics_history_every),
        });
        crate::console_session::offer_first_login(&shared.console, first_admin);
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
                Arc::clone(&shared),
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
        runtime.spawn(crate::metrics_history::sample(Arc::clone(&shared)));
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

    /// On a first start, the web console's one-time login link (given once, for the log).
    pub fn console_login_link(&self) -> Option<String> {
        self.shared.console.login_link(&self.listeners)
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
        .route("/v1/fleet/register", post(crate::fleet_register::register))
        .route(
            "/v1/fleet/firmware/{id}",
            get(crate::firmware_files::download),
        )
        .route(
            "/v1/kv/{*key}",
            get(crate::kv::get)
                .put(crate::kv::put)
                .delete(crate::kv::delete),
        )
        .route("/v1/openapi.json", get(openapi_document))
        .route("/v1/events", get(crate::events::events))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/metrics/history", get(crate::metrics_history::history))
        .merge(admin::routes())
        .merge(crate::access::routes())
        .merge(crate::console_session::console_routes())
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
    shared: Arc<Shared>,
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
        let service = ConnectionService {
            router: router.clone(),
            shared: Arc::clone(&shared),
            peer,
            transport: crate::console_session::Transport { tls: tls.is_some() },
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder = {
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(header_timeout);
                builder
            };
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

/// A response with a JSON body, not signed (the operator API's: its tokens are bearer
/// credentials over a channel the operator chose, HTTPS where it matters).
pub(crate) fn unsigned(status: u16, body: Bytes) -> Response<Body> {
    respond(status, body, None, false)
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
