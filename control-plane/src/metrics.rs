//! `GET /metrics`, Prometheus' text format: requests by route and status, their latency, stream
//! subscribers, and each environment's snapshot version.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::publisher::Publisher;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
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
    /// The route patterns, so labels borrow them instead of allocating per request.
    routes: OnceLock<HashSet<&'static str>>,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Latency>,
    subscribers: Gauge,
    versions: Family<EnvironmentLabels, Gauge>,
    leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered", requests.clone());
        let latency = Family::<RouteLabels, Latency>::default();
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
        let leading = Gauge::default();
        registry.register(
            "leading",
            "1 where this replica runs the scheduler, edge pushes and webhooks; else 0",
            leading.clone(),
        );
        let inner = Inner {
            routes: OnceLock::new(),
            registry,
            requests,
            latency,
            subscribers,
            versions,
            leading,
        };
        Self { inner: Arc::new(inner) }
    }
}

impl Metrics {
    /// Names the service's route patterns, the label values requests are counted under.
    pub fn know_routes(&self, routes: impl IntoIterator<Item = &'static str>) {
        let _ = self.inner.routes.set(routes.into_iter().collect());
    }

    /// Counts an open stream until the returned guard is dropped.
    pub fn subscribed(&self) -> Subscribed {
        self.inner.subscribers.inc();
        Subscribed(self.inner.subscribers.clone())
    }
}

/// Upper bounds of the latency buckets, in seconds: 50 µs to about 3 s.
const LATENCY_BOUNDS: [f64; 11] = [
    0.000_05, 0.000_15, 0.000_45, 0.001_35, 0.004_05, 0.012_15, 0.036_45, 0.109_35, 0.328, 0.984,
    2.952,
];

/// A latency histogram of atomic counters. prometheus-client's own takes a lock per
/// observation, which every request on every worker thread would contend for.
#[derive(Debug, Default)]
pub struct Latency {
    /// Per bucket, not cumulative; the last is +Inf.
    counts: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Latency {
    fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BOUNDS.partition_point(|bound| *bound < seconds);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        // Per-bucket counts: the encoder makes them cumulative.
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS
            .iter()
            .chain([f64::INFINITY].iter())
            .zip(&self.counts)
            .map(|(bound, count)| (*bound, count.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, count)| count).sum();
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
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
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let metrics = &metrics.inner;
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|path| metrics.routes.get()?.get(path.as_str()).copied())
        .unwrap_or("unmatched");
    let method = static_method(request.method());
    let response = next.run(request).await;
    metrics.latency.get_or_create(&RouteLabels { route }).observe(started.elapsed());
    let status = response.status().as_u16();
    metrics.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    response
}

fn static_method(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

impl Metrics {
    /// Every metric in OpenMetrics text, with each environment's current version and whether
    /// this process `leads`.
    pub fn encode(&self, publisher: &Publisher, leads: bool) -> String {
        let metrics = &self.inner;
        metrics.leading.set(i64::from(leads));
        for environment in publisher.environments() {
            if let Some(current) = publisher.current(&environment) {
                let version = i64::try_from(current.version()).unwrap_or(i64::MAX);
                metrics.versions.get_or_create(&EnvironmentLabels { environment }).set(version);
            }
        }
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
        {
            tracing::error!(%error, "encoding metrics");
        }
        text
    }
}
