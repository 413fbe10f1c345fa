//! MQTT topics and filters as NATS subjects, level by level, and back.
//!
//! NATS reads `.` as a separator and `*`, `>` as wildcards, and refuses whitespace, so an MQTT
//! topic cannot be used as a subject as it is. Each MQTT level becomes one NATS token:
//! - bytes in `[A-Za-z0-9_-]` are kept;
//! - every other byte becomes `=` and two upper-case hex digits (`.` is `=2E`, `*` is `=2A`,
//!   `>` is `=3E`, `$` is `=24`, a space `=20`, each byte of a UTF-8 character on its own);
//! - an empty level becomes `=` alone, which no escape is.
//!
//! The result is valid as a NATS subject and as a JetStream KV key (whose alphabet is
//! `[-/_=.a-zA-Z0-9]`). Topics whose first level starts with `$` go under a kind of their own
//! (`s`, the others `m`), so a filter starting with a wildcard (mapped under `m` only) never
//! matches them, as MQTT requires (MQTT-4.7.2-1). A subject longer than [`SUBJECT_LEN_MAX`]
//! would make the NATS server drop the whole connection, so such a topic goes to the overflow
//! subject (kind `x`) and the real topic travels in the message.

use std::fmt::Write as _;

/// Longest subject Tern sends or subscribes to: half the NATS server's default control line
/// (4,096 bytes), leaving room for the reply subject and the sizes on the same line.
pub const SUBJECT_LEN_MAX: usize = 2048;

/// Kind token of ordinary topics.
const KIND_PLAIN: &str = "m";
/// Kind token of topics whose first level starts with `$`.
const KIND_DOLLAR: &str = "s";
/// Kind token of the overflow subject, for topics too long to be a subject.
const KIND_OVERFLOW: &str = "x";

/// Where a topic goes under a prefix (`tern.d`, `tern.in0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicSubject {
    /// Its own subject.
    Exact(String),
    /// The overflow subject; the topic must travel in the message.
    Overflow(String),
}

impl TopicSubject {
    /// The subject, whichever it is.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Exact(subject) | Self::Overflow(subject) => subject,
        }
    }
}

/// Why a subject is not one this module wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// It does not start with the prefix and a kind token.
    #[error("subject {0:?} is not under the expected prefix")]
    Prefix(String),
    /// A token holds a byte outside the alphabet, or a broken escape.
    #[error("subject token {0:?} is not a Tern encoding")]
    Token(String),
    /// The decoded bytes are not UTF-8, or the kind does not fit the first level.
    #[error("subject does not decode to an MQTT topic: {0}")]
    Topic(&'static str),
}

/// Appends the token of one MQTT level to `out`.
pub fn encode_level(level: &str, out: &mut String) {
    if level.is_empty() {
        out.push('=');
        return;
    }
    for byte in level.bytes() {
        if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "={byte:02X}");
        }
    }
}

/// The kind token of `topic` (or of a filter's first level).
fn kind_of(first_level: &str) -> &'static str {
    if first_level.starts_with('$') {
        KIND_DOLLAR
    } else {
        KIND_PLAIN
    }
}

/// The overflow subject under `prefix`.
pub fn overflow_subject(prefix: &str) -> String {
    format!("{prefix}.{KIND_OVERFLOW}")
}

/// The subject of `topic` under `prefix`: its own, or the overflow subject when it would be
/// longer than [`SUBJECT_LEN_MAX`].
pub fn topic_subject(prefix: &str, topic: &str) -> TopicSubject {
    let first = topic.split('/').next().unwrap_or("");
    let mut subject = String::with_capacity(prefix.len() + 3 + topic.len());
    subject.push_str(prefix);
    subject.push('.');
    subject.push_str(kind_of(first));
    for level in topic.split('/') {
        subject.push('.');
        encode_level(level, &mut subject);
        if subject.len() > SUBJECT_LEN_MAX {
            return TopicSubject::Overflow(overflow_subject(prefix));
        }
    }
    TopicSubject::Exact(subject)
}

