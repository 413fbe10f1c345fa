//! JSON as `mosquitto_sub -F %j/%J` prints it: keys in the order given (a payload's own
//! order kept), minified, or with `--pretty` tab-indented like cJSON (`"key":<TAB>value`,
//! arrays on one line).

use std::fmt::Write as _;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that keeps its object keys in order (duplicates included: MQTT user
/// properties may repeat a key, and mosquitto prints them all).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// A number, already formatted.
    Number(String),
    String(String),
    Array(Vec<Self>),
    Object(Vec<(String, Self)>),
}

impl Json {
    pub(crate) fn string(text: impl Into<String>) -> Self {
        Self::String(text.into())
    }

    pub(crate) fn number(value: impl ToString) -> Self {
        Self::Number(value.to_string())
    }

    /// Parses a payload; `None` when it is not JSON.
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// The value as text, minified or pretty.
    pub(crate) fn render(&self, pretty: bool) -> String {
        let mut out = String::new();
        self.write(&mut out, pretty, 0);
        out
    }

    fn write(&self, out: &mut String, pretty: bool, depth: usize) {
        match self {
            Self::Null => out.push_str("null"),
            Self::Bool(value) => out.push_str(if *value { "true" } else { "false" }),
            Self::Number(text) => out.push_str(text),
            Self::String(text) => write_string(out, text),
            Self::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push_str(if pretty { ", " } else { "," });
                    }
                    item.write(out, pretty, depth + 1);
                }
                out.push(']');
            }
            Self::Object(fields) => {
                out.push('{');
                for (index, (key, value)) in fields.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    if pretty {
                        out.push('\n');
                        push_tabs(out, depth + 1);
                    }
                    write_string(out, key);
                    out.push(':');
                    if pretty {
                        out.push('\t');
                    }
                    value.write(out, pretty, depth + 1);
                }
                if pretty {
                    out.push('\n');
                    push_tabs(out, depth);
                }
                out.push('}');
            }
        }
    }
}

fn push_tabs(out: &mut String, count: usize) {
    for _ in 0..count {
        out.push('\t');
    }
}

fn write_string(out: &mut String, text: &str) {
    // serde_json escapes what JSON requires (quote, backslash, control characters) and
    // nothing else, as cJSON does.
    match serde_json::to_string(text) {
        Ok(escaped) => out.push_str(&escaped),
        Err(_) => {
            let _ = write!(out, "\"\"");
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Json, E> {
        Ok(Json::number(value))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Json, E> {
        Ok(Json::number(value))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Json, E> {
        Ok(Json::number(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Json, E> {
        Ok(Json::string(value))
    }

    fn visit_string<E>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut fields = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, Json>()? {
            fields.push((key, value));
        }
        Ok(Json::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::Json;

    #[test]
    fn keeps_key_order_and_prints_like_cjson() {
        let value = Json::parse(br#"{"z": [1, 2.5, {"b" : null}], "a":"x y"}"#);
        let value = value.unwrap_or(Json::Null);
        assert_eq!(value.render(false), r#"{"z":[1,2.5,{"b":null}],"a":"x y"}"#);
        assert_eq!(
            value.render(true),
            "{\n\t\"z\":\t[1, 2.5, {\n\t\t\t\"b\":\tnull\n\t\t}],\n\t\"a\":\t\"x y\"\n}"
        );
        assert_eq!(Json::parse(b"not json"), None);
    }
}
