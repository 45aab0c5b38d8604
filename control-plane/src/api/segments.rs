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
use crate::model::flag::SegmentRecord;
use crate::service::flags::Note;
use crate::service::segments;

/// `GET /api/v1/segments`.
#[utoipa::path(get, path = "/api/v1/segments", tag = "segments", responses((status = 200, description = "OK", body = Vec<SegmentRecord>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_segments(
    _: Authorized<Release>,
    State(state): State<AppState>,
) -> Result<Json<Vec<SegmentRecord>>, ApiError> {
    Ok(Json(segments::list(&state.service).await?))
}

/// `GET /api/v1/segments/{segment}`, with its revision as ETag.
#[utoipa::path(get, path = "/api/v1/segments/{segment}", tag = "segments", params(("segment" = String, Path, description = "A segment key")), responses((status = 200, description = "OK", body = SegmentRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_segment(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(key): Path<String>,
) -> Result<Response, ApiError> {
    let record = segments::get(&state.service, &key).await?;
    Ok(([(ETAG, etag(record.revision))], Json(record)).into_response())
}

/// `POST /api/v1/segments`: a new segment in every environment's snapshot.
#[utoipa::path(post, path = "/api/v1/segments", tag = "segments", request_body = wire::Segment, responses((status = 201, description = "Created", body = SegmentRecord), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_segment(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    AppJson(segment): AppJson<wire::Segment>,
) -> Result<Response, ApiError> {
    let record = segments::create(&state.service, segment, &caller.token.name).await?;
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
    let note = Note { if_revision: if_match_revisions(&headers), ..Note::by(&caller.token.name) };
    let record = segments::update(&state.service, segment, note).await?;
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
    let note = Note {
        actor: caller.token.name.clone(),
        reason: query.reason.map(required_reason).transpose()?,
        if_revision: if_match_revisions(&headers),
    };
    segments::archive(&state.service, &key, note).await?;
    Ok(StatusCode::NO_CONTENT)
}
