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
use crate::model::time::Timestamp;
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
    /// Also each minute's counts (`minutes`), for a chart; the window is then at most 3 days.
    by_minute: Option<bool>,
}

/// A flag's counters summed over a window ending now, per variant and metric.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Sums {
    environment: String,
    flag: String,
    window_seconds: u64,
    variants: BTreeMap<String, BTreeMap<String, u64>>,
    /// With `by_minute=true`: each minute that has counts, oldest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    minutes: Option<Vec<Minute>>,
}

/// One minute's counts, per variant and metric.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Minute {
    /// The minute's start.
    #[schema(value_type = String)]
    at: Timestamp,
    variants: BTreeMap<String, BTreeMap<String, u64>>,
}

/// The longest window `by_minute` takes.
const MAX_MINUTES_WINDOW: u64 = 3 * 24 * 3600;

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
    let minutes = if query.by_minute == Some(true) {
        if window_seconds > MAX_MINUTES_WINDOW {
            return Err(ApiError::Body {
                status: StatusCode::BAD_REQUEST,
                detail: "with `by_minute`, `window_seconds` is at most 259200 (3 days)".into(),
            });
        }
        let minutes =
            metrics::by_minute(&state.service, &environment, &query.flag, window_seconds).await?;
        let minutes = minutes
            .into_iter()
            .map(|(minute, variants)| Minute { at: Timestamp::from_minute(minute), variants });
        Some(minutes.collect())
    } else {
        None
    };
    Ok(Json(Sums { environment, flag: query.flag, window_seconds, variants, minutes }))
}
