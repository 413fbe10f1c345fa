//! The served OpenAPI document is OpenAPI 3.1 and lists every route the bridge serves, with the
//! signing scheme, so it can be checked against the server (generated, not kept by hand).
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly.

#[test]
fn the_document_lists_every_route() {
    let document: serde_json::Value = serde_json::from_str(&tern_http::openapi_json()).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = document["paths"].as_object().unwrap();
    let mut routes: Vec<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            "DELETE /v1/admin/access-requests/{id}",
            "DELETE /v1/admin/banned/{client_id}",
            "DELETE /v1/admin/clients/{client_id}",
            "DELETE /v1/admin/devices/{udid}",
            "DELETE /v1/admin/firmware/{id}",
            "DELETE /v1/admin/keys/{id}",
            "DELETE /v1/admin/retained/{topic}",
            "DELETE /v1/admin/sessions/{client_id}",
            "DELETE /v1/kv/{key}",
            "DELETE /v1/mbox/subs/{filter}",
            "GET /metrics",
            "GET /metrics/history",
            "GET /v1/admin/access-requests",
            "GET /v1/admin/banned",
            "GET /v1/admin/clients",
            "GET /v1/admin/devices",
            "GET /v1/admin/devices/{udid}",
            "GET /v1/admin/firmware",
            "GET /v1/admin/firmware/{id}",
            "GET /v1/admin/keys",
            "GET /v1/admin/retained/{filter}",
            "GET /v1/admin/sessions",
            "GET /v1/admin/sessions/{client_id}",
            "GET /v1/admin/subscriptions",
            "GET /v1/console/session",
            "GET /v1/events",
            "GET /v1/fleet/devices",
            "GET /v1/fleet/devices/{owner}/{udid}",
            "GET /v1/fleet/devices/{udid}",
            "GET /v1/fleet/firmware/{id}",
            "GET /v1/fleet/notifications",
            "GET /v1/kv/{key}",
            "GET /v1/mbox",
            "GET /v1/mbox/dead",
            "GET /v1/mbox/subs",
            "GET /v1/mbox/subs/{filter}",
            "GET /v1/openapi.json",
            "GET /v1/time",
            "PATCH /v1/admin/devices/{udid}",
            "POST /v1/admin/access-requests/{id}/approve",
            "POST /v1/admin/access-requests/{id}/reject",
            "POST /v1/admin/banned",
            "POST /v1/admin/devices",
            "POST /v1/admin/firmware",
            "POST /v1/admin/keys",
            "POST /v1/admin/keys/{id}/rotate",
            "POST /v1/console/login",
            "POST /v1/console/logout",
            "POST /v1/console/publish",
            "POST /v1/fleet/notifications",
            "POST /v1/fleet/notifications/{nid}/answer",
            "POST /v1/fleet/notifications/{nid}/cancel",
            "POST /v1/fleet/register",
            "POST /v1/mbox/ack",
            "POST /v1/mbox/dead/requeue",
            "POST /v1/mbox/reset",
            "POST /v1/pub",
            "POST /v1/pub/{topic}",
            "POST /v1/sync",
            "PUT /v1/admin/firmware/{id}/file",
            "PUT /v1/admin/owners/{owner}",
            "PUT /v1/kv/{key}",
            "PUT /v1/mbox/subs/{filter}",
        ]
    );
    assert!(document["components"]["securitySchemes"]["tern_signature"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    for schema in [
        "ErrorBody",
        "Polled",
        "MboxMessage",
        "SettleBody",
        "ResetBody",
        "SyncBody",
        "Changes",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
}
