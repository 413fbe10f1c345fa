//! `tern sub -F`: mosquitto_sub's output format. `%` sequences print the message (with
//! printf-like flags `-` and `0`, a field width and a maximum width), `@` sequences go to
//! strftime (`@N`: nanoseconds), `\` sequences are escapes. The format is parsed once, so a
//! bad one is refused before connecting.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Local};
use tern_client::codec::PayloadFormat;
use tern_client::Publish;

use super::json::Json;

/// One piece of a format string.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(Vec<u8>),
    Field(Field),
    /// `@X`, passed to strftime as `%X`.
    Time(String),
    /// `@N`: nanoseconds within the second.
    Nanos,
}

/// A `%` parameter with its flags and widths.
#[derive(Debug, Clone, PartialEq)]
struct Field {
    kind: char,
    left: bool,
    zero: bool,
    width: Option<usize>,
    max: Option<usize>,
}

/// A parsed `-F` format.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Format {
    pieces: Vec<Piece>,
    pretty: bool,
}

const FIELDS: &str = "ACDEFIjJlmPpqRrStUxX";

impl Format {
    /// Parses a format string; errors read like mosquitto_sub's.
    pub(crate) fn parse(text: &str, pretty: bool) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut literal = Vec::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let mut field = Field {
                        kind: '%',
                        left: false,
                        zero: false,
                        width: None,
                        max: None,
                    };
                    while let Some(&flag) = chars.peek() {
                        match flag {
                            '-' => field.left = true,
                            '0' => field.zero = true,
                            _ => break,
                        }
                        chars.next();
                    }
                    field.width = digits(&mut chars);
                    if chars.peek() == Some(&'.') {
                        chars.next();
                        field.max = Some(digits(&mut chars).unwrap_or(0));
                    }
                    let kind = chars.next().ok_or("Incomplete format specifier.")?;
                    if kind == '%' {
                        literal.push(b'%');
                        continue;
                    }
                    if !FIELDS.contains(kind) {
                        return Err(format!("Invalid format specifier '{kind}'."));
                    }
                    field.kind = kind;
                    flush(&mut pieces, &mut literal);
                    pieces.push(Piece::Field(field));
                }
                '@' => {
                    let spec = chars.next().ok_or("Incomplete format specifier.")?;
                    match spec {
                        '@' => literal.push(b'@'),
                        'N' => {
                            flush(&mut pieces, &mut literal);
                            pieces.push(Piece::Nanos);
                        }
                        other => {
                            let pattern = format!("%{other}");
                            if StrftimeItems::new(&pattern).any(|item| matches!(item, Item::Error))
                            {
                                return Err(format!("Invalid time format specifier '{other}'."));
                            }
                            flush(&mut pieces, &mut literal);
                            pieces.push(Piece::Time(pattern));
                        }
                    }
                }
                '\\' => {
                    let escape = chars.next().ok_or("Incomplete escape specifier.")?;
                    literal.push(match escape {
                        '\\' => b'\\',
                        '0' => 0,
                        'a' => 0x07,
                        'e' => 0x1b,
                        'n' => b'\n',
                        'r' => b'\r',
                        't' => b'\t',
                        'v' => 0x0b,
                        other => return Err(format!("Invalid escape specifier '{other}'.")),
                    });
                }
                other => {
                    let mut buf = [0u8; 4];
                    literal.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        flush(&mut pieces, &mut literal);
        Ok(Self { pieces, pretty })
    }

    /// Renders one message received at `now`; `Err` names what cannot be printed (a `%J`
    /// payload that is not JSON).
    pub(crate) fn render(
        &self,
        message: &Publish,
        now: DateTime<Local>,
    ) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(bytes) => out.extend_from_slice(bytes),
                Piece::Nanos => {
                    out.extend_from_slice(format!("{:09}", now.timestamp_subsec_nanos()).as_bytes())
                }
                Piece::Time(pattern) => {
                    let mut text = String::new();
                    // Validated when parsed; a pattern chrono cannot render prints nothing.
                    let _ = write!(text, "{}", now.format(pattern));
                    out.extend_from_slice(text.as_bytes());
                }
                Piece::Field(field) => self.field(&mut out, field, message, now)?,
            }
        }
        Ok(out)
    }

    fn field(
        &self,
        out: &mut Vec<u8>,
        field: &Field,
        message: &Publish,
        now: DateTime<Local>,
    ) -> Result<(), String> {
        let p = &message.properties;
        let number = |out: &mut Vec<u8>, value: Option<u64>| {
            if let Some(value) = value {
                pad(out, field, value.to_string().as_bytes(), true);
            }
        };
        let text = |out: &mut Vec<u8>, value: Option<&[u8]>| {
            if let Some(value) = value {
                let value = match field.max {
                    Some(max) => truncate(value, max),
                    None => value,
                };
                pad(out, field, value, false);
            }
        };
        match field.kind {
            'A' => number(out, p.topic_alias.map(u64::from)),
            'C' => text(out, p.content_type.as_ref().map(|c| c.as_str().as_bytes())),
            'D' => {
                if let Some(data) = &p.correlation_data {
                    out.extend_from_slice(data);
                }
            }
            'E' => number(out, p.message_expiry_interval.map(u64::from)),
            'F' => number(
                out,
                p.payload_format_indicator
                    .map(|f| u64::from(f == PayloadFormat::Utf8)),
            ),
            'I' => text(
                out,
                Some(now.format("%Y-%m-%dT%H:%M:%S%z").to_string().as_bytes()),
            ),
            'j' => {
                out.extend_from_slice(to_json(message, now, false)?.render(self.pretty).as_bytes())
            }
            'J' => {
                out.extend_from_slice(to_json(message, now, true)?.render(self.pretty).as_bytes())
            }
            'l' => number(out, Some(message.payload.len() as u64)),
            'm' => number(
                out,
                Some(message.packet_id.map_or(0, |id| u64::from(id.get()))),
            ),
            'P' => {
                let pairs: Vec<String> = p
                    .user_properties
                    .iter()
                    .map(|(key, value)| format!("{key}:{value}"))
                    .collect();
                out.extend_from_slice(pairs.join(" ").as_bytes());
            }
            'p' => pad(out, field, &message.payload, false),
            'q' => out.extend_from_slice((message.qos as u8).to_string().as_bytes()),
            'R' => text(
                out,
                p.response_topic.as_ref().map(|t| t.as_str().as_bytes()),
            ),
            'r' => out.push(if message.retain { b'1' } else { b'0' }),
            'S' => {
                let ids: Vec<String> = p
                    .subscription_identifiers
                    .iter()
                    .map(|id| id.to_string())
                    .collect();
                if !ids.is_empty() {
                    pad(out, field, ids.join(" ").as_bytes(), true);
                }
            }
            't' => text(out, Some(message.topic.as_str().as_bytes())),
            'U' => out.extend_from_slice(
                format!("{}.{:09}", now.timestamp(), now.timestamp_subsec_nanos()).as_bytes(),
            ),
            'x' | 'X' => {
                let hex: String = message
                    .payload
                    .iter()
                    .map(|b| {
                        if field.kind == 'x' {
                            format!("{b:02x}")
                        } else {
                            format!("{b:02X}")
                        }
                    })
                    .collect();
                pad(out, field, hex.as_bytes(), true);
            }
            _ => {}
        }
        Ok(())
    }
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut value: Option<usize> = None;
    while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
        value = Some(
            value
                .unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(digit as usize),
        );
        chars.next();
    }
    value
}

