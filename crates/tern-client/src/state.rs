//! The connection state the application can watch, and why a link went down.

use tern_codec::ReasonCode;

/// Where the client's link to the broker stands; observe it with `Client::state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// Opening the transport and exchanging CONNECT/CONNACK.
    Connecting,
    /// Connected; `session_present` tells whether the broker resumed the session.
    Connected {
        /// The CONNACK's Session Present flag.
        session_present: bool,
    },
    /// The link is down (quiet period or backoff before the next attempt).
    Down(DownReason),
    /// The client was shut down (or gave up, when reconnecting is off).
    Closed,
}

/// Why a link ended or could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// The transport failed or was closed.
    Transport(String),
    /// The broker refused the CONNECT with this reason code.
    Refused(ReasonCode),
    /// No CONNACK within the connect timeout.
    Timeout,
    /// No answer to PINGREQ in time, or a write blocked too long: the link is dead even if TCP
    /// has not noticed.
    KeepAlive,
    /// The broker sent DISCONNECT with this reason code.
    Disconnected(ReasonCode),
    /// The broker broke the protocol.
    Protocol(String),
}
