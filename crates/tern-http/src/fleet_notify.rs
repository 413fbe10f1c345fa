//! The fleet's actionable notifications on the operator API (`/v1/fleet/notifications`): list
//! them, answer one a device raised, ask a device, withdraw one. Every change runs on the
//! broker thread through the core's notifications (`tern_core::broker::fleet_notify`), which
//! checks the answer against the response type, sends it to the device at QoS 2 and keeps it
//! in the store; the answer is given once that is durable. A token sees a notification when its
//! realm holds the device's udid and its topics cover the device's channel
//! (`<prefix><owner>/<udid>`): a token of owner B (`--topic '/B/#'`) never lists, answers or
//! streams one of owner A's, which it is told does not exist.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tern_core::broker::fleet_notify::Ask;
use tern_core::fleet_notify::{Notification, NotifyError, NotifyState, ResponseType};
use tern_core::{Broker, Time};

use crate::admin::{authorized, operate, Authorized};
use crate::admin_fleet::body;
use crate::admin_ops::AdminOp;
use crate::answers::{json, refused};
use crate::error::ApiError;
use crate::replay::Answer;
use crate::server::Shared;
use crate::tokens::{Operator, Scope};

const PREFIX: &str = "/v1/fleet/notifications";

/// A look at or a change to the notifications, on the broker thread, for the token that asks.
#[derive(Debug)]
pub(crate) struct NotifyOp {
    operator: Operator,
    what: NotifyWhat,
}

#[derive(Debug)]
enum NotifyWhat {
    List {
        state: Option<NotifyState>,
        owner: Option<String>,
        udid: Option<String>,
        page: Page,
    },
    Answer {
        nid: String,
        body: AnswerBody,
    },
    Cancel {
        nid: String,
        udid: Option<String>,
    },
    Ask(AskBody),
}

/// An answer to a notification a device raised.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerBody {
    /// `true`/`false` for `bool`, a string for `string`, one of the choices for `choice`.
    response: Value,
    /// The device, when the id names notifications of more than one.
    #[serde(default)]
    udid: Option<String>,
}

/// Which notification to withdraw, when the id names notifications of more than one device.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CancelBody {
    #[serde(default)]
    udid: Option<String>,
}

/// A question for a device.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AskBody {
    udid: String,
    body: String,
    /// `bool` (default), `string` or `choice` (with `choices`).
    #[serde(default)]
    response_type: Option<String>,
    #[serde(default)]
    choices: Option<Vec<String>>,
    /// An id of the operator's choosing (else the broker's, `n1`, `n2`, ...).
    #[serde(default)]
    nid: Option<String>,
    /// Seconds it waits for the answer (default 86400, at most 30 days).
    #[serde(default)]
    ttl: Option<u32>,
}

/// One notification.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NotificationView {
    owner: String,
    udid: String,
    nid: String,
    /// `from_device` (the device asks) or `to_device` (an operator asked it).
    direction: &'static str,
    body: String,
    /// `bool`, `string` or `choice`.
    response_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    choices: Option<Vec<String>>,
    /// `pending`, `answered`, `expired` or `cancelled`.
    state: &'static str,
    /// The answer, once answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    response: Option<Value>,
    /// When it was raised (Unix seconds).
    created: u64,
    /// When it expires unanswered (Unix seconds).
    expires: u64,
    /// When it left `pending` (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    finished: Option<u64>,
    /// When the device acknowledged what it was owed: the answer, or the question asked of it
    /// (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered: Option<u64>,
}

pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route(PREFIX, get(list).post(ask))
        .route("/v1/fleet/notifications/{*rest}", post(act))
}

async fn run(shared: &Shared, who: &Authorized, what: NotifyWhat) -> Response<Body> {
    let operator = who.operator.clone();
    operate(shared, who, AdminOp::Notify(NotifyOp { operator, what })).await
}

/// A page of a listing: its order, its size and where it starts.
#[derive(Debug, Default)]
pub(crate) struct Page {
    newest_first: bool,
    /// At most this many (all without).
    limit: Option<usize>,
    /// After this notification in the listing's order (`created` in the broker's
    /// milliseconds, udid, nid): the cursor of the page before.
    after: Option<(u64, String, String)>,
}

