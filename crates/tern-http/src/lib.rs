//! Tern's HTTP device bridge: devices that cannot hold an MQTT connection publish and receive
//! over plain HTTP or HTTPS, with every request signed by a key of their own (docs/http.md).
//!
//! # Layout
//! - [`signing`]: the canonical request and the signatures of requests and responses.
//! - `verify`: a request's signature, key and nonce, checked on the HTTP threads.
//! - `replay`: nonces, counters and exactly-once answers, on the broker thread.
//! - `bridge`: the task on the broker thread that acts on verified requests through the core,
//!   as a connection does, and answers once the effect is durable; `longpoll`: the long polls
//!   waiting there; `answers`: how answers are worded.
//! - `server`: listeners, the HTTP runtime, routes, limits and time-outs; `publish`: reading
//!   publishes; `mailbox`, `mailbox_routes`: receiving (polls, acknowledgements,
//!   subscriptions, dead letters, reset); `sync`: a wake's whole exchange in one request;
//!   `kv`: key/value over retained messages; `keys`: the key file, reloaded when it changes;
//!   `openapi`: the served document.
//! - `console_assets`: the web console's files (`tern-console`) at `/`; `console_session`: its
//!   login, a session cookie that every operator route takes as it takes the token;
//!   `console_publish`: an operator's publish.
//!
//! HTTP runs on a small runtime of its own threads: parsing, TLS and HMAC never take the broker
//! thread's time, and a slow client holds an HTTP task, not the broker. Only the request's
//! effect crosses over, through a bounded channel, to the bridge task.

mod access;
mod admin;
mod admin_firmware;
mod admin_fleet;
mod admin_keys;
mod admin_ops;
mod answers;
mod bridge;
mod console_assets;
pub mod console_login;
mod console_publish;
pub mod console_session;
pub mod error;
mod events;
mod firmware_files;
mod fleet_api;
mod fleet_notify;
mod fleet_register;
pub mod keys;
mod kv;
mod longpoll;
mod mailbox;
mod mailbox_routes;
mod metrics;
mod metrics_history;
mod openapi;
mod publish;
mod realm;
mod refusals;
pub mod replay;
mod server;
mod service;
mod signed;
pub mod signing;
mod sync;
pub mod tokens;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use error::ApiError;
pub use mailbox::MailboxSettings;
pub use openapi::openapi_json;
pub use server::HttpBridge;

/// One address the bridge accepts HTTP requests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListener {
    /// Address to bind; port 0 picks a free one.
    pub bind: SocketAddr,
    /// HTTPS with these TLS settings (those of an `mqtts` listener); plain HTTP without.
    pub tls: Option<tern_net::TlsSettings>,
}

/// How the bridge runs.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where to listen.
    pub listeners: Vec<HttpListener>,
    /// The data directory, where the key file and its master key are.
    pub data_dir: PathBuf,
    /// How far `Tern-Time` may be from the broker's clock, either way.
    pub window: Duration,
    /// How long the answer to an exactly-once request (a QoS 2 publish) is kept for retries.
    pub idempotency: Duration,
    /// Largest request body; larger ones are refused (413) before they are read.
    pub body_max_bytes: usize,
    /// Largest firmware file an upload to the operator API may carry (streamed to disk, not
    /// held in memory); larger ones are refused (413).
    pub firmware_file_max_bytes: u64,
    /// Largest batch of messages in one request.
    pub batch_items_max: usize,
    /// How long a client has to send a request's headers (slow clients are cut off).
    pub header_timeout: Duration,
    /// How long a client has to send a request's body once its headers are in.
    pub body_timeout: Duration,
    /// HTTP connections open at once; more wait to be accepted.
    pub connections_max: usize,
    /// How often the key file is looked at for changes.
    pub keys_poll: Duration,
    /// How mailboxes behave.
    pub mailboxes: MailboxSettings,
    /// Operator tokens of the configuration file (hashed), beside those of the token file.
    pub tokens: Vec<tokens::TokenRecord>,
    /// Operator users who log in to the console with a password (`[http] operators_file`).
    pub operator_users: Option<console_login::OperatorUsers>,
    /// Console logins with an identity provider's JWT (`[http.operator_jwt]`).
    pub operator_jwt: Option<console_login::OperatorJwt>,
    /// How often the overview's history (`GET /metrics/history`, the last hour) is sampled.
    pub metrics_history_every: Duration,
    /// Where the device fleet's topics are (`[fleet] topic_prefix`): the namespace of a token
    /// bound to an owner.
    pub fleet_topics: tern_core::fleet::FleetTopics,
}

impl HttpConfig {
    /// The defaults, with these listeners and data directory.
    pub fn new(listeners: Vec<HttpListener>, data_dir: PathBuf) -> Self {
        Self {
            listeners,
            data_dir,
            window: Duration::from_secs(300),
            idempotency: Duration::from_secs(86_400),
            body_max_bytes: 256 * 1024,
            firmware_file_max_bytes: 64 * 1024 * 1024,
            batch_items_max: 1000,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            connections_max: 10_000,
            keys_poll: Duration::from_millis(500),
            mailboxes: MailboxSettings::default(),
            tokens: Vec::new(),
            operator_users: None,
            operator_jwt: None,
            metrics_history_every: Duration::from_secs(10),
            fleet_topics: tern_core::fleet::FleetTopics::default(),
        }
    }
}

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A listener could not bind its address.
    #[error("cannot listen for HTTP on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// An HTTPS listener's certificate or key could not be loaded.
    #[error("HTTPS listener {address}: {source}")]
    Tls {
        /// The address.
        address: SocketAddr,
        /// Why.
        source: tern_net::TlsError,
    },
    /// The key file or its master key could not be read.
    #[error("HTTP keys: {0}")]
    Keys(String),
    /// The HTTP threads could not be started.
    #[error("cannot start the HTTP threads: {0}")]
    Runtime(std::io::Error),
}
