//! The dashboard (control-plane/dashboard/): plain HTML, CSS and JavaScript, built into the
//! binary and served at `/`. It calls the API with the token the user logs in with.

use axum::extract::Path;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../dashboard/index.html");
const STYLE: &str = include_str!("../../dashboard/app.css");

/// The JavaScript modules; `app.js` imports the others.
const SCRIPTS: [(&str, &str); 6] = [
    ("app.js", include_str!("../../dashboard/app.js")),
    ("lib.js", include_str!("../../dashboard/lib.js")),
    ("board.js", include_str!("../../dashboard/board.js")),
    ("flag-page.js", include_str!("../../dashboard/flag-page.js")),
    ("rules.js", include_str!("../../dashboard/rules.js")),
    ("admin.js", include_str!("../../dashboard/admin.js")),
];

/// Only this origin's own files and API; no inline script, no framing.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// `GET /`.
pub(crate) async fn index() -> Response {
    serve("text/html; charset=utf-8", INDEX)
}

/// `GET /dashboard/{file}`.
pub(crate) async fn asset(Path(file): Path<String>) -> Response {
    if file == "app.css" {
        return serve("text/css; charset=utf-8", STYLE);
    }
    match SCRIPTS.iter().find(|(name, _)| *name == file) {
        Some((_, script)) => serve("text/javascript; charset=utf-8", script),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn serve(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    // Served from the binary: a new binary may bring new files, so revalidate.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
