//! Request/response on top of publish/subscribe.
//!
//! MQTT 5: a request carries Response Topic and Correlation Data (4.10); the responder
//! publishes its answer to that topic with the same correlation data. A handler's error travels
//! back as a response with the user properties `error` (the error's name) and `error-message`.
//! A request whose PUBACK says 0x10 No matching subscribers fails at once with `NoResponder`.
//!
//! MQTT 3.1.1 has no such properties, so the same information travels in a small envelope at
//! the head of the payload (see [`Envelope`] and docs/client.md).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tern_codec::{MqttString, ProtocolVersion, Publish, QoS, ReasonCode, UserProperties};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::{PublishError, RequestError, SubscribeError};

/// User property naming a handler's error in an error response.
pub const ERROR_PROPERTY: &str = "error";
/// User property carrying a handler's error message in an error response.
pub const ERROR_MESSAGE_PROPERTY: &str = "error-message";
/// The first bytes of a 3.1.1 envelope.
pub const ENVELOPE_MAGIC: &[u8; 4] = b"TRR1";

type Waiters = HashMap<Bytes, oneshot::Sender<Response>>;

/// The requester's side: one reply topic per client, subscribed on first use.
#[derive(Debug, Default)]
pub(crate) struct Replies {
    topic: tokio::sync::OnceCell<String>,
    waiters: Arc<Mutex<Waiters>>,
}

/// A response as received.
#[derive(Debug, Clone)]
pub struct Response {
    /// The response payload.
    pub payload: Bytes,
    /// Error name and message, when the responder's handler failed.
    pub error: Option<(String, String)>,
    /// The full message (MQTT 5 properties included).
    pub publish: Publish,
}

/// A request as a handler sees it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The topic the request was published to.
    pub topic: String,
    /// The request payload (the envelope removed, for 3.1.1).
    pub payload: Bytes,
    /// The full message (MQTT 5 properties included).
    pub publish: Publish,
}

/// The error a handler returns; it reaches the requester as `RequestError::Remote`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {message}")]
pub struct HandlerError {
    /// A short name for the kind of error, e.g. `not-found`.
    pub name: String,
    /// A human-readable message.
    pub message: String,
}

impl HandlerError {
    /// An error with this name and message.
    pub fn new(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            message: message.into(),
        }
    }
}

/// The 3.1.1 fallback: the request and response metadata at the head of the payload.
///
/// ```text
/// "TRR1"                       magic
/// u8                           kind: 1 request, 2 response, 3 error response
/// u16 length + bytes           reply topic (requests; empty otherwise)
/// u16 length + bytes           correlation id
/// u16 length + bytes, twice    error name and message (error responses only)
/// ...                          the payload
/// ```
/// Lengths are big-endian, as everywhere in MQTT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Where to publish the response (requests only).
    pub reply_topic: String,
    /// Matches a response to its request.
    pub correlation: Bytes,
    /// Error name and message (error responses only).
    pub error: Option<(String, String)>,
    /// Whether this is a request (else a response).
    pub is_request: bool,
    /// The application payload.
    pub payload: Bytes,
}

impl Envelope {
    /// Encodes the envelope and payload.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(16 + self.reply_topic.len() + self.payload.len());
        buf.put_slice(ENVELOPE_MAGIC);
        buf.put_u8(match (self.is_request, &self.error) {
            (true, _) => 1,
            (false, None) => 2,
            (false, Some(_)) => 3,
        });
        put_field(&mut buf, self.reply_topic.as_bytes());
        put_field(&mut buf, &self.correlation);
        if let Some((name, message)) = &self.error {
            put_field(&mut buf, name.as_bytes());
            put_field(&mut buf, message.as_bytes());
        }
        buf.put_slice(&self.payload);
        buf.freeze()
    }

    /// Decodes an envelope; `None` if the payload is not one.
    pub fn decode(mut bytes: Bytes) -> Option<Self> {
        if bytes.len() < 5 || &bytes[..4] != ENVELOPE_MAGIC {
            return None;
        }
        bytes.advance(4);
        let kind = bytes.get_u8();
        let reply_topic = String::from_utf8(take_field(&mut bytes)?.to_vec()).ok()?;
        let correlation = take_field(&mut bytes)?;
        let error = match kind {
            1 | 2 => None,
            3 => {
                let name = String::from_utf8_lossy(&take_field(&mut bytes)?).into_owned();
                let message = String::from_utf8_lossy(&take_field(&mut bytes)?).into_owned();
                Some((name, message))
            }
            _ => return None,
        };
        Some(Self {
            reply_topic,
            correlation,
            error,
            is_request: kind == 1,
            payload: bytes,
        })
    }
}

