//! The web console's files (`tern-console`, built into the binary), served at `/`: the page
//! is asked for again each time (`no-cache`), the files it loads are named by a hash of their
//! contents and kept by the browser for good. A Content Security Policy lets the page load
//! and connect to nothing but this address, run no inline script, and sit in no frame.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, Response, StatusCode};

use crate::server::Shared;

/// The page's Content Security Policy.
pub(crate) const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The console's routes.
pub(crate) fn routes() -> axum::Router<Arc<Shared>> {
    use axum::routing::get;
    axum::Router::new()
        .route("/", get(file))
        .route("/index.html", get(file))
        .route("/assets/{*name}", get(file))
}

async fn file(request: Request) -> Response<Body> {
    let Some(asset) = tern_console::asset(request.uri().path()) else {
        let error = crate::error::ApiError::new(404, "not_found", "no such file of the console");
        return crate::server::unsigned(error.status, error.body());
    };
    let mut response = Response::new(Body::from(asset.bytes));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    let cache = if asset.immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    for (name, value) in [
        ("content-type", asset.content_type),
        ("cache-control", cache),
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
