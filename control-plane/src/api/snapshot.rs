//! `GET /api/v1/environments/{env}/snapshot`: flag-core's wire format, with the version as ETag.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::api::{Authorized, Read, none_match};
use crate::error::ApiError;
use crate::model::Refusal;
use crate::publisher::Current;

#[utoipa::path(get, path = "/api/v1/environments/{environment}/snapshot", tag = "snapshots", params(("environment" = String, Path, description = "An environment, e.g. production")), responses((status = 200, description = "OK", body = flag_core::wire::Snapshot), (status = 304, description = "Not modified: the If-None-Match tag is current"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_snapshot(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snapshot = current(&caller, &state, &environment)?;
    // A matching If-None-Match is answered from the version alone: no body is built or hashed.
    if none_match(&headers, &snapshot.etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, snapshot.etag.clone())]).into_response());
    }
    Ok((
        [
            (ETAG, snapshot.etag.clone()),
            (CONTENT_TYPE, "application/json".into()),
            (CACHE_CONTROL, "no-cache".into()),
        ],
        Body::from(snapshot.published.json.clone()),
    )
        .into_response())
}

/// The environment's current snapshot, if the caller may read it.
pub(crate) fn current<N>(
    caller: &Authorized<N>,
    state: &AppState,
    environment: &str,
) -> Result<Arc<Current>, ApiError> {
    caller.reach(environment)?;
    state
        .service
        .publisher
        .current(environment)
        .ok_or_else(|| Refusal::NotFound(format!("environment `{environment}`")).into())
}
