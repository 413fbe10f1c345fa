//! Access requests: a correctly signed request from a device of an app key with approval
//! (`tern key add a:APP --approve`) that no operator approved yet makes a pending access
//! request, answered `access_pending` (403, signed), instead of acting. An operator lists them
//! (`GET /v1/admin/access-requests`), approves one with grants (the device is added to the
//! key, and its next request works), rejects it (its requests are then `access_rejected`) or
//! forgets it (it may ask again). Each change is an `access_request` event on the event
//! streams. Requests are kept in `http-access-requests.json` in the data directory, written
//! whole when one is made or decided; at most [`REQUESTS_MAX`] are kept, and beyond that new
//! devices are refused (`rate_limited`) and counted, so a flood of new client identifiers
//! grows neither memory nor disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::{Deserialize, Serialize};
use tern_auth::Credential;

use crate::admin::{authorize, Authorized};
use crate::admin_keys::{edit_ring, grants_of, key_error};
use crate::error::ApiError;
use crate::server::{read_json, unsigned, Shared};
use crate::tokens::Scope;

/// The file the requests are kept in, in the data directory.
pub(crate) const ACCESS_FILE: &str = "http-access-requests.json";
/// Requests kept (pending or rejected) at most.
pub(crate) const REQUESTS_MAX: usize = 1000;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Standing {
    Pending,
    Rejected,
}

/// One access request.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub(crate) struct AccessRequest {
    /// Its id (16 hex digits).
    id: String,
    /// The app key (`a:APP`).
    key: String,
    /// The client identifier the device named in `Tern-Client`.
    client_id: String,
    state: Standing,
    /// When the device first and last asked (Unix seconds), and how many times.
    first_seen: u64,
    last_seen: u64,
    requests: u64,
    /// The address it last asked from.
    peer: String,
}

/// The access requests, shared by the HTTP tasks.
#[derive(Debug)]
pub(crate) struct AccessRequests {
    dir: PathBuf,
    requests: tokio::sync::Mutex<BTreeMap<String, AccessRequest>>,
    /// New devices refused because [`REQUESTS_MAX`] were kept.
    pub(crate) refused: AtomicU64,
}

