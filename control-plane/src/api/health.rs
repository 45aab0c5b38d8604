//! Health checks and the metrics scrape: no token needed.

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "health", security(()), responses((status = 200, description = "OK", body = String, content_type = "text/plain"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn healthz() -> &'static str {
    "ok"
}

/// The store answers.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()), responses((status = 200, description = "OK", body = String, content_type = "text/plain"), (status = 503, description = "The store does not answer, or (on PostgreSQL) this replica does not hear the others' commits", body = String, content_type = "text/plain"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.service.ready().await {
        Ok(()) if !state.service.store().following() => {
            (StatusCode::SERVICE_UNAVAILABLE, "not hearing other replicas' commits")
        }
        Ok(()) => (StatusCode::OK, "ready"),
        Err(error) => {
            tracing::error!(%error, "store not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "store unavailable")
        }
    }
}

/// `GET /metrics`.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()), responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.encode(&state.service.publisher, state.service.leads());
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        .into_response()
}
