//! What an edge keeps so that a signed request takes effect at most once, across restarts too:
//! the HTTP bridge's counter nonces, random nonces and the answers of exactly-once requests
//! (docs/http.md, "Replays, clocks and retries"). The core does not read these records; it
//! carries them to the store in the same batch as the effect of the request they guard
//! ([`crate::Broker::record_guard`]), so a request's effect and its record are durable
//! together or not at all, and a store gives them back in its [`crate::Snapshot`].

use bytes::Bytes;

/// One record of the request guard. Times are Unix seconds by the edge's clock, which the
/// requests' own times are checked against (the core's `Time` restarts with every process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardRecord {
    /// The last counter nonce accepted for a principal (a key and the client it speaks for).
    Counter {
        /// The key and client.
        principal: String,
        /// The counter; the next must be above it.
        last: u64,
    },
    /// A random nonce seen, refused again until `until`.
    Nonce {
        /// The key and client.
        principal: String,
        /// The nonce as sent (`r:HEX`).
        nonce: String,
        /// Until when it is remembered.
        until: u64,
    },
    /// The answer given to an exactly-once request, given again to the same request until
    /// `until`.
    Answer {
        /// The key and client.
        principal: String,
        /// The request's nonce (`c:HEX` or `r:HEX`).
        nonce: String,
        /// The request's signature: only the same request gets the answer again.
        signature: [u8; 32],
        /// The answer's status.
        status: u16,
        /// The answer's body.
        body: Bytes,
        /// Until when it is kept.
        until: u64,
    },
}

impl GuardRecord {
    /// What the record is kept under: a later record with the same key replaces it.
    pub fn key(&self) -> GuardKey {
        match self {
            Self::Counter { principal, .. } => GuardKey::Counter(principal.clone()),
            Self::Nonce {
                principal, nonce, ..
            } => GuardKey::Nonce(principal.clone(), nonce.clone()),
            Self::Answer {
                principal, nonce, ..
            } => GuardKey::Answer(principal.clone(), nonce.clone()),
        }
    }
}

/// What a [`GuardRecord`] is kept under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GuardKey {
    /// A principal's last counter.
    Counter(String),
    /// A principal's random nonce.
    Nonce(String, String),
    /// The answer to a principal's request under a nonce.
    Answer(String, String),
}
