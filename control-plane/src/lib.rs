//! Rollgate's control plane: stores flags and environments, validates every change with
//! flag-core, and publishes versioned snapshots.
//!
//! Work in progress (issue 3): the store, the change pipeline, API tokens, the snapshot endpoint
//! and the rollout, kill and unkill endpoints are here; see ARCHITECTURE.md for what is not.

pub mod api;
pub mod auth;
pub mod clock;
pub mod error;
pub mod publisher;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post, put};

use crate::publisher::Publisher;
use crate::store::Store;

/// Larger request bodies get 413.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub publisher: Publisher,
}

/// The service's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/v1/audit", get(api::audit::get_audit))
        .route("/api/v1/flags", get(api::flags::list_flags).post(api::flags::post_flag))
        .route("/api/v1/flags/{flag}", get(api::flags::get_flag))
        .route("/api/v1/environments/{environment}/snapshot", get(api::snapshot::get_snapshot))
        .route(
            "/api/v1/environments/{environment}/flags/{flag}/rollout",
            put(api::flags::put_rollout),
        )
        .route("/api/v1/environments/{environment}/flags/{flag}/kill", post(api::flags::post_kill))
        .route(
            "/api/v1/environments/{environment}/flags/{flag}/unkill",
            post(api::flags::post_unkill),
        )
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
