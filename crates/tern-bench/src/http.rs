//! A bare HTTP/1.1 keep-alive connection and a device's request signing (docs/http.md,
//! "Signing"), for the HTTP scenarios: the generator speaks to the bridge as a device does,
//! with no client library in between.
//!
//! Each connection is a device of a group key: its secret is derived from the group's, so one
//! `tern key add g:NAME --prefix bench-` serves any number of devices. Nonces are counters
//! (`Tern-Time: -`), one sequence per device, so no clock and no random source is needed.

use bytes::{Buf, BytesMut};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// The label a device secret is derived under (docs/http.md, "Keys").
const DERIVED_LABEL: &[u8] = b"tern-dk1\0";

/// One device: its key, secret and next counter nonce.
#[derive(Debug, Clone)]
pub(crate) struct Device {
    key_id: String,
    secret: [u8; 32],
    counter: u64,
}

impl Device {
    /// Device `client_id` of a group whose secret is `group_secret`.
    pub(crate) fn of_group(group_secret: &[u8; 32], client_id: &str) -> Self {
        Self {
            key_id: format!("d:{client_id}"),
            secret: hmac(group_secret, &[DERIVED_LABEL, client_id.as_bytes()]),
            counter: 0,
        }
    }

    /// The signing headers of a request, with the next counter nonce. `path` and `query` must
    /// be in canonical form already (unreserved characters only; the query sorted).
    pub(crate) fn sign(
        &mut self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        self.counter += 1;
        let nonce = format!("c:{:x}", self.counter);
        let signature = canonical_signature(
            &self.secret,
            method,
            path,
            query,
            &[
                ("tern-key", &self.key_id),
                ("tern-nonce", &nonce),
                ("tern-time", "-"),
            ],
            body,
        );
        vec![
            ("Tern-Key", self.key_id.clone()),
            ("Tern-Time", "-".to_owned()),
            ("Tern-Nonce", nonce),
            ("Tern-Signature", format!("v1={}", hex(&signature))),
        ]
    }
}

/// The signature of a request whose signed headers are `headers` (lower-case names, sorted).
fn canonical_signature(
    secret: &[u8; 32],
    method: &str,
    path: &str,
    query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> [u8; 32] {
    let mut canonical = format!("TERN1-HMAC-SHA256\n{method}\n{path}\n{query}\n");
    for (name, value) in headers {
        canonical.push_str(name);
        canonical.push(':');
        canonical.push_str(value);
        canonical.push('\n');
    }
    canonical.push_str(&hex(&Sha256::digest(body)));
    hmac(secret, &[canonical.as_bytes()])
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A group secret given as 64 hex digits.
pub(crate) fn parse_secret(text: &str) -> Result<[u8; 32], BenchError> {
    let bad = || BenchError::Options("--http-secret is 64 hex digits".into());
    if text.len() != 64 {
        return Err(bad());
    }
    let mut secret = [0u8; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(secret)
}

/// An HTTP/1.1 connection kept alive across requests.
#[derive(Debug)]
pub(crate) struct HttpConn {
    pub(crate) stream: TcpStream,
    rbuf: BytesMut,
    head: String,
}

impl HttpConn {
    pub(crate) async fn connect(host: &str, port: u16) -> Result<Self, BenchError> {
        let stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| BenchError::io(format!("connecting to {host}:{port} (HTTP)"), e))?;
        let _ = stream.set_nodelay(true);
        Ok(Self {
            stream,
            rbuf: BytesMut::new(),
            head: String::new(),
        })
    }

    /// Writes a request without waiting for its answer.
    pub(crate) async fn send(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<(), BenchError> {
        use std::fmt::Write;
        self.head.clear();
        let _ = write!(
            self.head,
            "{method} {target} HTTP/1.1\r\nHost: tern\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            let _ = write!(self.head, "{name}: {value}\r\n");
        }
        self.head.push_str("\r\n");
        let mut request = Vec::with_capacity(self.head.len() + body.len());
        request.extend_from_slice(self.head.as_bytes());
        request.extend_from_slice(body);
        self.stream
            .write_all(&request)
            .await
            .map_err(|e| BenchError::io("writing an HTTP request", e))
    }

    /// Reads one answer: its status and body (`Content-Length` framed, as the bridge sends).
    pub(crate) async fn answer(&mut self) -> Result<(u16, BytesMut), BenchError> {
        loop {
            if let Some((status, head_len, body_len)) = parse_head(&self.rbuf)? {
                if self.rbuf.len() >= head_len + body_len {
                    self.rbuf.advance(head_len);
                    return Ok((status, self.rbuf.split_to(body_len)));
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 1024 {
                self.rbuf.reserve(4096);
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => {
                    return Err(BenchError::Protocol(
                        "the bridge closed the connection".into(),
                    ))
                }
                Ok(_) => {}
                Err(e) => return Err(BenchError::io("reading an HTTP answer", e)),
            }
        }
    }

    /// A request and its answer.
    pub(crate) async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&'static str, String)],
        body: &[u8],
    ) -> Result<(u16, BytesMut), BenchError> {
        self.send(method, target, headers, body).await?;
        self.answer().await
    }
}

/// The status, head length and body length of a complete answer head at the start of `buf`.
fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, usize)>, BenchError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| BenchError::Protocol("an HTTP answer head that is not text".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| BenchError::Protocol(format!("bad HTTP status line in {head:?}")))?;
    let length = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .ok_or_else(|| BenchError::Protocol("an HTTP answer without Content-Length".into()))?;
    Ok(Some((status, end + 4, length)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The worked example of docs/http.md: the generator signs as the bridge verifies.
    #[test]
    fn signs_the_documented_worked_example() {
        let secret =
            parse_secret("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
                .expect("hex");
        let signature = canonical_signature(
            &secret,
            "POST",
            "/v1/pub/sensors/ESP32-7F3A/temp",
            "qos=1&retain=0",
            &[
                ("mqtt-user-property", "fw=1.7.24"),
                ("tern-key", "d:ESP32-7F3A"),
                ("tern-nonce", "c:1a4"),
                ("tern-time", "1767225600"),
            ],
            br#"{"t":21.5}"#,
        );
        assert_eq!(
            hex(&signature),
            "5b060164faa8f136926a4960f7ecb1aa7b5e2e4eb6c390467252d9aa659cfa1f"
        );
    }

    #[test]
    fn counter_nonces_climb_and_answers_are_framed_by_length() {
        let mut device = Device::of_group(&[7; 32], "bench-x-h0");
        let first = device.sign("GET", "/v1/mbox", "", b"");
        let second = device.sign("GET", "/v1/mbox", "", b"");
        assert_eq!(first[2].1, "c:1");
        assert_eq!(second[2].1, "c:2");
        assert_ne!(first[3].1, second[3].1);
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1";
        assert_eq!(parse_head(answer).expect("parses"), Some((200, 38, 2)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").expect("parses"), None);
    }
}
