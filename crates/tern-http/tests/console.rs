//! The web console on the bridge's listener: its files with their media types, caching and
//! CSP; the login that turns an operator token into a session cookie; the cookie taken by the
//! operator routes as the token is (same scopes), changes made with it only from the
//! console's own origin; the first start's admin token and one-time login link; an
//! operator's publish reaching an MQTT subscriber; logins with an operator user's password
//! or an identity provider's JWT.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;

use tern_http::tokens::{self, Scope, TokenSet};
use tern_http::{HttpConfig, HttpListener};

mod common;
use common::{exchange, subscriber};

fn config(dir: &Path) -> HttpConfig {
    let listener = HttpListener {
        bind: "127.0.0.1:0".parse().unwrap(),
        tls: None,
    };
    HttpConfig::new(vec![listener], dir.to_owned())
}

/// Writes tokens of these ids and scopes into `dir`; their texts.
fn tokens_in(dir: &Path, made: &[(&str, Vec<Scope>)]) -> Vec<String> {
    let mut set = TokenSet::default();
    let texts = made
        .iter()
        .map(|(id, scopes)| {
            let (text, record) =
                tokens::new_token(id, scopes.clone(), String::new(), Vec::new(), 0, None).unwrap();
            set.add(record).unwrap();
            text
        })
        .collect();
    tokens::write(dir, &set).unwrap();
    texts
}

/// A request with these extra header lines; status, headers, body as text.
fn call(
    http: SocketAddr,
    method: &str,
    path: &str,
    headers: &[String],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {http}\r\nConnection: close\r\n\
         Content-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    let (status, headers, body) = exchange(http, &head, body.as_bytes());
    (status, headers, String::from_utf8(body).unwrap())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Logs in with a body; the cookie's `name=value` and the whole Set-Cookie header.
fn login(http: SocketAddr, body: &str) -> (u16, String, String) {
    let origin = format!("Origin: http://{http}");
    let (status, headers, _) = call(http, "POST", "/v1/console/login", &[origin], body);
    let set_cookie = header(&headers, "set-cookie").to_owned();
    let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();
    (status, cookie, set_cookie)
}

#[test]
fn the_console_is_served_with_its_media_types_caching_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    tokens_in(dir.path(), &[("ops", vec![Scope::Read])]);
    let running = common::start(config(dir.path()));
    let (status, headers, page) = call(running.http, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    let policy = header(&headers, "content-security-policy");
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"));
    let script = page
        .split('"')
        .find(|part| part.starts_with("/assets/") && part.ends_with(".js"))
        .unwrap();
    let (status, headers, _) = call(running.http, "GET", script, &[], "");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        "text/javascript; charset=utf-8"
    );
    assert!(header(&headers, "cache-control").contains("immutable"));
    let (status, _, _) = call(running.http, "GET", "/assets/none.js", &[], "");
    assert_eq!(status, 404);
}

