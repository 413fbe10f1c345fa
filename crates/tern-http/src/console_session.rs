//! The web console's login: an operator token is exchanged for a session cookie (HttpOnly,
//! SameSite=Strict, Secure over TLS), and every operator route takes the cookie exactly as it
//! takes the token. A session keeps the token it was made with and the token is verified again
//! at each request, so a session can do what its token can (scopes, realm, whatever a token
//! carries), no more, and ends when the token is revoked or expires. A request that changes
//! something with the cookie must come from the console's own page: its `Origin` must be the
//! address it was sent to (bearer-token requests are not cookies a browser sends on its own,
//! and need no such check).
//!
//! A login with an operator user's password or an identity provider's JWT
//! (`console_login.rs`) makes a session that keeps the record it was granted instead, checked
//! the same way at each request, until the session ends (or the JWT expires).
//!
//! On a first start, with no operator at all (no token, no operator users, no JWT login),
//! the bridge makes one (`console-admin`,
//! every scope), keeps its text in the data directory (mode 0600) and offers a one-time login
//! code, logged as a link: a code is used once, and only from a loopback address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::server::{read_json, unsigned, Peer, RequestLine, Shared};
use crate::tokens::{self, Operator, Scope, TokenRecord};

/// What a session acts as.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// An operator token's text, verified again at each request.
    Token(String),
    /// What a password or JWT login was granted (`console_login.rs`).
    Granted(TokenRecord),
}

/// The cookie's name.
pub(crate) const COOKIE: &str = "tern_session";
/// The file the first start's admin token is kept in, in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "console-admin.token";
/// The id of the first start's admin token.
pub const ADMIN_TOKEN_ID: &str = "console-admin";
/// How long a session lasts after its login.
const SESSION_SECS: u64 = 12 * 3600;
/// Sessions kept at once, at most: past it, the one that ends soonest goes.
const SESSIONS_MAX: usize = 1000;
/// Every scope, for the first start's token and for saying what a session may do.
const SCOPES: [Scope; 5] = [
    Scope::Read,
    Scope::Write,
    Scope::Keys,
    Scope::Events,
    Scope::Metrics,
];

/// Whether a request came over TLS (set on each request by the listener).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transport {
    pub(crate) tls: bool,
}

/// The console's sessions, in memory (a restart logs everyone out).
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    /// By the SHA-256 of the session id: what it acts as, and when it ends.
    sessions: HashMap<[u8; 32], (Credential, u64)>,
    /// The SHA-256 of the one-time login code, and the token it logs in with.
    login_code: Option<([u8; 32], String)>,
    /// The code itself, until it is logged.
    code_to_log: Option<String>,
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

fn random_hex() -> String {
    crate::signing::hex(&tern_auth::MasterKey::random().to_bytes())
}

