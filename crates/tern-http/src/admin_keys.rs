//! The operator API's keys (`/v1/admin/keys`): the key file changed as `tern key` changes it
//! (read, changed and written whole while no other edit runs), then read again at once. A new
//! secret is in the answer that made it, and never again. A token whose realm is a client
//! prefix sees and changes only device keys of its clients. A token of an owner (which has no
//! `keys` scope: the key file is the whole broker's) lists with `read`, and makes, rotates and
//! revokes with `write`, the keys `d:UDID` of its own registered devices, without grants (its
//! devices' namespace is the fleet's rule), and nothing else: the broker thread's registry
//! answers whether the device is the owner's, as for every fleet route.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::{Deserialize, Serialize};
use tern_auth::keyring::{parse_key_id, KeyKind};
use tern_auth::{Grant, HttpKey, KeyRing, RuleAccess};

use crate::admin::{authenticate, authorize, Authorized};
use crate::admin_fleet::{ask, FleetOp};
use crate::error::ApiError;
use crate::realm::Realm;
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

/// Checks the token: `keys`, or for a token of an owner `owner_scope` (read or write).
fn key_operator(
    shared: &Shared,
    request: &Request,
    owner_scope: Scope,
) -> Result<Authorized, Box<Response<Body>>> {
    let (operator, _) = authenticate(shared, request)?;
    let scope = match operator.realm() {
        Realm::Owner(_) => owner_scope,
        Realm::Clients(_) => Scope::Keys,
    };
    authorize(shared, request, scope, "/v1/admin/keys")
}

macro_rules! key_operator {
    ($shared:expr, $request:expr, $scope:expr) => {
        match key_operator(&$shared, &$request, $scope) {
            Ok(who) => who,
            Err(response) => return *response,
        }
    };
}

/// Whether the token's realm holds the key: device keys of its clients (for a token of an
/// owner: of its registered devices, asked of the registry); groups and apps only for a token
/// of the whole broker.
async fn sees_key(shared: &Shared, who: &Authorized, id: &str) -> Result<bool, ApiError> {
    match (parse_key_id(id), who.operator.realm()) {
        (Ok((KeyKind::Device, udid)), Realm::Owner(_)) => {
            let udid = udid.to_owned();
            Ok(ask(shared, who, FleetOp::Show { udid }).await?.status == 200)
        }
        (Ok((KeyKind::Device, client)), _) => Ok(who.operator.sees_client(client)),
        (Ok(_), _) => Ok(who.operator.sees_all_clients()),
        (Err(_), _) => Ok(false),
    }
}

/// The udids of the devices of a token of an owner (none for other tokens).
async fn own_devices(
    shared: &Shared,
    who: &Authorized,
) -> Result<std::collections::BTreeSet<String>, ApiError> {
    if who.operator.realm().owner().is_none() {
        return Ok(Default::default());
    }
    let answer = ask(shared, who, FleetOp::List { owner: None }).await?;
    let listed: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    let devices = listed["devices"].as_array().cloned().unwrap_or_default();
    Ok(devices
        .iter()
        .filter_map(|d| d["udid"].as_str().map(|u| format!("d:{u}")))
        .collect())
}

/// The refusal of a key outside the token's realm (as absent: `no_key`), or of the check.
async fn refuse_unseen(shared: &Shared, who: &Authorized, id: &str) -> Option<Response<Body>> {
    match sees_key(shared, who, id).await {
        Ok(true) => None,
        Ok(false) => Some(who.refuse(shared, &ApiError::new(404, "no_key", "no such key"))),
        Err(error) => Some(who.refuse(shared, &error)),
    }
}

/// Makes the device key `id` with no grants: its first secret as `{id, n, secret}`.
pub(crate) async fn new_device_key(
    shared: &Shared,
    id: String,
) -> Result<serde_json::Value, ApiError> {
    edit_ring(shared, move |ring, now| {
        let secret = ring.add(&id, None, Vec::new(), now).map_err(key_error)?;
        Ok(serde_json::json!(NewSecret {
            id,
            n: 1,
            secret: hex(&secret)
        }))
    })
    .await
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
    let who = key_operator!(shared, request, Scope::Read);
    let own = match own_devices(&shared, &who).await {
        Ok(own) => own,
        Err(error) => return who.refuse(&shared, &error),
    };
    let sees = |id: &str| match (parse_key_id(id), who.operator.realm()) {
        (Ok((KeyKind::Device, _)), Realm::Owner(_)) => own.contains(id),
        (Ok((KeyKind::Device, client)), _) => who.operator.sees_client(client),
        (Ok(_), _) => who.operator.sees_all_clients(),
        (Err(_), _) => false,
    };
    let ring = shared.key_ring();
    let keys: Vec<KeyView> = ring.keys().filter(|k| sees(&k.id)).map(view).collect();
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
    let who = key_operator!(shared, request, Scope::Write);
    let body = match read_json::<KeyBody>(&shared, request).await {
        Ok(body) => body,
        Err(error) => return who.refuse(&shared, &error),
    };
    let realm_denied = |why: &str| ApiError::new(403, "realm_denied", why.to_owned());
    match sees_key(&shared, &who, &body.id).await {
        Ok(true) => {}
        Ok(false) => {
            let error = realm_denied("that key is outside the token's realm");
            return who.refuse(&shared, &error);
        }
        Err(error) => return who.refuse(&shared, &error),
    }
    let owner_made = who.operator.realm().owner().is_some();
    let widened = !(body.publish.is_empty() && body.subscribe.is_empty() && body.both.is_empty())
        || body.prefix.is_some()
        || body.approve;
    if owner_made && widened {
        let error = realm_denied(
            "a token of an owner makes device keys without grants: the fleet's rule is theirs",
        );
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
    let who = key_operator!(shared, request, Scope::Write);
    let id = who
        .rest
        .strip_suffix("/rotate")
        .unwrap_or_default()
        .to_owned();
    if let Some(refused) = refuse_unseen(&shared, &who, &id).await {
        return refused;
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
    let who = key_operator!(shared, request, Scope::Write);
    let id = who.rest.clone();
    if let Some(refused) = refuse_unseen(&shared, &who, &id).await {
        return refused;
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
