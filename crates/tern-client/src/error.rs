//! Typed errors of the client: one enum per kind of operation, each carrying the broker's
//! reason code when the broker refused.

use tern_codec::ReasonCode;

/// Why the link to the broker could not be opened or was lost.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The transport could not connect (DNS, TCP, TLS or WebSocket handshake).
    #[error("transport: {0}")]
    Transport(#[from] std::io::Error),
    /// The broker refused the CONNECT with this reason code.
    #[error("broker refused the connection: {0:?}")]
    Refused(ReasonCode),
    /// No CONNACK came within the connect timeout.
    #[error("no CONNACK within the connect timeout")]
    Timeout,
    /// The broker sent bytes that are not a valid MQTT packet.
    #[error("protocol: {0}")]
    Protocol(String),
}

/// Why a publish did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker answered PUBACK or PUBREC with an error reason code.
    #[error("broker refused the publish: {0:?}")]
    Refused(ReasonCode),
    /// The offline queue was full and its policy refused this message.
    #[error("the offline queue is full")]
    QueueFull,
    /// The offline queue was full and this (older) message was dropped for a newer one.
    #[error("dropped from the full offline queue")]
    Dropped,
    /// The message is larger than the broker's Maximum Packet Size.
    #[error("the message exceeds the broker's maximum packet size")]
    TooLarge,
    /// The topic, properties or payload cannot be encoded.
    #[error("invalid message: {0}")]
    Invalid(String),
    /// The client was shut down before the publish completed.
    #[error("the client is closed")]
    Closed,
}

/// Why a SUBSCRIBE or UNSUBSCRIBE failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The broker refused the filter with this reason code.
    #[error("broker refused the subscription: {0:?}")]
    Refused(ReasonCode),
    /// The topic filter is not valid.
    #[error("invalid topic filter: {0}")]
    InvalidFilter(String),
    /// The client was shut down before the broker answered.
    #[error("the client is closed")]
    Closed,
}

/// Why a request of request/response got no normal response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No response arrived within the timeout.
    #[error("no response within the timeout")]
    Timeout,
    /// The broker reported that nothing subscribes to the request topic (0x10).
    #[error("no responder subscribes to the request topic")]
    NoResponder,
    /// The responder's handler failed; `name` names the error, `message` describes it.
    #[error("remote error {name}: {message}")]
    Remote {
        /// The error's name, as the responder gave it.
        name: String,
        /// Its message.
        message: String,
    },
    /// The request could not be published.
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    /// The response topic could not be subscribed to.
    #[error("subscribe: {0}")]
    Subscribe(#[from] SubscribeError),
}

/// Why the on-disk store of in-flight messages could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the directory failed.
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A stored file is not a message this client wrote.
    #[error("corrupt store file {0}")]
    Corrupt(String),
}
