//! `POST /api/v1/environments/{env}/metrics`: counters per flag and variant from apps and edges,
//! which guardrails read. A batch is checked whole before any of it is counted.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::{Authorized, Read, Release};
use crate::error::{ApiError, AppJson, AppQuery};
use crate::model::metrics::MetricBatch;
use crate::service::metrics;

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    /// `false` when the batch id was already counted.
    counted: bool,
}

#[utoipa::path(post, path = "/api/v1/environments/{environment}/metrics", tag = "metrics", params(("environment" = String, Path, description = "An environment, e.g. production")), request_body = MetricBatch, responses((status = 202, description = "Accepted", body = Accepted), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_metrics(
    caller: Authorized<Read>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    AppJson(batch): AppJson<MetricBatch>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    caller.reach(&environment)?;
    let counted = metrics::record(&state.service, &environment, &caller.token.name, batch).await?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { counted })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SumsQuery {
    flag: String,
    /// Default 3600; at most 90 days.
    window_seconds: Option<u64>,
}

/// A flag's counters summed over a window ending now, per variant and metric.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Sums {
    environment: String,
    flag: String,
    window_seconds: u64,
    variants: BTreeMap<String, BTreeMap<String, u64>>,
}

/// `GET /api/v1/environments/{env}/metrics?flag=&window_seconds=`: what guardrails read.
#[utoipa::path(get, path = "/api/v1/environments/{environment}/metrics", tag = "metrics", params(("environment" = String, Path, description = "An environment, e.g. production"), SumsQuery), responses((status = 200, description = "OK", body = Sums), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_metrics(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(environment): Path<String>,
    AppQuery(query): AppQuery<SumsQuery>,
) -> Result<Json<Sums>, ApiError> {
    let window_seconds = query.window_seconds.unwrap_or(3600);
    let variants = metrics::sums(&state.service, &environment, &query.flag, window_seconds).await?;
    Ok(Json(Sums { environment, flag: query.flag, window_seconds, variants }))
}
