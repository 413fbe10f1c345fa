//! `POST /v1/console/publish` (scope `write`): an operator publishes one message, with the
//! fields of an item of `POST /v1/pub` (topic, payload or payload_b64, qos, retain, ttl,
//! content_type, response_topic, correlation_data_b64, user_properties). The topic must be
//! inside the token's topics; the message is then published on the broker thread as an HTTP
//! publish is (the ACL rules for every client apply to it, under the identity `jwt` named
//! `operator:ID` and the client identifier `tern-console-ID`), answered once durable.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use tern_codec::MqttString;
use tern_core::{Broker, ConnectionId, Identity, Method, Time};

use crate::admin::{authorize, operate};
use crate::answers::{published, refused};
use crate::error::ApiError;
use crate::publish::{BatchItem, Item};
use crate::replay::Answer;
use crate::server::{read_json, Shared};
use crate::tokens::Scope;

/// A message an operator publishes.
#[derive(Debug)]
pub(crate) struct OperatorPublish {
    /// The token's id.
    operator: String,
    item: Item,
}

/// Publishes one message as an operator.
#[utoipa::path(post, path = "/v1/console/publish", tag = "admin",
    request_body(content = Object, content_type = "application/json",
        description = "One message, with the fields of an item of POST /v1/pub: topic, payload or payload_b64, qos, retain, ttl, age, content_type, response_topic, correlation_data_b64, user_properties."),
    responses((status = 200, description = "{\"qos\", \"matched\"}, as POST /v1/pub/{topic} answers."),
              (status = "4XX", description = "No token, a bad token, a scope it lacks, or a topic outside its realm.", body = crate::error::ErrorBody)),
    security(("bearer" = ["write"])))]
pub(crate) async fn publish(State(shared): State<Arc<Shared>>, request: Request) -> Response<Body> {
    let who = match authorize(&shared, &request, Scope::Write, "/v1/console/publish") {
        Ok(who) => who,
        Err(response) => return *response,
    };
    let body: BatchItem = match read_json(&shared, request).await {
        Ok(body) => body,
        Err(error) => return who.refuse(&shared, &error),
    };
    let item = match crate::publish::batch_items(vec![body], 1, crate::bridge::unix_now()) {
        Ok(mut items) if items.len() == 1 => items.remove(0),
        Ok(_) => return who.refuse(&shared, &ApiError::bad_request("one message")),
        Err(error) => return who.refuse(&shared, &error),
    };
    if !who.operator.sees_topic(&item.topic) {
        let error = ApiError::new(403, "acl_denied", "the topic is outside the token's topics");
        return who.refuse(&shared, &error);
    }
    let op = OperatorPublish {
        operator: who.operator.id.clone(),
        item,
    };
    operate(&shared, &who, crate::admin_ops::AdminOp::Publish(op)).await
}

/// Publishes on the broker thread, as a request of the client `tern-console-ID`.
pub(crate) fn apply(
    broker: &mut Broker,
    edge: ConnectionId,
    publish: &OperatorPublish,
    now: Time,
) -> Answer {
    let Ok(client_id) = MqttString::new(&format!("tern-console-{}", publish.operator)) else {
        return refused(&ApiError::bad_request("the token's id"));
    };
    let identity = Identity {
        method: Method::Token,
        username: Some(format!("operator:{}", publish.operator)),
        ..Identity::default()
    };
    // The token's topics, checked above, say where the operator may publish: the fleet's
    // namespaces too.
    let client = broker
        .request_client(edge, client_id, identity, None)
        .opened_to_fleet();
    let items = std::slice::from_ref(&publish.item);
    let results = crate::sync::publish_items(broker, &client, items, false, now);
    published(&results, false, false)
}
