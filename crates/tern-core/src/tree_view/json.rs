//! JSON for tree views: payloads as JSON values, nesting values by their key path, and
//! spreading a published tree back into one payload per topic.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use std::borrow::Cow;

use bytes::Bytes;
use serde::de::IgnoredAny;
use serde_json::{Map, Value};

/// Key under which a non-UTF-8 payload travels, base64-encoded.
pub const BASE64_KEY: &str = "$base64";

/// Key for a topic's own value when deeper topics share its level (only with `#` / `**`).
pub const VALUE_KEY: &str = "$value";

/// Why a tree publish cannot be spread into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SpreadError {
    /// The payload is not JSON.
    #[error("payload is not JSON")]
    NotJson,
    /// The payload (or a value where a `*` level is spread) is not a JSON object.
    #[error("a JSON object was expected where the topic has a wildcard level")]
    NotAnObject,
    /// A key cannot be a topic level (it holds `/`, `+`, `#` or U+0000).
    #[error("a key is not a valid topic level")]
    BadKey,
    /// A filter with no wildcard needs exactly its last level as the only key.
    #[error("the object does not have the shape of the topic")]
    WrongShape,
    /// `**` is not the last level.
    #[error("`**` may only be the last level")]
    MisplacedDoubleStar,
    /// A `{"$base64": ...}` value does not hold valid base64.
    #[error("invalid base64 value")]
    BadBase64,
}

impl SpreadError {
    /// The reason as a fixed text, for events.
    pub fn detail(self) -> &'static str {
        match self {
            Self::NotJson => "payload is not JSON",
            Self::NotAnObject => "a JSON object was expected where the topic has a wildcard level",
            Self::BadKey => "a key is not a valid topic level",
            Self::WrongShape => "the object does not have the shape of the topic",
            Self::MisplacedDoubleStar => "`**` may only be the last level",
            Self::BadBase64 => "invalid base64 value",
        }
    }
}

/// The JSON value of a payload: JSON as is, other UTF-8 as a string, anything else as
/// `{"$base64": "..."}`.
pub fn payload_to_json(payload: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice::<Value>(payload) {
        return value;
    }
    match std::str::from_utf8(payload) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => {
            let mut object = Map::new();
            object.insert(BASE64_KEY.to_owned(), Value::String(BASE64.encode(payload)));
            Value::Object(object)
        }
    }
}

/// The payload a spread value is published with: the inverse of [`payload_to_json`]. A string
/// becomes its text, `null` the empty payload, `{"$base64": ...}` its bytes, anything else its
/// JSON text.
pub fn json_to_payload(value: &Value) -> Result<Bytes, SpreadError> {
    Ok(match value {
        Value::Null => Bytes::new(),
        Value::String(text) => Bytes::copy_from_slice(text.as_bytes()),
        Value::Object(object) if is_base64(object) => match object.get(BASE64_KEY) {
            Some(Value::String(encoded)) => BASE64
                .decode(encoded)
                .map(Bytes::from)
                .map_err(|_| SpreadError::BadBase64)?,
            _ => return Err(SpreadError::BadBase64),
        },
        other => Bytes::from(serde_json::to_vec(other).map_err(|_| SpreadError::NotJson)?),
    })
}

fn is_base64(object: &Map<String, Value>) -> bool {
    object.len() == 1 && object.contains_key(BASE64_KEY)
}

/// Builds one nested JSON object from values placed at key paths.
#[derive(Debug, Default)]
pub struct TreeBuilder {
    root: Map<String, Value>,
}

impl TreeBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `value` at `path`. A key that is both a value and a parent of deeper keys holds
    /// its own value under [`VALUE_KEY`].
    pub fn insert<'a>(&mut self, path: impl IntoIterator<Item = &'a str>, value: Value) {
        let mut path = path.into_iter().peekable();
        let mut object = &mut self.root;
        let Some(mut key) = path.next() else {
            object.insert(VALUE_KEY.to_owned(), value);
            return;
        };
        while path.peek().is_some() {
            let slot = object
                .entry(key.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !matches!(slot, Value::Object(_)) {
                // A value already sits where deeper keys now go: keep it under `$value`.
                let own = std::mem::replace(slot, Value::Object(Map::new()));
                if let Value::Object(inner) = slot {
                    inner.insert(VALUE_KEY.to_owned(), own);
                }
            }
            let Value::Object(inner) = slot else {
                unreachable!("made an object above")
            };
            object = inner;
            key = match path.next() {
                Some(next) => next,
                None => unreachable!("peeked"),
            };
        }
        match object.get_mut(key) {
            Some(Value::Object(inner)) if !inner.is_empty() && !is_base64(inner) => {
                inner.insert(VALUE_KEY.to_owned(), value);
            }
            _ => {
                object.insert(key.to_owned(), value);
            }
        }
    }

    /// Whether nothing was placed.
    pub fn is_empty(&self) -> bool {
        self.root.is_empty()
    }

    /// The JSON text of the tree.
    pub fn to_bytes(&self) -> Bytes {
        // Serialising a map of `Value`s cannot fail: every key is a string.
        Bytes::from(serde_json::to_vec(&self.root).unwrap_or_default())
    }
}

