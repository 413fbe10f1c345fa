//! The operator API's keys (`/v1/admin/keys`): the key file changed as `tern key` changes it
//! (read, changed and written whole while no other edit runs), then read again at once. A new
//! secret is in the answer that made it, and never again. A token whose realm is a client
//! prefix sees and changes only device keys of its clients.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::{Deserialize, Serialize};
use tern_auth::keyring::{parse_key_id, KeyKind};
use tern_auth::{Grant, HttpKey, KeyRing, RuleAccess};

use crate::admin::{authorize, Authorized};
use crate::error::ApiError;
use crate::server::{read_json, unsigned, Shared};
use crate::signing::hex;
use crate::tokens::Scope;

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct KeyView {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    /// `[access, filter]`: access `publish`, `subscribe` or `both`.
    grants: Vec<(String, String)>,
    /// The active secrets' numbers and when they were made (never the secrets).
    secrets: Vec<(u32, u64)>,
    /// For an app key: whether its devices need approval.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    approval: bool,
    /// The devices approved.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    devices: Vec<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct NewSecret {
    id: String,
    /// The secret's number.
    n: u32,
    /// The secret, 64 hex digits: shown in this answer only.
    secret: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyBody {
    /// `d:CLIENT`, `g:GROUP` or `a:APP`.
    id: String,
    /// For a group: the client identifiers whose devices derive their secret from it.
    #[serde(default)]
    prefix: Option<String>,
    /// Filters the key may publish to (`%c`: its client identifier).
    #[serde(default)]
    publish: Vec<String>,
    /// Filters it may subscribe with.
    #[serde(default)]
    subscribe: Vec<String>,
    /// Filters for both.
    #[serde(default)]
    both: Vec<String>,
    /// For an app key: each device needs an operator's approval (an access request).
    #[serde(default)]
    approve: bool,
}

pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{delete, get, post};
    axum::Router::new()
        .route("/v1/admin/keys", get(list).post(add))
        .route("/v1/admin/keys/{id}/rotate", post(rotate))
        .route("/v1/admin/keys/{id}", delete(revoke))
}

/// Whether the token's realm holds the key: device keys of its clients; groups and apps only
/// for a token of the whole broker.
fn sees_key(who: &Authorized, id: &str) -> bool {
    match parse_key_id(id) {
        Ok((KeyKind::Device, client)) => who.operator.sees_client(client),
        Ok(_) => who.operator.sees_all_clients(),
        Err(_) => false,
    }
}

/// Reads the key file, lets `change` change it, writes it and reads it again, with no other
/// edit running; `change` answers.
async fn edit(
    shared: &Shared,
    who: &Authorized,
    change: impl FnOnce(&mut KeyRing, u64) -> Result<serde_json::Value, ApiError>,
) -> Response<Body> {
    match edit_ring(shared, change).await {
        Ok(answer) => {
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            unsigned(200, body.into())
        }
        Err(error) => who.refuse(shared, &error),
    }
}

/// [`edit`]'s work: the key file changed whole, with no other edit running, and read again.
pub(crate) async fn edit_ring<T>(
    shared: &Shared,
    change: impl FnOnce(&mut KeyRing, u64) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    let dir = &shared.config.data_dir;
    let edited = {
        let _edit = shared.file_edits.lock().await;
        (|| {
            let internal = |e: String| ApiError::new(500, "internal", e);
            let (mut ring, master) = crate::keys::read(dir).map_err(internal)?;
            let answer = change(&mut ring, crate::bridge::unix_now())?;
            let master = match master {
                Some(master) => master,
                None => crate::keys::master_key(dir, true)
                    .map_err(internal)?
                    .ok_or_else(|| internal("no master key".to_owned()))?,
            };
            crate::keys::write(dir, &ring, &master).map_err(internal)?;
            Ok(answer)
        })()
    };
    if edited.is_ok() {
        shared.reload_keys();
    }
    edited
}

pub(crate) fn key_error(error: tern_auth::KeyError) -> ApiError {
    use tern_auth::KeyError;
    match error {
        KeyError::Unknown(_) | KeyError::NoSecret(..) => {
            ApiError::new(404, "no_key", error.to_string())
        }
        KeyError::Exists(_) => ApiError::new(409, "key_exists", error.to_string()),
        other => ApiError::bad_request(other.to_string()),
    }
}

/// Grants from lists of filters for publishing, subscribing and both.
pub(crate) fn grants_of(
    publish: Vec<String>,
    subscribe: Vec<String>,
    both: Vec<String>,
) -> Vec<Grant> {
    [
        (RuleAccess::Publish, publish),
        (RuleAccess::Subscribe, subscribe),
        (RuleAccess::Both, both),
    ]
    .into_iter()
    .flat_map(|(access, topics)| topics.into_iter().map(move |topic| Grant { access, topic }))
    .collect()
}

