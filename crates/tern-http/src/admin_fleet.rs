//! The operator API's device fleet registry (`/v1/admin/devices`, `/v1/admin/owners`), what
//! `tern device` drives: devices added with their credential, listed, shown, disabled (their
//! connection closed at once) and deleted (with their session and retained status), owners
//! given a password. Changes run on the broker thread through the core's fleet interface and
//! are kept by its store. For tokens of the whole broker, and tokens of an owner (its own
//! devices only: another owner's device is `no_device`, adding one or naming another owner is
//! `realm_denied`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::{Deserialize, Serialize};
use tern_core::fleet::{Device, DeviceCredential, FleetError, Owner};
use tern_core::{Broker, Time};

use crate::admin::{authorize, operate, Authorized};
use crate::admin_ops::AdminOp;
use crate::answers::{json, refused};
use crate::error::ApiError;
use crate::realm::Realm;
use crate::replay::Answer;
use crate::server::{unsigned, Shared};
use crate::tokens::Scope;

/// A change to, or a look at, the registry, on the broker thread.
#[derive(Debug)]
pub(crate) enum FleetOp {
    List {
        owner: Option<String>,
    },
    Show {
        udid: String,
    },
    Add(DeviceBody),
    Disable {
        udid: String,
        disabled: bool,
    },
    Delete {
        udid: String,
    },
    SetPassword {
        udid: String,
        hash: String,
    },
    SetOwner {
        id: String,
        password_hash: Option<String>,
    },
}

/// A device to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceBody {
    owner: String,
    /// Its unique identifier: the client identifier it connects with.
    udid: String,
    #[serde(default)]
    alias: String,
    #[serde(default)]
    platform: String,
    #[serde(default)]
    firmware: String,
    #[serde(default)]
    tags: Vec<String>,
    /// `password` (with `password_hash`, argon2id), `key` (the HTTP bridge's key `d:UDID`)
    /// or `cert-cn` (with `cn`).
    credential: String,
    #[serde(default)]
    password_hash: Option<String>,
    #[serde(default)]
    cn: Option<String>,
}

/// One change: `{"disabled": true|false}`, or a new MQTT password for a device that logs in
/// with one: `{"password"}` (hashed by the broker, argon2id) or `{"password_hash"}` (argon2id
/// PHC, as `tern device` sends it).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeviceChange {
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    password_hash: Option<String>,
}

/// An owner's password (argon2id), or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct OwnerBody {
    #[serde(default)]
    password_hash: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeviceView {
    owner: String,
    udid: String,
    alias: String,
    platform: String,
    firmware: String,
    tags: Vec<String>,
    /// When it was added (Unix seconds).
    created: u64,
    disabled: bool,
    /// `password`, `key` or `cert-cn`.
    credential: String,
    /// Whether it is connected now.
    connected: bool,
    /// What the broker saw of its connections since it started (absent before its first).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusView>,
}

/// A device's live status.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StatusView {
    online: bool,
    /// Since when (Unix seconds).
    since: u64,
    /// Last seen connecting or disconnecting, or in a signed request of its own over HTTP
    /// (Unix seconds).
    last_seen: u64,
    /// Last seen in a signed request over HTTP (Unix seconds), if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_seen_http: Option<u64>,
    /// Its address on its last connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// 3, 4 or 5 (MQTT 3.1, 3.1.1, 5).
    protocol: u8,
    /// Whether it set a will of its own (else the broker publishes its retained status).
    own_will: bool,
    /// Connected more than 6 times within the last minute.
    flapping: bool,
    /// PUBLISH packets it sent over MQTT since the broker started.
    messages_in: u64,
    /// PUBLISH packets sent to it over MQTT since the broker started.
    messages_out: u64,
    /// Messages it published in signed requests of the HTTP bridge (with its own key) since
    /// the broker started.
    http_messages_in: u64,
    /// Messages its HTTP mailbox handed out to it since the broker started (one handed out
    /// again once its lease ended counts again).
    http_messages_out: u64,
}

pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::{get, put};
    axum::Router::new()
        .route("/v1/admin/devices", get(list).post(add))
        .route(
            "/v1/admin/devices/{udid}",
            get(show).patch(change).delete(delete),
        )
        .route("/v1/admin/owners/{owner}", put(set_owner))
}

/// Checks the token (a token of a client prefix holds none of the fleet, and is refused).
pub(crate) fn fleet_operator(
    shared: &Shared,
    request: &Request,
    scope: Scope,
    prefix: &str,
) -> Result<Authorized, Box<Response<Body>>> {
    let who = authorize(shared, request, scope, prefix)?;
    if who.operator.realm().sees_fleet() {
        return Ok(who);
    }
    let error = ApiError::new(
        403,
        "realm_denied",
        "the fleet is for tokens of the whole broker or of an owner",
    );
    Err(Box::new(who.refuse(shared, &error)))
}

