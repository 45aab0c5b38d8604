//! The provider against a scripted control plane on loopback: what it serves before, during
//! and after sync, the events it sends, and the counts it reports. The real control plane is
//! driven in tests/e2e/providers.test.mjs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use open_feature::provider::{FeatureProvider, ProviderStatus};
use open_feature::{EvaluationContext, EvaluationErrorCode, EvaluationReason, OpenFeature};
use rollgate_openfeature::{Options, ProviderEvent, ProviderEventKind, RollgateProvider};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

fn snapshot(version: u64, banner_percent: u32) -> Value {
    json!({"schema": 1, "environment": "production", "version": version,
    "segments": [{"key": "staff", "included": ["ana"]}],
    "flags": [
        {"key": "banner", "type": "string", "variants": {"old": "Welcome", "new": "Hello!"}, "off_variant": "old",
         "rules": [{"segments": ["staff"], "serve": {"variant": "new"}}],
         "fallthrough": {"rollout": {"percent": banner_percent, "inside": "new", "outside": "old"}}},
        {"key": "limit", "type": "number", "variants": {"low": 10, "high": 2.5}, "off_variant": "low",
         "fallthrough": {"variant": "low"}},
        {"key": "theme", "type": "object", "variants": {"plain": {"color": "gray", "radius": 4}}, "off_variant": "plain",
         "fallthrough": {"variant": "plain"}},
        {"key": "dark", "type": "boolean", "variants": {"on": true, "off": false}, "off_variant": "off",
         "prerequisites": [{"flag": "banner", "variant": "new"}], "fallthrough": {"variant": "on"}}
    ]})
}

/// A control plane that streams what the test sends, serves a snapshot (or 503), and records
/// metric batches, refusing the first `refuse_metrics` with 503.
#[derive(Clone)]
struct Scripted {
    events: broadcast::Sender<String>,
    snapshot: Arc<Mutex<Option<Value>>>,
    batches: mpsc::UnboundedSender<Value>,
    refuse_metrics: Arc<Mutex<u32>>,
    last_event_ids: Arc<Mutex<Vec<Option<String>>>>,
    /// Answer the stream with 404, as a proxy that does not pass it through might.
    stream_missing: Arc<Mutex<bool>>,
}

/// Sent as an event, it ends every open stream.
const CLOSE: &str = "close";

async fn stream(State(s): State<Scripted>, headers: HeaderMap) -> Response {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    if *s.stream_missing.lock().unwrap() {
        return StatusCode::NOT_FOUND.into_response();
    }
    s.last_event_ids.lock().unwrap().push(last);
    let receiver = s.events.subscribe();
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let data = receiver.recv().await.ok().filter(|data| data != CLOSE)?;
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().event("snapshot").data(data)),
            receiver,
        ))
    });
    Sse::new(events).into_response()
}