fn view(key: &HttpKey) -> KeyView {
    let access = |a: RuleAccess| match a {
        RuleAccess::Publish => "publish",
        RuleAccess::Subscribe => "subscribe",
        RuleAccess::Both => "both",
    };
    KeyView {
        id: key.id.clone(),
        prefix: key.prefix.clone(),
        grants: key
            .grants
            .iter()
            .map(|g| (access(g.access).to_owned(), g.topic.clone()))
            .collect(),
        secrets: key.secrets.iter().map(|s| (s.n, s.created)).collect(),
        approval: key.approval,
        devices: key.devices.keys().cloned().collect(),
    }
}

/// The answer listing keys.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct KeyList {
    keys: Vec<KeyView>,
}

/// The keys in the token's realm: ids, grants, secret numbers and dates, never secrets.
#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin",
    responses((status = 200, description = "The keys.", body = KeyList),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["keys"])))]
pub(crate) async fn list(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Keys, "/v1/admin/keys") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let ring = shared.key_ring();
    let keys: Vec<KeyView> = ring
        .keys()
        .filter(|k| sees_key(&who, &k.id))
        .map(view)
        .collect();
    let body = serde_json::to_vec(&KeyList { keys }).unwrap_or_default();
    unsigned(200, body.into())
}

/// Adds a key; its first secret is in the answer, once.
#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin",
    request_body(content = KeyBody, content_type = "application/json"),
    responses((status = 200, description = "The new secret.", body = NewSecret),
              (status = "4XX", description = "Refused, key_exists, or a bad id or grant.", body = crate::error::ErrorBody)),
    security(("bearer" = ["keys"])))]
pub(crate) async fn add(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Keys, "/v1/admin/keys") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let body = match read_json::<KeyBody>(&shared, request).await {
        Ok(body) => body,
        Err(error) => return who.refuse(&shared, &error),
    };
    if !sees_key(&who, &body.id) {
        let error = ApiError::new(403, "realm_denied", "that key is outside the token's realm");
        return who.refuse(&shared, &error);
    }
    let grants = grants_of(body.publish, body.subscribe, body.both);
    let (id, prefix, approve) = (body.id, body.prefix, body.approve);
    edit(&shared, &who, move |ring, now| {
        let secret = ring.add(&id, prefix, grants, now).map_err(key_error)?;
        if approve {
            ring.set_approval(&id, true).map_err(key_error)?;
        }
        Ok(serde_json::json!(NewSecret {
            id,
            n: 1,
            secret: hex(&secret)
        }))
    })
    .await
}

/// Gives a key a new secret (in the answer, once); of two active secrets the older goes.
#[utoipa::path(post, path = "/v1/admin/keys/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "The key id.")),
    responses((status = 200, description = "The new secret.", body = NewSecret),
              (status = "4XX", description = "Refused, or no_key.", body = crate::error::ErrorBody)),
    security(("bearer" = ["keys"])))]
pub(crate) async fn rotate(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Keys, "/v1/admin/keys") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let id = who
        .rest
        .strip_suffix("/rotate")
        .unwrap_or_default()
        .to_owned();
    if !sees_key(&who, &id) {
        return who.refuse(&shared, &ApiError::new(404, "no_key", "no such key"));
    }
    edit(&shared, &who, move |ring, now| {
        let (n, secret) = ring.rotate(&id, now).map_err(key_error)?;
        Ok(serde_json::json!(NewSecret {
            id,
            n,
            secret: hex(&secret)
        }))
    })
    .await
}

/// Revokes a key, or one of its secrets (`?secret=N`).
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", tag = "admin",
    params(("id" = String, Path, description = "The key id."),
           ("secret" = Option<u32>, Query, description = "Only this secret.")),
    responses((status = 200, description = "{\"id\", \"revoked\": true}."),
              (status = "4XX", description = "Refused, or no_key.", body = crate::error::ErrorBody)),
    security(("bearer" = ["keys"])))]
pub(crate) async fn revoke(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Keys, "/v1/admin/keys") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let id = who.rest.clone();
    if !sees_key(&who, &id) {
        return who.refuse(&shared, &ApiError::new(404, "no_key", "no such key"));
    }
    let secret = match who.query.get("secret").map(str::parse::<u32>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return who.refuse(&shared, &ApiError::bad_request("secret: a number")),
    };
    edit(&shared, &who, move |ring, _| {
        ring.revoke(&id, secret).map_err(key_error)?;
        Ok(serde_json::json!({"id": id, "revoked": true, "secret": secret}))
    })
    .await
}