impl Sessions {
    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        match self.table.lock() {
            Ok(table) => table,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// A new session for `credential` at `now`, ending at `ends`; its id (the cookie's value).
    fn open(&self, credential: Credential, now: u64, ends: u64) -> String {
        let id = random_hex();
        let mut table = self.table();
        table.sessions.retain(|_, (_, ends)| *ends > now);
        if table.sessions.len() >= SESSIONS_MAX {
            let soonest = table
                .sessions
                .iter()
                .min_by_key(|(_, (_, ends))| *ends)
                .map(|(key, _)| *key);
            if let Some(key) = soonest {
                table.sessions.remove(&key);
            }
        }
        table.sessions.insert(digest(&id), (credential, ends));
        id
    }

    /// What a session still open at `now` acts as.
    fn credential(&self, id: &str, now: u64) -> Option<Credential> {
        let table = self.table();
        let (credential, ends) = table.sessions.get(&digest(id))?;
        (*ends > now).then(|| credential.clone())
    }

    fn close(&self, id: &str) {
        self.table().sessions.remove(&digest(id));
    }

    /// Offers a one-time login code for `token`.
    pub(crate) fn offer_login_code(&self, token: String) {
        let code = random_hex();
        let mut table = self.table();
        table.login_code = Some((digest(&code), token));
        table.code_to_log = Some(code);
    }

    /// The login link of the code offered, once: the first listener's address (loopback for
    /// an unspecified one: the code is taken only from there).
    pub(crate) fn login_link(&self, listeners: &[(SocketAddr, bool)]) -> Option<String> {
        let code = self.table().code_to_log.take()?;
        let (address, tls) = listeners.first()?;
        let mut address = *address;
        if address.ip().is_unspecified() || !address.ip().is_loopback() {
            address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        let scheme = if *tls { "https" } else { "http" };
        Some(format!("{scheme}://{address}/#login={code}"))
    }

    /// The token a login code logs in with, once.
    fn redeem(&self, code: &str) -> Option<String> {
        let mut table = self.table();
        let presented = digest(code);
        let same = table.login_code.as_ref().is_some_and(|(hash, _)| {
            subtle::ConstantTimeEq::ct_eq(&hash[..], &presented[..]).into()
        });
        if same {
            table.login_code.take().map(|(_, token)| token)
        } else {
            None
        }
    }
}

/// On a first start (no token in the file or the configuration, and no other `logins`
/// configured), makes the `console-admin` token with every scope, keeps it in the token file
/// (its hash) and in [`ADMIN_TOKEN_FILE`] (its text, mode 0600); its text, or `None` when
/// operators exist.
pub(crate) fn first_start(
    dir: &Path,
    configured: &[TokenRecord],
    logins: bool,
    now: u64,
) -> Result<Option<String>, String> {
    let mut set = tokens::read(dir)?;
    if logins || !configured.is_empty() || set.tokens().next().is_some() {
        return Ok(None);
    }
    let (text, record) = tokens::new_token(
        ADMIN_TOKEN_ID,
        SCOPES.to_vec(),
        String::new(),
        Vec::new(),
        now,
        None,
    )?;
    set.add(record)?;
    crate::keys::write_private(dir, ADMIN_TOKEN_FILE, format!("{text}\n").as_bytes())?;
    tokens::write(dir, &set)?;
    Ok(Some(text))
}

/// The session cookie's value in a request, if it has one.
fn cookie(request: &Request) -> Option<&str> {
    request
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
}

/// Whether a request comes from a page of the address it was sent to: its `Origin` is the
/// scheme and `Host` it reached. A browser sends `Origin` with every cross-site request and
/// every POST, PUT, PATCH and DELETE, so a page elsewhere cannot pass.
fn same_origin(request: &Request) -> bool {
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let scheme = if over_tls(request) { "https" } else { "http" };
    match (header("origin"), header("host")) {
        (Some(origin), Some(host)) => origin == format!("{scheme}://{host}"),
        _ => false,
    }
}

fn over_tls(request: &Request) -> bool {
    request
        .extensions()
        .get::<Transport>()
        .is_some_and(|t| t.tls)
}

fn changes_something(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What the request's console session acts as, for `admin::authorize`: `Ok(None)` without a
/// session cookie; a refusal for a session that ended, or a change from another origin.
pub(crate) fn credential_of(
    shared: &Shared,
    request: &Request,
) -> Result<Option<Credential>, ApiError> {
    let Some(id) = cookie(request) else {
        return Ok(None);
    };
    let Some(credential) = shared.console.credential(id, crate::bridge::unix_now()) else {
        return Err(ApiError::new(
            401,
            "token_invalid",
            "the console session ended: log in again",
        ));
    };
    if changes_something(request.method()) && !same_origin(request) {
        return Err(origin_denied());
    }
    Ok(Some(credential))
}

fn origin_denied() -> ApiError {
    ApiError::new(
        403,
        "origin_denied",
        "a change made with the console's cookie must come from the console's page (Origin)",
    )
}

/// The console's routes: its files, its login, its publish.
pub(crate) fn console_routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/v1/console/login", post(login))
        .route("/v1/console/logout", post(logout))
        .route("/v1/console/session", get(session))
        .route("/v1/console/publish", post(crate::console_publish::publish))
        .merge(crate::console_assets::routes())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    jwt: Option<String>,
}

fn line_of(request: &Request) -> RequestLine {
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |peer| peer.0);
    RequestLine {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        peer,
    }
}

fn cookie_header(value: &str, max_age: u64, tls: bool) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}"
    ))
    .ok()
}

