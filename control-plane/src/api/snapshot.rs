//! `GET /api/v1/environments/{env}/snapshot`: flag-core's wire format, with the version as ETag.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::api::{Authorized, Read};
use crate::error::ApiError;
use crate::store::StoreError;

pub(crate) async fn get_snapshot(
    _: Authorized<Read>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let snapshot = state
        .publisher
        .current(&environment)
        .ok_or_else(|| StoreError::NotFound(format!("environment `{environment}`")))?;
    let etag = format!("\"{}\"", snapshot.version);
    // A matching If-None-Match is answered from the version alone: no body is built or hashed.
    if headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| matches_etag(v, &etag))
    {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    let body = Body::from(Bytes::from_owner(snapshot.json));
    Ok((
        [
            (ETAG, etag),
            (CONTENT_TYPE, "application/json".into()),
            (CACHE_CONTROL, "no-cache".into()),
        ],
        body,
    )
        .into_response())
}

/// RFC 9110 weak comparison against a comma-separated If-None-Match list, or `*`.
fn matches_etag(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

#[cfg(test)]
mod tests {
    use super::matches_etag;

    #[test]
    fn if_none_match_lists() {
        assert!(matches_etag("\"7\"", "\"7\""));
        assert!(matches_etag("\"5\", W/\"7\"", "\"7\""));
        assert!(matches_etag("*", "\"7\""));
        assert!(!matches_etag("\"6\"", "\"7\""));
        assert!(!matches_etag("7", "\"7\""));
    }
}