/// The MQTT topic a subject under `prefix` names; `Ok(None)` for the overflow subject, whose
/// topic travels in the message.
pub fn subject_topic(prefix: &str, subject: &str) -> Result<Option<String>, SubjectError> {
    let rest = subject
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .ok_or_else(|| SubjectError::Prefix(subject.to_owned()))?;
    if rest == KIND_OVERFLOW {
        return Ok(None);
    }
    let mut tokens = rest.split('.');
    let kind = tokens.next().unwrap_or("");
    if kind != KIND_PLAIN && kind != KIND_DOLLAR {
        return Err(SubjectError::Prefix(subject.to_owned()));
    }
    let mut bytes = Vec::with_capacity(rest.len());
    let mut first = true;
    for token in tokens {
        if !first {
            bytes.push(b'/');
        }
        first = false;
        decode_token(token, &mut bytes)?;
    }
    if first {
        return Err(SubjectError::Topic("no level"));
    }
    let topic = String::from_utf8(bytes).map_err(|_| SubjectError::Topic("not UTF-8"))?;
    if kind_of(&topic) != kind {
        return Err(SubjectError::Topic("kind does not match the first level"));
    }
    Ok(Some(topic))
}

/// Appends the bytes one token encodes.
fn decode_token(token: &str, out: &mut Vec<u8>) -> Result<(), SubjectError> {
    if token == "=" {
        return Ok(());
    }
    let bad = || SubjectError::Token(token.to_owned());
    if token.is_empty() {
        return Err(bad());
    }
    let raw = token.as_bytes();
    let mut index = 0;
    while index < raw.len() {
        let byte = raw[index];
        if byte == b'=' {
            let hex = raw.get(index + 1..index + 3).ok_or_else(bad)?;
            let value =
                hex_digit(hex[0]).ok_or_else(bad)? << 4 | hex_digit(hex[1]).ok_or_else(bad)?;
            // An escape of a byte that is kept as it is would give one topic two spellings.
            if value.is_ascii_alphanumeric() || value == b'_' || value == b'-' {
                return Err(bad());
            }
            out.push(value);
            index += 3;
        } else if byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-' {
            out.push(byte);
            index += 1;
        } else {
            return Err(bad());
        }
    }
    Ok(())
}