/// `POST /v1/console/login` `{"token"}`, `{"user", "password"}`, `{"jwt"}` or `{"code"}`: a
/// session cookie for a token that verifies, an operator user's password, an identity
/// provider's JWT (when configured), or the first start's one-time code (from loopback).
#[utoipa::path(post, path = "/v1/console/login", tag = "console",
    responses((status = 200, description = "Logged in: Set-Cookie tern_session (HttpOnly, SameSite=Strict, Secure over TLS); the body says the session's id (a token's, `user:NAME` or `jwt:NAME`), scopes, clients, owner and topics."),
              (status = "4XX", description = "A token or code that is not valid (401 token_invalid), a user, password or JWT that is not (401 login_invalid), or another Origin (403 origin_denied).", body = crate::error::ErrorBody)))]
pub(crate) async fn login(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let line = line_of(&request);
    let refuse = |error: ApiError| {
        shared.refuse(&error, &line, None);
        unsigned(error.status, error.body())
    };
    // A login made by another site's page would log the browser in as someone else.
    if !same_origin(&request) {
        return refuse(origin_denied());
    }
    let tls = over_tls(&request);
    let body: Login = match read_json(&shared, request).await {
        Ok(body) => body,
        Err(error) => return refuse(error),
    };
    let now = crate::bridge::unix_now();
    let (credential, ends) = match body {
        Login {
            token: Some(token),
            code: None,
            user: None,
            password: None,
            jwt: None,
        } => (
            Credential::Token(token.trim().to_owned()),
            now + SESSION_SECS,
        ),
        Login {
            code: Some(code),
            token: None,
            user: None,
            password: None,
            jwt: None,
        } => {
            if !line.peer.ip().is_loopback() {
                return refuse(ApiError::new(
                    403,
                    "origin_denied",
                    "a login code is taken only from a loopback address",
                ));
            }
            match shared.console.redeem(&code) {
                Some(token) => (Credential::Token(token), now + SESSION_SECS),
                None => {
                    return refuse(ApiError::new(
                        401,
                        "token_invalid",
                        "the login code is not valid or was used",
                    ))
                }
            }
        }
        Login {
            user: Some(user),
            password: Some(password),
            token: None,
            code: None,
            jwt: None,
        } => match password_login(&shared, user, password).await {
            Ok(record) => (Credential::Granted(record), now + SESSION_SECS),
            Err(why) => return refuse_login(&shared, &line, &why),
        },
        Login {
            jwt: Some(jwt),
            token: None,
            code: None,
            user: None,
            password: None,
        } => {
            let Some(config) = &shared.config.operator_jwt else {
                return refuse_login(&shared, &line, "a JWT login, and none is configured");
            };
            match crate::console_login::jwt_login(config, &jwt) {
                Ok((record, until)) => (Credential::Granted(record), until.min(now + SESSION_SECS)),
                Err(why) => return refuse_login(&shared, &line, &why),
            }
        }
        _ => {
            return refuse(ApiError::bad_request(
                "the body: {\"token\"}, {\"user\", \"password\"}, {\"jwt\"} or {\"code\"}",
            ))
        }
    };
    let operator = match operator_of(&shared, &credential, now) {
        Ok(operator) => operator,
        Err(why) => {
            shared.refuse(&ApiError::new(401, "token_invalid", why), &line, None);
            let error = ApiError::new(401, "token_invalid", "the token is not valid");
            return unsigned(error.status, error.body());
        }
    };
    tracing::info!("console login as {} from {}", operator.id, line.peer);
    let id = shared.console.open(credential, now, ends);
    let mut response = describe(&operator);
    if let Some(value) = cookie_header(&id, ends.saturating_sub(now), tls) {
        response.headers_mut().insert("set-cookie", value);
    }
    response
}

