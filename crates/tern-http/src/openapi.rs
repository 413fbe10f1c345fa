//! The OpenAPI 3.1 document of the bridge, generated from the route and type definitions
//! (utoipa), so it cannot drift from the code; served at `GET /v1/openapi.json`.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
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
        crate::kv::Changes
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
    }
}

/// The document, as served.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}
