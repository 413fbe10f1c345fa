//! Publishing: `POST /v1/pub/{topic…}` (the body is the payload) and `POST /v1/pub` (a JSON
//! batch), read into the PUBLISH packets the core routes. Query, headers and batch fields map
//! onto MQTT 5: `ttl` is the Message Expiry Interval, `Content-Type` the Content Type (and,
//! for text and JSON, Payload Format Indicator 1), `Mqtt-Response-Topic`,
//! `Mqtt-Correlation-Data` (base64url) and `Mqtt-User-Property: key=value` the properties of
//! those names; `age` says how long ago the reading was taken (a reading queued on the device
//! and sent on wake): it is subtracted from `ttl`, and kept as the user property
//! `tern-captured-at` (Unix seconds).

use std::collections::BTreeMap;

use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use tern_codec::{MqttString, PayloadFormat, Publish, QoS, TopicName};

use crate::error::ApiError;
use crate::signing::decode;

/// One message to publish: what the core gets, or nothing when it expired before it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub(crate) topic: String,
    pub(crate) publish: Option<Publish>,
}

/// The query of a request, decoded.
#[derive(Debug, Default)]
pub(crate) struct Query(BTreeMap<String, String>);

impl Query {
    pub(crate) fn parse(raw: &str) -> Result<Self, ApiError> {
        let mut map = BTreeMap::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let text = |part: &str| {
                decode(part)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| ApiError::bad_request("the query is not percent-encoded UTF-8"))
            };
            map.insert(text(name)?, text(value)?);
        }
        Ok(Self(map))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(crate) fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.get(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::bad_request(format!("{name}={v:?} is not a number")))
            })
            .transpose()
    }

    pub(crate) fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("0" | "false") => Ok(false),
            Some("" | "1" | "true") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "{name}={other:?}: use 0 or 1"
            ))),
        }
    }
}

/// The message fields every form shares.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fields {
    /// 0, 1 (default) or 2.
    #[serde(default)]
    pub(crate) qos: Option<u8>,
    /// Keep as the topic's retained message (an empty payload clears it).
    #[serde(default)]
    pub(crate) retain: bool,
    /// Message Expiry Interval, seconds.
    #[serde(default)]
    pub(crate) ttl: Option<u32>,
    /// Seconds since the reading was taken.
    #[serde(default)]
    pub(crate) age: Option<u32>,
    /// Content Type.
    #[serde(default)]
    pub(crate) content_type: Option<String>,
    /// Response Topic.
    #[serde(default)]
    pub(crate) response_topic: Option<String>,
    /// Correlation Data, base64url.
    #[serde(default)]
    pub(crate) correlation_data_b64: Option<String>,
    /// User properties, in order.
    #[serde(default)]
    pub(crate) user_properties: Vec<(String, String)>,
}

/// One item of a batch.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchItem {
    /// The topic name.
    pub(crate) topic: String,
    /// The payload as JSON: a string is kept as its text, anything else as its JSON text.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub(crate) payload: Option<serde_json::Value>,
    /// The payload as bytes, base64.
    #[serde(default)]
    pub(crate) payload_b64: Option<String>,
    #[serde(flatten)]
    pub(crate) fields: Fields,
}

/// The topic a single publish names: `?topic=` when given, else the path after `/v1/pub/`,
/// each level percent-decoded once (an encoded `/` inside a level is refused, so a path names
/// exactly one topic).
pub(crate) fn topic_of(raw_path: &str, query: &Query) -> Result<String, ApiError> {
    if let Some(topic) = query.get("topic") {
        return Ok(topic.to_owned());
    }
    let rest = raw_path.strip_prefix("/v1/pub/").unwrap_or_default();
    levels_of(rest, "topic_invalid")
}

/// A topic (or filter) spelled as path segments, each level percent-decoded once: an encoded
/// `/` inside a level is refused (`code`), so a path names exactly one topic.
pub(crate) fn levels_of(rest: &str, code: &'static str) -> Result<String, ApiError> {
    let mut levels = Vec::new();
    for level in rest.split('/') {
        let bytes = decode(level).map_err(|e| ApiError::new(400, code, e.to_string()))?;
        if bytes.contains(&b'/') {
            return Err(ApiError::new(
                400,
                code,
                "%2F inside a level: a path segment is one level (?topic= can name a topic)",
            ));
        }
        let level = String::from_utf8(bytes).map_err(|_| ApiError::new(400, code, "not UTF-8"))?;
        levels.push(level);
    }
    Ok(levels.join("/"))
}

/// A single publish: query parameters and headers around the body.
pub(crate) fn single(
    topic: String,
    query: &Query,
    headers: &[(&str, &[u8])],
    body: Bytes,
    now_unix: u64,
) -> Result<Item, ApiError> {
    fn header<'a>(headers: &'a [(&str, &'a [u8])], name: &'a str) -> impl Iterator<Item = &'a str> {
        headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| std::str::from_utf8(v).unwrap_or_default().trim())
    }
    let header = |name| header(headers, name);
    let mut user_properties = Vec::new();
    for value in header("mqtt-user-property") {
        let (key, value) = value.split_once('=').ok_or_else(|| {
            ApiError::bad_request("Mqtt-User-Property is key=value (one property per header)")
        })?;
        user_properties.push((key.to_owned(), value.to_owned()));
    }
    let fields = Fields {
        qos: query.number("qos")?,
        retain: query.flag("retain")?,
        ttl: query.number("ttl")?,
        age: query.number("age")?,
        content_type: header("content-type").next().map(str::to_owned),
        response_topic: header("mqtt-response-topic").next().map(str::to_owned),
        correlation_data_b64: header("mqtt-correlation-data").next().map(str::to_owned),
        user_properties,
    };
    build(topic, body, false, fields, now_unix)
}

