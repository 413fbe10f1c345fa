//! Actionable notifications of the device fleet: a question a device asks a person ("Door open
//! 3 h: close it?"), answered as yes/no, text or one of a list, the answer going back to the
//! device; or one an operator asks a device. Any number may be pending per device, each with
//! its own id (`nid`); each is `pending` until it is `answered`, `expired` or `cancelled`, and
//! whether its answer (or, asked of a device, the question itself) reached the device is known
//! from the device's acknowledgement. The broker keeps them here, on its thread, and the store
//! keeps every change ([`crate::StoreOp::FleetNotifySet`]); `broker/fleet_notify.rs` moves them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::Bytes;
use serde_json::Value;

use crate::types::Time;

/// How long a notification waits for its answer unless it says (seconds).
pub const NOTIFY_TTL_DEFAULT_SECS: u32 = 86_400;
/// The longest a notification may wait for its answer (seconds).
pub const NOTIFY_TTL_MAX_SECS: u32 = 30 * 86_400;
/// How long a finished notification is still listed (and a second answer to it refused as
/// such) before it is forgotten (seconds).
pub const NOTIFY_KEEP_FINISHED_SECS: u32 = 7 * 86_400;
/// Notifications pending per device, at most: a device that raises more is refused.
pub const NOTIFY_PENDING_PER_DEVICE_MAX: usize = 64;
/// Notifications kept per device, at most: past it a new one makes its oldest finished one
/// be forgotten before its 7 days, so a device that raises and withdraws in a loop holds
/// bounded memory and store space.
pub const NOTIFY_KEPT_PER_DEVICE_MAX: usize = 256;
/// Bytes of a body, of an id, of a choice, at most.
pub const NOTIFY_TEXT_MAX: usize = 4096;
/// Choices of a `choice` notification, at most.
pub const NOTIFY_CHOICES_MAX: usize = 32;

/// What kind of answer a notification wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseType {
    /// `true` or `false`.
    Bool,
    /// Any text.
    String,
    /// One of these.
    Choice(Vec<String>),
}

impl ResponseType {
    /// The word of the payloads and the API: `bool`, `string` or `choice`.
    pub fn word(&self) -> &'static str {
        match self {
            Self::Bool => "bool",
            Self::String => "string",
            Self::Choice(_) => "choice",
        }
    }

    /// The response type a payload names (`choices` for `choice`).
    pub fn parse(word: &str, choices: Option<&Value>) -> Result<Self, NotifyError> {
        let bad = |why: &str| NotifyError::BadRequest(why.to_owned());
        match word {
            "bool" => Ok(Self::Bool),
            "string" => Ok(Self::String),
            "choice" => {
                let list = choices
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("choices: a list of strings for a choice"))?;
                let choices: Vec<String> = list
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect();
                let fits = choices
                    .iter()
                    .all(|c| !c.is_empty() && c.len() <= NOTIFY_TEXT_MAX);
                if choices.len() != list.len() || choices.is_empty() || !fits {
                    return Err(bad("choices: non-empty strings"));
                }
                if choices.len() > NOTIFY_CHOICES_MAX {
                    return Err(bad("choices: at most 32"));
                }
                Ok(Self::Choice(choices))
            }
            _ => Err(bad("response_type: bool, string or choice")),
        }
    }

    /// Checks that `response` answers this type.
    pub fn check(&self, response: &Value) -> Result<(), NotifyError> {
        let fits = match (self, response) {
            (Self::Bool, Value::Bool(_)) => true,
            (Self::String, Value::String(text)) => text.len() <= NOTIFY_TEXT_MAX,
            (Self::Choice(choices), Value::String(text)) => choices.contains(text),
            _ => false,
        };
        match fits {
            true => Ok(()),
            false => Err(NotifyError::BadResponse(match self {
                Self::Bool => "the response must be true or false".to_owned(),
                Self::String => "the response must be a string".to_owned(),
                Self::Choice(choices) => format!("the response must be one of {choices:?}"),
            })),
        }
    }
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NotifyState {
    /// Waiting for its answer.
    Pending,
    /// Answered (once: a second answer is refused).
    Answered,
    /// Its time ran out unanswered.
    Expired,
    /// Withdrawn by the one who asked.
    Cancelled,
}

