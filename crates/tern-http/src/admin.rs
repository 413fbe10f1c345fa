//! The operator API (`/v1/admin/...`) on the HTTP threads: the bearer token and its scope are
//! checked here (every refusal logged with its reason and counted, as any refused request),
//! then the operation goes to the broker thread (`admin_ops`) and is answered from there. Keys
//! are the key file's, changed here as `tern key` changes them; bans are kept in the data
//! directory too, so they outlast a restart.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::admin_ops::{AdminOp, OperatorEnvelope};
use crate::console_session::Credential;
use crate::error::ApiError;
use crate::publish::Query;
use crate::replay::Answer;
use crate::server::{unsigned, Peer, RequestLine, Shared};
use crate::tokens::{Operator, Scope};

/// Lists are cut to this many entries unless `limit` says fewer.
const LIST_LIMIT_MAX: usize = 1000;
/// The bans file in the data directory.
pub(crate) const BANS_FILE: &str = "http-bans.json";

/// A request from an operator whose token verified and holds the scope the route needs.
pub(crate) struct Authorized {
    pub(crate) operator: Operator,
    pub(crate) line: RequestLine,
    pub(crate) query: Query,
    /// The rest of the path after the route's prefix, percent-decoded.
    pub(crate) rest: String,
}

/// Checks the bearer token of `request`, or the token of its console session (the same
/// check: `console_session`); a refusal is logged, counted and answered.
pub(crate) fn authenticate(
    shared: &Shared,
    request: &Request,
) -> Result<(Operator, RequestLine), Box<Response<Body>>> {
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |peer| peer.0);
    let line = RequestLine {
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        peer,
    };
    let refuse = |error: ApiError| {
        shared.refuse(&error, &line, None);
        Box::new(unsigned(error.status, error.body()))
    };
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    let credential = match header.and_then(|h| h.strip_prefix("Bearer ")) {
        Some(token) => Credential::Token(token.to_owned()),
        None => match crate::console_session::credential_of(shared, request) {
            Ok(Some(credential)) => credential,
            Ok(None) => {
                return Err(refuse(ApiError::new(
                    401,
                    "token_missing",
                    "Authorization: Bearer TOKEN is needed",
                )))
            }
            Err(error) => return Err(refuse(error)),
        },
    };
    match crate::console_session::operator_of(shared, &credential, crate::bridge::unix_now()) {
        Ok(operator) => Ok((operator, line)),
        Err(why) => {
            // One answer for every bad token; the log says which.
            let error = ApiError::new(401, "token_invalid", "the token is not valid");
            let logged = ApiError::new(401, "token_invalid", why);
            shared.refuse(&logged, &line, None);
            Err(Box::new(unsigned(error.status, error.body())))
        }
    }
}

/// Checks the bearer token (or console session) of `request` for `scope`; a refusal is
/// logged, counted and answered. `prefix` is the route's fixed part, before `rest`.
pub(crate) fn authorize(
    shared: &Shared,
    request: &Request,
    scope: Scope,
    prefix: &str,
) -> Result<Authorized, Box<Response<Body>>> {
    let (operator, line) = authenticate(shared, request)?;
    let refuse = |error: ApiError, who: Option<&str>| {
        shared.refuse(&error, &line, who);
        unsigned(error.status, error.body())
    };
    let who = format!("token {}", operator.id);
    if !operator.has(scope) {
        let error = ApiError::new(
            403,
            "scope_denied",
            format!("the token lacks the scope {:?}", scope.name()),
        );
        return Err(Box::new(refuse(error, Some(&who))));
    }
    let query = match Query::parse(request.uri().query().unwrap_or_default()) {
        Ok(query) => query,
        Err(error) => return Err(Box::new(refuse(error, Some(&who)))),
    };
    let rest = request
        .uri()
        .path()
        .strip_prefix(prefix)
        .unwrap_or_default();
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let rest = match crate::publish::levels_of(rest, "bad_request") {
        Ok(rest) => rest,
        Err(error) => return Err(Box::new(refuse(error, Some(&who)))),
    };
    Ok(Authorized {
        operator,
        line,
        query,
        rest,
    })
}

impl Authorized {
    /// A refusal after the token verified: logged with the token's id, counted, answered.
    pub(crate) fn refuse(&self, shared: &Shared, error: &ApiError) -> Response<Body> {
        shared.refuse(
            error,
            &self.line,
            Some(&format!("token {}", self.operator.id)),
        );
        unsigned(error.status, error.body())
    }

