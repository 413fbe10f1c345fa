//! Tern's MQTT client: asynchronous (tokio), MQTT 5.0 and 3.1.1, QoS 0/1/2, and resilient:
//! an outage is detected (keep-alive, even when TCP does not notice), the link is kept down for
//! a quiet period and reconnected with jittered exponential backoff, the session is restored
//! (resubscribing when the broker kept none, resending unacknowledged QoS 1/2 with DUP), and
//! publishes made meanwhile wait in a bounded queue, optionally persisted to disk.
//!
//! # Layout
//! - [`Client`] (`client`): the cloneable handle the application uses.
//! - `event_loop`: the task owning the link and the session; `connection`: one link's state;
//!   `session`: state kept across links; `store`: on-disk persistence.
//! - [`transport`], [`tls`], [`ws`]: the links MQTT runs over.
//! - [`request`]: request/response on top of publish/subscribe.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use tern_client::{Client, ClientOptions, QoS, TcpTransport};
//! let (client, _task) = Client::start(ClientOptions::new("sensor-1"), TcpTransport::new("127.0.0.1:1883"))?;
//! let mut messages = client.subscribe("sensors/#", QoS::AtLeastOnce).await?;
//! client.publish("sensors/1", QoS::AtLeastOnce, false, "21.5").await?;
//! let message = messages.recv().await;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod client;
mod connection;
mod error;
mod event_loop;
mod options;
pub mod request;
mod session;
mod socks;
mod state;
mod store;
pub mod tls;
pub mod transport;
pub mod ws;

pub use bytes::Bytes;
pub use client::{Client, Messages, Pending};
pub use error::{ConnectError, PublishError, RequestError, StoreError, SubscribeError};
pub use options::{ClientOptions, LastWill, QueuePolicy};
pub use socks::Socks5Proxy;
pub use state::{ConnectionState, DownReason};
/// The protocol crate, for packets and properties in full.
pub use tern_codec as codec;
pub use tern_codec::{
    ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, SubscriptionOptions,
};
pub use tls::{TlsOptions, TlsTransport, TlsVersion};
#[cfg(unix)]
pub use transport::UnixTransport;
pub use transport::{Dialer, FnTransport, TcpTransport, Transport};
pub use ws::WsTransport;

use tern_codec::{MqttString, TopicFilter, TopicName};

/// A QoS 0 message on `topic`; set `qos`, `retain` and `properties` on it as needed.
pub fn message(topic: &str, payload: impl Into<Bytes>) -> Result<Publish, PublishError> {
    Ok(Publish::new(topic_name(topic)?, payload.into()))
}

pub(crate) fn topic_name(topic: &str) -> Result<TopicName, PublishError> {
    let string = MqttString::new(topic).map_err(|e| PublishError::Invalid(e.to_string()))?;
    TopicName::new(string).map_err(|e| PublishError::Invalid(e.to_string()))
}

pub(crate) fn topic_filter(filter: &str) -> Result<TopicFilter, SubscribeError> {
    let string =
        MqttString::new(filter).map_err(|e| SubscribeError::InvalidFilter(e.to_string()))?;
    TopicFilter::new(string).map_err(|e| SubscribeError::InvalidFilter(e.to_string()))
}
