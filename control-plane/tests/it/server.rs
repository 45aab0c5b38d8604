//! The service on a real loopback listener with a real SQLite file.

use std::net::SocketAddr;
use std::sync::Arc;

use control_plane::auth::{self, Scope, Token};
use control_plane::clock::SystemClock;
use control_plane::publisher::Publisher;
use control_plane::store::sqlite::SqliteStore;
use control_plane::store::{FlagDefinition, Store};
use control_plane::{AppState, app};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Server {
    address: SocketAddr,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

const READ: &str = "rg_read_token_for_tests";
const RELEASE: &str = "rg_release_token_for_tests";
const ADMIN: &str = "rg_admin_token_for_tests";

/// A server whose store has one token per scope and the `checkout-v2` flag.
async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store =
        SqliteStore::open(&dir.path().join("rollgate.db"), Arc::new(SystemClock)).await.unwrap();
    for (name, scope, token) in [
        ("edge", Scope::Read, READ),
        ("ana", Scope::Release, RELEASE),
        ("ops", Scope::Admin, ADMIN),
    ] {
        store
            .create_token(Token { name: name.into(), scope, hash: auth::hash(token) }, "test")
            .await
            .unwrap();
    }
    let flag: FlagDefinition = serde_json::from_value(json!({
        "key": "checkout-v2", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off"
    }))
    .unwrap();
    store.create_flag(flag, "ana").await.unwrap();
    let publisher = Publisher::load(&store).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(
        axum::serve(listener, app(AppState { store: Arc::new(store), publisher })).into_future(),
    );
    Server { address, client: reqwest::Client::new(), _dir: dir }
}

impl Server {
    fn get(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let request = self.client.get(format!("http://{}{path}", self.address));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

const SNAPSHOT: &str = "/api/v1/environments/production/snapshot";

#[tokio::test]
async fn health_and_readiness_need_no_token() {
    let server = start().await;
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let response = server.get(path, None).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.text().await.unwrap(), body);
    }
}

#[tokio::test]
async fn the_snapshot_is_flag_cores_format_with_its_version_as_etag() {
    let server = start().await;
    for token in [READ, RELEASE, ADMIN] {
        let response = server.get(SNAPSHOT, Some(token)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["etag"], "\"2\"");
        assert_eq!(response.headers()["content-type"], "application/json");
        let engine = flag_core::Engine::from_json(&response.bytes().await.unwrap()).unwrap();
        assert_eq!((engine.environment(), engine.version()), ("production", 2));
        assert_eq!(engine.flag_keys().collect::<Vec<_>>(), ["checkout-v2"]);
    }
}

#[tokio::test]
async fn a_matching_if_none_match_gets_304_and_a_stale_one_the_body() {
    let server = start().await;
    let fresh =
        server.get(SNAPSHOT, Some(READ)).header("if-none-match", "\"2\"").send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(fresh.headers()["etag"], "\"2\"");
    assert!(fresh.bytes().await.unwrap().is_empty());
    let stale =
        server.get(SNAPSHOT, Some(READ)).header("if-none-match", "\"1\"").send().await.unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert!(!stale.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn missing_unknown_and_malformed_tokens_get_401_problems() {
    let server = start().await;
    let requests = [
        server.get(SNAPSHOT, None),
        server.get(SNAPSHOT, Some("rg_not_a_token_we_issued")),
        server.get(SNAPSHOT, None).header("authorization", format!("Basic {READ}")),
        server.get(SNAPSHOT, None).header("authorization", "Bearer "),
    ];
    for request in requests {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["status"], 401);
        assert!(problem["detail"].as_str().unwrap().contains("bearer token"));
    }
}

#[tokio::test]
async fn an_unknown_environment_is_a_404_problem_even_for_a_valid_token() {
    let server = start().await;
    let response = server.get("/api/v1/environments/qa/snapshot", Some(READ)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "environment `qa` not found");
    let response = server.get("/api/v1/environments/qa/snapshot", None).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "authentication comes before lookups");
}
