//! The operator API's firmware catalogue (`/v1/admin/firmware`), what `tern firmware` drives:
//! releases added (platform, semantic version, URL, SHA-256, size, owner or all owners,
//! device tags, rollout percentage), listed, shown and deleted. A device's registration is
//! offered the newest matching release above its version (docs/fleet.md, "Firmware").
//! A release's file may be uploaded instead of naming a URL (`PUT .../{id}/file`): the broker
//! keeps it (`firmware_files.rs`) and serves it at `/v1/fleet/firmware/{id}`. Changes run on
//! the broker thread and are kept by its store. For tokens whose realm is the whole broker:
//! the catalogue is every owner's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::{Deserialize, Serialize};
use tern_core::firmware::{kept_file_url, Release, ReleaseError};
use tern_core::{Broker, RequestClient};

use crate::admin::{ask, authorize, operate, Authorized};
use crate::admin_ops::AdminOp;
use crate::answers::{json, refused};
use crate::error::ApiError;
use crate::firmware_files;
use crate::realm::Realm;
use crate::replay::Answer;
use crate::server::Shared;
use crate::tokens::Scope;

/// A change to, or a look at, the catalogue, on the broker thread.
#[derive(Debug)]
pub(crate) enum FirmwareOp {
    List,
    Show {
        id: String,
    },
    Add(ReleaseBody),
    Delete {
        id: String,
    },
    /// The release `id` if the broker keeps its file and the realm may see an owner it is
    /// for (a download's question).
    File {
        realm: Realm,
        id: String,
    },
}

/// A release to add (and, with when it was added, as the catalogue shows it).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    /// Its identifier: 1 to 64 letters, digits, `-`, `_` or `.`.
    id: String,
    /// The platform it is for, as devices register theirs (`esp32`).
    platform: String,
    /// Its semantic version (`1.7.25`).
    version: String,
    /// Where devices download it.
    url: String,
    /// The SHA-256 of the file, 64 hex digits.
    sha256: String,
    /// The size of the file in bytes.
    size: u64,
    /// Only this owner's devices (absent: every owner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
    /// Only devices with every one of these tags.
    #[serde(default)]
    tags: Vec<String>,
    /// The share of matching devices offered it, 0 to 100 (default 100).
    #[serde(default = "all")]
    rollout_percent: u8,
}

fn all() -> u8 {
    100
}

/// A release of the catalogue.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReleaseView {
    #[serde(flatten)]
    release: ReleaseBody,
    /// When it was added (Unix seconds).
    created: u64,
}

impl From<&Release> for ReleaseView {
    fn from(release: &Release) -> Self {
        Self {
            release: ReleaseBody {
                id: release.id.clone(),
                platform: release.platform.clone(),
                version: release.version.clone(),
                url: release.url.clone(),
                sha256: release.sha256.clone(),
                size: release.size,
                owner: release.owner.clone(),
                tags: release.tags.clone(),
                rollout_percent: release.rollout_percent,
            },
            created: release.created_unix,
        }
    }
}

pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/admin/firmware", get(list).post(add))
        .route("/v1/admin/firmware/{id}", get(show).delete(delete))
        .route("/v1/admin/firmware/{id}/file", axum::routing::put(upload))
}

/// Checks the token: the catalogue is every owner's, so only a token of the whole broker
/// (not an owner's, nor one of a client prefix) sees it.
fn catalogue_operator(
    shared: &Shared,
    request: &Request,
    scope: Scope,
) -> Result<Authorized, Box<Response<Body>>> {
    let who = authorize(shared, request, scope, "/v1/admin/firmware")?;
    if who.operator.sees_all_clients() {
        return Ok(who);
    }
    let error = ApiError::new(
        403,
        "realm_denied",
        "the firmware catalogue is for tokens of the whole broker",
    );
    Err(Box::new(who.refuse(shared, &error)))
}

/// The operator and the rest of the path, or the refusal.
macro_rules! operator {
    ($shared:expr, $request:expr, $scope:expr) => {
        match catalogue_operator(&$shared, &$request, $scope) {
            Ok(who) => who,
            Err(response) => return *response,
        }
    };
}