impl NotifyState {
    /// `pending`, `answered`, `expired` or `cancelled`.
    pub fn word(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Answered => "answered",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state of a word.
    pub fn parse(word: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Answered,
            Self::Expired,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|state| state.word() == word)
    }
}

/// Who asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The device asks; a person (operator, owner, console) answers.
    FromDevice,
    /// An operator asks; the device answers.
    ToDevice,
}

impl Direction {
    /// `from_device` or `to_device`.
    pub fn word(self) -> &'static str {
        match self {
            Self::FromDevice => "from_device",
            Self::ToDevice => "to_device",
        }
    }
}

/// One actionable notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The device's owner.
    pub owner: String,
    /// The device.
    pub udid: String,
    /// Its id, unique for the device: the device's own when it gave one, else the broker's.
    pub nid: String,
    /// Who asked.
    pub direction: Direction,
    /// The question.
    pub body: String,
    /// The answer it wants.
    pub response_type: ResponseType,
    /// The MQTT 5 Correlation Data it was raised with, given back with its answer.
    pub correlation: Option<Bytes>,
    /// Where it stands.
    pub state: NotifyState,
    /// The answer (JSON text), once answered.
    pub response: Option<String>,
    /// When it was raised.
    pub created: Time,
    /// When it expires unanswered.
    pub expires: Time,
    /// When it left `pending`.
    pub finished: Option<Time>,
    /// The message carrying what the device is owed (the answer, or the question asked of
    /// it), while its acknowledgement is awaited.
    pub message_id: Option<u64>,
    /// When the device acknowledged that message.
    pub delivered: Option<Time>,
}

impl Notification {
    /// What goes to the device: the answer, `{"notification":{"nid","response"}}`, or the
    /// question asked of it, `{"notification":{"nid","body","response_type","choices"?}}`.
    pub fn device_payload(&self) -> String {
        let mut inner = serde_json::Map::new();
        inner.insert("nid".into(), Value::String(self.nid.clone()));
        match self.direction {
            Direction::FromDevice => {
                let response = self.response_value().unwrap_or(Value::Null);
                inner.insert("response".into(), response);
            }
            Direction::ToDevice => {
                inner.insert("body".into(), Value::String(self.body.clone()));
                let word = self.response_type.word();
                inner.insert("response_type".into(), Value::String(word.to_owned()));
                if let ResponseType::Choice(choices) = &self.response_type {
                    inner.insert("choices".into(), choices.clone().into());
                }
            }
        }
        serde_json::json!({ "notification": inner }).to_string()
    }

    /// The answer as JSON.
    pub fn response_value(&self) -> Option<Value> {
        self.response
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
    }
}

/// Why a notification, or an answer, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    /// A payload or request that does not say what it must.
    #[error("{0}")]
    BadRequest(String),
    /// An answer that does not fit the response type.
    #[error("{0}")]
    BadResponse(String),
    /// No such notification (that the asker may see).
    #[error("no notification {0:?}")]
    NoNotification(String),
    /// The id names notifications of more than one device: the device must be named.
    #[error("notification id {0:?} is used by more than one device: name the udid")]
    Ambiguous(String),
    /// It is answered, expired or cancelled already.
    #[error("notification {nid:?} is {} already", state.word())]
    Finished {
        /// Its id.
        nid: String,
        /// Its state.
        state: NotifyState,
    },
    /// The device has too many pending.
    #[error("device {0:?} has {NOTIFY_PENDING_PER_DEVICE_MAX} notifications pending already")]
    TooMany(String),
    /// No such device.
    #[error("no device {0:?}")]
    NoDevice(String),
}

/// What a device says about notifications on its status channel.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceSays {
    /// A new notification: its body, response type, own id and time to live.
    Raise {
        /// The question.
        body: String,
        /// The answer it wants.
        response_type: ResponseType,
        /// The device's id for it.
        nid: Option<String>,
        /// Seconds it waits for an answer.
        ttl: Option<u32>,
    },
    /// Its answer to a notification asked of it.
    Answer {
        /// The notification.
        nid: String,
        /// The answer.
        response: Value,
    },
    /// It withdraws one of its notifications.
    Cancel {
        /// The notification.
        nid: String,
    },
}

