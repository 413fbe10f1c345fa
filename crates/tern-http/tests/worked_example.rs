//! The worked example of docs/http.md, recomputed: its canonical request, request signature
//! and response signature are what the code makes of its request, so a reader who checks
//! their own implementation against the page checks it against the broker.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use tern_http::signing::{self, RequestParts};

const PAGE: &str = include_str!("../../../docs/http.md");

/// The fenced block that follows `after` in the page.
fn block_after(after: &str) -> String {
    let start = PAGE
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} not in docs/http.md"));
    let rest = &PAGE[start..];
    let open = rest.find("```").expect("a fenced block");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")]
        .trim_end()
        .to_owned()
}

fn secret() -> [u8; 32] {
    let hex = block_after("Key `d:ESP32-7F3A`, secret");
    let mut secret = [0; 32];
    for (i, byte) in secret.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
    }
    secret
}

#[test]
fn the_worked_example_signs_as_the_page_says() {
    let request = block_after("The request:");
    let (head, body) = request
        .split_once("\n\n")
        .expect("headers, blank line, body");
    let mut lines = head.lines();
    let start: Vec<&str> = lines.next().unwrap().split(' ').collect();
    let (path, query) = start[1].split_once('?').unwrap();
    let headers: Vec<(&str, &[u8])> = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name, value.trim().as_bytes())
        })
        .collect();
    let parts = RequestParts {
        method: start[0],
        path,
        query,
        headers: &headers,
        body: body.as_bytes(),
    };
    let canonical = signing::canonical_request(&parts).unwrap();
    assert_eq!(canonical, block_after("Its canonical request"));
    let signature = signing::sign(&secret(), canonical.as_bytes());
    assert_eq!(
        format!("Tern-Signature: {}", signing::signature_header(&signature)),
        block_after("and its signature:")
    );

    let response = signing::response_string(
        200,
        &signing::hex(&signature),
        br#"{"qos":1,"matched":2}"#,
        1_767_225_601,
    );
    assert_eq!(response, block_after("is signed over"));
    let response_signature = signing::sign(&secret(), response.as_bytes());
    let stated = format!(
        "giving `Tern-Response-Signature: {}`",
        signing::signature_header(&response_signature)
    );
    assert!(PAGE.contains(&stated), "the page should say {stated}");
}