/// Password checks at once, at most: a flood of logins (the route answers anyone) then costs
/// two threads and twice argon2id's memory, not a thread and its memory each.
static PASSWORD_CHECKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// An operator user's password checked off the async threads (argon2id is slow on purpose).
async fn password_login(
    shared: &Shared,
    user: String,
    password: String,
) -> Result<TokenRecord, String> {
    let Some(users) = shared.config.operator_users.clone() else {
        return Err("a password login, and no operators_file is configured".to_owned());
    };
    let Ok(_turn) = PASSWORD_CHECKS.acquire().await else {
        return Err("the password checks stopped".to_owned());
    };
    tokio::task::spawn_blocking(move || {
        crate::console_login::password_login(&users, &user, &password)
    })
    .await
    .unwrap_or_else(|error| Err(format!("the password check failed: {error}")))
}

/// A refused password or JWT login: the log says why, the answer only that it was refused.
fn refuse_login(shared: &Shared, line: &RequestLine, why: &str) -> Response<Body> {
    shared.refuse(&ApiError::new(401, "login_invalid", why), line, None);
    let error = ApiError::new(
        401,
        "login_invalid",
        "the user, password or JWT is not valid",
    );
    unsigned(error.status, error.body())
}

/// What a session's credential allows at `now`, or why not (for the log): a token is
/// verified again, a granted record taken as it is.
pub(crate) fn operator_of(
    shared: &Shared,
    credential: &Credential,
    now: u64,
) -> Result<Operator, String> {
    let fleet = &shared.config.fleet_topics;
    match credential {
        Credential::Token(token) => shared
            .tokens
            .current()
            .verify(token.trim(), now, fleet)
            .map_err(|why| why.describe().to_owned()),
        Credential::Granted(record) => tokens::operator_of(record, fleet),
    }
}

/// `POST /v1/console/logout`: ends the session and clears the cookie.
#[utoipa::path(post, path = "/v1/console/logout", tag = "console",
    responses((status = 200, description = "The session ended; the cookie is cleared."),
              (status = 403, description = "Another Origin.", body = crate::error::ErrorBody)))]
pub(crate) async fn logout(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    if cookie(&request).is_some() && !same_origin(&request) {
        let error = origin_denied();
        shared.refuse(&error, &line_of(&request), None);
        return unsigned(error.status, error.body());
    }
    if let Some(id) = cookie(&request) {
        shared.console.close(id);
    }
    let tls = over_tls(&request);
    let mut response = unsigned(200, bytes::Bytes::from_static(b"{\"logged_out\":true}"));
    if let Some(value) = cookie_header("", 0, tls) {
        response.headers_mut().insert("set-cookie", value);
    }
    response
}

/// `GET /v1/console/session`: the token the session (or bearer token) acts as.
#[utoipa::path(get, path = "/v1/console/session", tag = "console",
    responses((status = 200, description = "{\"id\", \"scopes\", \"clients\", \"owner\" (null unless the token is an owner's), \"topics\"} of the session's token."),
              (status = 401, description = "No session, or it ended.", body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn session(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    // Any scope will do: the page asks who it is before it asks anything else.
    match crate::admin::authenticate(&shared, &request) {
        Ok((operator, _)) => describe(&operator),
        Err(response) => *response,
    }
}

/// What a session may do, as the page shows it.
fn describe(operator: &Operator) -> Response<Body> {
    let scopes: Vec<&str> = SCOPES
        .into_iter()
        .filter(|scope| operator.has(*scope))
        .map(Scope::name)
        .collect();
    let (clients, owner) = match operator.realm() {
        crate::realm::Realm::Clients(prefix) => (prefix.as_str(), None),
        crate::realm::Realm::Owner(owner) => ("", Some(owner.as_str())),
    };
    let body = serde_json::json!({
        "id": operator.id,
        "scopes": scopes,
        "clients": clients,
        "owner": owner,
        "topics": operator.filters(),
    });
    unsigned(
        200,
        bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

/// Offers the first start's admin token as a one-time login code (`first_start`'s outcome; a
/// data directory that cannot be written leaves the console to tokens made by hand).
pub(crate) fn offer_first_login(sessions: &Sessions, first_admin: Result<Option<String>, String>) {
    match first_admin {
        Ok(Some(token)) => sessions.offer_login_code(token),
        Ok(None) => {}
        Err(error) => tracing::warn!("cannot make the console's first admin token: {error}"),
    }
}