/// The releases, by id.
#[utoipa::path(get, path = "/v1/admin/firmware", tag = "fleet",
    responses((status = 200, description = "{\"releases\": [release]}, by id."),
              (status = "4XX", description = "Refused.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn list(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = operator!(shared, request, Scope::Read);
    operate(&shared, &who, AdminOp::Firmware(FirmwareOp::List)).await
}

/// Adds a release.
#[utoipa::path(post, path = "/v1/admin/firmware", tag = "fleet",
    request_body(content = ReleaseBody, content_type = "application/json"),
    responses((status = 200, description = "The release.", body = ReleaseView),
              (status = "4XX", description = "Refused, bad_request, or release_exists.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn add(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = operator!(shared, request, Scope::Write);
    match crate::server::read_json::<ReleaseBody>(&shared, request).await {
        Ok(body) if body.url.starts_with(&kept_file_url("")) => {
            let error = ApiError::bad_request("a file the broker keeps is uploaded: PUT .../file");
            who.refuse(&shared, &error)
        }
        Ok(body) => operate(&shared, &who, AdminOp::Firmware(FirmwareOp::Add(body))).await,
        Err(error) => who.refuse(&shared, &error),
    }
}

/// One release.
#[utoipa::path(get, path = "/v1/admin/firmware/{id}", tag = "fleet",
    params(("id" = String, Path, description = "The release's id.")),
    responses((status = 200, description = "The release.", body = ReleaseView),
              (status = "4XX", description = "Refused, or no_release.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn show(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = operator!(shared, request, Scope::Read);
    let id = who.rest.clone();
    operate(&shared, &who, AdminOp::Firmware(FirmwareOp::Show { id })).await
}

/// Deletes a release: it is offered no more, and the file the broker kept of it is deleted.
#[utoipa::path(delete, path = "/v1/admin/firmware/{id}", tag = "fleet",
    params(("id" = String, Path, description = "The release's id.")),
    responses((status = 200, description = "The release deleted.", body = ReleaseView),
              (status = "4XX", description = "Refused, or no_release.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn delete(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = operator!(shared, request, Scope::Write);
    let id = who.rest.clone();
    let answer = match ask(&shared, AdminOp::Firmware(FirmwareOp::Delete { id })).await {
        Ok(answer) if answer.status < 400 => answer,
        Ok(answer) => return who.refuse(&shared, &crate::server::error_of(&answer)),
        Err(error) => return who.refuse(&shared, &error),
    };
    /// What of the deleted release names its file.
    #[derive(Deserialize)]
    struct Deleted {
        id: String,
        url: String,
        sha256: String,
    }
    if let Ok(deleted) = serde_json::from_slice::<Deleted>(&answer.body) {
        if deleted.url == kept_file_url(&deleted.id) {
            firmware_files::forget(&shared.config.data_dir, &deleted.id, &deleted.sha256);
        }
    }
    crate::server::unsigned(answer.status, answer.body)
}

/// Uploads a release's file and adds the release, whose SHA-256 and size are the file's.
#[utoipa::path(put, path = "/v1/admin/firmware/{id}/file", tag = "fleet",
    params(("id" = String, Path, description = "The release's id."),
           ("platform" = String, Query, description = "The platform it is for."),
           ("version" = String, Query, description = "Its semantic version."),
           ("owner" = Option<String>, Query, description = "Only this owner's devices."),
           ("tags" = Option<String>, Query, description = "Only devices with all these tags, comma-separated."),
           ("rollout_percent" = Option<u8>, Query, description = "0 to 100 (default 100)."),
           ("sha256" = Option<String>, Query, description = "Checked against the file's."),
           ("size" = Option<u64>, Query, description = "Checked against the file's.")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file (at most http.firmware_file_max_bytes, 64 MiB by default)."),
    responses((status = 200, description = "The release, its url /v1/fleet/firmware/{id}.", body = ReleaseView),
              (status = "4XX", description = "Refused, bad_request, file_mismatch (the sha256 or size given is not the file's), release_exists, payload_too_large.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn upload(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = operator!(shared, request, Scope::Write);
    let Some(id) = who.rest.strip_suffix("/file").map(str::to_owned) else {
        return who.refuse(
            &shared,
            &ApiError::bad_request("PUT /v1/admin/firmware/{id}/file"),
        );
    };
    let (parts, body) = request.into_parts();
    let config = &shared.config;
    let limit = config.firmware_file_max_bytes;
    let declared = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return who.refuse(&shared, &firmware_files::too_large(limit));
    }
    let data_dir = &config.data_dir;
    let received = match firmware_files::receive(data_dir, body, limit, config.body_timeout).await {
        Ok(received) => received,
        Err(error) => return who.refuse(&shared, &error),
    };
    let release = match uploaded(&who, id, &received.sha256, received.size) {
        Ok(release) => release,
        Err(error) => {
            firmware_files::discard(received).await;
            return who.refuse(&shared, &error);
        }
    };
    let (id, sha256) = (release.id.clone(), release.sha256.clone());
    let existed = match firmware_files::keep(data_dir, &id, received).await {
        Ok(existed) => existed,
        Err(why) => {
            tracing::warn!("{why}");
            return who.refuse(
                &shared,
                &ApiError::unavailable("the file could not be written"),
            );
        }
    };
    let answer = ask(&shared, AdminOp::Firmware(FirmwareOp::Add(release))).await;
    match answer {
        Ok(answer) if answer.status < 400 => crate::server::unsigned(answer.status, answer.body),
        refused => {
            // Not taken: the file goes, unless it was a release's already (the same bytes).
            if !existed {
                firmware_files::forget(data_dir, &id, &sha256);
            }
            let error =
                refused.map_or_else(|error| error, |answer| crate::server::error_of(&answer));
            who.refuse(&shared, &error)
        }
    }
}

/// The release an upload adds: its fields from the query, its digest and size the file's
/// (checked against those given), its URL the broker's own.
fn uploaded(
    who: &Authorized,
    id: String,
    sha256: &str,
    size: u64,
) -> Result<ReleaseBody, ApiError> {
    let query = &who.query;
    let sha256 = sha256.to_owned();
    let given_sha = query.get("sha256").map(str::to_ascii_lowercase);
    let given_size = query.number::<u64>("size")?;
    if given_sha.is_some_and(|given| given != sha256) || given_size.is_some_and(|n| n != size) {
        return Err(ApiError::new(
            400,
            "file_mismatch",
            format!("the file's sha256 is {sha256} and its size {size}, not those given"),
        ));
    }
    let required = |name: &str| {
        query
            .get(name)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::bad_request(format!("{name} is required")))
    };
    let body = ReleaseBody {
        url: kept_file_url(&id),
        id,
        platform: required("platform")?,
        version: required("version")?,
        sha256,
        size,
        owner: query.get("owner").map(str::to_owned),
        tags: query
            .get("tags")
            .map(|tags| {
                tags.split(',')
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
        rollout_percent: query.number::<u8>("rollout_percent")?.unwrap_or(100),
    };
    // Checked before the file is written under its id.
    release_of(&body, 0)
        .check()
        .map_err(|error| ApiError::bad_request(error.to_string()))?;
    Ok(body)
}

/// A device's question (`GET /v1/fleet/firmware/{id}`, signed): the release if it may read
/// its file, else `no_release` as for an unknown id.
pub(crate) fn file_for(broker: &Broker, client: &RequestClient, id: &str) -> Answer {
    match broker.firmware_file_for(client, id) {
        Some(release) => json(200, &ReleaseView::from(release)),
        None => release_error(&ReleaseError::NoRelease(id.to_owned())),
    }
}

/// The release of the catalogue a body describes.
fn release_of(body: &ReleaseBody, now_unix: u64) -> Release {
    Release {
        id: body.id.clone(),
        platform: body.platform.clone(),
        version: body.version.clone(),
        url: body.url.clone(),
        sha256: body.sha256.to_ascii_lowercase(),
        size: body.size,
        owner: body.owner.clone().filter(|owner| !owner.is_empty()),
        tags: body.tags.clone(),
        rollout_percent: body.rollout_percent,
        created_unix: now_unix,
    }
}

fn release_error(error: &ReleaseError) -> Answer {
    let (status, code) = match error {
        ReleaseError::NoRelease(_) => (404, "no_release"),
        ReleaseError::Exists(_) => (409, "release_exists"),
        _ => (400, "bad_request"),
    };
    refused(&ApiError::new(status, code, error.to_string()))
}

/// Does `op` in the core (`now_unix`: the system clock's Unix seconds).
pub(crate) fn apply(broker: &mut Broker, op: &FirmwareOp, now_unix: u64) -> Answer {
    match op {
        FirmwareOp::List => {
            let releases: Vec<ReleaseView> = broker
                .firmware()
                .releases()
                .map(ReleaseView::from)
                .collect();
            json(200, &serde_json::json!({ "releases": releases }))
        }
        FirmwareOp::Show { id } => match broker.firmware().release(id) {
            Some(release) => json(200, &ReleaseView::from(release)),
            None => release_error(&ReleaseError::NoRelease(id.clone())),
        },
        FirmwareOp::Add(body) => {
            let release = release_of(body, now_unix);
            match broker.firmware_add(release.clone()) {
                Ok(()) => json(200, &ReleaseView::from(&release)),
                Err(error) => release_error(&error),
            }
        }
        FirmwareOp::Delete { id } => match broker.firmware_delete(id) {
            Ok(release) => json(200, &ReleaseView::from(&release)),
            Err(error) => release_error(&error),
        },
        FirmwareOp::File { realm, id } => {
            let readable = broker.firmware().release(id).filter(|release| {
                let sees = match &release.owner {
                    Some(owner) => realm.sees_owner(owner),
                    None => realm.sees_fleet(),
                };
                release.file_kept() && sees
            });
            match readable {
                Some(release) => json(200, &ReleaseView::from(release)),
                None => release_error(&ReleaseError::NoRelease(id.clone())),
            }
        }
    }
}