/// The JSON text of a payload's value (see [`payload_to_json`]): the payload itself when it is
/// JSON, so a snapshot copies values without parsing them into a tree.
fn payload_json_text(payload: &[u8]) -> Cow<'_, [u8]> {
    if serde_json::from_slice::<IgnoredAny>(payload).is_ok() {
        return Cow::Borrowed(payload);
    }
    Cow::Owned(serde_json::to_vec(&payload_to_json(payload)).unwrap_or_default())
}

/// Writes a JSON tree from values given in key-path order (a parent before its children,
/// siblings in order), as the ordered walk of the retained trie yields them, so a large
/// snapshot is written in pieces without a tree in memory. Equivalent to [`TreeBuilder`].
#[derive(Debug)]
pub struct TreeWriter {
    out: Vec<u8>,
    /// Keys of the objects open below the root.
    open: Vec<String>,
    need_comma: bool,
    /// The last value given, written once the next one shows whether it is also a parent.
    pending: Option<(Vec<String>, Vec<u8>)>,
}

impl Default for TreeWriter {
    fn default() -> Self {
        Self {
            out: vec![b'{'],
            open: Vec::new(),
            need_comma: false,
            pending: None,
        }
    }
}

impl TreeWriter {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the value of `payload` at `path`; paths must come in order.
    pub fn push(&mut self, path: &[&str], payload: &[u8]) {
        let value = payload_json_text(payload).into_owned();
        let path: Vec<String> = path.iter().map(|level| (*level).to_owned()).collect();
        if let Some((previous, previous_value)) = self.pending.take() {
            let parent = path.len() > previous.len() && path[..previous.len()] == previous[..];
            self.write(&previous, &previous_value, parent);
        }
        self.pending = Some((path, value));
    }

    /// The JSON text of the tree.
    pub fn finish(mut self) -> Bytes {
        if let Some((path, value)) = self.pending.take() {
            self.write(&path, &value, false);
        }
        for _ in 0..=self.open.len() {
            self.out.push(b'}');
        }
        Bytes::from(self.out)
    }

    fn write(&mut self, path: &[String], value: &[u8], parent: bool) {
        let (objects, key) = match (parent, path.split_last()) {
            (false, Some((last, objects))) => (objects, last.as_str()),
            _ => (path, VALUE_KEY),
        };
        let common = self
            .open
            .iter()
            .zip(objects)
            .take_while(|(a, b)| a == b)
            .count();
        while self.open.len() > common {
            self.open.pop();
            self.out.push(b'}');
            self.need_comma = true;
        }
        for level in &objects[common..] {
            self.key(level);
            self.out.push(b'{');
            self.need_comma = false;
            self.open.push(level.clone());
        }
        self.key(key);
        self.out.extend_from_slice(value);
        self.need_comma = true;
    }

    fn key(&mut self, key: &str) {
        if self.need_comma {
            self.out.push(b',');
        }
        // Writing a string into a vector cannot fail.
        let _ = serde_json::to_writer(&mut self.out, key);
        self.out.push(b':');
    }
}

/// Spreads the JSON object `payload`, published to the tree topic whose levels after `$tree/`
/// are `levels`, into `(topic, payload)` pairs: each `*` level takes the keys of the object at
/// its depth, a final `**` takes every remaining depth, a topic without either takes an
/// object whose only key is its last level.
pub fn spread(levels: &[&str], payload: &[u8]) -> Result<Vec<(String, Bytes)>, SpreadError> {
    let value: Value = serde_json::from_slice(payload).map_err(|_| SpreadError::NotJson)?;
    let Value::Object(object) = value else {
        return Err(SpreadError::NotAnObject);
    };
    let mut out = Vec::new();
    if !levels.iter().any(|l| *l == "*" || *l == "**") {
        let last = levels.last().copied().unwrap_or_default();
        match object.iter().next() {
            Some((key, value)) if object.len() == 1 && key == last => {
                out.push((levels.join("/"), json_to_payload(value)?));
                return Ok(out);
            }
            _ => return Err(SpreadError::WrongShape),
        }
    }
    let mut prefix = Vec::new();
    spread_levels(levels, &mut prefix, &Value::Object(object), &mut out)?;
    Ok(out)
}

fn spread_levels<'v>(
    levels: &[&'v str],
    prefix: &mut Vec<&'v str>,
    value: &'v Value,
    out: &mut Vec<(String, Bytes)>,
) -> Result<(), SpreadError> {
    match levels.split_first() {
        None => out.push((prefix.join("/"), json_to_payload(value)?)),
        Some((&"*", rest)) => {
            let Value::Object(object) = value else {
                return Err(SpreadError::NotAnObject);
            };
            for (key, child) in object {
                prefix.push(checked_level(key)?);
                spread_levels(rest, prefix, child, out)?;
                prefix.pop();
            }
        }
        Some((&"**", [])) => {
            let Value::Object(object) = value else {
                return Err(SpreadError::NotAnObject);
            };
            spread_all(prefix, object, out)?;
        }
        Some((&"**", _)) => return Err(SpreadError::MisplacedDoubleStar),
        Some((&level, rest)) => {
            prefix.push(level);
            spread_levels(rest, prefix, value, out)?;
            prefix.pop();
        }
    }
    Ok(())
}

