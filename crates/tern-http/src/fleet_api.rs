//! The device fleet's API for consoles (`/v1/fleet/...`): the devices, filtered (owner,
//! online, platform, firmware version, tag, text in the udid or alias) and listed in pages
//! by udid with a cursor, so a page of a fleet of 100,000 costs the page, not the fleet; one
//! device with its live status, its last status changes, its session and the recent messages
//! of its own topics the history keeps. Tokens of the whole
//! broker see every owner, a token of an owner only its own (`realm.rs`): another owner's
//! device is `no_device`, naming another owner `realm_denied`. Changes to the registry are
//! the operator API's (`admin_fleet.rs`); each change is also an `event: fleet` on
//! `GET /v1/events`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Serialize;
use tern_core::firmware::Standing;
use tern_core::fleet::{Device, DeviceStatus, FleetError};
use tern_core::history::{kept_time, Kept};
use tern_core::{Broker, Time};

use crate::admin::operate;
use crate::admin_fleet::{fleet_error, fleet_operator, other_owner, unix_of, view, DeviceView};
use crate::admin_ops::{AdminOp, SessionView};
use crate::answers::json;
use crate::error::ApiError;
use crate::realm::Realm;
use crate::replay::Answer;
use crate::server::Shared;
use crate::tokens::{Operator, Scope};

/// Devices in a page unless `limit` says fewer; and at most.
const PAGE_DEFAULT: usize = 100;
const PAGE_MAX: usize = 1000;

/// What a console asks of the fleet, on the broker thread.
#[derive(Debug)]
pub(crate) enum FleetQuery {
    /// A page of devices.
    Devices(Filter),
    /// One device in detail (of this owner, when named), for this token (its topics narrow
    /// the recent messages shown).
    Device {
        udid: String,
        owner: Option<String>,
        operator: Operator,
    },
}

/// Which devices a listing wants, and where its page starts.
#[derive(Debug, Default)]
pub(crate) struct Filter {
    owner: Option<String>,
    online: Option<bool>,
    platform: Option<String>,
    firmware: Option<String>,
    tag: Option<String>,
    /// Lower-case text the udid or the alias contains.
    text: Option<String>,
    /// The udid the last page ended with.
    after: Option<String>,
    limit: usize,
}

impl Filter {
    /// The filter a query asks for.
    fn parse(query: &crate::publish::Query) -> Result<Self, ApiError> {
        let text = |name: &str| query.get(name).filter(|v| !v.is_empty()).map(str::to_owned);
        let online = match query.get("online") {
            None | Some("") => None,
            Some("1" | "true") => Some(true),
            Some("0" | "false") => Some(false),
            Some(_) => return Err(ApiError::bad_request("online: 1 or 0")),
        };
        let limit = match query.number::<usize>("limit")? {
            None => PAGE_DEFAULT,
            Some(n) if (1..=PAGE_MAX).contains(&n) => n,
            Some(_) => return Err(ApiError::bad_request(format!("limit: 1-{PAGE_MAX}"))),
        };
        Ok(Self {
            owner: text("owner"),
            online,
            platform: text("platform"),
            firmware: text("firmware"),
            tag: text("tag"),
            text: text("q").map(|q| q.to_lowercase()),
            after: text("cursor"),
            limit,
        })
    }

    fn admits(&self, device: &Device, status: Option<&DeviceStatus>) -> bool {
        let same =
            |wanted: &Option<String>, value: &str| wanted.as_ref().is_none_or(|w| w == value);
        same(&self.owner, &device.owner)
            && same(&self.platform, &device.platform)
            && same(&self.firmware, &device.firmware)
            && self
                .online
                .is_none_or(|online| status.is_some_and(|s| s.online) == online)
            && self
                .tag
                .as_ref()
                .is_none_or(|tag| device.tags.contains(tag))
            && self.text.as_ref().is_none_or(|text| {
                device.udid.to_lowercase().contains(text)
                    || device.alias.to_lowercase().contains(text)
            })
    }
}

/// A page of devices.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DevicePage {
    /// The devices, by udid.
    devices: Vec<DeviceView>,
    /// The cursor of the next page (`?cursor=`), or null on the last.
    next: Option<String>,
}