async fn snapshot_route(State(s): State<Scripted>) -> Response {
    match s.snapshot.lock().unwrap().clone() {
        Some(snapshot) => Json(snapshot).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn metrics(State(s): State<Scripted>, Json(batch): Json<Value>) -> StatusCode {
    let mut refuse = s.refuse_metrics.lock().unwrap();
    s.batches.send(batch).unwrap();
    if *refuse > 0 {
        *refuse -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    StatusCode::ACCEPTED
}

async fn scripted() -> (Scripted, mpsc::UnboundedReceiver<Value>, String) {
    let (batches, received) = mpsc::unbounded_channel();
    let scripted = Scripted {
        events: broadcast::channel(16).0,
        snapshot: Arc::default(),
        batches,
        refuse_metrics: Arc::default(),
        last_event_ids: Arc::default(),
        stream_missing: Arc::default(),
    };
    let app = Router::new()
        .route("/api/v1/environments/production/stream", get(stream))
        .route("/api/v1/environments/production/snapshot", get(snapshot_route))
        .route("/api/v1/environments/production/metrics", post(metrics))
        .with_state(scripted.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (scripted, received, url)
}

fn options(url: &str) -> Options {
    let mut options = Options::new(url, "rg_test", "production");
    options.initialize_timeout = Duration::from_secs(10);
    options.metrics_interval = Some(Duration::from_secs(3600));
    options
}

/// The next event, waiting at most 10 s.
async fn next(events: &mut broadcast::Receiver<ProviderEvent>) -> ProviderEvent {
    tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event within 10 s")
        .unwrap()
}

fn user(key: &str) -> EvaluationContext {
    EvaluationContext::default().with_targeting_key(key)
}

#[tokio::test]
async fn before_any_snapshot_every_answer_is_provider_not_ready() {
    let mut options = Options::new("http://127.0.0.1:9", "rg_test", "production");
    options.initialize_timeout = Duration::from_millis(200);
    let mut provider = RollgateProvider::new(options).unwrap();
    provider.initialize(&EvaluationContext::default()).await;
    assert_eq!(provider.status(), ProviderStatus::NotReady);
    let error = provider.resolve_bool_value("dark", &user("ana")).await.unwrap_err();
    assert_eq!(error.code, EvaluationErrorCode::ProviderNotReady);
}

#[tokio::test]
async fn a_bootstrap_file_is_served_before_the_control_plane_answers() {
    let dir = std::env::temp_dir().join(format!("rollgate-bootstrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flags.json");
    std::fs::write(&path, snapshot(7, 100_000).to_string()).unwrap();
    // The control plane is down (port 9 discards): the file is all there is.
    let mut options = Options::new("http://127.0.0.1:9", "rg_test", "production").bootstrap(&path);
    options.initialize_timeout = Duration::from_millis(200);
    let mut provider = RollgateProvider::new(options).unwrap();
    provider.initialize(&EvaluationContext::default()).await;
    assert_eq!(provider.handle().version(), Some(7));
    let answer = provider.resolve_string_value("banner", &user("bob")).await.unwrap();
    assert_eq!((answer.value.as_str(), answer.reason), ("Hello!", Some(EvaluationReason::Split)));

    std::fs::write(&path, "{\"schema\": 1, \"flags\": [").unwrap();
    let refused = RollgateProvider::new(
        Options::new("http://127.0.0.1:9", "t", "production").bootstrap(&path),
    );
    assert!(refused.err().unwrap().to_string().contains("is invalid"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn answers_map_to_openfeature_exactly() {
    let dir = std::env::temp_dir().join(format!("rollgate-answers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("flags.json");
    std::fs::write(&path, snapshot(1, 0).to_string()).unwrap();
    let mut options = Options::new("http://127.0.0.1:9", "rg_test", "production").bootstrap(&path);
    options.metrics_interval = None;
    let provider = RollgateProvider::new(options).unwrap();
    std::fs::remove_dir_all(dir).unwrap();

    let staff = provider.resolve_string_value("banner", &user("ana")).await.unwrap();
    assert_eq!((staff.value.as_str(), staff.variant.as_deref()), ("Hello!", Some("new")));
    assert_eq!(staff.reason, Some(EvaluationReason::TargetingMatch));
    assert_eq!(staff.flag_metadata.unwrap().values["ruleIndex"], 0.into());
    let failed = provider.resolve_bool_value("dark", &user("bob")).await.unwrap();
    assert_eq!((failed.value, failed.reason), (false, Some(EvaluationReason::Default)));
    assert_eq!(failed.flag_metadata.unwrap().values["prerequisiteFailed"], true.into());
    let limit = provider.resolve_int_value("limit", &user("bob")).await.unwrap();
    assert_eq!((limit.value, limit.reason), (10, Some(EvaluationReason::Static)));
    let theme = provider.resolve_struct_value("theme", &user("bob")).await.unwrap();
    assert_eq!(theme.value.fields["radius"], open_feature::Value::Int(4));

    let mismatch = provider.resolve_bool_value("banner", &user("bob")).await.unwrap_err();
    assert_eq!(mismatch.code, EvaluationErrorCode::TypeMismatch);
    let fraction = provider.resolve_int_value("limit", &user("bob")).await.map(|d| d.value);
    assert_eq!(fraction, Ok(10), "an integral number is an integer");
    let missing = provider.resolve_string_value("nope", &user("bob")).await.unwrap_err();
    assert_eq!(missing.code, EvaluationErrorCode::FlagNotFound);
    let keyless =
        provider.resolve_string_value("banner", &EvaluationContext::default()).await.unwrap_err();
    assert_eq!(keyless.code, EvaluationErrorCode::TargetingKeyMissing);
    // With metrics off there is nothing to flush, and it says so at once rather than waiting.
    provider.handle().flush().await;
    provider.handle().shutdown().await;
}

#[tokio::test]
async fn it_follows_the_stream_keeps_the_last_good_snapshot_and_reports_each_change() {
    let (scripted, _batches, url) = scripted().await;
    let (provider, mut events) = following(&scripted, &url, snapshot(1, 0)).await;
    assert_eq!(
        provider.resolve_string_value("banner", &user("bob")).await.unwrap().value,
        "Welcome"
    );

    // A snapshot flag-core refuses: ERROR, and the last good one is still served.
    let mut broken = snapshot(2, 100_000);
    broken["flags"][0]["fallthrough"]["rollout"]["inside"] = json!("missing");
    scripted.events.send(broken.to_string()).unwrap();
    let error = next(&mut events).await;
    assert_eq!(error.kind, ProviderEventKind::Error);
    assert!(error.message.unwrap().contains("unknown variant"), "the message says why");
    assert_eq!(provider.status(), ProviderStatus::Error);
    assert_eq!(
        provider.resolve_string_value("banner", &user("bob")).await.unwrap().value,
        "Welcome"
    );
    let mut elsewhere = snapshot(9, 100_000);
    elsewhere["environment"] = json!("staging");
    scripted.events.send(elsewhere.to_string()).unwrap();
    let misdirected = next(&mut events).await;
    assert_eq!(misdirected.kind, ProviderEventKind::Error);
    assert!(misdirected.message.unwrap().contains("not of `production`"));
    scripted.events.send("{not json".to_owned()).unwrap();

    // A good one: READY again, and the change names the flags it touches.
    scripted.events.send(snapshot(3, 100_000).to_string()).unwrap();
    assert_eq!(
        next(&mut events).await.kind,
        ProviderEventKind::Error,
        "the second refusal is reported"
    );
    let ready = next(&mut events).await;
    assert_eq!((ready.kind, ready.version), (ProviderEventKind::Ready, Some(3)));
    let changed = next(&mut events).await;
    assert_eq!(changed.kind, ProviderEventKind::ConfigurationChanged);
    assert_eq!(changed.flags_changed, ["banner", "dark"]);
    assert_eq!(
        provider.resolve_string_value("banner", &user("bob")).await.unwrap().value,
        "Hello!"
    );
    // An older version is never served again.
    scripted.events.send(snapshot(2, 0).to_string()).unwrap();
    scripted.events.send(snapshot(4, 100_000).to_string()).unwrap();
    assert_eq!(next(&mut events).await.version, Some(4), "version 2 was passed over");
    assert_eq!(
        provider.resolve_string_value("banner", &user("bob")).await.unwrap().value,
        "Hello!"
    );
}

/// A provider initialized with the first snapshot `scripted` streams.
async fn following(
    scripted: &Scripted,
    url: &str,
    first: Value,
) -> (RollgateProvider, broadcast::Receiver<ProviderEvent>) {
    let mut provider = RollgateProvider::new(options(url)).unwrap();
    let mut events = provider.handle().events();
    let initialized = tokio::spawn(async move {
        provider.initialize(&EvaluationContext::default()).await;
        provider
    });
    while scripted.events.receiver_count() == 0 {
        tokio::task::yield_now().await;
    }
    scripted.events.send(first.to_string()).unwrap();
    let provider = initialized.await.unwrap();
    assert_eq!(next(&mut events).await.kind, ProviderEventKind::Ready);
    (provider, events)
}

#[tokio::test]
async fn a_lost_control_plane_makes_it_stale_and_it_resumes_where_it_was() {
    let (scripted, _batches, url) = scripted().await;
    let (provider, mut events) = following(&scripted, &url, snapshot(5, 0)).await;

    // The stream ends and the snapshot answers 503: STALE, still serving version 5.
    scripted.events.send(CLOSE.to_owned()).unwrap();
    let stale = next(&mut events).await;
    assert_eq!(stale.kind, ProviderEventKind::Stale);
    assert!(stale.message.unwrap().contains("503"), "the message says why");
    assert_eq!(provider.status(), ProviderStatus::STALE);
    assert_eq!(
        provider.resolve_string_value("banner", &user("bob")).await.unwrap().value,
        "Welcome"
    );

    // It reconnects by itself, from the version it has: READY, then what it missed.
    let ready = next(&mut events).await;
    assert_eq!((ready.kind, ready.version), (ProviderEventKind::Ready, Some(5)));
    assert_eq!(*scripted.last_event_ids.lock().unwrap(), [None, Some("5".to_owned())]);
    scripted.events.send(snapshot(6, 100_000).to_string()).unwrap();
    assert_eq!(next(&mut events).await.kind, ProviderEventKind::ConfigurationChanged);
    assert_eq!(
        provider.resolve_string_value("banner", &user("bob")).await.unwrap().value,
        "Hello!"
    );
}

#[tokio::test]
async fn without_the_stream_it_polls_the_snapshot() {
    let (scripted, _batches, url) = scripted().await;
    *scripted.stream_missing.lock().unwrap() = true;
    *scripted.snapshot.lock().unwrap() = Some(snapshot(9, 100_000));
    let mut provider = RollgateProvider::new(options(&url)).unwrap();
    provider.initialize(&EvaluationContext::default()).await;
    assert_eq!((provider.status(), provider.handle().version()), (ProviderStatus::Ready, Some(9)));
    assert_eq!(
        provider.resolve_string_value("banner", &user("bob")).await.unwrap().value,
        "Hello!"
    );
}

#[tokio::test]
async fn served_variants_and_tracked_metrics_are_reported_in_batches_sent_again_until_counted() {
    let (scripted, mut batches, url) = scripted().await;
    let (provider, _events) = following(&scripted, &url, snapshot(1, 0)).await;
    let handle = provider.handle();
    OpenFeature::singleton_mut().await.set_provider(provider).await;
    let client = OpenFeature::singleton().await.create_client();
    for user in ["ana", "bob", "cy"] {
        let context = EvaluationContext::default().with_targeting_key(user);
        client.get_string_value("banner", Some(&context), None).await.unwrap();
    }
    // What the API would refuse is not counted, so it cannot sink the batch.
    assert!(!handle.track("banner", "old", "checkoutCompleted", 1));
    assert!(!handle.track("nope", "old", "errors", 1));
    assert!(!handle.track("banner", "old", "errors", 0));
    assert!(handle.track("banner", "old", "errors", 2));
    *scripted.refuse_metrics.lock().unwrap() = 1;
    handle.flush().await;
    let refused = batches.recv().await.unwrap();
    handle.flush().await;
    let counted = batches.recv().await.unwrap();
    assert_eq!(refused, counted, "the same batch, with the same id, is sent again");
    let mut counters = counted["counters"].as_array().unwrap().clone();
    counters.sort_by_key(|c| c["variant"].to_string());
    assert_eq!(
        counters,
        [
            json!({"flag": "banner", "variant": "new", "counts": {"evaluations": 1}}),
            // Ana is staff, served by a rule; the rollout (at 0%) decided for bob and cy.
            json!({"flag": "banner", "variant": "old", "counts": {"evaluations": 2, "rollout_evaluations": 2, "errors": 2}}),
        ]
    );
    handle.flush().await;
    assert!(batches.try_recv().is_err(), "nothing more to report");
}
