//! `POST /api/v1/environments/{env}/metrics`: counters per flag and variant from apps and edges,
//! which guardrails read. A batch is checked whole before any of it is counted.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use crate::AppState;
use crate::api::{Authorized, Read};
use crate::error::{ApiError, AppJson};
use crate::plans::criteria::valid_metric_name;
use crate::store::MetricBatch;

/// Counter entries per batch, metrics per entry, and the largest count, so one batch stays a
/// small transaction and no sum nears overflow.
pub const MAX_COUNTERS: usize = 1_000;
pub const MAX_METRICS: usize = 32;
pub const MAX_COUNT: u64 = 1_000_000_000;

#[derive(Serialize)]
pub(crate) struct Accepted {
    /// `false` when the batch id was already counted.
    counted: bool,
}

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