/// One change of a device's status.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct StatusChangeView {
    online: bool,
    /// When (Unix seconds).
    at: u64,
}

/// One device in detail.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct DeviceDetail {
    #[serde(flatten)]
    device: DeviceView,
    /// Its last status changes (at most 10, since the broker started), oldest first.
    history: Vec<StatusChangeView>,
    /// Its session, if it has one.
    session: Option<SessionView>,
    /// The release its registration would be offered now, at its recorded firmware version
    /// (the broker's own rule: platform, owner, tags, rollout, semantic version order), or
    /// null.
    offer: Option<OfferView>,
    /// Why: `update_available` (the offer), `up_to_date` (it runs the newest release for it,
    /// or later), `no_release` (none is for it) or `unversioned` (its version is not a
    /// semantic version: it is offered nothing).
    offer_status: &'static str,
    /// The last messages of its own topics (its channel and those under it, published by it
    /// or to it) that a `[[history]]` filter keeps, newest last, at most 20; empty when no
    /// history keeps them.
    recent_messages: Vec<RecentMessage>,
}

/// Messages a device's view shows at most.
const RECENT_MAX: usize = 20;

/// A message of a device's topics, as the history keeps it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct RecentMessage {
    topic: String,
    /// When it was published (Unix seconds).
    at: u64,
    qos: u8,
    retain: bool,
    /// The payload as text, or null when it is not UTF-8.
    payload: Option<String>,
    /// The payload in base64 (standard alphabet, padded), whatever it holds.
    payload_base64: String,
}

impl RecentMessage {
    fn of(kept: &Kept, now: Time, now_unix: u64) -> Self {
        let message = &kept.message;
        let age_secs = kept_time(now).saturating_sub(kept.at) / 1000;
        let at = i64::try_from(now_unix)
            .unwrap_or(i64::MAX)
            .saturating_sub(age_secs);
        Self {
            topic: message.topic.as_str().to_owned(),
            at: u64::try_from(at).unwrap_or(0),
            qos: message.qos as u8,
            retain: message.retain,
            payload: std::str::from_utf8(&message.payload)
                .ok()
                .map(str::to_owned),
            payload_base64: STANDARD.encode(&message.payload),
        }
    }
}

/// A release offered to a device, as its registration's answer names it.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct OfferView {
    id: String,
    version: String,
    /// Where the device downloads it from (a path on the broker for a file it keeps).
    url: String,
    /// The file's SHA-256, lowercase hex.
    sha256: String,
    /// The file's size in bytes.
    size: u64,
}

/// The offer to `device` now, and its status word.
fn offer(broker: &Broker, device: &Device) -> (Option<OfferView>, &'static str) {
    match broker.firmware().standing(device, &device.firmware) {
        Standing::Offer(release) => (
            Some(OfferView {
                id: release.id.clone(),
                version: release.version.clone(),
                url: release.url.clone(),
                sha256: release.sha256.clone(),
                size: release.size,
            }),
            "update_available",
        ),
        Standing::UpToDate(_) => (None, "up_to_date"),
        Standing::NoRelease => (None, "no_release"),
        Standing::Unversioned => (None, "unversioned"),
    }
}

pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/v1/fleet/devices", get(devices))
        .route("/v1/fleet/devices/{udid}", get(device))
        .route("/v1/fleet/devices/{owner}/{udid}", get(owned_device))
}

