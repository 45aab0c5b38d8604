//! Pushing to edges, against a fake edge on loopback that checks signatures like the real one:
//! every change reaches it, failures are retried with backoff, acknowledgements are recorded.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use edge_worker::config::{Config, RefusalAnswer, RefusalKind, SIGNATURE_HEADER, verify};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::support::{ADMIN, PUSH_SECRET, READ, RELEASE, Server, start};

/// A stand-in edge: verifies each push, answers 503 to the first `failures`, and publishes
/// the position of each accepted envelope.
#[derive(Clone)]
pub(crate) struct FakeEdge {
    failures: Arc<Mutex<u32>>,
    accepted: watch::Sender<(u64, u64)>,
    readers: Arc<Mutex<Vec<String>>>,
    /// The position of every envelope accepted, in order of arrival.
    pub(crate) pushes: Arc<Mutex<Vec<(u64, u64)>>>,
}

async fn receive(State(edge): State<FakeEdge>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let signature = headers.get(SIGNATURE_HEADER).and_then(|value| value.to_str().ok());
    if verify(PUSH_SECRET.as_bytes(), &body, signature).is_err() {
        return StatusCode::UNAUTHORIZED;
    }
    {
        let mut failures = edge.failures.lock().unwrap();
        if *failures > 0 {
            *failures -= 1;
            return StatusCode::SERVICE_UNAVAILABLE;
        }
    }
    let config = Config::from_envelope(&body, "production").expect("a valid envelope");
    let envelope: Value = serde_json::from_slice(&body).unwrap();
    *edge.readers.lock().unwrap() = envelope["readers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    edge.pushes.lock().unwrap().push(config.position());
    edge.accepted.send_replace(config.position());
    StatusCode::OK
}

pub(crate) async fn fake_edge(failures: u32) -> (String, FakeEdge, watch::Receiver<(u64, u64)>) {
    let (accepted, seen) = watch::channel((0, 0));
    let edge = FakeEdge {
        failures: Arc::new(Mutex::new(failures)),
        accepted,
        readers: Arc::default(),
        pushes: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/rollgate/v1/push", axum::routing::post(receive))
        .with_state(edge.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    (url, edge, seen)
}

/// Waits until the edge has accepted `position` or later.
pub(crate) async fn until_accepted(seen: &mut watch::Receiver<(u64, u64)>, position: (u64, u64)) {
    let wait = seen.wait_for(|have| have.0 >= position.0 && have.1 >= position.1);
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .expect("the edge gets the change within 10 s")
        .unwrap();
}

pub(crate) async fn register(server: &Server, url: &str) {
    let body = json!({"name": "edge-1", "url": url, "environment": "production"});
    let (status, answer) =
        server.call(Method::POST, "/api/v1/edges", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

pub(crate) async fn kill(server: &Server) -> u64 {
    let path = "/api/v1/environments/production/flags/checkout-v2/kill";
    let (status, answer) =
        server.call(Method::POST, path, Some(RELEASE), Some(json!({"reason": "x"}))).await;
    assert_eq!(status, StatusCode::OK);
    answer["version"].as_u64().unwrap()
}

#[tokio::test]
async fn a_registered_edge_gets_the_current_configuration_and_every_change() {
    let server = start().await;
    let (url, edge, mut seen) = fake_edge(0).await;
    register(&server, &url).await;
    until_accepted(&mut seen, (2, 0)).await;
    assert_eq!(*edge.readers.lock().unwrap(), [control_plane::auth::hash(READ)]);

    let version = kill(&server).await;
    until_accepted(&mut seen, (version, 0)).await;

    // A new reader token reaches the edge too, under a higher readers revision.
    let before = seen.borrow().1;
    let token = server.token("shop", "read", Some("production")).await;
    until_accepted(&mut seen, (version, before + 1)).await;
    assert!(edge.readers.lock().unwrap().contains(&control_plane::auth::hash(&token)));

    let (_, edges) = server.call(Method::GET, "/api/v1/edges", Some(RELEASE), None).await;
    let listed = &edges[0];
    assert_eq!(listed["name"], "edge-1");
    assert_eq!(listed["environment"], "production");
    // The acknowledgement is recorded just after the edge answers.
    for _ in 0..100 {
        let (_, edges) = server.call(Method::GET, "/api/v1/edges", Some(RELEASE), None).await;
        if edges[0]["applied_readers_revision"].as_u64() == Some(seen.borrow().1) {
            assert_eq!(edges[0]["applied_version"], version);
            assert_eq!(edges[0]["lag"], 0);
            assert!(edges[0]["acked_at"].is_string());
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the acknowledgement was never recorded: {edges}");
}

#[tokio::test]
async fn a_failing_edge_is_retried_until_it_acknowledges() {
    let server = start().await;
    let (url, _edge, mut seen) = fake_edge(3).await;
    register(&server, &url).await;
    until_accepted(&mut seen, (2, 0)).await;
}

#[tokio::test]
async fn edges_need_a_known_environment_a_url_and_a_unique_name() {
    let server = start().await;
    let before = server.observable_state().await;
    let cases = [
        (
            json!({"name": "e", "url": "http://127.0.0.1:9", "environment": "qa"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"name": "e", "url": "ftp://x", "environment": "production"}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"name": "e", "url": "http://127.0.0.1:9"}), StatusCode::BAD_REQUEST),
    ];
    for (i, (body, status)) in cases.into_iter().enumerate() {
        let (actual, problem) =
            server.call(Method::POST, "/api/v1/edges", Some(ADMIN), Some(body)).await;
        assert_eq!(actual, status, "case {i}: {problem}");
    }
    assert_eq!(server.observable_state().await, before);
    let edge = json!({"name": "e", "url": "http://127.0.0.1:9", "environment": "production"});
    assert_eq!(
        server.call(Method::POST, "/api/v1/edges", Some(ADMIN), Some(edge.clone())).await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        server.call(Method::POST, "/api/v1/edges", Some(ADMIN), Some(edge)).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        server.call(Method::DELETE, "/api/v1/edges/e", Some(ADMIN), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        server.call(Method::DELETE, "/api/v1/edges/e", Some(ADMIN), None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_pull_endpoint_serves_the_signed_envelope_with_an_etag() {
    let server = start().await;
    let path = "/api/v1/environments/production/edge-config";
    let response = server.get(path, Some(READ)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    let signature = response.headers()[SIGNATURE_HEADER].to_str().unwrap().to_owned();
    let body = response.bytes().await.unwrap();
    assert_eq!(verify(PUSH_SECRET.as_bytes(), &body, Some(&signature)), Ok(()));
    let config = Config::from_envelope(&body, "production").unwrap();
    assert_eq!(etag, format!("\"{}.{}\"", config.position().0, config.position().1));
    let again = server.get(path, Some(READ)).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

/// An edge that refuses every push in one way, by the path's first segment.
async fn refusing_edge(Path(kind): Path<String>) -> (StatusCode, String) {
    let stale = RefusalAnswer {
        problem_type: "about:blank".into(),
        status: 422,
        detail: "it has something newer".into(),
        refusal: RefusalKind::Stale,
        have: Some((1_000, 1_000)),
    };
    match kind.as_str() {
        "stale" => (StatusCode::UNPROCESSABLE_ENTITY, serde_json::to_string(&stale).unwrap()),
        // Prose that says "stale" is not a refusal's kind.
        "prose" => (StatusCode::UNPROCESSABLE_ENTITY, r#"{"detail": "stale, stale"}"#.into()),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "x".repeat(4 << 20)),
    }
}

/// Waits until `GET /api/v1/edges` shows `name` as `check` wants it.
async fn until_listed(server: &Server, name: &str, check: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..500 {
        let (_, edges) = server.call(Method::GET, "/api/v1/edges", Some(RELEASE), None).await;
        if let Some(edge) = edges.as_array().unwrap().iter().find(|edge| edge["name"] == name)
            && check(edge)
        {
            return edge.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("edge {name} never got there");
}

#[tokio::test]
async fn an_edges_refusal_is_read_by_its_kind_and_its_answer_is_kept_short() {
    let server = start().await;
    let app =
        axum::Router::new().route("/{kind}/rollgate/v1/push", axum::routing::post(refusing_edge));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(axum::serve(listener, app).into_future());
    for kind in ["stale", "prose", "huge"] {
        let body =
            json!({"name": kind, "url": format!("{url}/{kind}"), "environment": "production"});
        let (status, _) = server.call(Method::POST, "/api/v1/edges", Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED);
    }
    // Stale: the edge has this or newer, so nothing is left to push.
    let stale = until_listed(&server, "stale", |edge| edge["applied_version"].is_u64()).await;
    assert_eq!(stale["last_error"], Value::Null);
    let prose = until_listed(&server, "prose", |edge| edge["last_error"].is_string()).await;
    assert_eq!(prose["applied_version"], Value::Null, "prose is not acted on");
    let huge = until_listed(&server, "huge", |edge| edge["last_error"].is_string()).await;
    let error = huge["last_error"].as_str().unwrap();
    assert!(error.starts_with("the edge answered 500"), "{error}");
    assert!(error.len() < 600, "at most an excerpt of the answer is kept: {} bytes", error.len());
}
