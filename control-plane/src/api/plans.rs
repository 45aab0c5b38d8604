//! Rollout plans over HTTP: templates, starting a plan, the actions on it, its live readings,
//! and the decision log as JSON or CSV.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::api::audit::Window;
use crate::api::{Authorized, Release, required_text};
use crate::error::{ApiError, AppJson, AppQuery};
use crate::model::Refusal;
use crate::model::criteria::Reading;
use crate::model::plan::{Decision, DecisionQuery, Plan, PlanQuery};
use crate::model::time::Timestamp;
use crate::plans::{Action, PlanRequest, RollbackTo, messages, templates};
use crate::service::plans::{self, PlanChanged};
use crate::store::StoreError;

/// A plan with its current stage's readings and when it may next advance on its own.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PlanView {
    #[serde(flatten)]
    plan: Plan,
    /// The current stage's guardrails, then its leading metrics, read now (active plans only).
    readings: Vec<Reading>,
    /// When the current stage's hold ends (active plans only).
    #[schema(value_type = Option<String>)]
    hold_until: Option<Timestamp>,
}

/// What an action answers: the plan after it, and the decision it recorded.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ActionResponse {
    plan: Plan,
    decision: Decision,
}

impl From<PlanChanged> for ActionResponse {
    fn from(changed: PlanChanged) -> Self {
        Self { plan: changed.plan, decision: changed.decision }
    }
}

/// Which plans to list.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PlanParams {
    flag: Option<String>,
    #[serde(rename = "env")]
    environment: Option<String>,
    /// Only running and held plans.
    #[serde(default)]
    active: bool,
}

/// Which decisions to return; empty fields match everything.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DecisionParams {
    flag: Option<String>,
    #[serde(rename = "env")]
    environment: Option<String>,
    plan: Option<i64>,
    /// An RFC 3339 timestamp: decisions at or after it.
    since: Option<String>,
    /// At most this many (default 1,000, at most 10,000).
    limit: Option<u32>,
    /// `oldest` (the default) or `newest`: which end of the log comes first, and what `limit`
    /// keeps.
    order: Option<String>,
    /// `json` (the default) or `csv`.
    format: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionRequest {
    rationale: String,
    /// For `rollback`: `previous` (the default) or `kill`.
    #[serde(default)]
    to: Option<RollbackTo>,
}

/// `GET /api/v1/plan-templates`.
#[utoipa::path(get, path = "/api/v1/plan-templates", tag = "plans", responses((status = 200, description = "OK", body = Vec<templates::Template>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_templates(_: Authorized<Release>) -> Json<Vec<templates::Template>> {
    Json(templates::all())
}

/// `GET /api/v1/plans?flag=&env=&active=`: newest first.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", params(PlanParams), responses((status = 200, description = "OK", body = Vec<Plan>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_plans(
    _: Authorized<Release>,
    State(state): State<AppState>,
    AppQuery(params): AppQuery<PlanParams>,
) -> Result<Json<Vec<Plan>>, ApiError> {
    let PlanParams { flag, environment, active } = params;
    Ok(Json(plans::list(&state.service, PlanQuery { flag, environment, active }).await?))
}

/// A plan's id from the path; anything else names no plan.
fn plan_id(text: &str) -> Result<i64, ApiError> {
    text.parse().map_err(|_| Refusal::NotFound(format!("plan `{text}`")).into())
}

/// `GET /api/v1/plans/{plan}`.
#[utoipa::path(get, path = "/api/v1/plans/{plan}", tag = "plans", params(("plan" = String, Path, description = "A plan id")), responses((status = 200, description = "OK", body = PlanView), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_plan(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<PlanView>, ApiError> {
    let plan = plans::get(&state.service, plan_id(&id)?).await?;
    if !plan.status.is_active() {
        return Ok(Json(PlanView { plan, readings: Vec::new(), hold_until: None }));
    }
    let readings = plans::read(&state.service, &plan).await?;
    let hold_until = Some(plan.hold_until());
    Ok(Json(PlanView { plan, readings, hold_until }))
}

/// `GET /api/v1/plans/{plan}/readings`: the current stage's readings over time (the plan's last
/// stage, for one that ended), for charts: each criterion's and the sample-ratio check's, at up
/// to 180 evenly spaced minutes from the stage's start, the last one now (or the plan's end).
#[utoipa::path(get, path = "/api/v1/plans/{plan}/readings", tag = "plans", params(("plan" = String, Path, description = "A plan id")), responses((status = 200, description = "Oldest first", body = Vec<plans::ReadingsAt>), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_plan_readings(
    _: Authorized<Release>,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<plans::ReadingsAt>>, ApiError> {
    let plan = plans::get(&state.service, plan_id(&id)?).await?;
    Ok(Json(plans::history(&state.service, &plan).await?))
}

/// `POST /api/v1/plans`: starts a plan; its first stage is served at once.
#[utoipa::path(post, path = "/api/v1/plans", tag = "plans", request_body = PlanRequest, responses((status = 201, description = "Started", body = ActionResponse), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn post_plan(
    caller: Authorized<Release>,
    State(state): State<AppState>,
    AppJson(request): AppJson<PlanRequest>,
) -> Result<(StatusCode, Json<ActionResponse>), ApiError> {
    let rationale = required_text("rationale", &request.rationale)?;
    let changed = plans::start(&state.service, request, &caller.token, rationale).await?;
    Ok((StatusCode::CREATED, Json(changed.into())))
}