/// The devices the token may see, filtered, a page at a time in udid order.
#[utoipa::path(get, path = "/v1/fleet/devices", tag = "fleet",
    params(("owner" = Option<String>, Query, description = "Only this owner's (a token of an owner: its own only)."),
           ("online" = Option<u8>, Query, description = "1: only those connected now; 0: only those that are not."),
           ("platform" = Option<String>, Query, description = "Only this platform."),
           ("firmware" = Option<String>, Query, description = "Only this firmware version."),
           ("tag" = Option<String>, Query, description = "Only devices with this tag."),
           ("q" = Option<String>, Query, description = "Only devices whose udid or alias contains this (any case)."),
           ("cursor" = Option<String>, Query, description = "The `next` of the previous page."),
           ("limit" = Option<usize>, Query, description = "Devices in the page, 1-1000 (default 100).")),
    responses((status = 200, description = "A page of devices.", body = DevicePage),
              (status = "4XX", description = "Refused; realm_denied for another owner.", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn devices(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match fleet_operator(&shared, &request, Scope::Read, "/v1/fleet/devices") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let filter = match Filter::parse(&who.query) {
        Ok(filter) => filter,
        Err(error) => return who.refuse(&shared, &error),
    };
    let realm = who.operator.realm().clone();
    operate(
        &shared,
        &who,
        AdminOp::FleetQuery(realm, FleetQuery::Devices(filter)),
    )
    .await
}

/// One device: its registry entry, live status, last status changes, session, and the
/// firmware release the broker would offer it now.
#[utoipa::path(get, path = "/v1/fleet/devices/{udid}", tag = "fleet",
    params(("udid" = String, Path, description = "The device's udid.")),
    responses((status = 200, description = "The device.", body = DeviceDetail),
              (status = "4XX", description = "Refused, or no_device (also another owner's).", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn device(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match fleet_operator(&shared, &request, Scope::Read, "/v1/fleet/devices") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let (udid, owner) = match who.rest.split_once('/') {
        Some((owner, udid)) => (udid.to_owned(), Some(owner.to_owned())),
        None => (who.rest.clone(), None),
    };
    let realm = who.operator.realm().clone();
    let operator = who.operator.clone();
    let query = FleetQuery::Device {
        udid,
        owner,
        operator,
    };
    operate(&shared, &who, AdminOp::FleetQuery(realm, query)).await
}

/// One device named with its owner: the same as `/v1/fleet/devices/{udid}`, and `no_device`
/// when the device is not that owner's.
#[utoipa::path(get, path = "/v1/fleet/devices/{owner}/{udid}", tag = "fleet",
    params(("owner" = String, Path, description = "The device's owner."),
           ("udid" = String, Path, description = "The device's udid.")),
    responses((status = 200, description = "The device.", body = DeviceDetail),
              (status = "4XX", description = "Refused, or no_device (also another owner's).", body = crate::error::ErrorBody)),
    security(("bearer" = ["read"])))]
pub(crate) async fn owned_device(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    device(State(shared), request).await
}

/// Answers `query` on the broker thread, within `realm`.
pub(crate) fn apply(
    broker: &Broker,
    realm: &Realm,
    query: &FleetQuery,
    now: Time,
    now_unix: u64,
) -> Answer {
    match query {
        FleetQuery::Devices(filter) => {
            if filter
                .owner
                .as_deref()
                .is_some_and(|o| !realm.sees_owner(o))
            {
                return other_owner();
            }
            let fleet = broker.fleet();
            let (page, more) = fleet.page(filter.after.as_deref(), filter.limit, |d, s| {
                realm.sees_owner(&d.owner) && filter.admits(d, s)
            });
            let next = more.then(|| page.last().map(|d| d.udid.clone())).flatten();
            let devices = page
                .into_iter()
                .map(|d| view(broker, d, now, now_unix))
                .collect();
            json(200, &DevicePage { devices, next })
        }
        FleetQuery::Device {
            udid,
            owner,
            operator,
        } => {
            let named = |device: &&Device| owner.as_ref().is_none_or(|o| *o == device.owner);
            let Some(device) = realm.device(broker.fleet(), udid).filter(named) else {
                return fleet_error(&FleetError::NoDevice(udid.clone()));
            };
            let history = broker
                .fleet_status(udid)
                .map(|s| {
                    s.history
                        .iter()
                        .map(|change| StatusChangeView {
                            online: change.online,
                            at: unix_of(change.at, now, now_unix),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let session = broker
                .admin_session(udid, 0)
                .map(|detail| crate::admin_ops::view(detail.summary));
            let (offer, offer_status) = offer(broker, device);
            let recent_messages = broker
                .fleet_recent_messages(udid, RECENT_MAX, now)
                .iter()
                .filter(|kept| operator.sees_topic(&kept.message.topic))
                .map(|kept| RecentMessage::of(kept, now, now_unix))
                .collect();
            let detail = DeviceDetail {
                device: view(broker, device, now, now_unix),
                history,
                session,
                offer,
                offer_status,
                recent_messages,
            };
            json(200, &detail)
        }
    }
}