/// What a payload on a device's status channel says about notifications: `None` for a
/// payload that is not a `{"notification": {...}}` object (a status, a registration), an
/// error for one that is but says it wrongly.
pub fn parse_device_payload(payload: &[u8]) -> Option<Result<DeviceSays, NotifyError>> {
    // Most status payloads are not notifications: no JSON is parsed for them.
    let mentions = payload.windows(14).any(|w| w == b"\"notification\"");
    if !mentions {
        return None;
    }
    let value: Value = serde_json::from_slice(payload).ok()?;
    let inner = value.get("notification")?.as_object()?;
    let bad = |why: &str| Some(Err(NotifyError::BadRequest(why.to_owned())));
    let nid = match inner.get("nid") {
        None | Some(Value::Null) => None,
        Some(Value::String(nid)) if !nid.is_empty() && nid.len() <= NOTIFY_TEXT_MAX => {
            Some(nid.clone())
        }
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(_) => return bad("nid: a non-empty string"),
    };
    if inner.get("cancel").and_then(Value::as_bool) == Some(true) {
        return Some(match nid {
            Some(nid) => Ok(DeviceSays::Cancel { nid }),
            None => Err(NotifyError::BadRequest("cancel: which nid".into())),
        });
    }
    if let Some(response) = inner.get("response") {
        return Some(match nid {
            Some(nid) => Ok(DeviceSays::Answer {
                nid,
                response: response.clone(),
            }),
            None => Err(NotifyError::BadRequest("response: to which nid".into())),
        });
    }
    let Some(body) = inner.get("body").and_then(Value::as_str) else {
        return bad("body: the question, a string");
    };
    if body.len() > NOTIFY_TEXT_MAX {
        return bad("body: at most 4096 bytes");
    }
    let word = inner
        .get("response_type")
        .and_then(Value::as_str)
        .unwrap_or("bool");
    let response_type = match ResponseType::parse(word, inner.get("choices")) {
        Ok(kind) => kind,
        Err(error) => return Some(Err(error)),
    };
    let ttl = inner
        .get("ttl")
        .and_then(Value::as_u64)
        .map(|secs| u32::try_from(secs).unwrap_or(u32::MAX));
    Some(Ok(DeviceSays::Raise {
        body: body.to_owned(),
        response_type,
        nid,
        ttl,
    }))
}

/// A time to live within bounds (the default without one).
pub fn ttl_secs(asked: Option<u32>) -> u32 {
    asked
        .filter(|&secs| secs > 0)
        .unwrap_or(NOTIFY_TTL_DEFAULT_SECS)
        .min(NOTIFY_TTL_MAX_SECS)
}

/// A notification's key: its device and id.
pub type NotifyKey = (String, String);

/// Every notification the broker keeps (pending, and finished ones for a while).
#[derive(Debug, Clone, Default)]
pub struct Notifications {
    by_key: BTreeMap<NotifyKey, Notification>,
    /// When each is due: a pending one to expire, a finished one to be forgotten.
    due: BTreeSet<(Time, NotifyKey)>,
    /// Messages whose acknowledgement by their device is awaited, by message id.
    awaiting: HashMap<u64, NotifyKey>,
    /// The number in the next id the broker assigns.
    next_assigned: u64,
}

impl Notifications {
    /// The notifications a store kept.
    pub fn from_records(records: Vec<Notification>) -> Self {
        let mut all = Self::default();
        for record in records {
            all.put(record);
        }
        all
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// One notification.
    pub fn get(&self, udid: &str, nid: &str) -> Option<&Notification> {
        self.by_key.get(&(udid.to_owned(), nid.to_owned()))
    }

    /// The notifications of this id (of every device, or of one), for an answer that may
    /// not name the device.
    pub fn with_nid<'a>(
        &'a self,
        nid: &'a str,
        udid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Notification> + 'a {
        self.by_key
            .values()
            .filter(move |n| n.nid == nid && udid.is_none_or(|u| n.udid == u))
    }