    /// The broker thread's answer; a refusal is logged and counted.
    pub(crate) fn respond(&self, shared: &Shared, answer: Answer) -> Response<Body> {
        if answer.status >= 400 {
            return self.refuse(shared, &crate::server::error_of(&answer));
        }
        unsigned(answer.status, answer.body)
    }

    /// `limit` from the query, within 1..=LIST_LIMIT_MAX (default `default`).
    fn limit(&self, default: usize) -> Result<usize, ApiError> {
        match self.query.get("limit") {
            None => Ok(default),
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=LIST_LIMIT_MAX).contains(n))
                .ok_or_else(|| ApiError::bad_request(format!("limit: 1-{LIST_LIMIT_MAX}"))),
        }
    }
}

/// The operator API's routes.
pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{delete, get};
    axum::Router::new()
        .route("/v1/admin/clients", get(clients))
        .route("/v1/admin/clients/{*client_id}", delete(kick))
        .route("/v1/admin/sessions", get(sessions))
        .route(
            "/v1/admin/sessions/{*client_id}",
            get(session).delete(delete_session),
        )
        .route("/v1/admin/subscriptions", get(subscriptions))
        .route(
            "/v1/admin/retained/{*topic}",
            get(retained).delete(delete_retained),
        )
        .route("/v1/admin/banned", get(banned).post(ban))
        .route("/v1/admin/banned/{*client_id}", delete(unban))
        .merge(crate::admin_keys::routes())
        .merge(crate::admin_fleet::routes())
        .merge(crate::admin_firmware::routes())
        .merge(crate::fleet_api::routes())
        .merge(crate::fleet_notify::routes())
}

/// Sends `op` to the broker thread and answers as it says (refusals logged and counted).
pub(crate) async fn operate(shared: &Shared, who: &Authorized, op: AdminOp) -> Response<Body> {
    match ask(shared, op).await {
        Ok(answer) => who.respond(shared, answer),
        Err(error) => who.refuse(shared, &error),
    }
}

/// Sends `op` to the broker thread and waits for its answer.
pub(crate) async fn ask(shared: &Shared, op: AdminOp) -> Result<Answer, ApiError> {
    let (reply, answer) = oneshot::channel();
    let gone = || ApiError::unavailable("the broker is shutting down");
    shared
        .operator
        .send(OperatorEnvelope { op, reply })
        .await
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())
}

macro_rules! authorized {
    ($shared:expr, $request:expr, $scope:expr, $prefix:expr) => {
        match crate::admin::authorize(&$shared, &$request, $scope, $prefix) {
            Ok(who) => who,
            Err(response) => return *response,
        }
    };
}
pub(crate) use authorized;