/// A batch: a JSON array of [`BatchItem`]s, at most `items_max`.
pub(crate) fn batch(body: &[u8], items_max: usize, now_unix: u64) -> Result<Vec<Item>, ApiError> {
    let items: Vec<BatchItem> = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "payload_invalid", format!("the batch: {e}")))?;
    batch_items(items, items_max, now_unix)
}

/// The messages of a batch already read (`POST /v1/pub`, or a sync's `publish`).
pub(crate) fn batch_items(
    items: Vec<BatchItem>,
    items_max: usize,
    now_unix: u64,
) -> Result<Vec<Item>, ApiError> {
    if items.len() > items_max {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!("{} items in the batch; at most {items_max}", items.len()),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let (payload, text) = match (item.payload, item.payload_b64) {
                (Some(_), Some(_)) => {
                    return Err(ApiError::bad_request(format!(
                        "item {i}: payload or payload_b64, not both"
                    )))
                }
                (Some(serde_json::Value::String(text)), None) => (Bytes::from(text), true),
                (Some(value), None) => (Bytes::from(value.to_string()), true),
                (None, Some(b64)) => {
                    let bytes = STANDARD.decode(b64).map_err(|_| {
                        ApiError::new(400, "payload_invalid", format!("item {i}: bad base64"))
                    })?;
                    (Bytes::from(bytes), false)
                }
                (None, None) => (Bytes::new(), false),
            };
            build(item.topic, payload, text, item.fields, now_unix).map_err(|mut e| {
                e.message = format!("item {i}: {}", e.message);
                e
            })
        })
        .collect()
}

fn build(
    topic: String,
    payload: Bytes,
    text: bool,
    fields: Fields,
    now_unix: u64,
) -> Result<Item, ApiError> {
    let topic_invalid = |why: &str| ApiError::new(400, "topic_invalid", why.to_owned());
    let name = MqttString::new(&topic)
        .ok()
        .and_then(|s| TopicName::new(s).ok())
        .ok_or_else(|| topic_invalid("not a topic name (empty, a wildcard or U+0000)"))?;
    let qos = QoS::from_u8(fields.qos.unwrap_or(1))
        .ok_or_else(|| ApiError::bad_request("qos is 0, 1 or 2"))?;
    let mut publish = Publish::new(name, payload);
    publish.qos = qos;
    publish.retain = fields.retain;
    let properties = &mut publish.properties;
    let utf8 = text
        || fields.content_type.as_deref().is_some_and(|kind| {
            let kind = kind.to_ascii_lowercase();
            kind.starts_with("text/")
                || kind.starts_with("application/json")
                || kind.contains("+json")
        });
    if utf8 {
        if std::str::from_utf8(&publish.payload).is_err() {
            return Err(ApiError::new(
                400,
                "payload_invalid",
                "a text or JSON payload must be UTF-8",
            ));
        }
        properties.payload_format_indicator = Some(PayloadFormat::Utf8);
    }
    if let Some(kind) = fields.content_type {
        properties.content_type =
            Some(MqttString::new(&kind).map_err(|_| ApiError::bad_request("bad Content-Type"))?);
    }
    if let Some(response) = fields.response_topic {
        let response = MqttString::new(&response)
            .ok()
            .and_then(|s| TopicName::new(s).ok())
            .ok_or_else(|| topic_invalid("the response topic is not a topic name"))?;
        properties.response_topic = Some(response);
    }
    if let Some(data) = fields.correlation_data_b64 {
        let bytes = URL_SAFE_NO_PAD
            .decode(data.trim_end_matches('='))
            .or_else(|_| URL_SAFE.decode(&data))
            .map_err(|_| ApiError::bad_request("correlation data is not base64url"))?;
        properties.correlation_data = Some(Bytes::from(bytes));
    }
    let mut pairs = fields.user_properties;
    if let Some(age) = fields.age {
        pairs.push((
            "tern-captured-at".to_owned(),
            now_unix.saturating_sub(u64::from(age)).to_string(),
        ));
    }
    for (key, value) in &pairs {
        let (Ok(key), Ok(value)) = (MqttString::new(key), MqttString::new(value)) else {
            return Err(ApiError::bad_request(
                "a user property is not an MQTT string",
            ));
        };
        properties.user_properties.push(&key, &value);
    }
    match (fields.ttl, fields.age) {
        // Expired on the way: nothing to deliver.
        (Some(ttl), Some(age)) if age >= ttl => {
            return Ok(Item {
                topic,
                publish: None,
            })
        }
        (Some(ttl), age) => {
            properties.message_expiry_interval = Some(ttl - age.unwrap_or(0));
        }
        (None, _) => {}
    }
    Ok(Item {
        topic,
        publish: Some(publish),
    })
}

#[cfg(test)]
#[path = "publish_tests.rs"]
mod tests;
