//! Rollgate's control plane: stores flags and environments, validates every change with
//! flag-core, and publishes versioned snapshots.
//!
//! Work in progress (issue 3): the store, the change pipeline, API tokens and the snapshot
//! endpoint are here; the write API, SSE and OFREP are not yet.

pub mod api;
pub mod auth;
pub mod clock;
pub mod error;
pub mod publisher;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::publisher::Publisher;
use crate::store::Store;

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
        .route("/api/v1/environments/{environment}/snapshot", get(api::snapshot::get_snapshot))
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