/// The value of one upper-case hex digit.
fn hex_digit(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// The subjects under `prefix` a node subscribes to for the MQTT `filter` (not a `$share`
/// filter): one, or two for a filter ending in `#` after other levels, since `a/#` matches `a`
/// itself as well as everything below it (MQTT-4.7.1-2). A filter whose subject would pass
/// [`SUBJECT_LEN_MAX`] can only match topics that go to the overflow subject, which is what it
/// maps to then.
pub fn filter_subjects(prefix: &str, filter: &str) -> Vec<String> {
    let levels: Vec<&str> = filter.split('/').collect();
    let first = levels.first().copied().unwrap_or("");
    // A filter starting with a wildcard never matches `$` topics (MQTT-4.7.2-1).
    let kind = match first {
        "#" | "+" => KIND_PLAIN,
        _ => kind_of(first),
    };
    let mut subject = format!("{prefix}.{kind}");
    let mut parent = None;
    for level in &levels {
        match *level {
            "#" => {
                // `#` alone matches every topic of its kind; after levels it also matches the
                // parent, which is the subject built so far.
                if subject.len() > prefix.len() + 2 {
                    parent = Some(subject.clone());
                }
                subject.push_str(".>");
            }
            "+" => subject.push_str(".*"),
            literal => {
                subject.push('.');
                encode_level(literal, &mut subject);
            }
        }
    }
    let mut subjects: Vec<String> = parent.into_iter().chain(Some(subject)).collect();
    for subject in &mut subjects {
        if subject.len() > SUBJECT_LEN_MAX {
            *subject = overflow_subject(prefix);
        }
    }
    subjects.dedup();
    subjects
}

/// Whether NATS delivers a message on `subject` to a subscription on `pattern`: `*` stands
/// for one token, a final `>` for one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for wanted in pattern.split('.') {
        if wanted == ">" {
            return tokens.next().is_some();
        }
        match tokens.next() {
            Some(token) if wanted == "*" || wanted == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_patterns_as_nats_matches_them() {
        for (pattern, subject, matches) in [
            ("tern.d.m.a", "tern.d.m.a", true),
            ("tern.d.m.a", "tern.d.m.a.b", false),
            ("tern.d.m.*.c", "tern.d.m.b.c", true),
            ("tern.d.m.*.c", "tern.d.m.c", false),
            ("tern.d.m.a.>", "tern.d.m.a.b.c", true),
            ("tern.d.m.a.>", "tern.d.m.a", false),
            ("tern.d.m.>", "tern.d.s.=24x", false),
            ("tern.d.x", "tern.d.x", true),
        ] {
            assert_eq!(
                subject_matches(pattern, subject),
                matches,
                "{pattern} {subject}"
            );
        }
    }

    const P: &str = "tern.d";

    fn exact(topic: &str) -> String {
        match topic_subject(P, topic) {
            TopicSubject::Exact(subject) => subject,
            TopicSubject::Overflow(_) => panic!("{topic:?} overflowed"),
        }
    }

    #[test]
    fn every_byte_outside_the_alphabet_is_escaped() {
        assert_eq!(exact("a/b"), "tern.d.m.a.b");
        assert_eq!(exact("a.b/c*d/>"), "tern.d.m.a=2Eb.c=2Ad.=3E");
        assert_eq!(exact("x y=z"), "tern.d.m.x=20y=3Dz");
        assert_eq!(exact("café"), "tern.d.m.caf=C3=A9");
        assert_eq!(exact("Keep_this-1"), "tern.d.m.Keep_this-1");
    }

    #[test]
    fn empty_levels_are_a_lone_equals_sign() {
        assert_eq!(exact("/"), "tern.d.m.=.=");
        assert_eq!(exact("a//b/"), "tern.d.m.a.=.b.=");
    }

    #[test]
    fn dollar_topics_have_a_kind_of_their_own() {
        assert_eq!(exact("$SYS/broker"), "tern.d.s.=24SYS.broker");
        assert_eq!(exact("a/$b"), "tern.d.m.a.=24b");
        assert_eq!(filter_subjects(P, "#"), ["tern.d.m.>"]);
        assert_eq!(filter_subjects(P, "+/x"), ["tern.d.m.*.x"]);
        assert_eq!(
            filter_subjects(P, "$SYS/#"),
            ["tern.d.s.=24SYS", "tern.d.s.=24SYS.>"]
        );
    }

    #[test]
    fn filters_map_to_wildcards_and_multi_level_also_to_its_parent() {
        assert_eq!(filter_subjects(P, "a/+/c"), ["tern.d.m.a.*.c"]);
        assert_eq!(filter_subjects(P, "a/#"), ["tern.d.m.a", "tern.d.m.a.>"]);
        assert_eq!(filter_subjects(P, "+/#"), ["tern.d.m.*", "tern.d.m.*.>"]);
        assert_eq!(filter_subjects(P, "a.b/*"), ["tern.d.m.a=2Eb.=2A"]);
        assert_eq!(filter_subjects(P, "a//"), ["tern.d.m.a.=.="]);
    }

    #[test]
    fn long_topics_and_filters_go_to_the_overflow_subject() {
        let long = "x".repeat(3000);
        assert_eq!(
            topic_subject(P, &long),
            TopicSubject::Overflow("tern.d.x".to_owned())
        );
        // Escapes triple the length: 700 dots are 2,100 bytes.
        let dots = ".".repeat(700);
        assert!(matches!(topic_subject(P, &dots), TopicSubject::Overflow(_)));
        assert_eq!(filter_subjects(P, &format!("a/{long}/#")), ["tern.d.x"]);
        assert_eq!(subject_topic(P, "tern.d.x"), Ok(None));
    }

    #[test]
    fn decoding_refuses_what_the_encoding_never_writes() {
        for bad in [
            "tern.d.m.a=2",
            "tern.d.m.a=zz",
            "tern.d.m.a=41",
            "tern.d.m.a=2e",
            "tern.d.m.a..b",
            "tern.d.m.a*",
            "tern.d.q.a",
            "tern.d.m",
            "tern.d.s.a",
            "tern.d.m.=24a",
            "tern.d.m.=FF",
            "other.m.a",
        ] {
            assert!(subject_topic(P, bad).is_err(), "{bad}");
        }
    }
}
