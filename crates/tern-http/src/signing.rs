//! Request signing, version 1 (docs/http.md, "Signing"): the canonical string a device signs
//! with HMAC-SHA256, the headers that carry the key, time, nonce and signature, and the
//! signature of responses, bound to the request's so a recorded answer cannot be replayed to
//! another request.
//!
//! ```text
//! TERN1-HMAC-SHA256
//! METHOD                 upper case
//! PATH                   each segment percent-decoded once, then encoded again (below)
//! QUERY                  name=value pairs, each encoded, sorted by name then value, joined by &
//! HEADERS                one line per tern-*/mqtt-* header but Tern-Signature, and per
//!                        If-Match / If-None-Match header (they decide a write): lower-case
//!                        name ":" value trimmed; sorted by name, a name's values in the order
//!                        sent (no line at all without such headers; Tern-Key, Tern-Time and
//!                        Tern-Nonce are always there)
//! BODY                   lower-case hex SHA-256 of the body as sent
//! ```
//!
//! Encoding keeps `A-Z a-z 0-9 - . _ ~` and writes every other byte as `%XX` (upper-case hex),
//! so however a client or proxy escaped a path or query, the canonical form is the same.
//! A `+` in a query is a plus, not a space.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The first line of a canonical request.
pub const SCHEME: &str = "TERN1-HMAC-SHA256";
/// The first line of what a response signature covers.
pub const RESPONSE_SCHEME: &str = "TERN1-RESP";

/// A request's parts, as the canonical string needs them.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent, percent-encoded.
    pub path: &'a str,
    /// The query as sent (without `?`), possibly empty.
    pub query: &'a str,
    /// Every header, as `(name, value)`, in the order sent.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// The body as sent.
    pub body: &'a [u8],
}

/// Why a request could not be put in canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    /// A `%` not followed by two hex digits.
    #[error("a percent sign not followed by two hex digits")]
    BadEscape,
    /// A signed header's value is not visible ASCII.
    #[error("a tern-* or mqtt-* header value is not printable ASCII")]
    BadHeader,
}

/// The canonical string of a request (see the module's description).
pub fn canonical_request(parts: &RequestParts<'_>) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(
        160 + 3 * (parts.path.len() + parts.query.len())
            + parts
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 2)
                .sum::<usize>(),
    );
    out.push_str(SCHEME);
    out.push('\n');
    for byte in parts.method.bytes() {
        out.push(char::from(byte.to_ascii_uppercase()));
    }
    out.push('\n');
    write_canonical_path(&mut out, parts.path)?;
    out.push('\n');
    write_canonical_query(&mut out, parts.query)?;
    out.push('\n');
    write_signed_headers(&mut out, parts.headers)?;
    push_hex(&mut out, &Sha256::digest(parts.body));
    Ok(out)
}

/// Each `/`-separated segment decoded once and encoded again.
pub fn canonical_path(path: &str) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(path.len());
    write_canonical_path(&mut out, path)?;
    Ok(out)
}

fn write_canonical_path(out: &mut String, path: &str) -> Result<(), CanonicalError> {
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        reencode(out, segment)?;
    }
    Ok(())
}

/// Decodes `text` once and appends it encoded again (most text is unreserved already, and
/// goes through without a copy of its own).
fn reencode(out: &mut String, text: &str) -> Result<(), CanonicalError> {
    if text.bytes().all(unreserved) {
        out.push_str(text);
        return Ok(());
    }
    push_encoded(out, &decode(text)?);
    Ok(())
}

/// Parameters decoded and encoded again, sorted by name then value.
pub fn canonical_query(query: &str) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(query.len());
    write_canonical_query(&mut out, query)?;
    Ok(out)
}

fn write_canonical_query(out: &mut String, query: &str) -> Result<(), CanonicalError> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (mut encoded_name, mut encoded_value) = (String::new(), String::new());
        reencode(&mut encoded_name, name)?;
        reencode(&mut encoded_value, value)?;
        pairs.push((encoded_name, encoded_value));
    }
    pairs.sort();
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    Ok(())
}

