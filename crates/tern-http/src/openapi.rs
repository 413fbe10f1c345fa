//! The OpenAPI 3.1 document of the bridge, generated from the route and type definitions
//! (utoipa), so it cannot drift from the code; served at `GET /v1/openapi.json`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::answers::{ItemResult, Published};
use crate::error::{ErrorBody, ErrorDetail};
use crate::mailbox::{MboxMessage, Polled, RequeueBody, ResetBody, SettleBody};
use crate::publish::{BatchItem, Fields};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tern HTTP bridge",
        description = "Signed HTTP requests for devices that wake, talk and sleep: docs/http.md \
                       has the signing scheme with a worked example."
    ),
    paths(
        crate::server::publish_one,
        crate::server::publish_batch,
        crate::server::time,
        crate::mailbox_routes::poll,
        crate::mailbox_routes::settle,
        crate::mailbox_routes::reset,
        crate::mailbox_routes::subscribe,
        crate::mailbox_routes::subscription,
        crate::mailbox_routes::subscriptions,
        crate::mailbox_routes::unsubscribe,
        crate::mailbox_routes::dead_letters,
        crate::mailbox_routes::requeue,
        crate::sync::sync,
        crate::kv::get,
        crate::kv::put,
        crate::kv::delete,
        crate::server::openapi_document,
        crate::admin::clients,
        crate::admin::kick,
        crate::admin::sessions,
        crate::admin::session,
        crate::admin::delete_session,
        crate::admin::subscriptions,
        crate::admin::retained,
        crate::admin::delete_retained,
        crate::admin::banned,
        crate::admin::ban,
        crate::admin::unban,
        crate::admin_keys::list,
        crate::admin_keys::add,
        crate::admin_keys::rotate,
        crate::admin_keys::revoke,
        crate::admin_fleet::list,
        crate::admin_fleet::add,
        crate::admin_fleet::show,
        crate::admin_fleet::change,
        crate::admin_fleet::delete,
        crate::admin_fleet::set_owner,
        crate::admin_firmware::list,
        crate::admin_firmware::add,
        crate::admin_firmware::show,
        crate::admin_firmware::delete,
        crate::admin_firmware::upload,
        crate::firmware_files::download,
        crate::fleet_api::devices,
        crate::fleet_api::device,
        crate::fleet_api::owned_device,
        crate::fleet_notify::list,
        crate::fleet_notify::ask,
        crate::fleet_notify::answer,
        crate::fleet_notify::cancel,
        crate::fleet_register::register,
        crate::events::events,
        crate::metrics::metrics,
        crate::metrics_history::history,
        crate::access::list,
        crate::access::approve,
        crate::access::reject,
        crate::access::forget,
        crate::console_session::login,
        crate::console_session::logout,
        crate::console_session::session,
        crate::console_publish::publish,
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Published,
        ItemResult,
        BatchItem,
        Fields,
        Polled,
        MboxMessage,
        SettleBody,
        RequeueBody,
        ResetBody,
        crate::sync::SyncBody,
        crate::sync::KvSince,
        crate::sync::Receive,
        crate::kv::Entry,
        crate::mailbox::Payload,
        crate::kv::Deleted,
        crate::kv::Changes,
        crate::admin_ops::SessionDetailView,
        crate::admin_ops::SessionView,
        crate::admin_ops::IdentityView,
        crate::admin_ops::SubscriptionView,
        crate::admin_ops::BanView,
        crate::admin::BanBody,
        crate::admin_keys::KeyView,
        crate::admin_keys::NewSecret,
        crate::admin_keys::KeyBody,
        crate::admin_fleet::DeviceView,
        crate::admin_fleet::StatusView,
        crate::admin_fleet::DeviceBody,
        crate::admin_fleet::DeviceChange,
        crate::admin_fleet::OwnerBody,
        crate::admin_firmware::ReleaseBody,
        crate::admin_firmware::ReleaseView,
        crate::fleet_api::DevicePage,
        crate::fleet_api::DeviceDetail,
        crate::fleet_api::StatusChangeView,
        crate::fleet_api::OfferView,
        crate::fleet_api::RecentMessage,
        crate::fleet_notify::NotificationView,
        crate::fleet_notify::AnswerBody,
        crate::fleet_notify::CancelBody,
        crate::fleet_notify::AskBody
    )),
    modifiers(&Signature)
)]
struct ApiDoc;

/// The signing scheme, as a security scheme: `Tern-Signature` with `Tern-Key`, `Tern-Time`
/// and `Tern-Nonce` (docs/http.md).
struct Signature;

impl Modify for Signature {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "tern_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Tern-Signature",
                "v1=HEX(HMAC-SHA256(secret, canonical request)), with Tern-Key, Tern-Time and \
                 Tern-Nonce; see docs/http.md",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An operator token (tot1.ID.SECRET) from `tern token add`; its scopes \
                         are read, write, keys, events and metrics",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document, as served.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}
