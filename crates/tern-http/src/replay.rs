//! Replay protection and idempotent retries, on the broker thread (so checking a nonce, acting
//! on the request and remembering its answer happen with no lock and in order).
//!
//! - A counter nonce (`c:HEX`) must be above the last one accepted for its key and client:
//!   no clock needed. A random nonce (`r:HEX`) must come with a `Tern-Time` within the window
//!   of the broker's clock, and not have been seen in it.
//! - An exactly-once request (a QoS 2 publish) keeps its answer for the idempotency period:
//!   the same request again (the same signature) gets the same answer, marked replayed, and
//!   is not applied twice; another request under that nonce is refused (`nonce_reused`).
//!
//! Every table is bounded; when one is full, new requests that need a place in it are refused
//! (429), never let through unguarded.

use std::collections::{HashMap, VecDeque};

use crate::error::ApiError;

/// A request's `Tern-Nonce`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Nonce {
    /// `c:` and 1-16 hex digits: above the last accepted for the key and client.
    Counter(u64),
    /// `r:` and 8-64 hex digits: unseen within the window.
    Random(String),
}

impl Nonce {
    /// Parses a `Tern-Nonce` value.
    pub fn parse(value: &str) -> Option<Self> {
        let hex_digits = |text: &str, min: usize, max: usize| {
            (min..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
        };
        match value.split_once(':') {
            Some(("c", digits)) if hex_digits(digits, 1, 16) => {
                u64::from_str_radix(digits, 16).ok().map(Self::Counter)
            }
            Some(("r", digits)) if hex_digits(digits, 8, 64) => {
                Some(Self::Random(digits.to_ascii_lowercase()))
            }
            _ => None,
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Counter(n) => format!("c:{n:x}"),
            Self::Random(digits) => format!("r:{digits}"),
        }
    }
}

/// An answer as given: status and body (the response is signed anew each time it is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The JSON body.
    pub body: bytes::Bytes,
    /// Whether it was given before to the same request.
    pub replayed: bool,
}

/// The guard's bounds and windows.
#[derive(Debug, Clone, Copy)]
pub struct ReplayLimits {
    /// How far `Tern-Time` may be from the broker's clock, either way (seconds).
    pub window_secs: u64,
    /// How long an exactly-once request's answer is kept (seconds).
    pub idempotency_secs: u64,
    /// Random nonces remembered at once.
    pub nonces_max: usize,
    /// Keys and clients whose last counter is remembered.
    pub counters_max: usize,
    /// Answers of exactly-once requests kept at once.
    pub answers_max: usize,
}

impl Default for ReplayLimits {
    fn default() -> Self {
        Self {
            window_secs: 300,
            idempotency_secs: 86_400,
            nonces_max: 1_000_000,
            counters_max: 1_000_000,
            answers_max: 100_000,
        }
    }
}

/// What to do with a request.
#[derive(Debug)]
pub enum Admission {
    /// Act on it.
    Fresh,
    /// It was answered before: send this again.
    Replay(Answer),
    /// Refuse it.
    Refused(ApiError),
}

#[derive(Debug)]
enum Remembered {
    /// Being acted on (its effect is not durable yet).
    Pending([u8; 32]),
    /// Answered, until the deadline.
    Done([u8; 32], Answer),
}

type Key = (String, String);

/// Nonces, counters and answers.
#[derive(Debug)]
pub struct ReplayGuard {
    limits: ReplayLimits,
    counters: HashMap<String, u64>,
    nonces: HashMap<Key, u64>,
    nonce_expiry: VecDeque<(u64, Key)>,
    answers: HashMap<Key, Remembered>,
    answer_expiry: VecDeque<(u64, Key)>,
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new(limits: ReplayLimits) -> Self {
        Self {
            limits,
            counters: HashMap::new(),
            nonces: HashMap::new(),
            nonce_expiry: VecDeque::new(),
            answers: HashMap::new(),
            answer_expiry: VecDeque::new(),
        }
    }

