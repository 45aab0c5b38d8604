//! Rollgate's control plane: stores flags, segments, environments and tokens, validates every
//! change with flag-core, and publishes versioned snapshots to readers and stream subscribers.

pub mod api;
pub mod auth;
pub mod clock;
pub mod error;
pub mod metrics;
pub mod publisher;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};

use crate::auth::Tokens;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::publisher::Publisher;
use crate::store::{Store, StoreError};

/// Larger request bodies get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub publisher: Publisher,
    pub tokens: Tokens,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    pub settings: Settings,
}

/// Tunables, with production defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a snapshot stream may stay silent before a keep-alive comment.
    pub keep_alive: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { keep_alive: Duration::from_secs(15) }
    }
}

impl AppState {
    /// The state for a store: its snapshots and tokens loaded into memory.
    pub async fn load(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Result<Self, StoreError> {
        let publisher = Publisher::load(store.as_ref()).await?;
        let tokens = Tokens::new(store.tokens().await?.into_iter().map(|stored| stored.token));
        Ok(Self { store, publisher, tokens, metrics: Metrics::default(), clock, settings })
    }
}

/// The service's routes.
pub fn app(state: AppState) -> Router {
    use api::{audit, environments, flags, ofrep, segments, snapshot, stream, tokens};
    let environment = "/api/v1/environments/{environment}";
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::get_metrics))
        .route("/api/v1/audit", get(audit::get_audit))
        .route("/api/v1/tokens", get(tokens::list_tokens).post(tokens::post_token))
        .route("/api/v1/tokens/{token}", axum::routing::delete(tokens::delete_token))
        .route(
            "/api/v1/environments",
            get(environments::list_environments).post(environments::post_environment),
        )
        .route("/api/v1/flags", get(flags::list_flags).post(flags::post_flag))
        .route(
            "/api/v1/flags/{flag}",
            get(flags::get_flag).put(flags::put_flag).delete(flags::delete_flag),
        )
        .route("/api/v1/segments", get(segments::list_segments).post(segments::post_segment))
        .route(
            "/api/v1/segments/{segment}",
            get(segments::get_segment).put(segments::put_segment).delete(segments::delete_segment),
        )
        .route(&format!("{environment}/snapshot"), get(snapshot::get_snapshot))
        .route(&format!("{environment}/stream"), get(stream::get_stream))
        .route(&format!("{environment}/flags/{{flag}}"), put(flags::put_state))
        .route(&format!("{environment}/flags/{{flag}}/rollout"), put(flags::put_rollout))
        .route(&format!("{environment}/flags/{{flag}}/kill"), post(flags::post_kill))
        .route(&format!("{environment}/flags/{{flag}}/unkill"), post(flags::post_unkill))
        // OFREP, in the environment the read token is bound to, or in the one named by the path.
        .route("/ofrep/v1/evaluate/flags", post(ofrep::post_bulk))
        .route("/ofrep/v1/evaluate/flags/{flag}", post(ofrep::post_single))
        .route(&format!("{environment}/ofrep/v1/evaluate/flags"), post(ofrep::post_bulk_in))
        .route(
            &format!("{environment}/ofrep/v1/evaluate/flags/{{flag}}"),
            post(ofrep::post_single_in),
        )
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The process is up.
async fn healthz() -> &'static str {
    "ok"
}

/// The store answers.
async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.environments().await {
        Ok(_) => (StatusCode::OK, "ready"),
        Err(error) => {
            tracing::error!(%error, "store not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}
