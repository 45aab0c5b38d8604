//! Rollgate's control plane: stores flags and environments, validates every change with
//! flag-core, and publishes versioned snapshots.
//!
//! Work in progress (issue 3): the store and the change pipeline are here; the HTTP API, auth,
//! the snapshot and SSE endpoints and OFREP are not yet. The service serves health checks only,
//! so nothing unauthenticated can read or change flags.

pub mod clock;
pub mod store;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::store::Store;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
}

/// The service's routes.
pub fn app(state: AppState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
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
