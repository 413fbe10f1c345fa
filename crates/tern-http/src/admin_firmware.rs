//! The operator API's firmware catalogue (`/v1/admin/firmware`), what `tern firmware` drives:
//! releases added (platform, semantic version, URL, SHA-256, size, owner or all owners,
//! device tags, rollout percentage), listed, shown and deleted. A device's registration is
//! offered the newest matching release above its version (docs/fleet.md, "Firmware").
//! Changes run on the broker thread and are kept by its store. For tokens whose realm is the
//! whole broker: the catalogue is every owner's.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use serde::{Deserialize, Serialize};
use tern_core::firmware::{Release, ReleaseError};
use tern_core::Broker;

use crate::admin::{authorize, operate, Authorized};
use crate::admin_ops::AdminOp;
use crate::answers::{json, refused};
use crate::error::ApiError;
use crate::replay::Answer;
use crate::server::Shared;
use crate::tokens::Scope;

/// A change to, or a look at, the catalogue, on the broker thread.
#[derive(Debug)]
pub(crate) enum FirmwareOp {
    List,
    Show { id: String },
    Add(ReleaseBody),
    Delete { id: String },
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

/// Deletes a release: it is offered no more.
#[utoipa::path(delete, path = "/v1/admin/firmware/{id}", tag = "fleet",
    params(("id" = String, Path, description = "The release's id.")),
    responses((status = 200, description = "The release deleted.", body = ReleaseView),
              (status = "4XX", description = "Refused, or no_release.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn delete(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = operator!(shared, request, Scope::Write);
    let id = who.rest.clone();
    operate(&shared, &who, AdminOp::Firmware(FirmwareOp::Delete { id })).await
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
            let release = Release {
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
            };
            match broker.firmware_add(release.clone()) {
                Ok(()) => json(200, &ReleaseView::from(&release)),
                Err(error) => release_error(&error),
            }
        }
        FirmwareOp::Delete { id } => match broker.firmware_delete(id) {
            Ok(release) => json(200, &ReleaseView::from(&release)),
            Err(error) => release_error(&error),
        },
    }
}