impl AccessRequests {
    /// The requests kept in `dir` (none without a file; a file that does not read is logged
    /// and left for an operator).
    pub(crate) fn load(dir: &Path) -> Self {
        let kept = match std::fs::read(dir.join(ACCESS_FILE)) {
            Ok(text) => serde_json::from_slice::<Vec<AccessRequest>>(&text).unwrap_or_else(|e| {
                tracing::warn!("cannot read {ACCESS_FILE}: {e}");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        Self {
            dir: dir.to_owned(),
            requests: tokio::sync::Mutex::new(
                kept.into_iter()
                    .take(REQUESTS_MAX)
                    .map(|r| (r.id.clone(), r))
                    .collect(),
            ),
            refused: AtomicU64::new(0),
        }
    }

    fn write(&self, requests: &BTreeMap<String, AccessRequest>) {
        let list: Vec<&AccessRequest> = requests.values().collect();
        let text = serde_json::to_vec_pretty(&list).unwrap_or_default();
        if let Err(error) = crate::keys::write_private(&self.dir, ACCESS_FILE, &text) {
            tracing::warn!("cannot keep the access requests: {error}");
        }
    }
}

/// A signed request from a device awaiting approval: its access request is made (or seen
/// again), and the device is told where it stands.
pub(crate) async fn awaiting(shared: &Shared, credential: &Credential, peer: String) -> ApiError {
    let access = &shared.access;
    let now = crate::bridge::unix_now();
    let mut requests = access.requests.lock().await;
    match note(&mut requests, REQUESTS_MAX, credential, peer, now) {
        Noted::Known(error) => error,
        Noted::New(request) => {
            announce(shared, &request, "pending");
            access.write(&requests);
            standing(&request)
        }
        Noted::Full => {
            access.refused.fetch_add(1, Ordering::Relaxed);
            ApiError::new(
                429,
                "rate_limited",
                format!("{REQUESTS_MAX} access requests wait for an operator already"),
            )
        }
    }
}

/// What became of a device's request for access.
#[derive(Debug)]
enum Noted {
    /// It had asked before: where it stands.
    Known(ApiError),
    /// A new access request, kept.
    New(AccessRequest),
    /// `max` requests are kept already: refused.
    Full,
}

fn note(
    requests: &mut BTreeMap<String, AccessRequest>,
    max: usize,
    credential: &Credential,
    peer: String,
    now: u64,
) -> Noted {
    let known = requests
        .values_mut()
        .find(|r| r.key == credential.key_id && r.client_id == credential.client_id);
    if let Some(request) = known {
        request.last_seen = now;
        request.requests += 1;
        request.peer = peer;
        return Noted::Known(standing(request));
    }
    if requests.len() >= max {
        return Noted::Full;
    }
    let request = AccessRequest {
        id: crate::signing::hex(&tern_auth::MasterKey::random().to_bytes()[..8]),
        key: credential.key_id.clone(),
        client_id: credential.client_id.clone(),
        state: Standing::Pending,
        first_seen: now,
        last_seen: now,
        requests: 1,
        peer,
    };
    requests.insert(request.id.clone(), request.clone());
    Noted::New(request)
}

fn standing(request: &AccessRequest) -> ApiError {
    match request.state {
        Standing::Pending => ApiError::new(
            403,
            "access_pending",
            format!(
                "this device awaits an operator's approval (access request {})",
                request.id
            ),
        ),
        Standing::Rejected => ApiError::new(
            403,
            "access_rejected",
            format!(
                "an operator rejected this device (access request {})",
                request.id
            ),
        ),
    }
}

/// An `access_request` event on the event streams of the client's realm.
fn announce(shared: &Shared, request: &AccessRequest, state: &str) {
    let data = serde_json::json!({"id": request.id, "key": request.key,
        "client_id": request.client_id, "state": state});
    let event = crate::events::Observe::Event {
        client_id: request.client_id.clone(),
        name: "access_request",
        data,
    };
    // A full channel loses the event, not the decision.
    let _ = shared.observe.try_send(event);
}

pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/v1/admin/access-requests", get(list))
        .route("/v1/admin/access-requests/{id}/approve", post(approve))
        .route("/v1/admin/access-requests/{id}/reject", post(reject))
        .route("/v1/admin/access-requests/{id}", delete(forget))
}

const PREFIX: &str = "/v1/admin/access-requests";

/// The answer listing access requests.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AccessRequestList<'a> {
    access_requests: Vec<&'a AccessRequest>,
}

/// The access requests of the token's clients.
#[utoipa::path(get, path = "/v1/admin/access-requests", tag = "admin",
    responses((status = 200, description = "The access requests of the token's clients.", body = AccessRequestList),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn list(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Read, PREFIX) {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let requests = shared.access.requests.lock().await;
    let listed: Vec<&AccessRequest> = requests
        .values()
        .filter(|r| who.operator.sees_client(&r.client_id))
        .collect();
    let body = serde_json::to_vec(&AccessRequestList {
        access_requests: listed,
    });
    unsigned(200, body.unwrap_or_default().into())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveBody {
    /// Filters the device may publish to (`%c`: its client identifier), inside the token's
    /// topics. With no grant at all, the app key's grants apply.
    #[serde(default)]
    publish: Vec<String>,
    /// Filters it may subscribe with.
    #[serde(default)]
    subscribe: Vec<String>,
    /// Filters for both.
    #[serde(default)]
    both: Vec<String>,
}

/// The request `id` of the path, in the token's realm (another realm's is `no_access_request`).
async fn find(shared: &Shared, who: &Authorized, suffix: &str) -> Result<AccessRequest, ApiError> {
    let id = who.rest.strip_suffix(suffix).unwrap_or(&who.rest);
    let requests = shared.access.requests.lock().await;
    requests
        .get(id)
        .filter(|r| who.operator.sees_client(&r.client_id))
        .cloned()
        .ok_or_else(|| ApiError::new(404, "no_access_request", "no access request of that id"))
}

/// Approves a device with grants: it is added to its app key, and its next request works.
#[utoipa::path(post, path = "/v1/admin/access-requests/{id}/approve", tag = "admin",
    params(("id" = String, Path, description = "The access request's id.")),
    request_body(content = ApproveBody, content_type = "application/json"),
    responses((status = 200, description = "{\"id\", \"client_id\", \"approved\": true}."),
              (status = "4XX", description = "Refused, no_access_request, or a grant outside the token's topics (acl_denied).", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn approve(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Write, PREFIX) {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let body = match read_json::<ApproveBody>(&shared, request).await {
        Ok(body) => body,
        Err(error) => return who.refuse(&shared, &error),
    };
    let found = match find(&shared, &who, "/approve").await {
        Ok(found) => found,
        Err(error) => return who.refuse(&shared, &error),
    };
    let grants = grants_of(body.publish, body.subscribe, body.both);
    // A token gives no more than its own topics: each grant, for this device, must be inside.
    let outside = grants.iter().find(|grant| {
        let topic = grant.topic.replace("%c", &found.client_id);
        topic.parse::<tern_codec::TopicFilter>().is_err() || !who.operator.sees_topic(&topic)
    });
    if let Some(grant) = outside {
        let error = ApiError::new(
            403,
            "acl_denied",
            format!(
                "{:?} is not a filter inside the token's topics",
                grant.topic
            ),
        );
        return who.refuse(&shared, &error);
    }
    let (key, client_id) = (found.key.clone(), found.client_id.clone());
    let approved = edit_ring(&shared, move |ring, _| {
        ring.approve_device(&key, &client_id, grants)
            .map_err(key_error)
    })
    .await;
    if let Err(error) = approved {
        return who.refuse(&shared, &error);
    }
    settle(&shared, &found, None, "approved").await;
    answer(&found, "approved")
}

/// Rejects a device: its requests are answered `access_rejected` until the request is
/// forgotten.
#[utoipa::path(post, path = "/v1/admin/access-requests/{id}/reject", tag = "admin",
    params(("id" = String, Path, description = "The access request's id.")),
    responses((status = 200, description = "{\"id\", \"client_id\", \"rejected\": true}."),
              (status = "4XX", description = "Refused, or no_access_request.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn reject(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    decide(
        shared,
        request,
        "/reject",
        Some(Standing::Rejected),
        "rejected",
    )
    .await
}

/// Forgets an access request (a rejected device may then ask again).
#[utoipa::path(delete, path = "/v1/admin/access-requests/{id}", tag = "admin",
    params(("id" = String, Path, description = "The access request's id.")),
    responses((status = 200, description = "{\"id\", \"client_id\", \"forgotten\": true}."),
              (status = "4XX", description = "Refused, or no_access_request.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn forget(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    decide(shared, request, "", None, "forgotten").await
}

async fn decide(
    shared: Arc<Shared>,
    request: Request,
    suffix: &str,
    state: Option<Standing>,
    word: &'static str,
) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Write, PREFIX) {
        Ok(who) => who,
        Err(response) => return *response,
    };
    match find(&shared, &who, suffix).await {
        Ok(found) => {
            settle(&shared, &found, state, word).await;
            answer(&found, word)
        }
        Err(error) => who.refuse(&shared, &error),
    }
}

/// Keeps a request in `state` (or forgets it, with `None`), writes the file and says so on the
/// event streams.
async fn settle(shared: &Shared, found: &AccessRequest, state: Option<Standing>, word: &str) {
    let mut requests = shared.access.requests.lock().await;
    match state {
        Some(state) => {
            if let Some(request) = requests.get_mut(&found.id) {
                request.state = state;
            }
        }
        None => {
            requests.remove(&found.id);
        }
    }
    shared.access.write(&requests);
    announce(shared, found, word);
}

fn answer(found: &AccessRequest, word: &str) -> Response<Body> {
    let body = serde_json::json!({"id": found.id, "client_id": found.client_id, word: true});
    unsigned(200, serde_json::to_vec(&body).unwrap_or_default().into())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn device(client_id: &str) -> Credential {
        let mut ring = tern_auth::KeyRing::default();
        ring.add("a:fleet", None, Vec::new(), 1).unwrap();
        ring.set_approval("a:fleet", true).unwrap();
        ring.lookup("a:fleet", Some(client_id)).unwrap()
    }

    #[test]
    fn a_device_asks_once_and_a_flood_of_new_ones_stops_at_the_bound() {
        let mut requests = BTreeMap::new();
        let Noted::New(first) = note(&mut requests, 3, &device("d1"), "p".into(), 10) else {
            panic!("a new request");
        };
        let Noted::Known(again) = note(&mut requests, 3, &device("d1"), "q".into(), 11) else {
            panic!("the same request");
        };
        assert_eq!(again.code, "access_pending");
        assert!(again.message.contains(&first.id));
        assert_eq!(requests[&first.id].requests, 2);
        for n in 2..=3 {
            let noted = note(&mut requests, 3, &device(&format!("d{n}")), "p".into(), 12);
            assert!(matches!(noted, Noted::New(_)));
        }
        for n in 4..100 {
            let noted = note(&mut requests, 3, &device(&format!("d{n}")), "p".into(), 13);
            assert!(matches!(noted, Noted::Full));
        }
        assert_eq!(requests.len(), 3);
        // A rejected device is told so.
        requests.get_mut(&first.id).unwrap().state = Standing::Rejected;
        let Noted::Known(rejected) = note(&mut requests, 3, &device("d1"), "p".into(), 14) else {
            panic!("the same request");
        };
        assert_eq!(rejected.code, "access_rejected");
    }
}