fn put_field(buf: &mut BytesMut, field: &[u8]) {
    let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
    buf.put_u16(len);
    buf.put_slice(&field[..usize::from(len)]);
}

fn take_field(bytes: &mut Bytes) -> Option<Bytes> {
    if bytes.len() < 2 {
        return None;
    }
    let len = usize::from(bytes.get_u16());
    (bytes.len() >= len).then(|| bytes.split_to(len))
}

fn user_property(publish: &Publish, key: &str) -> Option<String> {
    publish
        .properties
        .user_properties
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

impl Client {
    fn is_v5(&self) -> bool {
        self.options().version == ProtocolVersion::V5
    }

    /// Sends `payload` to `topic` as a request and waits up to `timeout` for the response.
    pub async fn request(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Response, RequestError> {
        tokio::time::timeout(timeout, self.request_inner(topic, payload.into()))
            .await
            .map_err(|_| RequestError::Timeout)?
    }

    async fn request_inner(&self, topic: &str, payload: Bytes) -> Result<Response, RequestError> {
        let reply_topic = self.reply_topic().await?;
        let correlation = Bytes::from(fastrand::u128(..).to_be_bytes().to_vec());
        let (tx, rx) = oneshot::channel();
        let waiters = self.replies.waiters.clone();
        lock(&waiters).insert(correlation.clone(), tx);
        // Remove the waiter however this future ends (response, error, timeout).
        let _guard = WaiterGuard {
            waiters,
            correlation: correlation.clone(),
        };
        let mut publish = if self.is_v5() {
            let mut publish = crate::message(topic, payload)?;
            publish.properties.response_topic = Some(crate::topic_name(&reply_topic)?);
            publish.properties.correlation_data = Some(correlation);
            publish
        } else {
            let envelope = Envelope {
                reply_topic,
                correlation,
                error: None,
                is_request: true,
                payload,
            };
            crate::message(topic, envelope.encode())?
        };
        publish.qos = QoS::AtLeastOnce;
        let code = self.send(publish).await?.await?;
        if code == ReasonCode::NoMatchingSubscribers {
            return Err(RequestError::NoResponder);
        }
        let response = rx
            .await
            .map_err(|_| RequestError::Publish(PublishError::Closed))?;
        match response.error {
            Some((name, message)) => Err(RequestError::Remote { name, message }),
            None => Ok(response),
        }
    }

    /// The client's reply topic, subscribed to on first use.
    async fn reply_topic(&self) -> Result<String, SubscribeError> {
        let topic = self
            .replies
            .topic
            .get_or_try_init(|| async {
                let topic = format!(
                    "tern/reply/{}/{:016x}",
                    sanitize(&self.options().client_id),
                    fastrand::u64(..)
                );
                let mut messages = self.subscribe(&topic, QoS::AtLeastOnce).await?;
                let waiters = self.replies.waiters.clone();
                let v5 = self.is_v5();
                tokio::spawn(async move {
                    while let Some(publish) = messages.recv().await {
                        let Some((correlation, response)) = parse_response(publish, v5) else {
                            continue;
                        };
                        if let Some(waiter) = lock(&waiters).remove(&correlation) {
                            let _ = waiter.send(response);
                        }
                    }
                });
                Ok::<_, SubscribeError>(topic)
            })
            .await?;
        Ok(topic.clone())
    }

    /// Answers requests on `filter` with `handler`, each in its own task, until the client
    /// stops. A handler's `Err` is sent back as an error response.
    pub async fn serve<F, Fut>(
        &self,
        filter: &str,
        handler: F,
    ) -> Result<JoinHandle<()>, SubscribeError>
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
    {
        let mut messages = self.subscribe(filter, QoS::AtLeastOnce).await?;
        let client = self.clone();
        let handler = Arc::new(handler);
        Ok(tokio::spawn(async move {
            while let Some(publish) = messages.recv().await {
                let client = client.clone();
                let handler = handler.clone();
                tokio::spawn(async move { client.answer(publish, handler.as_ref()).await });
            }
        }))
    }

    async fn answer<F, Fut>(&self, publish: Publish, handler: &F)
    where
        F: Fn(Request) -> Fut,
        Fut: Future<Output = Result<Bytes, HandlerError>>,
    {
        let v5 = self.is_v5();
        let (reply_topic, correlation, payload) = if v5 {
            let Some(reply) = publish.properties.response_topic.clone() else {
                return;
            };
            let correlation = publish
                .properties
                .correlation_data
                .clone()
                .unwrap_or_default();
            (
                reply.as_str().to_owned(),
                correlation,
                publish.payload.clone(),
            )
        } else {
            let Some(envelope) = Envelope::decode(publish.payload.clone()) else {
                return;
            };
            if !envelope.is_request {
                return;
            }
            (envelope.reply_topic, envelope.correlation, envelope.payload)
        };
        let request = Request {
            topic: publish.topic.as_str().to_owned(),
            payload,
            publish,
        };
        let outcome = handler(request).await;
        let Ok(mut response) = (if v5 {
            let (payload, error) = match outcome {
                Ok(payload) => (payload, None),
                Err(error) => (Bytes::new(), Some(error)),
            };
            crate::message(&reply_topic, payload).map(|mut response| {
                response.properties.correlation_data = Some(correlation);
                if let Some(error) = error {
                    response.properties.user_properties = error_properties(&error);
                }
                response
            })
        } else {
            let (payload, error) = match outcome {
                Ok(payload) => (payload, None),
                Err(error) => (Bytes::new(), Some((error.name, error.message))),
            };
            let envelope = Envelope {
                reply_topic: String::new(),
                correlation,
                error,
                is_request: false,
                payload,
            };
            crate::message(&reply_topic, envelope.encode())
        }) else {
            return;
        };
        response.qos = QoS::AtLeastOnce;
        if let Err(error) = self.send(response).await {
            tracing::debug!(%error, "cannot send a response");
        }
    }
}

fn error_properties(error: &HandlerError) -> UserProperties {
    let mut properties = UserProperties::new();
    let pairs = [
        (ERROR_PROPERTY, error.name.as_str()),
        (ERROR_MESSAGE_PROPERTY, error.message.as_str()),
    ];
    for (key, value) in pairs {
        if let (Ok(key), Ok(value)) = (MqttString::new(key), MqttString::new(value)) {
            properties.push(&key, &value);
        }
    }
    properties
}

fn parse_response(publish: Publish, v5: bool) -> Option<(Bytes, Response)> {
    if v5 {
        let correlation = publish.properties.correlation_data.clone()?;
        let error = user_property(&publish, ERROR_PROPERTY).map(|name| {
            let message = user_property(&publish, ERROR_MESSAGE_PROPERTY)
                .unwrap_or_else(|| String::from_utf8_lossy(&publish.payload).into_owned());
            (name, message)
        });
        let payload = publish.payload.clone();
        Some((
            correlation,
            Response {
                payload,
                error,
                publish,
            },
        ))
    } else {
        let envelope = Envelope::decode(publish.payload.clone())?;
        let response = Response {
            payload: envelope.payload,
            error: envelope.error,
            publish,
        };
        Some((envelope.correlation, response))
    }
}

/// Topic-safe form of a client id for the reply topic.
fn sanitize(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c == '+' || c == '#' || c == '/' {
                '_'
            } else {
                c
            }
        })
        .collect();
    if cleaned.is_empty() {
        "anonymous".to_owned()
    } else {
        cleaned
    }
}

fn lock(waiters: &Mutex<Waiters>) -> std::sync::MutexGuard<'_, Waiters> {
    // A panic elsewhere cannot leave the map inconsistent (single inserts and removes).
    waiters
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct WaiterGuard {
    waiters: Arc<Mutex<Waiters>>,
    correlation: Bytes,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        lock(&self.waiters).remove(&self.correlation);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let request = Envelope {
            reply_topic: "r/1".into(),
            correlation: Bytes::from_static(b"\x01\x02"),
            error: None,
            is_request: true,
            payload: Bytes::from_static(b"body"),
        };
        assert_eq!(Envelope::decode(request.encode()), Some(request));
        let failure = Envelope {
            reply_topic: String::new(),
            correlation: Bytes::from_static(b"c"),
            error: Some(("not-found".into(), "no such item".into())),
            is_request: false,
            payload: Bytes::new(),
        };
        assert_eq!(Envelope::decode(failure.encode()), Some(failure));
        assert_eq!(Envelope::decode(Bytes::from_static(b"plain payload")), None);
        assert_eq!(
            Envelope::decode(Bytes::from_static(b"TRR1\x01\x00\x05ab")),
            None
        );
    }
}