/// Connected clients in the token's realm.
#[utoipa::path(get, path = "/v1/admin/clients", tag = "admin",
    responses((status = 200, description = "{\"clients\": [session]}: those connected now."),
              (status = "4XX", description = "No token, a bad token, or a scope it lacks.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn clients(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Read, "/v1/admin/clients");
    let realm = who.operator.realm().clone();
    operate(
        &shared,
        &who,
        AdminOp::Sessions {
            realm,
            connected: true,
        },
    )
    .await
}

/// Sessions (connected or not) in the token's realm.
#[utoipa::path(get, path = "/v1/admin/sessions", tag = "admin",
    responses((status = 200, description = "{\"sessions\": [session]}."),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn sessions(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Read, "/v1/admin/sessions");
    let realm = who.operator.realm().clone();
    operate(
        &shared,
        &who,
        AdminOp::Sessions {
            realm,
            connected: false,
        },
    )
    .await
}

/// One session: its subscriptions, queue, in-flight messages and dead letters.
#[utoipa::path(get, path = "/v1/admin/sessions/{client_id}", tag = "admin",
    params(("client_id" = String, Path, description = "The client identifier."),
           ("limit" = Option<usize>, Query, description = "Messages listed per list, 1-1000 (default 100).")),
    responses((status = 200, description = "The session.", body = crate::admin_ops::SessionDetailView),
              (status = "4XX", description = "Refused, or no_session (also for a client outside the token's realm).", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn session(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Read, "/v1/admin/sessions");
    let limit = match who.limit(100) {
        Ok(limit) => limit,
        Err(error) => return who.refuse(&shared, &error),
    };
    let op = AdminOp::Session {
        realm: who.operator.realm().clone(),
        client_id: who.rest.clone(),
        limit,
    };
    operate(&shared, &who, op).await
}

/// Kicks a client (MQTT 5: DISCONNECT 0x98); `?session=discard` ends its session too.
#[utoipa::path(delete, path = "/v1/admin/clients/{client_id}", tag = "admin",
    params(("client_id" = String, Path, description = "The client identifier."),
           ("session" = Option<String>, Query, description = "keep (default) or discard.")),
    responses((status = 200, description = "{\"client_id\", \"discarded\"}."),
              (status = "4XX", description = "Refused, or no_session.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn kick(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, "/v1/admin/clients");
    let discard = match who.query.get("session") {
        None | Some("keep") => false,
        Some("discard") => true,
        Some(_) => return who.refuse(&shared, &ApiError::bad_request("session: keep or discard")),
    };
    let op = AdminOp::Kick {
        realm: who.operator.realm().clone(),
        client_id: who.rest.clone(),
        discard,
    };
    operate(&shared, &who, op).await
}

/// Ends a session (and closes its connection, if it has one).
#[utoipa::path(delete, path = "/v1/admin/sessions/{client_id}", tag = "admin",
    params(("client_id" = String, Path, description = "The client identifier.")),
    responses((status = 200, description = "{\"client_id\", \"discarded\": true}."),
              (status = "4XX", description = "Refused, or no_session.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn delete_session(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, "/v1/admin/sessions");
    let op = AdminOp::Kick {
        realm: who.operator.realm().clone(),
        client_id: who.rest.clone(),
        discard: true,
    };
    operate(&shared, &who, op).await
}

/// Subscriptions of the sessions in the token's realm (`?client=` for one).
#[utoipa::path(get, path = "/v1/admin/subscriptions", tag = "admin",
    params(("client" = Option<String>, Query, description = "Only this client's.")),
    responses((status = 200, description = "{\"subscriptions\": [{client_id, filter, qos}]}."),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn subscriptions(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Read, "/v1/admin/subscriptions");
    let op = AdminOp::Subscriptions {
        realm: who.operator.realm().clone(),
        client_id: who.query.get("client").map(str::to_owned),
    };
    operate(&shared, &who, op).await
}

/// Retained messages matching a filter (the rest of the path; `%23` for `#`).
#[utoipa::path(get, path = "/v1/admin/retained/{filter}", tag = "admin",
    params(("filter" = String, Path, description = "A topic filter inside the token's topics."),
           ("limit" = Option<usize>, Query, description = "At most, 1-1000 (default 100).")),
    responses((status = 200, description = "{\"retained\": [message]}, by topic."),
              (status = "4XX", description = "Refused; acl_denied for a filter outside the token's topics.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn retained(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Read, "/v1/admin/retained");
    let limit = match who.limit(100) {
        Ok(limit) => limit,
        Err(error) => return who.refuse(&shared, &error),
    };
    if let Err(error) = within_topics(&who, &who.rest, true) {
        return who.refuse(&shared, &error);
    }
    let op = AdminOp::Retained {
        filter: who.rest.clone(),
        limit,
    };
    operate(&shared, &who, op).await
}

/// Deletes the retained message of a topic.
#[utoipa::path(delete, path = "/v1/admin/retained/{topic}", tag = "admin",
    params(("topic" = String, Path, description = "A topic name inside the token's topics.")),
    responses((status = 200, description = "{\"topic\", \"deleted\": true}."),
              (status = "4XX", description = "Refused, acl_denied, or no_retained.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn delete_retained(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, "/v1/admin/retained");
    if let Err(error) = within_topics(&who, &who.rest, false) {
        return who.refuse(&shared, &error);
    }
    let op = AdminOp::RetainedDelete {
        topic: who.rest.clone(),
    };
    operate(&shared, &who, op).await
}

/// A filter (or a name) the token's topics cover, and one the broker takes.
fn within_topics(who: &Authorized, topic: &str, filter: bool) -> Result<(), ApiError> {
    let valid = if filter {
        topic.parse::<tern_codec::TopicFilter>().is_ok()
    } else {
        topic.parse::<tern_codec::TopicName>().is_ok()
    };
    if !valid {
        return Err(ApiError::new(400, "topic_invalid", format!("{topic:?}")));
    }
    if !who.operator.sees_topic(topic) {
        return Err(ApiError::new(
            403,
            "acl_denied",
            format!("{topic:?} is outside the token's topics"),
        ));
    }
    Ok(())
}

/// Bans are for tokens whose realm is the whole broker.
fn whole_broker(who: &Authorized) -> Result<(), ApiError> {
    if who.operator.sees_all_clients() {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        "realm_denied",
        "bans are for tokens of the whole broker",
    ))
}

/// The banned client identifiers.
#[utoipa::path(get, path = "/v1/admin/banned", tag = "admin",
    responses((status = 200, description = "{\"banned\": [{client_id, until}]}."),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn banned(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Read, "/v1/admin/banned");
    if let Err(error) = whole_broker(&who) {
        return who.refuse(&shared, &error);
    }
    operate(&shared, &who, AdminOp::Bans).await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BanBody {
    /// The client identifier to refuse, at CONNECT (0x8A Banned) and in requests.
    client_id: String,
    /// When the ban ends (Unix seconds); for ever without.
    #[serde(default)]
    until: Option<u64>,
}

/// Bans a client identifier (its connection, if any, is closed) or, with DELETE on
/// `/v1/admin/banned/{client_id}`, lifts a ban. Bans are kept in the data directory.
#[utoipa::path(post, path = "/v1/admin/banned", tag = "admin",
    request_body(content = BanBody, content_type = "application/json"),
    responses((status = 200, description = "The bans now: {\"banned\": [...]}."),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn ban(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, "/v1/admin/banned");
    if let Err(error) = whole_broker(&who) {
        return who.refuse(&shared, &error);
    }
    let body = match crate::server::read_json::<BanBody>(&shared, request).await {
        Ok(body) => body,
        Err(error) => return who.refuse(&shared, &error),
    };
    let op = AdminOp::Ban {
        client_id: body.client_id,
        until_unix: body.until,
    };
    let response = operate(&shared, &who, op).await;
    keep_bans(&shared, &who, response).await
}

/// Lifts a ban.
#[utoipa::path(delete, path = "/v1/admin/banned/{client_id}", tag = "admin",
    params(("client_id" = String, Path, description = "The client identifier.")),
    responses((status = 200, description = "The bans now."),
              (status = "4XX", description = "Refused, or not_banned.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn unban(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, "/v1/admin/banned");
    if let Err(error) = whole_broker(&who) {
        return who.refuse(&shared, &error);
    }
    let op = AdminOp::Unban {
        client_id: who.rest.clone(),
    };
    let response = operate(&shared, &who, op).await;
    keep_bans(&shared, &who, response).await
}

/// After a successful change, writes the bans in force to the bans file, then answers. The
/// list written is read from the broker thread while the file is held, not taken from the
/// change's answer: two changes answered in one order and written in the other would leave
/// the older list on disk, while a list read under the file's lock is never older than one
/// written before it.
async fn keep_bans(shared: &Shared, who: &Authorized, response: Response<Body>) -> Response<Body> {
    if !response.status().is_success() {
        return response;
    }
    {
        let _edit = shared.file_edits.lock().await;
        let now = operate(shared, who, AdminOp::Bans).await;
        if !now.status().is_success() {
            return now;
        }
        let bytes = axum::body::to_bytes(now.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        if let Err(error) = crate::keys::write_private(&shared.config.data_dir, BANS_FILE, &bytes) {
            tracing::warn!("cannot keep the bans: {error}");
        }
    }
    response
}

/// The bans kept in the data directory: (client identifier, until Unix seconds).
pub(crate) fn kept_bans(dir: &std::path::Path) -> Vec<(String, Option<u64>)> {
    let Ok(text) = std::fs::read(dir.join(BANS_FILE)) else {
        return Vec::new();
    };
    #[derive(Deserialize)]
    struct Kept {
        banned: Vec<BanBody>,
    }
    match serde_json::from_slice::<Kept>(&text) {
        Ok(kept) => kept
            .banned
            .into_iter()
            .map(|ban| (ban.client_id, ban.until))
            .collect(),
        Err(error) => {
            tracing::warn!("cannot read {BANS_FILE}: {error}");
            Vec::new()
        }
    }
}