#[test]
fn a_session_cookie_acts_as_its_token_and_changes_need_the_consoles_origin() {
    let dir = tempfile::tempdir().unwrap();
    let texts = tokens_in(
        dir.path(),
        &[
            ("ops", vec![Scope::Read, Scope::Write]),
            ("viewer", vec![Scope::Read]),
        ],
    );
    let running = common::start(config(dir.path()));
    let http = running.http;
    assert!(
        running.bridge.console_login_link().is_none(),
        "operators exist"
    );

    // A login from another site's page, and a wrong token, are refused.
    let body = format!("{{\"token\":\"{}\"}}", texts[0]);
    let elsewhere = "Origin: http://evil.example".to_owned();
    let (status, _, _) = call(
        http,
        "POST",
        "/v1/console/login",
        std::slice::from_ref(&elsewhere),
        &body,
    );
    assert_eq!(status, 403);
    // The token with its last character changed (to one it does not already have).
    let (kept, last) = texts[0].split_at(texts[0].len() - 1);
    let other = if last == "0" { '1' } else { '0' };
    let wrong = format!("{{\"token\":\"{kept}{other}\"}}");
    assert_eq!(login(http, &wrong).0, 401);

    let (status, cookie, set_cookie) = login(http, &body);
    assert_eq!(status, 200);
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"));
    assert!(!set_cookie.contains("Secure"), "plain HTTP: {set_cookie}");
    let with_cookie = format!("Cookie: {cookie}");
    let (status, _, body) = call(
        http,
        "GET",
        "/v1/admin/sessions",
        std::slice::from_ref(&with_cookie),
        "",
    );
    assert_eq!((status, body.as_str()), (200, "{\"sessions\":[]}"));
    let (status, _, who) = call(
        http,
        "GET",
        "/v1/console/session",
        std::slice::from_ref(&with_cookie),
        "",
    );
    assert_eq!(status, 200);
    assert!(who.contains("\"id\":\"ops\""), "{who}");

    // A change with the cookie: refused without the console's Origin, taken with it.
    let delete =
        |headers: &[String]| call(http, "DELETE", "/v1/admin/sessions/nobody", headers, "").0;
    let own = format!("Origin: http://{http}");
    assert_eq!(delete(std::slice::from_ref(&with_cookie)), 403);
    assert_eq!(delete(&[with_cookie.clone(), elsewhere]), 403);
    assert_eq!(
        delete(&[with_cookie.clone(), own.clone()]),
        404,
        "no_session"
    );
    // A bearer token needs no Origin, as before.
    assert_eq!(
        delete(&[format!("Authorization: Bearer {}", texts[0])]),
        404
    );

    // A session has its token's scopes: a viewer's cookie cannot change anything.
    let (_, viewer, _) = login(http, &format!("{{\"token\":\"{}\"}}", texts[1]));
    assert_eq!(delete(&[format!("Cookie: {viewer}"), own.clone()]), 403);

    // Logged out, the cookie is nothing; without one, the routes want a token.
    let (status, headers, _) = call(
        http,
        "POST",
        "/v1/console/logout",
        &[with_cookie.clone(), own],
        "",
    );
    assert_eq!(status, 200);
    assert!(header(&headers, "set-cookie").contains("Max-Age=0"));
    let (status, _, _) = call(http, "GET", "/v1/admin/sessions", &[with_cookie], "");
    assert_eq!(status, 401);
    let (status, _, body) = call(http, "GET", "/v1/admin/sessions", &[], "");
    assert_eq!(status, 401);
    assert!(body.contains("token_missing"), "{body}");
}

#[test]
fn a_first_start_makes_an_admin_token_and_a_login_link_that_works_once() {
    let dir = tempfile::tempdir().unwrap();
    let running = common::start(config(dir.path()));
    let link = running.bridge.console_login_link().unwrap();
    assert!(running.bridge.console_login_link().is_none(), "given once");
    let prefix = format!("http://{}/#login=", running.http);
    let code = link.strip_prefix(&prefix).unwrap();
    let kept = dir
        .path()
        .join(tern_http::console_session::ADMIN_TOKEN_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&kept).unwrap();
    assert!(token.starts_with("tot1.console-admin."));

    let body = format!("{{\"code\":\"{code}\"}}");
    let (status, cookie, _) = login(running.http, &body);
    assert_eq!(status, 200);
    let (status, _, _) = call(
        running.http,
        "GET",
        "/metrics",
        &[format!("Cookie: {cookie}")],
        "",
    );
    assert_eq!(status, 200, "the admin token has every scope");
    assert_eq!(login(running.http, &body).0, 401, "a code is used once");
    // The token itself logs in as often as wanted.
    let (status, _, _) = login(running.http, &format!("{{\"token\":\"{}\"}}", token.trim()));
    assert_eq!(status, 200);
    drop(running);

    // The next start has an operator: no new token, no link.
    let running = common::start(config(dir.path()));
    assert!(running.bridge.console_login_link().is_none());
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), token);
}