/// The signed header lines, each ending in a newline: `name:value` for tern-*/mqtt-* headers
/// but the signature, and for the preconditions of a key/value write (`If-Match`,
/// `If-None-Match`), which decide what it does.
fn write_signed_headers(out: &mut String, headers: &[(&str, &[u8])]) -> Result<(), CanonicalError> {
    let mut lines: Vec<(String, &str)> = Vec::with_capacity(8);
    for &(name, value) in headers {
        let signed = |name: &str| {
            let lower = |prefix: &str| {
                name.len() >= prefix.len()
                    && name.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
            };
            (lower("tern-") || lower("mqtt-")) && !name.eq_ignore_ascii_case("tern-signature")
                || name.eq_ignore_ascii_case("if-match")
                || name.eq_ignore_ascii_case("if-none-match")
        };
        if !signed(name) {
            continue;
        }
        let value = std::str::from_utf8(value).map_err(|_| CanonicalError::BadHeader)?;
        if !value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        {
            return Err(CanonicalError::BadHeader);
        }
        lines.push((name.to_ascii_lowercase(), value.trim()));
    }
    // Stable: a name's values keep the order they were sent in (user properties are ordered).
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in lines {
        out.push_str(&name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    Ok(())
}

/// Percent-decodes once.
pub fn decode(text: &str) -> Result<Vec<u8>, CanonicalError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).and_then(|b| hex_value(*b));
            let lo = bytes.get(i + 2).and_then(|b| hex_value(*b));
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(CanonicalError::BadEscape);
            };
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// Percent-encodes every byte but `A-Z a-z 0-9 - . _ ~`, with upper-case hex.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    push_encoded(&mut out, bytes);
    out
}

fn unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

fn push_encoded(out: &mut String, bytes: &[u8]) {
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    for &byte in bytes {
        if unreserved(byte) {
            out.push(char::from(byte));
        } else {
            out.push('%');
            out.push(char::from(UPPER[usize::from(byte >> 4)]));
            out.push(char::from(UPPER[usize::from(byte & 0xf)]));
        }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(2 * bytes.len());
    push_hex(&mut out, bytes);
    out
}

/// Appends `bytes` in lower-case hex.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const LOWER: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 * bytes.len());
    for &byte in bytes {
        out.push(char::from(LOWER[usize::from(byte >> 4)]));
        out.push(char::from(LOWER[usize::from(byte & 0xf)]));
    }
}