fn flush(pieces: &mut Vec<Piece>, literal: &mut Vec<u8>) {
    if !literal.is_empty() {
        pieces.push(Piece::Literal(std::mem::take(literal)));
    }
}

/// At most `max` characters of `value` (bytes, when it is not UTF-8).
fn truncate(value: &[u8], max: usize) -> &[u8] {
    match std::str::from_utf8(value) {
        Ok(text) => match text.char_indices().nth(max) {
            Some((end, _)) => &value[..end],
            None => value,
        },
        Err(_) => &value[..value.len().min(max)],
    }
}

/// Pads `value` to the field width: left-aligned with `-`, else right-aligned with blanks,
/// or zeros when `0` is given for a numeric parameter.
fn pad(out: &mut Vec<u8>, field: &Field, value: &[u8], numeric: bool) {
    let len = std::str::from_utf8(value).map_or(value.len(), |t| t.chars().count());
    let fill = field.width.unwrap_or(0).saturating_sub(len);
    if field.left {
        out.extend_from_slice(value);
        out.extend(std::iter::repeat_n(b' ', fill));
    } else {
        let byte = if field.zero && numeric { b'0' } else { b' ' };
        out.extend(std::iter::repeat_n(byte, fill));
        out.extend_from_slice(value);
    }
}

