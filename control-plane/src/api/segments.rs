//! Segments: named sets of units (listed keys, excluded keys, conditions) that rules target.
//! They are shared by every environment, like flag definitions.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::ETAG;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flag_core::wire;

use crate::AppState;
use crate::api::flags::{ArchiveQuery, key_mismatch};
use crate::api::{Authorized, Release, etag, if_match_revisions, required_reason};
use crate::error::{ApiError, AppJson, AppQuery};
use crate::store::{ChangeNote, SegmentRecord};

/// `GET /api/v1/segments`.
#[utoipa::path(get, path = "/api/v1/segments", tag = "segments", responses((status = 200, description = "OK", body = Vec<SegmentRecord>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_segments(
    _: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<SegmentRecord>>, ApiError> {
    Ok(Json(state.store.segments().await?))
}

/// `GET /api/v1/segments/{segment}`, with its revision as ETag.
#[utoipa::path(get, path = "/api/v1/segments/{segment}", tag = "segments", params(("segment" = String, Path, description = "A segment key")), responses((status = 200, description = "OK", body = SegmentRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_segment(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let record = state.store.segment(&key).await?;
    Ok(([(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `POST /api/v1/segments`: a new segment in every environment's snapshot.
#[utoipa::path(post, path = "/api/v1/segments", tag = "segments", request_body = wire::Segment, responses((status = 201, description = "Created", body = SegmentRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_segment(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    AppJson(segment): AppJson<wire::Segment>,
) -> Result<Response, ApiError> {
    let key = segment.key.clone();
    let changed = state
        .store
        .create_segment(segment, &caller.token.name)
        .await
        .map_err(|error| error.relative_to(&format!("segments.{key}")))?;
    state.publisher.publish_all(changed.published);
    let record = state.store.segment(&key).await?;
    Ok((StatusCode::CREATED, [(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `PUT /api/v1/segments/{segment}`: replaces the segment. Honours `If-Match`.
#[utoipa::path(put, path = "/api/v1/segments/{segment}", tag = "segments", params(("segment" = String, Path, description = "A segment key")), request_body = wire::Segment, responses((status = 200, description = "OK", body = SegmentRecord), (status = 412, description = "If-Match names another revision", body = crate::error::Problem, content_type = "application/problem+json"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_segment(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
    AppJson(segment): AppJson<wire::Segment>,
) -> Result<Response, ApiError> {
    if segment.key != key {
        return Err(key_mismatch("segment", &key, &segment.key));
    }
    let note = ChangeNote {
        actor: caller.token.name.clone(),
        action: "segment.update",
        reason: None,
        if_revision: if_match_revisions(&headers),
    };
    let changed = state
        .store
        .update_segment(segment, note)
        .await
        .map_err(|error| error.relative_to(&format!("segments.{key}")))?;
    state.publisher.publish_all(changed.published);
    let record = state.store.segment(&key).await?;
    Ok(([(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `DELETE /api/v1/segments/{segment}?reason=`: archives it; 422 while a rule targets it.
#[utoipa::path(delete, path = "/api/v1/segments/{segment}", tag = "segments", params(("segment" = String, Path, description = "A segment key"), ArchiveQuery), responses((status = 204, description = "Done"), (status = 412, description = "If-Match names another revision", body = crate::error::Problem, content_type = "application/problem+json"), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn delete_segment(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    Path(key): Path<String>,
    AppQuery(query): AppQuery<ArchiveQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let note = ChangeNote {
        actor: caller.token.name.clone(),
        action: "segment.archive",
        reason: query.reason.map(required_reason).transpose()?,
        if_revision: if_match_revisions(&headers),
    };
    let changed = state.store.archive_segment(&key, note).await?;
    state.publisher.publish_all(changed.published);
    Ok(StatusCode::NO_CONTENT)
}