fn spread_all<'v>(
    prefix: &mut Vec<&'v str>,
    object: &'v Map<String, Value>,
    out: &mut Vec<(String, Bytes)>,
) -> Result<(), SpreadError> {
    for (key, child) in object {
        if key == VALUE_KEY {
            if prefix.is_empty() {
                return Err(SpreadError::WrongShape);
            }
            out.push((prefix.join("/"), json_to_payload(child)?));
            continue;
        }
        prefix.push(checked_level(key)?);
        match child {
            Value::Object(inner) if !is_base64(inner) => spread_all(prefix, inner, out)?,
            leaf => out.push((prefix.join("/"), json_to_payload(leaf)?)),
        }
        prefix.pop();
    }
    Ok(())
}

fn checked_level(key: &str) -> Result<&str, SpreadError> {
    if key.contains(['/', '+', '#', '\0']) {
        return Err(SpreadError::BadKey);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn payload_values() {
        assert_eq!(payload_to_json(b"1"), json!(1));
        assert_eq!(payload_to_json(br#"{"a":[1,2]}"#), json!({"a": [1, 2]}));
        assert_eq!(payload_to_json(b"on"), json!("on"));
        assert_eq!(payload_to_json(b""), json!(""));
        assert_eq!(payload_to_json(&[0xff, 0x00]), json!({"$base64": "/wA="}));
        for value in [
            json!("on"),
            json!(1),
            json!({"$base64": "/wA="}),
            json!([1]),
        ] {
            let payload = json_to_payload(&value).unwrap_or_default();
            assert_eq!(payload_to_json(&payload), value);
        }
    }

    #[test]
    fn builder_nests_and_keeps_own_values() {
        let mut tree = TreeBuilder::new();
        tree.insert(["bedroom", "is_on"], json!(1));
        tree.insert(["bedroom", "brightness"], json!(55));
        tree.insert(["a"], json!(1));
        tree.insert(["a", "b"], json!(2));
        tree.insert(["c", "d"], json!(3));
        tree.insert(["c"], json!(4));
        let text = String::from_utf8(tree.to_bytes().to_vec()).unwrap_or_default();
        assert_eq!(
            text,
            r#"{"a":{"$value":1,"b":2},"bedroom":{"brightness":55,"is_on":1},"c":{"$value":4,"d":3}}"#
        );
    }

    #[test]
    fn writer_agrees_with_builder() {
        let entries: [(&[&str], &[u8]); 7] = [
            (&[], b"0"),
            (&["a"], b"1"),
            (&["a", "b"], b"on"),
            (&["a", "b", "c"], b"[1, 2]"),
            (&["a", "d"], &[0xff]),
            (&["e", "f"], b"{\"x\":1}"),
            (&["g"], b""),
        ];
        for n in 0..=entries.len() {
            let mut builder = TreeBuilder::new();
            let mut writer = TreeWriter::new();
            for (path, payload) in &entries[..n] {
                builder.insert(path.iter().copied(), payload_to_json(payload));
                writer.push(path, payload);
            }
            let written: Value = serde_json::from_slice(&writer.finish()).unwrap();
            let built: Value = serde_json::from_slice(&builder.to_bytes()).unwrap();
            assert_eq!(written, built, "first {n} entries");
        }
    }

    #[test]
    fn spread_shapes() {
        let got = spread(&["light", "bedroom", "*"], br#"{"is_on":1,"color":"red"}"#);
        assert_eq!(
            got,
            Ok(vec![
                ("light/bedroom/color".to_owned(), Bytes::from_static(b"red")),
                ("light/bedroom/is_on".to_owned(), Bytes::from_static(b"1")),
            ])
        );
        let got = spread(&["s", "**"], br#"{"a":{"$value":1,"b":{"c":null}}}"#);
        assert_eq!(
            got,
            Ok(vec![
                ("s/a".to_owned(), Bytes::from_static(b"1")),
                ("s/a/b/c".to_owned(), Bytes::new()),
            ])
        );
        assert_eq!(
            spread(&["a", "b"], br#"{"b":true}"#),
            Ok(vec![("a/b".to_owned(), Bytes::from_static(b"true"))])
        );
        assert_eq!(
            spread(&["a", "b"], br#"{"c":1}"#),
            Err(SpreadError::WrongShape)
        );
        assert_eq!(spread(&["a", "*"], b"[1]"), Err(SpreadError::NotAnObject));
        assert_eq!(spread(&["a", "*"], b"nope"), Err(SpreadError::NotJson));
        assert_eq!(
            spread(&["*", "*"], br#"{"x":1}"#),
            Err(SpreadError::NotAnObject)
        );
        assert_eq!(spread(&["*"], br#"{"x/y":1}"#), Err(SpreadError::BadKey));
        assert_eq!(
            spread(&["**", "a"], br#"{"x":1}"#),
            Err(SpreadError::MisplacedDoubleStar)
        );
    }
}