macro_rules! plan_action {
    ($name:ident, $action:expr, $path:literal) => {
        #[utoipa::path(post, path = $path, tag = "plans",
            params(("plan" = String, Path, description = "A plan id")),
            request_body = ActionRequest,
            responses(
                (status = 200, description = "The plan after the action, and the decision it recorded", body = ActionResponse),
                (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")
            ))]
        pub(crate) async fn $name(
            caller: Authorized<Release>,
            State(state): State<AppState>,
            Path(id): Path<String>,
            AppJson(request): AppJson<ActionRequest>,
        ) -> Result<Json<ActionResponse>, ApiError> {
            act(caller, state, plan_id(&id)?, $action, request).await
        }
    };
}

plan_action!(post_advance, Kind::Advance, "/api/v1/plans/{plan}/advance");
plan_action!(post_hold, Kind::Hold, "/api/v1/plans/{plan}/hold");
plan_action!(post_resume, Kind::Resume, "/api/v1/plans/{plan}/resume");
plan_action!(post_rollback, Kind::Rollback, "/api/v1/plans/{plan}/rollback");
plan_action!(post_complete, Kind::Complete, "/api/v1/plans/{plan}/complete");

/// Which action a route takes; a rollback's destination comes from the body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Advance,
    Hold,
    Resume,
    Rollback,
    Complete,
}

async fn act(
    caller: Authorized<Release>,
    state: AppState,
    id: i64,
    kind: Kind,
    request: ActionRequest,
) -> Result<Json<ActionResponse>, ApiError> {
    let rationale = required_text("rationale", &request.rationale)?;
    let action = match (kind, request.to) {
        (Kind::Rollback, to) => Action::Rollback(to.unwrap_or_default()),
        (_, Some(_)) => {
            return Err(ApiError::Body {
                status: StatusCode::BAD_REQUEST,
                detail: "`to` is for rollbacks only".into(),
            });
        }
        (Kind::Advance, None) => Action::Advance,
        (Kind::Hold, None) => Action::Hold,
        (Kind::Resume, None) => Action::Resume,
        (Kind::Complete, None) => Action::Complete,
    };
    let changed = plans::act(&state.service, id, action, &caller.token, rationale).await?;
    Ok(Json(changed.into()))
}

/// `GET /api/v1/decisions?flag=&env=&plan=&format=csv`: the decision log, oldest first.
#[utoipa::path(get, path = "/api/v1/decisions", tag = "plans", params(DecisionParams), responses((status = 200, description = "The decision log, oldest first", content((Vec<Decision> = "application/json"), (String = "text/csv"))), (status = "default", description = "A problem (RFC 9457)", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_decisions(
    _: Authorized<Release>,
    State(state): State<AppState>,
    AppQuery(params): AppQuery<DecisionParams>,
) -> Result<Response, ApiError> {
    let DecisionParams { flag, environment, plan, since, limit, order, format } = params;
    let Window { since, limit, newest_first } = Window::parse(since, limit, order)?;
    let query = DecisionQuery { flag, environment, plan, since, limit: Some(limit), newest_first };
    let decisions = plans::decisions(&state.service, query).await?;
    match format.as_deref() {
        None | Some("json") => Ok(Json(decisions).into_response()),
        Some("csv") => {
            let csv = to_csv(&decisions)
                .map_err(|e| ApiError::Store(StoreError::Failed(format!("CSV: {e}"))))?;
            Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8")], csv).into_response())
        }
        Some(other) => Err(ApiError::Body {
            status: StatusCode::BAD_REQUEST,
            detail: format!("`format` is `json` or `csv`, not `{other}`"),
        }),
    }
}

/// A cell as text a spreadsheet shows, never runs: one starting like a formula (`=`, `+`, `-`,
/// `@`, a tab or a carriage return) gets a leading `'`.
fn inert(cell: &str) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

/// One row per decision, the rollout plan template's columns first; `metrics` is JSON.
pub(crate) fn to_csv(decisions: &[Decision]) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "date",
        "stage",
        "decision",
        "rationale",
        "decided_by",
        "action",
        "from_stage",
        "to_stage",
        "plan",
        "flag",
        "environment",
        "metrics",
        "readings",
    ])?;
    for decision in decisions {
        let stage = crate::model::plan::stage_label(
            decision.from_stage.as_deref(),
            decision.to_stage.as_deref(),
        );
        let cells = [
            &decision.at.to_string(),
            &stage,
            &decision.decision,
            &decision.rationale,
            &decision.decided_by,
            &decision.action,
            decision.from_stage.as_deref().unwrap_or(""),
            decision.to_stage.as_deref().unwrap_or(""),
            &decision.plan.to_string(),
            &decision.flag,
            &decision.environment,
            &decision.metrics.to_string(),
            &readings_summary(&decision.metrics),
        ];
        writer.write_record(cells.map(inert))?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("CSV of strings is UTF-8"))
}

/// The readings a decision was made on, in words, for people reading the CSV in a spreadsheet.
fn readings_summary(metrics: &serde_json::Value) -> String {
    match serde_json::from_value::<Vec<Reading>>(metrics.clone()) {
        Ok(readings) if !readings.is_empty() => messages::metric_summary(&readings),
        _ => String::new(),
    }
}