/// The message as `%j` (payload as a string) or `%J` (payload as JSON) prints it.
fn to_json(message: &Publish, now: DateTime<Local>, raw_payload: bool) -> Result<Json, String> {
    let mut fields = vec![
        (
            "tst".to_owned(),
            Json::string(now.format("%Y-%m-%dT%H:%M:%S%.6fZ%z").to_string()),
        ),
        ("topic".to_owned(), Json::string(message.topic.as_str())),
        ("qos".to_owned(), Json::number(message.qos as u8)),
        ("retain".to_owned(), Json::number(u8::from(message.retain))),
        ("payloadlen".to_owned(), Json::number(message.payload.len())),
    ];
    if let Some(id) = message.packet_id {
        fields.push(("mid".to_owned(), Json::number(id.get())));
    }
    let properties = properties_json(message);
    if !properties.is_empty() {
        fields.push(("properties".to_owned(), Json::Object(properties)));
    }
    if raw_payload {
        let payload = Json::parse(&message.payload).ok_or_else(|| {
            format!(
                "Message payload is not valid JSON on topic {}.",
                message.topic.as_str()
            )
        })?;
        fields.push(("payload".to_owned(), payload));
    } else {
        match std::str::from_utf8(&message.payload) {
            Ok(text) => fields.push(("payload".to_owned(), Json::string(text))),
            // mosquitto prints such a payload cut at its first invalid byte; Tern keeps it
            // whole, in hex.
            Err(_) => fields.push((
                "payload_hex".to_owned(),
                Json::string(hex(&message.payload)),
            )),
        }
    }
    Ok(Json::Object(fields))
}

fn properties_json(message: &Publish) -> Vec<(String, Json)> {
    let p = &message.properties;
    let mut fields = Vec::new();
    if let Some(format) = p.payload_format_indicator {
        let value = u8::from(format == PayloadFormat::Utf8);
        fields.push(("payload-format-indicator".to_owned(), Json::number(value)));
    }
    if let Some(expiry) = p.message_expiry_interval {
        fields.push(("message-expiry-interval".to_owned(), Json::number(expiry)));
    }
    if let Some(topic) = &p.response_topic {
        fields.push(("response-topic".to_owned(), Json::string(topic.as_str())));
    }
    if let Some(data) = &p.correlation_data {
        fields.push((
            "correlation-data".to_owned(),
            Json::string(String::from_utf8_lossy(data)),
        ));
    }
    for id in p.subscription_identifiers.iter() {
        fields.push(("subscription-identifier".to_owned(), Json::number(id)));
    }
    if let Some(content_type) = &p.content_type {
        fields.push((
            "content-type".to_owned(),
            Json::string(content_type.as_str()),
        ));
    }
    if !p.user_properties.is_empty() {
        let pairs = p
            .user_properties
            .iter()
            .map(|(key, value)| (key.to_owned(), Json::string(value)))
            .collect();
        fields.push(("user-properties".to_owned(), Json::Object(pairs)));
    }
    fields
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::Format;
    use chrono::TimeZone;

    fn render(format: &str, payload: &str) -> String {
        let format = Format::parse(format, false).unwrap_or_else(|e| panic!("{e}"));
        let mut message =
            tern_client::message("f/a", payload.to_owned()).unwrap_or_else(|e| panic!("{e}"));
        message.retain = true;
        let now = chrono::Local
            .timestamp_opt(1_700_000_000, 5)
            .single()
            .unwrap_or_else(|| panic!("a valid time"));
        String::from_utf8_lossy(&message_render(&format, &message, now)).into_owned()
    }

    fn message_render(
        format: &Format,
        message: &tern_client::Publish,
        now: chrono::DateTime<chrono::Local>,
    ) -> Vec<u8> {
        format
            .render(message, now)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn widths_flags_and_escapes_follow_mosquitto_sub() {
        // The expected strings are mosquitto_sub 2.0.11's output for the same format.
        assert_eq!(
            render("[%t|%p|%q|%r|%l|%m|%x|%X|%10t|%-10t|%.3t|%5.2t|%05l|%-5l|%%|\\t|@@]", "hello"),
            "[f/a|hello|0|1|5|0|68656c6c6f|68656C6C6F|       f/a|f/a       |f/a|   f/|00005|5    |%|\t|@]"
        );
        assert_eq!(render("%5q|%-3r|%03m|@N", "x"), "0|1|000|000000005");
        assert_eq!(render("%U", "x"), "1700000000.000000005");
    }

    #[test]
    fn bad_formats_are_refused_as_mosquitto_sub_does() {
        for (format, error) in [
            ("%", "Incomplete format specifier."),
            ("%5", "Incomplete format specifier."),
            ("@", "Incomplete format specifier."),
            ("\\", "Incomplete escape specifier."),
            ("%z", "Invalid format specifier 'z'."),
            ("\\q", "Invalid escape specifier 'q'."),
        ] {
            assert_eq!(
                Format::parse(format, false),
                Err(error.to_owned()),
                "{format}"
            );
        }
    }

    #[test]
    fn json_helpers() {
        let json = render("%j", "hi");
        assert!(json.starts_with("{\"tst\":\""), "{json}");
        assert!(
            json.ends_with(
                "\"topic\":\"f/a\",\"qos\":0,\"retain\":1,\"payloadlen\":2,\"payload\":\"hi\"}"
            ),
            "{json}"
        );
        let raw = render("%J", "{\"a\": [1, 2]}");
        assert!(raw.ends_with("\"payload\":{\"a\":[1,2]}}"), "{raw}");
    }
}