#[test]
fn an_operators_publish_reaches_a_subscriber_within_the_tokens_topics() {
    let dir = tempfile::tempdir().unwrap();
    let texts = tokens_in(dir.path(), &[("ops", vec![Scope::Write])]);
    let running = common::start(config(dir.path()));
    let mut sub = subscriber(running.mqtt, "console/t");
    let bearer = format!("Authorization: Bearer {}", texts[0]);
    let body = r#"{"topic":"console/t","payload":"hi","qos":1}"#;
    let (status, _, answer) = call(
        running.http,
        "POST",
        "/v1/console/publish",
        std::slice::from_ref(&bearer),
        body,
    );
    assert_eq!((status, answer.as_str()), (200, r#"{"qos":1,"matched":1}"#));
    let mut publish = [0; 2 + 2 + 9 + 2];
    sub.read_exact(&mut publish).unwrap();
    assert_eq!(&publish[4..13], b"console/t");
    assert_eq!(&publish[13..], b"hi");
    // `#` does not cover `$SYS`: outside the token's topics.
    let body = r#"{"topic":"$SYS/x","payload":"hi"}"#;
    let (status, _, _) = call(running.http, "POST", "/v1/console/publish", &[bearer], body);
    assert_eq!(status, 403);
}

/// An HS256 JWT of `claims` signed with `secret`.
fn jwt(claims: &serde_json::Value, secret: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    use hmac::Mac as _;
    let head = B64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = B64.encode(claims.to_string());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(format!("{head}.{body}").as_bytes());
    format!("{head}.{body}.{}", B64.encode(mac.finalize().into_bytes()))
}

#[test]
fn a_password_or_jwt_login_acts_as_what_it_was_granted_until_the_jwt_expires() {
    use tern_http::console_login::{OperatorGrant, OperatorJwt, OperatorUsers};
    let dir = tempfile::tempdir().unwrap();
    let mut file = tern_auth::PasswordFile::default();
    file.set_password("alice", "alice-pw").unwrap();
    file.set_password("nobody-granted", "pw").unwrap();
    std::fs::write(dir.path().join("operators"), file.render()).unwrap();
    let mut config = config(dir.path());
    let grant = OperatorGrant {
        scopes: vec![Scope::Read],
        clients: String::new(),
        topics: vec!["#".to_owned()],
        owner: None,
    };
    config.operator_users = Some(OperatorUsers {
        file: dir.path().join("operators"),
        grants: [("alice".to_owned(), grant)].into(),
    });
    config.operator_jwt = Some(OperatorJwt {
        verifier: tern_auth::JwtVerifier::new("HS256", b"idp", "sub", None, 0).unwrap(),
        scopes_claim: "scope".to_owned(),
        owner_claim: "owner".to_owned(),
    });
    let running = common::start(config);
    let http = running.http;
    assert!(
        running.bridge.console_login_link().is_none(),
        "operators are configured: no first start's token"
    );
    for refused in [
        r#"{"user":"alice","password":"wrong"}"#,
        r#"{"user":"nobody","password":"alice-pw"}"#,
        r#"{"user":"nobody-granted","password":"pw"}"#,
        r#"{"user":"alice","password":"alice-pw","token":"x"}"#,
    ] {
        assert!(matches!(login(http, refused).0, 400 | 401), "{refused}");
    }
    let (status, cookie, _) = login(http, r#"{"user":"alice","password":"alice-pw"}"#);
    assert_eq!(status, 200);
    let with_cookie = format!("Cookie: {cookie}");
    let (_, _, who) = call(
        http,
        "GET",
        "/v1/console/session",
        std::slice::from_ref(&with_cookie),
        "",
    );
    assert!(who.contains("\"id\":\"user:alice\""), "{who}");
    // Its grant's scopes and no more: reading, not changing.
    let (status, _, _) = call(
        http,
        "GET",
        "/v1/admin/sessions",
        std::slice::from_ref(&with_cookie),
        "",
    );
    assert_eq!(status, 200);
    let own = format!("Origin: http://{http}");
    let (status, _, body) = call(
        http,
        "DELETE",
        "/v1/admin/sessions/nobody",
        &[with_cookie, own],
        "",
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("scope_denied"), "{body}");

    // A JWT: its session lasts until the JWT's expiry, its claims are its scopes and owner.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jwt(
        &serde_json::json!({"sub": "carol", "scope": "read events", "owner": "acme", "exp": now + 100}),
        b"idp",
    );
    let (status, cookie, set_cookie) = login(http, &format!("{{\"jwt\":\"{token}\"}}"));
    assert_eq!(status, 200, "{set_cookie}");
    let max_age: u64 = set_cookie
        .split("Max-Age=")
        .nth(1)
        .and_then(|rest| rest.split(';').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((95..=100).contains(&max_age), "{set_cookie}");
    let (_, _, who) = call(
        http,
        "GET",
        "/v1/console/session",
        &[format!("Cookie: {cookie}")],
        "",
    );
    assert!(
        who.contains("\"owner\":\"acme\"") && who.contains("\"scopes\":[\"read\",\"events\"]"),
        "{who}"
    );
    let refused = [
        jwt(
            &serde_json::json!({"sub": "carol", "scope": "read", "exp": now + 100}),
            b"other",
        ),
        jwt(
            &serde_json::json!({"sub": "carol", "scope": "read", "exp": now - 100}),
            b"idp",
        ),
        jwt(
            &serde_json::json!({"sub": "carol", "scope": "openid", "exp": now + 100}),
            b"idp",
        ),
        // An owner's operator reads no metrics.
        jwt(
            &serde_json::json!({"sub": "carol", "scope": "metrics", "owner": "acme", "exp": now + 100}),
            b"idp",
        ),
    ];
    for token in refused {
        let (status, _, _) = login(http, &format!("{{\"jwt\":\"{token}\"}}"));
        assert_eq!(status, 401, "{token}");
    }
}
