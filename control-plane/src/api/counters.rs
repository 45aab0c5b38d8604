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
use crate::plans::criteria::valid_metric_name;
use crate::store::MetricBatch;

/// Counter entries per batch, metrics per entry, and the largest count, so one batch stays a
/// small transaction and no sum nears overflow.
pub const MAX_COUNTERS: usize = 1_000;
pub const MAX_METRICS: usize = 32;
pub const MAX_COUNT: u64 = 1_000_000_000;

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
    check(&batch)
        .map_err(|detail| ApiError::Body { status: StatusCode::UNPROCESSABLE_ENTITY, detail })?;
    let counted = state.store.record_metrics(&environment, batch).await?;
    if counted {
        state.wake_scheduler.notify_one();
    }
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
    if !(60..=crate::plans::MAX_SECONDS).contains(&window_seconds) {
        return Err(ApiError::Body {
            status: StatusCode::BAD_REQUEST,
            detail: "`window_seconds` is 60 to 7776000 (90 days)".into(),
        });
    }
    let since = state.clock.minute() - window_seconds.div_ceil(60) as i64;
    let counts = state.store.metric_counts(&environment, &query.flag, since).await?;
    let mut variants: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for (variant, metric, _, value) in counts.rows {
        *variants.entry(variant).or_default().entry(metric).or_default() += value;
    }
    Ok(Json(Sums { environment, flag: query.flag, window_seconds, variants }))
}

fn check(batch: &MetricBatch) -> Result<(), String> {
    if let Some(id) = &batch.batch
        && !(1..=128).contains(&id.len())
    {
        return Err("`batch` must be 1 to 128 characters".into());
    }
    if batch.counters.is_empty() || batch.counters.len() > MAX_COUNTERS {
        return Err(format!("`counters` must hold 1 to {MAX_COUNTERS} entries"));
    }
    for (index, report) in batch.counters.iter().enumerate() {
        if report.counts.is_empty() || report.counts.len() > MAX_METRICS {
            return Err(format!("`counters[{index}].counts` must hold 1 to {MAX_METRICS} metrics"));
        }
        for (name, count) in &report.counts {
            if !valid_metric_name(name) {
                return Err(format!(
                    "`counters[{index}].counts`: `{name}` is not a metric name (1 to 64 of a-z 0-9 _ . -)"
                ));
            }
            if *count > MAX_COUNT {
                return Err(format!("`counters[{index}].counts.{name}` is over {MAX_COUNT}"));
            }
        }
    }
    Ok(())
}
