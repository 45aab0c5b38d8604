//! Any bytes as the body of any write request, sent through the real router to a control plane
//! on a fresh copy of a seeded SQLite database. The first byte picks the route, the second the
//! token, the rest is the body.
//!
//! Whatever the body: no 5xx; every refusal is a problem (or OFREP's error shape on OFREP routes)
//! and leaves everything stored as it was (snapshot versions, the audit log, metric counts); and
//! whatever is accepted leaves snapshots flag-core compiles.
#![no_main]

use std::path::Path;
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use control_plane::auth;
use control_plane::clock::ManualClock;
use control_plane::model::token::{Scope, Token};
use control_plane::service;
use control_plane::store::sqlite::SqliteStore;
use control_plane::{AppState, Settings};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower::ServiceExt;

const ROUTES: &[(Method, &str)] = &[
    (Method::POST, "/api/v1/tokens"),
    (Method::POST, "/api/v1/environments"),
    (Method::POST, "/api/v1/flags"),
    (Method::PUT, "/api/v1/flags/checkout-v2"),
    (Method::POST, "/api/v1/segments"),
    (Method::PUT, "/api/v1/segments/staff"),
    (Method::POST, "/api/v1/edges"),
    (Method::POST, "/api/v1/webhooks"),
    (Method::PUT, "/api/v1/environments/production/flags/checkout-v2"),
    (Method::PUT, "/api/v1/environments/production/flags/checkout-v2/rollout"),
    (Method::POST, "/api/v1/environments/production/flags/checkout-v2/kill"),
    (Method::POST, "/api/v1/environments/production/flags/checkout-v2/unkill"),
    (Method::POST, "/api/v1/environments/production/metrics"),
    (Method::POST, "/api/v1/plans"),
    (Method::POST, "/api/v1/plans/1/advance"),
    (Method::POST, "/api/v1/plans/1/hold"),
    (Method::POST, "/api/v1/plans/1/resume"),
    (Method::POST, "/api/v1/plans/1/rollback"),
    (Method::POST, "/api/v1/plans/1/complete"),
    (Method::POST, "/ofrep/v1/evaluate/flags"),
    (Method::POST, "/ofrep/v1/evaluate/flags/checkout-v2"),
    (Method::POST, "/api/v1/environments/staging/ofrep/v1/evaluate/flags"),
];

const READ: &str = "rg_read_token_for_fuzzing";
const RELEASE: &str = "rg_release_token_for_fuzzing";
const ADMIN: &str = "rg_admin_token_for_fuzzing";
const TOKENS: [Option<&str>; 4] = [Some(ADMIN), Some(RELEASE), Some(READ), None];

/// The seeded database, and what is observable of it.
struct Template {
    dir: tempfile::TempDir,
    observed: Value,
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
});

static TEMPLATE: LazyLock<Template> = LazyLock::new(|| RUNTIME.block_on(template()));

fuzz_target!(
    init: {
        LazyLock::force(&TEMPLATE);
    },
    |data: &[u8]| {
        RUNTIME.block_on(run(data));
    }
);

async fn run(data: &[u8]) {
    let [route, token, body @ ..] = data else { return };
    let (method, path) = &ROUTES[usize::from(*route) % ROUTES.len()];
    let token = TOKENS[usize::from(*token) % TOKENS.len()];
    let dir = tempfile::tempdir().expect("a temporary directory");
    for entry in std::fs::read_dir(TEMPLATE.dir.path()).expect("the template") {
        let entry = entry.expect("a template file");
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("a copy");
    }
    let app = open(dir.path()).await;

    let (status, content_type, answer) = send(&app, method.clone(), path, token, body).await;
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!("{method} {path} {token:?}: {status} {answer}");
    }
    assert!(!status.is_server_error(), "{method} {path}: {status} {answer}");
    if status.is_success() {
        let (_, _, environments) =
            send(&app, Method::GET, "/api/v1/environments", Some(ADMIN), b"").await;
        for environment in environments.as_array().expect("environments") {
            let name = environment["name"].as_str().expect("a name");
            let snapshot_path = format!("/api/v1/environments/{name}/snapshot");
            let (got, _, snapshot) =
                send(&app, Method::GET, &snapshot_path, Some(ADMIN), b"").await;
            assert_eq!(got, StatusCode::OK, "{snapshot_path}: {snapshot}");
            let snapshot = serde_json::to_vec(&snapshot).expect("JSON");
            if let Err(error) = flag_core::Engine::from_json(&snapshot) {
                panic!("{method} {path} left a snapshot of {name} flag-core refuses: {error}");
            }
        }
        return;
    }
    let problem = content_type == "application/problem+json"
        && answer["status"].as_u64() == Some(u64::from(status.as_u16()))
        && answer["detail"].is_string();
    let ofrep = path.contains("/ofrep/") && answer["errorCode"].is_string();
    assert!(problem || ofrep, "{method} {path}: {status} {content_type} {answer}");
    assert_eq!(observe(&app).await, TEMPLATE.observed, "{method} {path}: {status} changed state");
}