/// Largest page.
const PAGE_MAX: usize = 1000;

impl Page {
    fn parse(query: &crate::publish::Query) -> Result<Self, ApiError> {
        let newest_first = match query.get("order") {
            None | Some("oldest") => false,
            Some("newest") => true,
            Some(_) => return Err(ApiError::bad_request("order: oldest or newest")),
        };
        let limit = match query.get("limit").map(str::parse::<usize>) {
            None => None,
            Some(Ok(limit)) if (1..=PAGE_MAX).contains(&limit) => Some(limit),
            Some(_) => return Err(ApiError::bad_request("limit: 1 to 1000")),
        };
        let after =
            match query.get("cursor") {
                None => None,
                Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
                    ApiError::bad_request("cursor: the `next` of the page before")
                })?),
            };
        Ok(Self {
            newest_first,
            limit,
            after,
        })
    }
}

/// A cursor's text: `CREATED/UDID/NID` (a udid holds no `/`; a nid may).
fn cursor_of(n: &Notification) -> String {
    format!("{}/{}/{}", n.created.as_millis(), n.udid, n.nid)
}

fn parse_cursor(text: &str) -> Option<(u64, String, String)> {
    let mut parts = text.splitn(3, '/');
    let created = parts.next()?.parse().ok()?;
    Some((created, parts.next()?.to_owned(), parts.next()?.to_owned()))
}