macro_rules! fleet_operator {
    ($shared:expr, $request:expr, $scope:expr, $prefix:expr) => {
        match fleet_operator(&$shared, &$request, $scope, $prefix) {
            Ok(who) => who,
            Err(response) => return *response,
        }
    };
}

macro_rules! body {
    ($shared:expr, $who:expr, $request:expr, $type:ty) => {
        match crate::server::read_json::<$type>(&$shared, $request).await {
            Ok(body) => body,
            Err(error) => return $who.refuse(&$shared, &error),
        }
    };
}
pub(crate) use body;

async fn run(shared: &Shared, who: &Authorized, op: FleetOp) -> Response<Body> {
    let realm = who.operator.realm().clone();
    operate(shared, who, AdminOp::Fleet(realm, op)).await
}

/// The refusal of a token of one owner naming another.
pub(crate) fn other_owner() -> Answer {
    refused(&ApiError::new(
        403,
        "realm_denied",
        "that owner's fleet is outside the token's realm",
    ))
}

/// The devices (of one owner with `?owner=`), by udid.
#[utoipa::path(get, path = "/v1/admin/devices", tag = "fleet",
    params(("owner" = Option<String>, Query, description = "Only this owner's devices.")),
    responses((status = 200, description = "{\"devices\": [device]}, each as GET /v1/admin/devices/{udid} words it."),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn list(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = fleet_operator!(shared, request, Scope::Read, "/v1/admin/devices");
    let owner = who.query.get("owner").map(str::to_owned);
    run(&shared, &who, FleetOp::List { owner }).await
}

/// Adds a device with its credential; with `key`, the HTTP key `d:UDID` is made with it (its
/// secret under `key`, once), or neither is (a device is never left without its key).
#[utoipa::path(post, path = "/v1/admin/devices", tag = "fleet",
    request_body(content = DeviceBody, content_type = "application/json"),
    responses((status = 200, description = "The device (with `key`: `{id, n, secret}` for a key device).", body = DeviceView),
              (status = "4XX", description = "Refused, bad_request, or device_exists.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn add(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = fleet_operator!(shared, request, Scope::Write, "/v1/admin/devices");
    let body = body!(shared, who, request, DeviceBody);
    if body.credential != "key" {
        return run(&shared, &who, FleetOp::Add(body)).await;
    }
    if !who.operator.realm().sees_owner(&body.owner) {
        return who.respond(&shared, other_owner());
    }
    let key_id = format!("d:{}", body.udid);
    if shared.key_ring().keys().any(|k| k.id == key_id) {
        let error = ApiError::new(409, "key_exists", format!("the key {key_id} exists"));
        return who.refuse(&shared, &error);
    }
    let udid = body.udid.clone();
    let added = match ask(&shared, &who, FleetOp::Add(body)).await {
        Ok(answer) if answer.status == 200 => answer,
        Ok(answer) => return who.respond(&shared, answer),
        Err(error) => return who.refuse(&shared, &error),
    };
    match crate::admin_keys::new_device_key(&shared, key_id).await {
        Ok(key) => {
            let mut device: serde_json::Value =
                serde_json::from_slice(&added.body).unwrap_or_default();
            device["key"] = key;
            unsigned(200, serde_json::to_vec(&device).unwrap_or_default().into())
        }
        Err(error) => {
            // The device goes again: one with a key credential and no key is no device.
            if let Err(undo) = ask(&shared, &who, FleetOp::Delete { udid }).await {
                return who.refuse(&shared, &undo);
            }
            who.refuse(&shared, &error)
        }
    }
}

/// Sends `op` to the broker thread in the token's realm and waits for its answer.
pub(crate) async fn ask(
    shared: &Shared,
    who: &Authorized,
    op: FleetOp,
) -> Result<Answer, ApiError> {
    let realm = who.operator.realm().clone();
    crate::admin::ask(shared, AdminOp::Fleet(realm, op)).await
}

/// One device.
#[utoipa::path(get, path = "/v1/admin/devices/{udid}", tag = "fleet",
    params(("udid" = String, Path, description = "The device's udid.")),
    responses((status = 200, description = "The device.", body = DeviceView),
              (status = "4XX", description = "Refused, or no_device.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn show(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = fleet_operator!(shared, request, Scope::Read, "/v1/admin/devices");
    let udid = who.rest.clone();
    run(&shared, &who, FleetOp::Show { udid }).await
}

/// Disables a device (its connection is closed at once; it is refused until enabled) or
/// enables it; or gives a device that logs in with a password a new one (its next CONNECT
/// needs it; a connection open now stays).
#[utoipa::path(patch, path = "/v1/admin/devices/{udid}", tag = "fleet",
    params(("udid" = String, Path, description = "The device's udid.")),
    request_body(content = DeviceChange, content_type = "application/json"),
    responses((status = 200, description = "The device.", body = DeviceView),
              (status = "4XX", description = "Refused, no_device, or no_password (the device logs in with a key or a certificate).", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn change(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = fleet_operator!(shared, request, Scope::Write, "/v1/admin/devices");
    let body = body!(shared, who, request, DeviceChange);
    let udid = who.rest.clone();
    let op = match (body.disabled, body.password, body.password_hash) {
        (Some(disabled), None, None) => FleetOp::Disable { udid, disabled },
        (None, None, Some(hash)) => match argon2(Some(hash)) {
            Ok(hash) => FleetOp::SetPassword { udid, hash },
            Err(answer) => return who.respond(&shared, answer),
        },
        (None, Some(password), None) if !password.is_empty() => {
            // argon2id is slow on purpose: off the async threads.
            let hashed =
                tokio::task::spawn_blocking(move || tern_auth::passwd::hash_password(&password))
                    .await;
            match hashed {
                Ok(Ok(hash)) => FleetOp::SetPassword { udid, hash },
                _ => {
                    let error = ApiError::new(500, "internal", "the password could not be hashed");
                    return who.refuse(&shared, &error);
                }
            }
        }
        _ => {
            let error =
                ApiError::bad_request("one of: disabled, password (not empty), password_hash");
            return who.refuse(&shared, &error);
        }
    };
    run(&shared, &who, op).await
}

/// Deletes a device, its session and its retained channel and status.
#[utoipa::path(delete, path = "/v1/admin/devices/{udid}", tag = "fleet",
    params(("udid" = String, Path, description = "The device's udid.")),
    responses((status = 200, description = "The device deleted.", body = DeviceView),
              (status = "4XX", description = "Refused, or no_device.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn delete(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = fleet_operator!(shared, request, Scope::Write, "/v1/admin/devices");
    let udid = who.rest.clone();
    run(&shared, &who, FleetOp::Delete { udid }).await
}

/// Records an owner, with the password it logs in with over MQTT (or none).
#[utoipa::path(put, path = "/v1/admin/owners/{owner}", tag = "fleet",
    params(("owner" = String, Path, description = "The owner's id.")),
    request_body(content = OwnerBody, content_type = "application/json"),
    responses((status = 200, description = "{\"owner\", \"password\": bool}."),
              (status = "4XX", description = "Refused, or bad_request.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn set_owner(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    let who = fleet_operator!(shared, request, Scope::Write, "/v1/admin/owners");
    let body = body!(shared, who, request, OwnerBody);
    let (id, password_hash) = (who.rest.clone(), body.password_hash);
    run(&shared, &who, FleetOp::SetOwner { id, password_hash }).await
}

/// The Unix seconds of the broker's time `at`, `now` being `now_unix`.
pub(crate) fn unix_of(at: Time, now: Time, now_unix: u64) -> u64 {
    now_unix.saturating_sub(now.as_millis().saturating_sub(at.as_millis()) / 1000)
}

pub(crate) fn view(broker: &Broker, device: &Device, now: Time, now_unix: u64) -> DeviceView {
    let unix = |at: Time| unix_of(at, now, now_unix);
    let status = broker.fleet_status(&device.udid).map(|s| StatusView {
        online: s.online,
        since: unix(s.since),
        last_seen: unix(s.last_seen),
        last_seen_http: s.last_seen_http.map(unix),
        address: s.address.map(|a| a.to_string()),
        protocol: s.version.map_or(0, |v| v.level()),
        own_will: s.own_will,
        flapping: s.flapping,
        messages_in: s.messages_in,
        messages_out: s.messages_out,
        http_messages_in: s.http_messages_in,
        http_messages_out: s.http_messages_out,
    });
    let connected = broker
        .admin_session(&device.udid, 0)
        .is_some_and(|s| s.summary.connected);
    DeviceView {
        owner: device.owner.clone(),
        udid: device.udid.clone(),
        alias: device.alias.clone(),
        platform: device.platform.clone(),
        firmware: device.firmware.clone(),
        tags: device.tags.clone(),
        created: device.created_unix,
        disabled: device.disabled,
        credential: device.credential.kind().to_owned(),
        connected,
        status,
    }
}

pub(crate) fn fleet_error(error: &FleetError) -> Answer {
    let (status, code) = match error {
        FleetError::NoDevice(_) => (404, "no_device"),
        FleetError::Exists(_) => (409, "device_exists"),
        FleetError::BadName { .. } | FleetError::ReservedUdid => (400, "bad_request"),
        FleetError::NoPassword(_) => (409, "no_password"),
    };
    refused(&ApiError::new(status, code, error.to_string()))
}

fn argon2(hash: Option<String>) -> Result<String, Answer> {
    match hash {
        Some(hash) if hash.starts_with("$argon2") => Ok(hash),
        _ => Err(refused(&ApiError::bad_request(
            "password_hash: an argon2id PHC string (tern device hashes the password)",
        ))),
    }
}

/// Does `op` in the core at `now` (`now_unix`: the same instant by the system clock).
pub(crate) fn apply(
    broker: &mut Broker,
    realm: &Realm,
    op: &FleetOp,
    now: Time,
    now_unix: u64,
) -> Answer {
    let named = match op {
        FleetOp::List { owner } => owner.as_deref(),
        FleetOp::Add(body) => Some(body.owner.as_str()),
        FleetOp::SetOwner { id, .. } => Some(id.as_str()),
        FleetOp::Show { udid }
        | FleetOp::Disable { udid, .. }
        | FleetOp::Delete { udid }
        | FleetOp::SetPassword { udid, .. } => {
            if realm.device(broker.fleet(), udid).is_none() {
                return fleet_error(&FleetError::NoDevice(udid.clone()));
            }
            None
        }
    };
    if named.is_some_and(|owner| !realm.sees_owner(owner)) {
        return other_owner();
    }
    match op {
        FleetOp::List { owner } => {
            let owner = owner.as_deref().or(realm.owner());
            let devices: Vec<DeviceView> = broker
                .fleet()
                .devices(owner)
                .into_iter()
                .map(|d| view(broker, d, now, now_unix))
                .collect();
            json(200, &serde_json::json!({ "devices": devices }))
        }
        FleetOp::Show { udid } => match broker.fleet().device(udid) {
            Some(device) => json(200, &view(broker, device, now, now_unix)),
            None => fleet_error(&FleetError::NoDevice(udid.clone())),
        },
        FleetOp::Add(body) => {
            let credential = match body.credential.as_str() {
                "password" => match argon2(body.password_hash.clone()) {
                    Ok(hash) => DeviceCredential::Password(hash),
                    Err(answer) => return answer,
                },
                "key" => DeviceCredential::HttpKey,
                "cert-cn" => match body.cn.clone().filter(|cn| !cn.is_empty()) {
                    Some(cn) => DeviceCredential::CertificateCn(cn),
                    None => return refused(&ApiError::bad_request("cn: the certificate's CN")),
                },
                _ => {
                    return refused(&ApiError::bad_request(
                        "credential: password, key or cert-cn",
                    ))
                }
            };
            let device = Device {
                owner: body.owner.clone(),
                udid: body.udid.clone(),
                alias: body.alias.clone(),
                platform: body.platform.clone(),
                firmware: body.firmware.clone(),
                tags: body.tags.clone(),
                created_unix: now_unix,
                disabled: false,
                credential,
            };
            match broker.fleet_add(device.clone()) {
                Ok(()) => json(200, &view(broker, &device, now, now_unix)),
                Err(error) => fleet_error(&error),
            }
        }
        FleetOp::Disable { udid, disabled } => match broker.fleet_disable(udid, *disabled, now) {
            Ok(()) => match broker.fleet().device(udid) {
                Some(device) => json(200, &view(broker, device, now, now_unix)),
                None => fleet_error(&FleetError::NoDevice(udid.clone())),
            },
            Err(error) => fleet_error(&error),
        },
        FleetOp::SetPassword { udid, hash } => {
            match broker.fleet_set_password(udid, hash.clone()) {
                Ok(()) => match broker.fleet().device(udid) {
                    Some(device) => json(200, &view(broker, device, now, now_unix)),
                    None => fleet_error(&FleetError::NoDevice(udid.clone())),
                },
                Err(error) => fleet_error(&error),
            }
        }
        FleetOp::Delete { udid } => match broker.fleet_delete(udid, now) {
            Ok(device) => json(200, &view(broker, &device, now, now_unix)),
            Err(error) => fleet_error(&error),
        },
        FleetOp::SetOwner { id, password_hash } => {
            let password_hash = match password_hash.clone().map(|h| argon2(Some(h))).transpose() {
                Ok(hash) => hash,
                Err(answer) => return answer,
            };
            let created_unix = broker
                .fleet()
                .owner(id)
                .map_or(now_unix, |o| o.created_unix);
            let has_password = password_hash.is_some();
            let owner = Owner {
                id: id.clone(),
                created_unix,
                password_hash,
            };
            match broker.fleet_set_owner(owner) {
                Ok(()) => json(
                    200,
                    &serde_json::json!({ "owner": id, "password": has_password }),
                ),
                Err(error) => fleet_error(&error),
            }
        }
    }
}
