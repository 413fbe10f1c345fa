//! `POST /v1/fleet/register`: a fleet device registers over HTTP, signed with its own key
//! `d:UDID`, with the `{"registration":{...}}` body it would publish on its status channel
//! over MQTT. The broker records it through the same core code and answers in the response
//! body with the same `{"registration":{"status":"OK"|"UPDATE_AVAILABLE",...}}`, which it also
//! publishes on the device's channel, as over MQTT.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use bytes::Bytes;
use tern_core::broker::fleet_register::RegisterRefusal;
use tern_core::{Broker, RequestClient, Time};

use crate::bridge::Op;
use crate::error::ApiError;
use crate::replay::Answer;
use crate::server::{signed, Shared};

/// Registers the device whose key signed the request.
#[utoipa::path(
    post,
    path = "/v1/fleet/register",
    tag = "fleet",
    request_body(content = String, content_type = "application/json", description = "THiNX's registration: {\"registration\":{\"mac\",\"firmware\",\"version\",\"commit\",\"alias\",\"platform\"}} (unknown fields ignored)."),
    responses(
        (status = 200, description = "{\"registration\":{\"status\":\"OK\"|\"UPDATE_AVAILABLE\",\"update\"?:{\"id\",\"version\",\"url\",\"sha256\",\"size\"},\"timestamp\"}}, as answered over MQTT (and published on the device's channel too)."),
        (status = "4XX", description = "payload_invalid (400): the body is not a registration; access_denied (403): the key is not a registered device's own (d:UDID); banned (403): the device is disabled; or the signature refused.", body = crate::error::ErrorBody),
    ),
    security(("tern_signature" = []))
)]
pub(crate) async fn register(
    State(shared): State<Arc<Shared>>,
    request: Request,
) -> Response<Body> {
    signed(shared, request, |_, _, body| Ok(Op::Register(body))).await
}

/// Records the registration on the broker thread and words the answer.
pub(crate) fn apply(
    broker: &mut Broker,
    client: &RequestClient,
    body: &Bytes,
    now: Time,
) -> Answer {
    match broker.fleet_register_for(client, body, now) {
        Ok(answer) => Answer {
            status: 200,
            body: Bytes::from(answer),
            replayed: false,
        },
        Err(refusal) => crate::answers::refused(&refusal_error(refusal)),
    }
}

/// How a refused registration is answered.
fn refusal_error(refusal: RegisterRefusal) -> ApiError {
    let message = refusal.to_string();
    match refusal {
        RegisterRefusal::NotADevice => ApiError::new(403, "access_denied", message),
        RegisterRefusal::Banned => ApiError::new(403, "banned", message),
        RegisterRefusal::NotARegistration => ApiError::new(400, "payload_invalid", message),
    }
}