    /// Decides on a request of `principal` (its key and client) signed `signature`, with its
    /// nonce and time (`None`: `-`, no clock), at `now` (Unix seconds). An `exactly_once`
    /// request is remembered as pending until [`ReplayGuard::answered`].
    pub fn admit(
        &mut self,
        principal: &str,
        nonce: &Nonce,
        signature: &[u8; 32],
        time: Option<u64>,
        now: u64,
        exactly_once: bool,
    ) -> Admission {
        self.forget_expired(now);
        let key = (principal.to_owned(), nonce.text());
        match self.answers.get(&key) {
            Some(Remembered::Pending(sig) | Remembered::Done(sig, _)) if sig != signature => {
                return Admission::Refused(ApiError::new(
                    409,
                    "nonce_reused",
                    "this nonce was used by another request",
                ));
            }
            Some(Remembered::Pending(_)) => {
                return Admission::Refused(ApiError::new(
                    409,
                    "request_in_progress",
                    "the same request is being handled; retry it in a moment",
                ));
            }
            Some(Remembered::Done(_, answer)) => {
                let mut answer = answer.clone();
                answer.replayed = true;
                return Admission::Replay(answer);
            }
            None => {}
        }
        match time {
            Some(time) if time.abs_diff(now) > self.limits.window_secs => {
                return Admission::Refused(ApiError::new(
                    401,
                    "time_skew",
                    format!(
                        "Tern-Time is {} s from the broker's clock (at most {} s allowed); the \
                         response's Tern-Time is the broker's",
                        time.abs_diff(now),
                        self.limits.window_secs
                    ),
                ));
            }
            None if matches!(nonce, Nonce::Random(_)) => {
                return Admission::Refused(ApiError::bad_request(
                    "Tern-Time \"-\" (no clock) needs a counter nonce (c:HEX)",
                ));
            }
            _ => {}
        }
        if exactly_once && self.answers.len() >= self.limits.answers_max {
            return full("answers of exactly-once requests");
        }
        match nonce {
            Nonce::Counter(counter) => {
                let last = self.counters.get(principal).copied();
                if last.is_some_and(|last| *counter <= last) {
                    return Admission::Refused(ApiError::new(
                        401,
                        "nonce_replayed",
                        format!(
                            "counter {counter:x} is not above the last accepted, {:x}",
                            last.unwrap_or_default()
                        ),
                    ));
                }
                if last.is_none() && self.counters.len() >= self.limits.counters_max {
                    return full("nonce counters");
                }
                self.counters.insert(principal.to_owned(), *counter);
            }
            Nonce::Random(_) => {
                if self.nonces.contains_key(&key) {
                    return Admission::Refused(ApiError::new(
                        401,
                        "nonce_replayed",
                        "this nonce was seen within the time window",
                    ));
                }
                if self.nonces.len() >= self.limits.nonces_max {
                    return full("random nonces");
                }
                // Replayable for as long as its time is within the window.
                let until = time.unwrap_or(now).max(now) + self.limits.window_secs;
                self.nonces.insert(key.clone(), until);
                self.nonce_expiry.push_back((until, key.clone()));
            }
        }
        if exactly_once {
            self.answers.insert(key, Remembered::Pending(*signature));
        }
        Admission::Fresh
    }

    /// The answer to an exactly-once request admitted as fresh, given once its effect is
    /// durable: a retry now gets it again.
    pub fn answered(&mut self, principal: &str, nonce: &Nonce, answer: Answer, now: u64) {
        let key = (principal.to_owned(), nonce.text());
        if let Some(entry) = self.answers.get_mut(&key) {
            if let Remembered::Pending(signature) = entry {
                *entry = Remembered::Done(*signature, answer);
                let until = now + self.limits.idempotency_secs;
                self.answer_expiry.push_back((until, key));
            }
        }
    }

    fn forget_expired(&mut self, now: u64) {
        while let Some((until, _)) = self.nonce_expiry.front() {
            if *until >= now {
                break;
            }
            if let Some((_, key)) = self.nonce_expiry.pop_front() {
                self.nonces.remove(&key);
            }
        }
        while let Some((until, _)) = self.answer_expiry.front() {
            if *until >= now {
                break;
            }
            if let Some((_, key)) = self.answer_expiry.pop_front() {
                self.answers.remove(&key);
            }
        }
    }
}

fn full(what: &str) -> Admission {
    Admission::Refused(ApiError::new(
        429,
        "rate_limited",
        format!("the broker's table of {what} is full; retry later"),
    ))
}

#[cfg(test)]
#[path = "replay_tests.rs"]
mod tests;