/// The notifications the token sees, oldest first (or newest), all of them or a page.
#[utoipa::path(get, path = "/v1/fleet/notifications", tag = "fleet",
    params(("state" = Option<String>, Query, description = "pending, answered, expired or cancelled."),
           ("owner" = Option<String>, Query, description = "Only this owner's."),
           ("udid" = Option<String>, Query, description = "Only this device's."),
           ("order" = Option<String>, Query, description = "oldest (first; the default) or newest."),
           ("limit" = Option<usize>, Query, description = "At most this many (1 to 1000); all without."),
           ("cursor" = Option<String>, Query, description = "The `next` of the page before.")),
    responses((status = 200, description = "{\"notifications\": [notification], \"next\": the cursor of the next page, or null on the last}."),
              (status = "4XX", description = "Refused, or bad_request.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn list(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Read, PREFIX);
    let state = match who.query.get("state").map(NotifyState::parse) {
        Some(None) => {
            let error = ApiError::bad_request("state: pending, answered, expired or cancelled");
            return who.refuse(&shared, &error);
        }
        state => state.flatten(),
    };
    let page = match Page::parse(&who.query) {
        Ok(page) => page,
        Err(error) => return who.refuse(&shared, &error),
    };
    let owner = who.query.get("owner").map(str::to_owned);
    let udid = who.query.get("udid").map(str::to_owned);
    let list = NotifyWhat::List {
        state,
        owner,
        udid,
        page,
    };
    run(&shared, &who, list).await
}

/// Asks a device a question: it goes to the device at QoS 2 on `<prefix><owner>/<udid>` as
/// `{"notification":{"nid","body","response_type","choices"?}}`, and the device answers on
/// its status channel.
#[utoipa::path(post, path = "/v1/fleet/notifications", tag = "fleet",
    request_body(content = AskBody, content_type = "application/json"),
    responses((status = 200, description = "The notification, pending.", body = NotificationView),
              (status = "4XX", description = "Refused, bad_request, no_device, or too_many_pending (429).", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn ask(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, PREFIX);
    let body = body!(shared, who, request, AskBody);
    run(&shared, &who, NotifyWhat::Ask(body)).await
}

/// `POST /v1/fleet/notifications/{nid}/answer` and `.../{nid}/cancel` (an id may hold `/`).
async fn act(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    match request.uri().path() {
        path if path.ends_with("/answer") => answer(State(shared), request).await,
        _ => cancel(State(shared), request).await,
    }
}

/// Answers a notification a device raised: the answer must fit its response type, and goes
/// to the device at QoS 2 on `<prefix><owner>/<udid>` as `{"notification":{"nid","response"}}`.
#[utoipa::path(post, path = "/v1/fleet/notifications/{nid}/answer", tag = "fleet",
    params(("nid" = String, Path, description = "The notification's id.")),
    request_body(content = AnswerBody, content_type = "application/json"),
    responses((status = 200, description = "The notification, answered; the answer is on its way to the device.", body = NotificationView),
              (status = 409, description = "notification_closed: answered, expired or cancelled already.", body = crate::error::ErrorBody),
              (status = "4XX", description = "Refused, no_notification, response_invalid, or ambiguous_nid.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn answer(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, PREFIX);
    let nid = who
        .rest
        .strip_suffix("/answer")
        .unwrap_or_default()
        .to_owned();
    let body = body!(shared, who, request, AnswerBody);
    run(&shared, &who, NotifyWhat::Answer { nid, body }).await
}

/// Withdraws a pending notification.
#[utoipa::path(post, path = "/v1/fleet/notifications/{nid}/cancel", tag = "fleet",
    params(("nid" = String, Path, description = "The notification's id.")),
    request_body(content = CancelBody, content_type = "application/json"),
    responses((status = 200, description = "The notification, cancelled.", body = NotificationView),
              (status = "4XX", description = "Refused, no_notification, notification_closed (409), or ambiguous_nid.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn cancel(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = authorized!(shared, request, Scope::Write, PREFIX);
    let Some(nid) = who.rest.strip_suffix("/cancel").map(str::to_owned) else {
        let error = ApiError::new(
            404,
            "not_found",
            "POST .../{nid}/answer or .../{nid}/cancel",
        );
        return who.refuse(&shared, &error);
    };
    let body = body!(shared, who, request, CancelBody);
    let udid = body.udid;
    run(&shared, &who, NotifyWhat::Cancel { nid, udid }).await
}

/// Whether the token sees the notifications of this device.
fn sees(operator: &Operator, broker: &Broker, owner: &str, udid: &str) -> bool {
    let channel = broker.config().fleet.device(owner, udid);
    operator.realm().holds_device(owner, udid) && operator.sees_topic(&channel)
}

/// The notification `nid` the token sees (of `udid`, when given).
fn find(
    broker: &Broker,
    operator: &Operator,
    nid: &str,
    udid: Option<&str>,
) -> Result<Notification, NotifyError> {
    let mut found = broker
        .fleet_notifications()
        .with_nid(nid, udid)
        .filter(|n| sees(operator, broker, &n.owner, &n.udid));
    let Some(first) = found.next() else {
        return Err(NotifyError::NoNotification(nid.to_owned()));
    };
    match found.next() {
        Some(_) => Err(NotifyError::Ambiguous(nid.to_owned())),
        None => Ok(first.clone()),
    }
}

fn notify_error(error: &NotifyError) -> Answer {
    let (status, code) = match error {
        NotifyError::BadRequest(_) => (400, "bad_request"),
        NotifyError::BadResponse(_) => (400, "response_invalid"),
        NotifyError::Ambiguous(_) => (400, "ambiguous_nid"),
        NotifyError::NoNotification(_) => (404, "no_notification"),
        NotifyError::NoDevice(_) => (404, "no_device"),
        NotifyError::Finished { .. } => (409, "notification_closed"),
        NotifyError::TooMany(_) => (429, "too_many_pending"),
    };
    refused(&ApiError::new(status, code, error.to_string()))
}

/// A notification as the API words it (`now_unix`: `now` by the system clock).
pub(crate) fn view(n: &Notification, now: Time, now_unix: u64) -> NotificationView {
    let unix =
        |at: Time| now_unix.saturating_sub(now.as_millis().saturating_sub(at.as_millis()) / 1000);
    let choices = match &n.response_type {
        ResponseType::Choice(choices) => Some(choices.clone()),
        _ => None,
    };
    NotificationView {
        owner: n.owner.clone(),
        udid: n.udid.clone(),
        nid: n.nid.clone(),
        direction: n.direction.word(),
        body: n.body.clone(),
        response_type: n.response_type.word(),
        choices,
        state: n.state.word(),
        response: n.response_value(),
        created: unix(n.created),
        expires: now_unix + u64::from(now.secs_until(n.expires)),
        finished: n.finished.map(unix),
        delivered: n.delivered.map(unix),
    }
}

/// Does `op` in the core at `now` (`now_unix`: the same instant by the system clock).
pub(crate) fn apply(broker: &mut Broker, op: &NotifyOp, now: Time, now_unix: u64) -> Answer {
    let operator = &op.operator;
    let done = |result: Result<Notification, NotifyError>| match result {
        Ok(n) => json(200, &view(&n, now, now_unix)),
        Err(error) => notify_error(&error),
    };
    match &op.what {
        NotifyWhat::List {
            state,
            owner,
            udid,
            page,
        } => {
            let mut all: Vec<&Notification> = broker.fleet_notifications().iter().collect();
            if page.newest_first {
                all.reverse();
            }
            let key = |n: &Notification| (n.created.as_millis(), n.udid.clone(), n.nid.clone());
            let past = |n: &Notification| {
                page.after
                    .as_ref()
                    .is_none_or(|after| match page.newest_first {
                        true => key(n) < *after,
                        false => key(n) > *after,
                    })
            };
            let mut matching = all
                .into_iter()
                .filter(|n| past(n))
                .filter(|n| state.is_none_or(|s| n.state == s))
                .filter(|n| owner.as_ref().is_none_or(|o| &n.owner == o))
                .filter(|n| udid.as_ref().is_none_or(|u| &n.udid == u))
                .filter(|n| sees(operator, broker, &n.owner, &n.udid));
            let limit = page.limit.unwrap_or(usize::MAX);
            let shown: Vec<&Notification> = matching.by_ref().take(limit).collect();
            let next = match (shown.last(), matching.next()) {
                (Some(last), Some(_)) => Some(cursor_of(last)),
                _ => None,
            };
            let listed: Vec<NotificationView> =
                shown.into_iter().map(|n| view(n, now, now_unix)).collect();
            json(
                200,
                &serde_json::json!({ "notifications": listed, "next": next }),
            )
        }
        NotifyWhat::Answer { nid, body } => {
            let result = find(broker, operator, nid, body.udid.as_deref()).and_then(|n| {
                broker.fleet_notify_answer(&n.udid, &n.nid, body.response.clone(), now)
            });
            done(result)
        }
        NotifyWhat::Cancel { nid, udid } => {
            let result = find(broker, operator, nid, udid.as_deref())
                .and_then(|n| broker.fleet_notify_cancel(&n.udid, &n.nid, now));
            done(result)
        }
        NotifyWhat::Ask(body) => {
            let visible = broker
                .fleet()
                .device(&body.udid)
                .filter(|d| sees(operator, broker, &d.owner, &d.udid));
            if visible.is_none() {
                return notify_error(&NotifyError::NoDevice(body.udid.clone()));
            }
            let word = body.response_type.as_deref().unwrap_or("bool");
            let choices = body.choices.clone().map(Value::from);
            let result = ResponseType::parse(word, choices.as_ref()).and_then(|response_type| {
                let ask = Ask {
                    body: body.body.clone(),
                    response_type,
                    nid: body.nid.clone(),
                    ttl: body.ttl,
                };
                broker.fleet_notify_ask(&body.udid, ask, now)
            });
            done(result)
        }
    }
}

/// A notification's change as a Server-Sent Event (`event: notification`), and the device's
/// channel, which a stream's token must cover to see it.
pub(crate) fn event(
    broker: &Broker,
    notification: &Notification,
    change: &str,
    now: Time,
) -> (String, Value) {
    let channel = broker
        .config()
        .fleet
        .device(&notification.owner, &notification.udid);
    let mut data = notification.summary(now);
    if let Some(fields) = data.as_object_mut() {
        fields.insert("change".into(), change.into());
    }
    (channel, data)
}