    /// Every notification, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Notification> {
        let mut all: Vec<&Notification> = self.by_key.values().collect();
        all.sort_by(|a, b| (a.created, &a.udid, &a.nid).cmp(&(b.created, &b.udid, &b.nid)));
        all.into_iter()
    }

    /// Notifications pending for a device.
    pub fn pending_of(&self, udid: &str) -> usize {
        self.of(udid)
            .filter(|n| n.state == NotifyState::Pending)
            .count()
    }

    /// The notifications of a device, by id.
    fn of<'a>(&'a self, udid: &'a str) -> impl Iterator<Item = &'a Notification> + 'a {
        self.by_key
            .range((udid.to_owned(), String::new())..)
            .take_while(move |((u, _), _)| u == udid)
            .map(|(_, n)| n)
    }

    /// The finished notification of `udid` to forget so that a new one fits within
    /// [`NOTIFY_KEPT_PER_DEVICE_MAX`]: its oldest finished, when it keeps that many.
    pub(crate) fn to_forget_for(&self, udid: &str) -> Option<NotifyKey> {
        if self.of(udid).count() < NOTIFY_KEPT_PER_DEVICE_MAX {
            return None;
        }
        self.of(udid)
            .filter(|n| n.finished.is_some())
            .min_by_key(|n| n.finished)
            .map(|n| (n.udid.clone(), n.nid.clone()))
    }

    /// When the first notification is due (to expire, or to be forgotten).
    pub(crate) fn next_due_at(&self) -> Option<Time> {
        self.due.first().map(|(at, _)| *at)
    }

    /// An id for a new notification of `udid`: `wanted` if the device has none of that id,
    /// else the broker's next (`n1`, `n2`, ...).
    pub fn id_for(&mut self, udid: &str, wanted: Option<String>) -> String {
        if let Some(nid) = wanted.filter(|nid| self.get(udid, nid).is_none()) {
            return nid;
        }
        loop {
            self.next_assigned += 1;
            let nid = format!("n{}", self.next_assigned);
            if self.get(udid, &nid).is_none() {
                return nid;
            }
        }
    }

    /// Records a notification, new or changed.
    pub(crate) fn put(&mut self, notification: Notification) {
        let key = (notification.udid.clone(), notification.nid.clone());
        if let Some(old) = self.by_key.get(&key) {
            self.due.remove(&(due_at(old), key.clone()));
        }
        if let Some(assigned) = notification.nid.strip_prefix('n') {
            if let Ok(n) = assigned.parse::<u64>() {
                self.next_assigned = self.next_assigned.max(n);
            }
        }
        match (notification.message_id, notification.delivered) {
            (Some(id), None) => {
                self.awaiting.insert(id, key.clone());
            }
            (Some(id), Some(_)) => {
                self.awaiting.remove(&id);
            }
            _ => {}
        }
        self.due.insert((due_at(&notification), key.clone()));
        self.by_key.insert(key, notification);
    }

    /// Forgets a notification.
    pub(crate) fn remove(&mut self, key: &NotifyKey) -> Option<Notification> {
        let old = self.by_key.remove(key)?;
        self.due.remove(&(due_at(&old), key.clone()));
        if let Some(id) = old.message_id {
            self.awaiting.remove(&id);
        }
        Some(old)
    }

    /// The notification whose message `message_id` is, if its acknowledgement is awaited.
    pub(crate) fn awaiting(&self, message_id: u64) -> Option<&NotifyKey> {
        if self.awaiting.is_empty() {
            return None;
        }
        self.awaiting.get(&message_id)
    }

    /// The first notification due at `now` (to expire, or to be forgotten).
    pub(crate) fn next_due(&self, now: Time) -> Option<NotifyKey> {
        self.due
            .first()
            .filter(|(at, _)| *at <= now)
            .map(|(_, key)| key.clone())
    }
}

/// When a notification is due: a pending one expires, a finished one is forgotten.
fn due_at(notification: &Notification) -> Time {
    match notification.finished {
        None => notification.expires,
        Some(at) => at.plus_secs(NOTIFY_KEEP_FINISHED_SECS),
    }
}
