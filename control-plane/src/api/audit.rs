//! `GET /api/v1/audit?flag=&segment=&env=&since=&limit=&order=`: who changed what, when, and
//! why.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::AppState;
use crate::api::{Authorized, Release};
use crate::error::{ApiError, AppQuery};
use crate::model::audit::{AuditQuery, AuditRecord};
use crate::model::time::Timestamp;
use crate::model::token::Scope;
use crate::model::webhook::masked_url;
use crate::service::audit;

/// Records per response unless `limit` says otherwise, and the most it may say.
const DEFAULT_LIMIT: u32 = 1_000;
const MAX_LIMIT: u32 = 10_000;

/// Which audit records to return. Empty fields match everything.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    flag: Option<String>,
    segment: Option<String>,
    #[serde(rename = "env")]
    environment: Option<String>,
    /// An RFC 3339 timestamp: records at or after it.
    since: Option<String>,
    /// At most this many (default 1,000, at most 10,000).
    limit: Option<u32>,
    /// `oldest` (the default) or `newest`: which end of the log comes first, and what `limit`
    /// keeps.
    order: Option<String>,
}

/// Where a log's page starts and how long it is, as `since`, `limit` and `order` give them.
pub(crate) struct Window {
    pub(crate) since: Option<Timestamp>,
    pub(crate) limit: u32,
    pub(crate) newest_first: bool,
}

impl Window {
    pub(crate) fn parse(
        since: Option<String>,
        limit: Option<u32>,
        order: Option<String>,
    ) -> Result<Self, ApiError> {
        let bad = |detail: String| ApiError::Body { status: StatusCode::BAD_REQUEST, detail };
        let since = since
            .map(|since| {
                Timestamp::parse(&since).ok_or_else(|| {
                    bad(format!("`since` must be an RFC 3339 timestamp, not `{since}`"))
                })
            })
            .transpose()?;
        let limit = match limit {
            Some(limit) if limit > MAX_LIMIT => {
                return Err(bad(format!("`limit` is at most {MAX_LIMIT}")));
            }
            limit => limit.unwrap_or(DEFAULT_LIMIT),
        };
        let newest_first = match order.as_deref() {
            None | Some("oldest") => false,
            Some("newest") => true,
            Some(other) => {
                return Err(bad(format!("`order` is `oldest` or `newest`, not `{other}`")));
            }
        };
        Ok(Self { since, limit, newest_first })
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(AuditParams), responses((status = 200, description = "OK", body = Vec<AuditRecord>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_audit(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    AppQuery(params): AppQuery<AuditParams>,
) -> Result<Json<Vec<AuditRecord>>, ApiError> {
    let AuditParams { flag, segment, environment, since, limit, order } = params;
    let Window { since, limit, newest_first } = Window::parse(since, limit, order)?;
    let query = AuditQuery { flag, segment, environment, since, limit: Some(limit), newest_first };
    let mut records = audit::list(&state.service, query).await?;
    // Only admins see webhooks' whole URLs, here as anywhere.
    if caller.token.scope < Scope::Admin {
        let urls = records
            .iter_mut()
            .filter(|record| record.action.starts_with("webhook."))
            .flat_map(|record| [record.before.as_mut(), record.after.as_mut()])
            .flatten()
            .filter_map(|recorded| recorded.get_mut("url"));
        for url in urls {
            if let Some(text) = url.as_str() {
                *url = masked_url(text).into();
            }
        }
    }
    Ok(Json(records))
}