/// HMAC-SHA256 of `message` under `secret`.
pub fn sign(secret: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The `Tern-Signature` value for a signature: `v1=` and 64 hex digits.
pub fn signature_header(signature: &[u8; 32]) -> String {
    let mut out = String::with_capacity(67);
    out.push_str("v1=");
    push_hex(&mut out, signature);
    out
}

/// The signature a `Tern-Signature` header carries, if it is of version 1.
pub fn parse_signature_header(value: &[u8]) -> Option<[u8; 32]> {
    let hex_digits = value.strip_prefix(b"v1=")?;
    if hex_digits.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, pair) in hex_digits.chunks(2).enumerate() {
        out[i] = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

/// Which of `secrets` signed `canonical` as `signature`, compared in constant time; every
/// secret is tried, so the time taken does not tell which (if any) matched.
pub fn verify(secrets: &[[u8; 32]], canonical: &[u8], signature: &[u8; 32]) -> Option<usize> {
    let mut found = None;
    for (index, secret) in secrets.iter().enumerate() {
        let expected = sign(secret, canonical);
        if bool::from(expected.ct_eq(signature)) {
            found = Some(index);
        }
    }
    found
}

/// What a response signature covers: status, the request's signature (or, for the time
/// endpoint, the device's challenge), the body's SHA-256 and the response's `Tern-Time`.
pub fn response_string(status: u16, bound_to: &str, body: &[u8], time: u64) -> String {
    let mut out = String::with_capacity(RESPONSE_SCHEME.len() + bound_to.len() + 100);
    out.push_str(RESPONSE_SCHEME);
    out.push('\n');
    push_decimal(&mut out, u64::from(status));
    out.push('\n');
    out.push_str(bound_to);
    out.push('\n');
    push_hex(&mut out, &Sha256::digest(body));
    out.push('\n');
    push_decimal(&mut out, time);
    out
}

fn push_decimal(out: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.
    use super::*;

    #[test]
    fn escapes_are_normalised_so_one_request_has_one_canonical_form() {
        assert_eq!(
            canonical_path("/v1/pub/a%2fb/caf%c3%a9/x y").unwrap(),
            "/v1/pub/a%2Fb/caf%C3%A9/x%20y"
        );
        assert_eq!(canonical_path("/v1/pub//x").unwrap(), "/v1/pub//x");
        assert_eq!(
            canonical_query("retain=1&qos=%31&b=2&b=1&flag&x=a+b").unwrap(),
            "b=1&b=2&flag=&qos=1&retain=1&x=a%2Bb"
        );
        assert_eq!(canonical_query("").unwrap(), "");
        assert_eq!(canonical_path("/%zz"), Err(CanonicalError::BadEscape));
        assert_eq!(canonical_path("/%4"), Err(CanonicalError::BadEscape));
    }

    #[test]
    fn only_tern_mqtt_and_precondition_headers_are_signed_and_repeats_keep_their_order() {
        let headers: [(&str, &[u8]); 8] = [
            ("Tern-Time", b" 1767225600 "),
            ("Content-Type", b"text/plain"),
            ("If-Match", b"\"e:7\""),
            ("If-Modified-Since", b"never"),
            ("Mqtt-User-Property", b"z=1"),
            ("Tern-Signature", b"v1=00"),
            ("mqtt-user-property", b"a=2"),
            ("Tern-Key", b"d:dev1"),
        ];
        let parts = RequestParts {
            method: "post",
            path: "/v1/pub/t",
            query: "",
            headers: &headers,
            body: b"",
        };
        let canonical = canonical_request(&parts).unwrap();
        assert_eq!(
            canonical,
            "TERN1-HMAC-SHA256\nPOST\n/v1/pub/t\n\nif-match:\"e:7\"\nmqtt-user-property:z=1\n\
             mqtt-user-property:a=2\ntern-key:d:dev1\ntern-time:1767225600\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn hex_percent_encoding_and_decimals_are_written_as_format_would() {
        let every_byte: Vec<u8> = (0..=255).collect();
        let by_format: String = every_byte.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&every_byte), by_format);
        let encoded: String = every_byte
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        assert_eq!(encode(&every_byte), encoded);
        assert_eq!(decode(&encoded).unwrap(), every_byte);
        for (status, time) in [(0, 0), (200, 1_767_225_600), (u16::MAX, u64::MAX)] {
            let body = b"{}";
            assert_eq!(
                response_string(status, "ab", body, time),
                format!(
                    "{RESPONSE_SCHEME}\n{status}\nab\n{}\n{time}",
                    hex(&Sha256::digest(body))
                )
            );
        }
        assert_eq!(
            signature_header(&[0xab; 32]),
            format!("v1={}", "ab".repeat(32))
        );
    }

    #[test]
    fn a_signature_verifies_under_the_secret_that_made_it_only() {
        let (a, b) = ([1; 32], [2; 32]);
        let signature = sign(&b, b"message");
        assert_eq!(verify(&[a, b], b"message", &signature), Some(1));
        assert_eq!(verify(&[a], b"message", &signature), None);
        assert_eq!(verify(&[b], b"massage", &signature), None);
        let header = signature_header(&signature);
        assert_eq!(parse_signature_header(header.as_bytes()), Some(signature));
        assert_eq!(parse_signature_header(b"v2=00"), None);
        assert_eq!(parse_signature_header(&header.as_bytes()[..60]), None);
    }
}
