//! Topic names and topic filters: validation (section 4.7), matching, and `$share` parsing.

use core::fmt;
use core::ops::Deref;
use core::str::FromStr;

use bytes::Bytes;

use crate::error::DecodeError;
use crate::string::MqttString;

/// The prefix of a shared subscription filter (section 4.8.2).
pub const SHARED_PREFIX: &str = "$share/";

/// A topic name, as carried by PUBLISH and wills: no wildcard characters.
///
/// Only the empty name produced by decoding a PUBLISH that relies on a topic alias is empty;
/// every constructor refuses an empty name.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(MqttString);

impl TopicName {
    /// Validates a topic name: at least one character and no `+` or `#` (MQTT-4.7.3-1, 3.3.2-2).
    pub fn new(name: MqttString) -> Result<Self, DecodeError> {
        if name.is_empty() {
            return Err(DecodeError::TopicNameInvalid("topic name is empty"));
        }
        if name.as_bytes().iter().any(|&b| b == b'+' || b == b'#') {
            return Err(DecodeError::TopicNameInvalid(
                "topic name contains a wildcard",
            ));
        }
        Ok(Self(name))
    }

    /// Validates the raw bytes of a PUBLISH topic in one pass (the hot path): UTF-8, no U+0000,
    /// no wildcard. Empty is allowed; the caller checks it against the topic alias.
    pub(crate) fn decode(raw: Bytes) -> Result<Self, DecodeError> {
        let mut ascii = true;
        for &byte in raw.iter() {
            match byte {
                0 => return Err(DecodeError::Malformed("string contains U+0000")),
                b'+' | b'#' => {
                    return Err(DecodeError::TopicNameInvalid(
                        "topic name contains a wildcard",
                    ))
                }
                0x80.. => ascii = false,
                _ => {}
            }
        }
        // Non-ASCII bytes never equal '+', '#' or 0, so the scan above stays valid for them.
        if !ascii && core::str::from_utf8(&raw).is_err() {
            return Err(DecodeError::Malformed("string is not well-formed UTF-8"));
        }
        Ok(Self(MqttString::from_validated(raw)))
    }

    /// The empty name, used in a PUBLISH whose topic travels as a topic alias.
    pub const fn empty() -> Self {
        Self(MqttString::empty())
    }

    /// A copy that holds its own bytes, for a name kept long after its packet (see
    /// [`MqttString::detached`]).
    pub fn detached(&self) -> Self {
        Self(self.0.detached())
    }

    /// The validated string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// The topic's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The shared bytes behind the name.
    pub fn into_bytes(self) -> Bytes {
        self.0.into_bytes()
    }

    /// Whether the topic starts with `$` (reserved for server use, not matched by leading wildcards).
    pub fn is_dollar(&self) -> bool {
        self.0.as_bytes().first() == Some(&b'$')
    }
}

impl FromStr for TopicName {
    type Err = DecodeError;

    /// Validates a copy of `name`.
    fn from_str(name: &str) -> Result<Self, DecodeError> {
        let s = MqttString::new(name).map_err(|e| DecodeError::TopicNameInvalid(e.as_str()))?;
        Self::new(s)
    }
}

impl Deref for TopicName {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A topic filter, as carried by SUBSCRIBE and UNSUBSCRIBE.
///
/// Invariants: at least one character; `#` only as the whole last level; `+` only as a whole
/// level; a `$share/` filter has a non-empty group without wildcards and a valid filter after it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(MqttString);

impl TopicFilter {
    /// Validates a topic filter (MQTT-4.7.1-1..3, MQTT-4.7.3-1, MQTT-4.8.2-1/2).
    pub fn new(filter: MqttString) -> Result<Self, DecodeError> {
        validate_filter(filter.as_str())?;
        if let Some(rest) = filter.as_str().strip_prefix(SHARED_PREFIX) {
            let Some((group, inner)) = rest.split_once('/') else {
                return Err(DecodeError::TopicFilterInvalid(
                    "shared subscription without a filter",
                ));
            };
            if group.is_empty() || group.contains(['+', '#']) {
                return Err(DecodeError::TopicFilterInvalid(
                    "invalid shared subscription group",
                ));
            }
            if inner.is_empty() {
                return Err(DecodeError::TopicFilterInvalid(
                    "shared subscription without a filter",
                ));
            }
        }
        Ok(Self(filter))
    }

