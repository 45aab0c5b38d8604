//! `GET /api/v1/audit?flag=&segment=&env=&since=&limit=`: who changed what, when, and why.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};

use crate::AppState;
use crate::api::{Authorized, Release};
use crate::error::{ApiError, AppQuery};
use crate::store::{AuditFilter, AuditRecord};

/// Records per response unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: u32 = 1_000;
const MAX_LIMIT: u32 = 10_000;

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditFilter), responses((status = 200, description = "OK", body = Vec<AuditRecord>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_audit(
    _: Authorized<Release>,
    State(state): State<AppState>,
    AppQuery(mut filter): AppQuery<AuditFilter>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let bad = |detail: String| ApiError::Body { status: StatusCode::BAD_REQUEST, detail };
    if let Some(since) = &filter.since {
        // Stored times are UTC with milliseconds, so the normalized form compares as text.
        let since = DateTime::parse_from_rfc3339(since)
            .map_err(|_| bad(format!("`since` must be an RFC 3339 timestamp, not `{since}`")))?;
        filter.since = Some(since.with_timezone(&Utc).to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    match filter.limit {
        Some(limit) if limit > MAX_LIMIT => {
            return Err(bad(format!("`limit` is at most {MAX_LIMIT}")));
        }
        None => filter.limit = Some(DEFAULT_LIMIT),
        Some(_) => {}
    }
    Ok(Json(state.store.audit(filter).await?))
}
