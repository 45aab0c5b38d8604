//! `GET /metrics`, Prometheus' text format: requests by route and status, their latency, stream
//! subscribers, and each environment's snapshot version.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvironmentLabels {
    environment: String,
}

#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    subscribers: Gauge,
    versions: Family<EnvironmentLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 50 µs to about 3 s.
            Histogram::new(exponential_buckets(0.000_05, 3.0, 11))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (for streams, to start answering)",
            latency.clone(),
        );
        let subscribers = Gauge::default();
        registry.register("stream_subscribers", "Open snapshot streams", subscribers.clone());
        let versions = Family::<EnvironmentLabels, Gauge>::default();
        registry.register(
            "snapshot_version",
            "Each environment's current version",
            versions.clone(),
        );
        Self { inner: Arc::new(Inner { registry, requests, latency, subscribers, versions }) }
    }
}

impl Metrics {
    /// Counts an open stream until the returned guard is dropped.
    pub fn subscribed(&self) -> Subscribed {
        self.inner.subscribers.inc();
        Subscribed(self.inner.subscribers.clone())
    }
}

/// An open stream, counted while it lives.
pub struct Subscribed(Gauge);

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Middleware: counts and times every request by its route pattern, never its raw path, so
/// label sets stay few.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let metrics = &state.metrics.inner;
    metrics
        .latency
        .get_or_create(&RouteLabels { route: route.clone() })
        .observe(started.elapsed().as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels { method, route, status: response.status().as_u16() })
        .inc();
    response
}

/// `GET /metrics`.
pub async fn get_metrics(State(state): State<AppState>) -> Response {
    let metrics = &state.metrics.inner;
    for environment in state.publisher.environments() {
        if let Some(current) = state.publisher.current(&environment) {
            let version = i64::try_from(current.version()).unwrap_or(i64::MAX);
            metrics.versions.get_or_create(&EnvironmentLabels { environment }).set(version);
        }
    }
    let mut text = String::new();
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry) {
        tracing::error!(%error, "encoding metrics");
    }
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}
