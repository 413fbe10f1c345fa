//! Errors as the API answers them: a status and `{"error":{"code","message"}}`, the code stable
//! (clients branch on it), the message for people.

use bytes::Bytes;
use serde::Serialize;
use tern_core::RequestRefusal;

/// A refused request: its status, stable code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The stable code (`signature_invalid`, `acl_denied`, ...).
    pub code: &'static str,
    /// What happened, for people.
    pub message: String,
}

/// Every error answer.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// An error: a stable code and a message.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, for programs: `bad_request`, `topic_invalid`, `payload_invalid`,
    /// `signature_missing`, `signature_invalid`, `time_skew`, `nonce_replayed`, `acl_denied`,
    /// `access_denied`, `not_found`, `method_not_allowed`, `request_timeout`, `nonce_reused`,
    /// `request_in_progress`, `payload_too_large`, `quota_exceeded`, `rate_limited`,
    /// `unavailable`, `internal`, and for mailboxes `no_mailbox`, `mailbox_in_use`,
    /// `filter_invalid`, `not_subscribed`, `poll_superseded`, for devices awaiting approval
    /// `access_pending`, `access_rejected`, and for operators `token_missing`,
    /// `token_invalid`, `scope_denied`, `realm_denied`, `banned`, `no_session`,
    /// `no_retained`, `no_key`, `not_banned`, `no_access_request`, `key_exists`.
    pub(crate) code: String,
    /// For people; may change.
    pub(crate) message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    /// The JSON body.
    pub fn body(&self) -> Bytes {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
            },
        };
        Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
    }

    /// How a refused message of a publish (or a refused mailbox request, `topic` being the
    /// filter it names) is answered.
    pub(crate) fn from_refusal(refusal: RequestRefusal, topic: &str) -> Self {
        match refusal {
            RequestRefusal::NotAuthorized => Self::new(
                403,
                "acl_denied",
                format!("not allowed to publish to {topic:?}"),
            ),
            RequestRefusal::SessionOfAnotherIdentity => Self::new(
                403,
                "access_denied",
                "the client identifier belongs to a session of another identity",
            ),
            RequestRefusal::TopicInvalid(why) => {
                Self::new(400, "topic_invalid", format!("topic {topic:?}: {why}"))
            }
            RequestRefusal::QosNotSupported => {
                Self::bad_request("the QoS is above the broker's maximum")
            }
            RequestRefusal::RetainNotSupported => {
                Self::bad_request("the broker does not keep retained messages")
            }
            RequestRefusal::QuotaExceeded(why) => Self::new(429, "quota_exceeded", why),
            RequestRefusal::NotApplied => Self::new(
                409,
                "not_applied",
                "another message of the all-or-nothing batch was refused",
            ),
            RequestRefusal::NoMailbox => Self::new(
                404,
                "no_mailbox",
                "this client identifier has no mailbox: subscribe first (PUT /v1/mbox/subs/FILTER)",
            ),
            RequestRefusal::MailboxInUse => Self::new(
                409,
                "mailbox_in_use",
                "the client is connected over MQTT, where its messages go: poll once it is not",
            ),
            RequestRefusal::Banned => {
                Self::new(403, "banned", "an operator banned this client identifier")
            }
            RequestRefusal::FilterInvalid(why) => {
                Self::new(400, "filter_invalid", format!("filter {topic:?}: {why}"))
            }
        }
    }
}