    /// The filter's full text, `$share/` prefix included.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The validated string.
    pub fn as_mqtt_str(&self) -> &MqttString {
        &self.0
    }

    /// A copy that holds its own bytes, for a filter kept long after its packet (see
    /// [`MqttString::detached`]).
    pub fn detached(&self) -> Self {
        Self(self.0.detached())
    }

    /// For `$share/{group}/{filter}`, the group name and the inner filter.
    pub fn shared(&self) -> Option<(&str, Self)> {
        let rest = self.as_str().strip_prefix(SHARED_PREFIX)?;
        let (group, inner) = rest.split_once('/')?;
        let start = self.as_str().len() - inner.len();
        Some((group, Self(self.0.slice_str(start, self.as_str().len()))))
    }

    /// Whether this is a `$share/` filter.
    pub fn is_shared(&self) -> bool {
        self.as_str().starts_with(SHARED_PREFIX)
    }

    /// Whether the filter has a `+` or `#` level.
    pub fn has_wildcards(&self) -> bool {
        self.as_str().contains(['+', '#'])
    }

    /// Whether `topic` matches this filter (section 4.7). A shared filter matches by its inner
    /// filter.
    pub fn matches(&self, topic: &str) -> bool {
        match self.shared() {
            Some((_, inner)) => filter_matches(inner.as_str(), topic),
            None => filter_matches(self.as_str(), topic),
        }
    }
}

impl FromStr for TopicFilter {
    type Err = DecodeError;

    /// Validates a copy of `filter`.
    fn from_str(filter: &str) -> Result<Self, DecodeError> {
        let s = MqttString::new(filter).map_err(|e| DecodeError::TopicFilterInvalid(e.as_str()))?;
        Self::new(s)
    }
}

impl Deref for TopicFilter {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn validate_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::TopicFilterInvalid("topic filter is empty"));
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        match level {
            "#" if !is_last => {
                return Err(DecodeError::TopicFilterInvalid("'#' is not the last level"));
            }
            "#" | "+" => {}
            _ if level.contains(['+', '#']) => {
                return Err(DecodeError::TopicFilterInvalid(
                    "wildcard does not fill its level",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether a plain (non-shared) filter matches a topic name (section 4.7).
///
/// Topics starting with `$` are not matched by a filter starting with a wildcard (MQTT-4.7.2-1).
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::from_str(s).unwrap()
    }

    #[test]
    fn filter_syntax() {
        for ok in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/",
            "a//b",
            "$share/g/a/#",
            "sport/+/player1",
        ] {
            assert!(TopicFilter::from_str(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a#",
            "a/#/b",
            "a+",
            "a/b+/c",
            "#/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g/",
        ] {
            assert!(TopicFilter::from_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_name_rejects_wildcards_and_empty() {
        assert!(TopicName::from_str("a/+").is_err());
        assert!(TopicName::from_str("a/#").is_err());
        assert!(TopicName::from_str("").is_err());
        assert!(TopicName::from_str("a/b c/$x").is_ok());
    }

    #[test]
    fn matching() {
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            ("sport/#", "sport", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "A/b", false),
            ("a/b", "a/b/", false),
        ];
        for (f, t, want) in cases {
            assert_eq!(filter(f).matches(t), want, "{f} vs {t}");
        }
    }

    #[test]
    fn shared_parse() {
        let f = filter("$share/group1/sensors/+/temp");
        let (group, inner) = f.shared().unwrap();
        assert_eq!(group, "group1");
        assert_eq!(inner.as_str(), "sensors/+/temp");
        assert!(f.matches("sensors/a/temp"));
        assert!(filter("a/b").shared().is_none());
    }
}
