//! URLs the control plane is given (edges, webhooks) and what answers there: private targets
//! refused unless allowed, credentials refused, redirects not followed, answers read up to a
//! limit and never logged, and webhook URLs shown whole to admins only.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode as AxumStatus;
use axum::response::IntoResponse;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{ADMIN, RELEASE, Rollgate, Server, free_address, start, start_configured};

/// A server as `rollgate serve` starts without `--allow-targets`: public addresses only.
async fn public_only() -> Server {
    let settings = control_plane::Settings {
        targets: control_plane::outbound::Targets::default(),
        ..crate::support::test_settings()
    };
    start_configured(Arc::new(control_plane::clock::SystemClock), settings).await
}

#[tokio::test]
async fn private_targets_and_credentials_are_refused_when_edges_and_webhooks_are_made() {
    let server = public_only().await;
    let before = server.observable_state().await;
    for (url, status) in [
        ("http://127.0.0.1:8787", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://[::1]:8787", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://0.0.0.0", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://169.254.169.254/latest/meta-data", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://2130706433", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://0x7f000001", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://0177.0.0.1", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://10.0.0.8", StatusCode::UNPROCESSABLE_ENTITY),
        ("http://[fd00:ec2::254]", StatusCode::UNPROCESSABLE_ENTITY),
        ("https://user:pass@hooks.example/x", StatusCode::UNPROCESSABLE_ENTITY),
        ("ftp://hooks.example/x", StatusCode::BAD_REQUEST),
    ] {
        for (path, name) in [("/api/v1/edges", "edge"), ("/api/v1/webhooks", "hook")] {
            let body = json!({"name": name, "url": url, "environment": "production"});
            let (got, problem) = server.call(Method::POST, path, Some(ADMIN), Some(body)).await;
            assert_eq!(got, status, "{path} {url}: {problem}");
        }
    }
    assert_eq!(server.observable_state().await, before);
}

/// A receiver on loopback counting what reaches it.
async fn receiver(answer: fn() -> axum::response::Response) -> (String, Arc<Mutex<u32>>) {
    let hits = Arc::new(Mutex::new(0));
    let counted = Arc::clone(&hits);
    let app = axum::Router::new().fallback(move || {
        *counted.lock().unwrap() += 1;
        async move { answer() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(axum::serve(listener, app).into_future());
    (format!("http://localhost:{port}"), hits)
}

/// Starts a canary plan: the environment's webhooks get its 🚀.
async fn start_plan(server: &Server) {
    let plan = json!({"flag": "checkout-v2", "environment": "production", "template": "canary", "rationale": "go"});
    let (status, answer) =
        server.call(Method::POST, "/api/v1/plans", Some(RELEASE), Some(plan)).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
}

/// Waits until `GET /api/v1/webhooks` shows `name` with a last error.
async fn last_error(server: &Server, name: &str) -> String {
    for _ in 0..500 {
        let (_, webhooks) = server.call(Method::GET, "/api/v1/webhooks", Some(ADMIN), None).await;
        let webhook = webhooks.as_array().unwrap().iter().find(|w| w["name"] == name).cloned();
        if let Some(error) = webhook.and_then(|w| w["last_error"].as_str().map(str::to_owned)) {
            return error;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("webhook {name} never failed");
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_never_reached() {
    let server = public_only().await;
    let (url, hits) = receiver(|| AxumStatus::OK.into_response()).await;
    // `localhost` passes as a name; it is refused once resolved, at each delivery.
    let body = json!({"name": "inside", "url": format!("{url}/hook"), "environment": "production"});
    let (status, _) = server.call(Method::POST, "/api/v1/webhooks", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    start_plan(&server).await;
    let error = last_error(&server, "inside").await;
    assert!(error.contains("no public address"), "{error}");
    assert!(!error.contains("/hook"), "errors never repeat the URL: {error}");
    assert_eq!(*hits.lock().unwrap(), 0, "nothing reached the private address");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = start().await;
    let (target, reached) = receiver(|| AxumStatus::OK.into_response()).await;
    static TARGET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TARGET.set(format!("{target}/metadata")).unwrap();
    let (redirecting, _) = receiver(|| {
        (AxumStatus::TEMPORARY_REDIRECT, [("location", TARGET.get().unwrap().as_str())])
            .into_response()
    })
    .await;
    let body =
        json!({"name": "moved", "url": format!("{redirecting}/hook"), "environment": "production"});
    let (status, _) = server.call(Method::POST, "/api/v1/webhooks", Some(ADMIN), Some(body)).await;
    assert_eq!(status, StatusCode::CREATED);
    start_plan(&server).await;
    let error = last_error(&server, "moved").await;
    assert!(error.contains("307"), "{error}");
    assert_eq!(*reached.lock().unwrap(), 0, "the 307 was not followed, the payload not re-posted");
}

#[tokio::test]
async fn only_admins_see_webhook_urls_whole() {
    let server = start().await;
    let secret = "https://hooks.slack.example/services/T000/B000/XXXXSECRET";
    let body = json!({"name": "slack", "url": secret, "environment": "production"});
    assert_eq!(
        server.call(Method::POST, "/api/v1/webhooks", Some(ADMIN), Some(body)).await.0,
        StatusCode::CREATED
    );
    let (_, deleted) =
        server.call(Method::DELETE, "/api/v1/webhooks/slack", Some(ADMIN), None).await;
    assert_eq!(deleted, Value::Null);
    let body = json!({"name": "slack", "url": secret, "environment": "production"});
    server.call(Method::POST, "/api/v1/webhooks", Some(ADMIN), Some(body)).await;

    let (_, as_admin) = server.call(Method::GET, "/api/v1/webhooks", Some(ADMIN), None).await;
    assert_eq!(as_admin[0]["url"], secret);
    let (_, as_release) = server.call(Method::GET, "/api/v1/webhooks", Some(RELEASE), None).await;
    assert_eq!(as_release[0]["url"], "https://hooks.slack.example/…");
    let (_, audit) = server.call(Method::GET, "/api/v1/audit", Some(RELEASE), None).await;
    let shown = audit.to_string();
    assert!(
        !shown.contains("XXXXSECRET") && shown.contains("https://hooks.slack.example/…"),
        "{shown}"
    );
    let (_, audit) = server.call(Method::GET, "/api/v1/audit", Some(ADMIN), None).await;
    assert!(audit.to_string().contains("XXXXSECRET"), "admins see the whole URL");
}

/// `VmHWM` of a process, in kB.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|line| line.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_mib_answers_from_an_edge_and_a_webhook_are_read_up_to_a_limit_and_never_logged() {
    // What answers: 500 and 30 MiB, to every push and every notification.
    static BODY: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    BODY.set(bytes::Bytes::from(vec![b'x'; 30 << 20])).unwrap();
    let (url, hits) = receiver(|| {
        (AxumStatus::INTERNAL_SERVER_ERROR, BODY.get().unwrap().clone()).into_response()
    })
    .await;
    let url = url.replace("localhost", "127.0.0.1");

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("rollgate.log");
    let client = reqwest::Client::new();
    let extra =
        ["--push-secret", "push-secret-for-the-outside-test", "--allow-targets", "127.0.0.0/8"];
    let server = Rollgate::start_with(
        &dir.path().join("rollgate.db"),
        free_address(),
        &client,
        &extra,
        Some(&log),
    )
    .await;
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", server.base))
            .bearer_auth(crate::support::BINARY_ADMIN)
            .json(&body)
            .send()
    };
    let edge = json!({"name": "edge", "url": format!("{url}/edge"), "environment": "production"});
    assert_eq!(post("/api/v1/edges", edge).await.unwrap().status(), StatusCode::CREATED);
    let hook = json!({"name": "hook", "url": format!("{url}/hook"), "environment": "production"});
    assert_eq!(post("/api/v1/webhooks", hook).await.unwrap().status(), StatusCode::CREATED);
    let plan = json!({"flag": "checkout-v2", "environment": "production", "template": "canary", "rationale": "go"});
    assert_eq!(post("/api/v1/plans", plan).await.unwrap().status(), StatusCode::CREATED);
    // Pushes retry from 100 ms, deliveries from 0.5 s: wait for several of each.
    let plan_path = "/api/v1/plans/1/hold";
    assert_eq!(
        post(plan_path, json!({"rationale": "more to send"})).await.unwrap().status(),
        StatusCode::OK
    );
    for _ in 0..500 {
        if *hits.lock().unwrap() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(*hits.lock().unwrap() >= 8, "the edge and the webhook were tried again and again");

    let edges = server.get(&client, "/api/v1/edges").await;
    let webhooks = server.get(&client, "/api/v1/webhooks").await;
    for (what, error) in
        [("edge", &edges[0]["last_error"]), ("webhook", &webhooks[0]["last_error"])]
    {
        let error =
            error.as_str().unwrap_or_else(|| panic!("the {what} failed: {edges} {webhooks}"));
        assert!(error.len() <= 1024, "the {what}'s stored error is {} bytes", error.len());
        assert!(error.contains("500"), "{error}");
    }
    let peak = peak_rss(server.pid());
    assert!(peak < 64 * 1024, "peak RSS {peak} kB");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("xxxxxxxx"), "no answer's body is logged");
    assert!(logged.len() < 256 << 10, "the log stays small: {} bytes", logged.len());
    eprintln!(
        "30 MiB answers: peak RSS {} MB, stored errors of {} and {} bytes, log {} bytes",
        peak / 1024,
        edges[0]["last_error"].as_str().unwrap().len(),
        webhooks[0]["last_error"].as_str().unwrap().len(),
        logged.len()
    );
}