/// The router on the database in `dir`, at a fixed time.
async fn open(dir: &Path) -> axum::Router {
    let store = SqliteStore::open(&dir.join("rollgate.db")).await.expect("the store");
    let clock = Arc::new(ManualClock::new("2026-11-22T10:00:15Z".parse().expect("a time")));
    let state = AppState::load(Arc::new(store), clock, Settings::default()).await.expect("a state");
    control_plane::app(state)
}

async fn send(
    app: &axum::Router,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> (StatusCode, String, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if !body.is_empty() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    let request = request.body(Body::from(body.to_vec())).expect("a request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("a body");
    (status, content_type, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// What a refused request must leave as it was.
async fn observe(app: &axum::Router) -> Value {
    let mut observed = serde_json::Map::new();
    for path in [
        "/api/v1/environments",
        "/api/v1/audit?limit=1000",
        "/api/v1/flags",
        "/api/v1/segments",
        "/api/v1/tokens",
        "/api/v1/edges",
        "/api/v1/webhooks",
        "/api/v1/plans",
        "/api/v1/environments/production/metrics?flag=checkout-v2&window_seconds=3600",
    ] {
        let (status, _, answer) = send(app, Method::GET, path, Some(ADMIN), b"").await;
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        observed.insert(path.to_owned(), answer);
    }
    Value::Object(observed)
}

/// A database with a token per scope, two flags, a segment, a plan on `checkout-v2` in
/// production, and some counts.
async fn template() -> Template {
    let dir = tempfile::tempdir().expect("a temporary directory");
    {
        let store = SqliteStore::open(&dir.path().join("rollgate.db")).await.expect("the store");
        let clock = Arc::new(ManualClock::new("2026-11-22T10:00:00Z".parse().expect("a time")));
        let state =
            AppState::load(Arc::new(store), clock, Settings::default()).await.expect("a state");
        for (name, scope, secret) in [
            ("app", Scope::Read, READ),
            ("ana", Scope::Release, RELEASE),
            ("ops", Scope::Admin, ADMIN),
        ] {
            let environment = (scope == Scope::Read).then(|| "production".to_owned());
            let token = Token { name: name.into(), scope, environment, hash: auth::hash(secret) };
            service::tokens::create(&state.service, token, "fuzz").await.expect("a token");
        }
        let app = control_plane::app(state);
        for (method, path, body) in [
            (
                Method::POST,
                "/api/v1/flags",
                r#"{"key": "checkout-v2", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"}"#,
            ),
            (
                Method::POST,
                "/api/v1/flags",
                r#"{"key": "new-banner", "type": "string", "variants": {"old": "Welcome", "new": "Hello"}, "off_variant": "old"}"#,
            ),
            (Method::POST, "/api/v1/segments", r#"{"key": "staff", "included": ["ana", "ben"]}"#),
            (
                Method::PUT,
                "/api/v1/environments/production/flags/checkout-v2",
                r#"{"enabled": true, "rules": [{"segments": ["staff"], "serve": {"variant": "on"}}], "fallthrough": {"variant": "off"}}"#,
            ),
            (
                Method::POST,
                "/api/v1/plans",
                r#"{"flag": "checkout-v2", "environment": "production", "template": "canary", "rationale": "QA passed"}"#,
            ),
            (
                Method::POST,
                "/api/v1/environments/production/metrics",
                r#"{"batch": "app:1", "counters": [{"flag": "checkout-v2", "variant": "on", "counts": {"requests": 1200, "errors": 6}}]}"#,
            ),
        ] {
            let token = if path.ends_with("/metrics") { READ } else { ADMIN };
            let (status, _, answer) = send(&app, method, path, Some(token), body.as_bytes()).await;
            assert!(status.is_success(), "seeding {path}: {status} {answer}");
        }
    }
    let app = open(dir.path()).await;
    let observed = observe(&app).await;
    Template { dir, observed }
}
