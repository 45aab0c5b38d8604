//! Rollgate's control plane: stores flags, segments, environments and tokens, validates every
//! change with flag-core, and publishes versioned snapshots to readers and stream subscribers.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod edges;
pub mod error;
pub mod import;
pub mod metrics;
pub mod model;
pub mod outbound;
pub mod plans;
pub mod publisher;
pub mod service;
pub mod store;
pub mod transport;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, get, post, put};

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::service::Service;
use crate::store::Store;

/// Larger request bodies get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// An import carries a whole other system's flags in one change, so it may be larger.
pub const MAX_IMPORT_BODY_BYTES: usize = 16 << 20;

/// What every handler can reach; cloned per request, so it is one `Arc`.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub service: Service,
    pub metrics: Metrics,
    pub settings: Settings,
    /// Holds up addresses that guess tokens.
    pub brake: auth::Brake,
}

/// Tunables, with production defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a snapshot stream may stay silent before a keep-alive comment.
    pub keep_alive: Duration,
    /// The HMAC-SHA256 key edge envelopes are signed with; edges hold the same one.
    pub push_secret: Option<Vec<u8>>,
    /// Which addresses edge pushes and webhooks may reach: public ones, and these ranges.
    pub targets: outbound::Targets,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(15),
            push_secret: None,
            targets: outbound::Targets::default(),
        }
    }
}

impl AppState {
    /// The state for a store: the service started on it (see `Service::start`).
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Result<Self, service::Error> {
        let (secret, targets) = (settings.push_secret.clone(), settings.targets.clone());
        let service = Service::start(store, clock, secret, targets).await?;
        let (metrics, brake) = (Metrics::default(), auth::Brake::default());
        Ok(Self(Arc::new(Shared { service, metrics, settings, brake })))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// Every route's path pattern, as the router matches it.
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

fn routes() -> Vec<(&'static str, MethodRouter<AppState>)> {
    use api::{
        audit, counters, dashboard, edges, environments, flags, health, ofrep, ofrep_events, plans,
        segments, snapshot, stream, tokens, webhooks,
    };
    use axum::routing::delete;
    vec![
        ("/", get(dashboard::index)),
        ("/dashboard/{file}", get(dashboard::asset)),
        ("/healthz", get(health::healthz)),
        ("/readyz", get(health::readyz)),
        ("/metrics", get(health::get_metrics)),
        ("/api/openapi.json", get(api::openapi::get_openapi)),
        ("/api/v1/audit", get(audit::get_audit)),
        ("/api/v1/tokens", get(tokens::list_tokens).post(tokens::post_token)),
        ("/api/v1/tokens/{token}", delete(tokens::delete_token)),
        (
            "/api/v1/environments",
            get(environments::list_environments).post(environments::post_environment),
        ),
        ("/api/v1/flags", get(flags::list_flags).post(flags::post_flag)),
        (
            "/api/v1/flags/{flag}",
            get(flags::get_flag).put(flags::put_flag).delete(flags::delete_flag),
        ),
        ("/api/v1/segments", get(segments::list_segments).post(segments::post_segment)),
        (
            "/api/v1/segments/{segment}",
            get(segments::get_segment).put(segments::put_segment).delete(segments::delete_segment),
        ),
        ("/api/v1/edges", get(edges::list_edges).post(edges::post_edge)),
        ("/api/v1/edges/{edge}", delete(edges::delete_edge)),
        (
            "/api/v1/environments/{environment}/allowed-origins",
            put(environments::put_allowed_origins),
        ),
        ("/api/v1/environments/{environment}/edge-config", get(edges::get_edge_config)),
        ("/api/v1/environments/{environment}/snapshot", get(snapshot::get_snapshot)),
        ("/api/v1/environments/{environment}/stream", get(stream::get_stream)),
        (
            "/api/v1/environments/{environment}/import",
            post(flags::post_import).layer(DefaultBodyLimit::max(MAX_IMPORT_BODY_BYTES)),
        ),
        ("/api/v1/environments/{environment}/flags/{flag}", put(flags::put_state)),
        ("/api/v1/environments/{environment}/flags/{flag}/rollout", put(flags::put_rollout)),
        ("/api/v1/environments/{environment}/flags/{flag}/kill", post(flags::post_kill)),
        ("/api/v1/environments/{environment}/flags/{flag}/unkill", post(flags::post_unkill)),
        (
            "/api/v1/environments/{environment}/metrics",
            get(counters::get_metrics).post(counters::post_metrics),
        ),
        ("/api/v1/plan-templates", get(plans::list_templates)),
        ("/api/v1/plans", get(plans::list_plans).post(plans::post_plan)),
        ("/api/v1/plans/{plan}", get(plans::get_plan)),
        ("/api/v1/plans/{plan}/readings", get(plans::get_plan_readings)),
        ("/api/v1/plans/{plan}/advance", post(plans::post_advance)),
        ("/api/v1/plans/{plan}/hold", post(plans::post_hold)),
        ("/api/v1/plans/{plan}/resume", post(plans::post_resume)),
        ("/api/v1/plans/{plan}/rollback", post(plans::post_rollback)),
        ("/api/v1/plans/{plan}/complete", post(plans::post_complete)),
        ("/api/v1/decisions", get(plans::list_decisions)),
        ("/api/v1/webhooks", get(webhooks::list_webhooks).post(webhooks::post_webhook)),
        ("/api/v1/webhooks/{webhook}", delete(webhooks::delete_webhook)),
        // OFREP, in the environment the read token is bound to, or in the one the path names.
        ("/ofrep/v1/evaluate/flags", post(ofrep::post_bulk)),
        ("/ofrep/v1/events", get(ofrep_events::get_events)),
        ("/ofrep/v1/evaluate/flags/{flag}", post(ofrep::post_single)),
        ("/api/v1/environments/{environment}/ofrep/v1/evaluate/flags", post(ofrep::post_bulk_in)),
        (
            "/api/v1/environments/{environment}/ofrep/v1/evaluate/flags/{flag}",
            post(ofrep::post_single_in),
        ),
    ]
}

/// Serves `app(state)` on `tcp` until `shutdown` resolves, each request knowing its client's
/// address (`transport::ClientAddress`).
pub async fn serve(
    tcp: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = app(state).into_make_service_with_connect_info::<transport::ClientAddress>();
    axum::serve(transport::Listener::new(tcp), service).with_graceful_shutdown(shutdown).await
}

/// The service's routes.
pub fn app(state: AppState) -> Router {
    let routes = routes();
    state.metrics.know_routes(routes.iter().map(|(path, _)| *path));
    let mut router = Router::new();
    for (path, handler) in routes {
        router = router.route(path, handler);
    }
    router
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(api::cors(state.service.tokens.clone()))
        .layer(axum::middleware::from_fn(api::limit_headers))
        .layer(axum::middleware::from_fn(api::close_after_refusal))
        .layer(axum::middleware::from_fn_with_state(state.metrics.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
