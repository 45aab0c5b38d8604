//! Runs plans: starts them, applies release managers' actions, and the scheduler that advances
//! healthy stages on time and rolls back breached ones. Every transition is one store
//! transaction (plan, flag state, audit record, decision, notifications); afterwards the new
//! snapshot is published, as any manual change is, and the webhooks are woken.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use super::criteria::{Counts, Reading, Verdict};
use super::templates::{self, TemplateParameters};
use super::{Plan, Stage, Status, messages, validate};
use crate::AppState;
use crate::auth::Token;
use crate::error::ApiError;
use crate::store::{FlagState, PlanChange, PlanChanged, PlanCreate, PlanFilter, Step, StoreError};

/// Who decides when the scheduler advances or completes a plan.
pub const SCHEDULE: &str = "schedule";
/// Who decides when a guardrail rolls a plan back.
pub const GUARDRAIL: &str = "guardrail";

/// `POST /api/v1/plans`: a plan from a template or from explicit stages.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub flag: String,
    pub environment: String,
    /// `canary` or `four-stage`; or give `stages`.
    pub template: Option<String>,
    /// The template's parameters.
    #[serde(default)]
    pub parameters: TemplateParameters,
    pub stages: Option<Vec<Stage>>,
    /// The variant to roll out; for a flag of two variants, the one that is not `off_variant`.
    pub variant: Option<String>,
    /// What everyone else gets; default `off_variant`.
    pub control: Option<String>,
    /// Default: the template's (on for the canary, off for four-stage), on for explicit stages.
    pub auto_advance: Option<bool>,
    pub rationale: String,
}

/// A release manager's action on a running plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Advance,
    Hold,
    Resume,
    Rollback,
    Complete,
}

/// Where a rollback goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RollbackTo {
    /// The stage before, held there until someone resumes.
    #[default]
    Previous,
    /// Kill the flag and end the plan.
    Kill,
}

/// Starts a plan: its first stage is served at once, and the flag is enabled.
pub async fn start(
    state: &AppState,
    request: PlanRequest,
    caller: &Token,
) -> Result<PlanChanged, ApiError> {
    if !caller.reaches(&request.environment) {
        return Err(ApiError::OtherEnvironment(request.environment));
    }
    let rationale = required(&request.rationale)?;
    let stages = match (&request.template, request.stages) {
        (Some(name), None) => templates::expand(name, &request.parameters)?,
        (None, Some(stages)) => stages,
        _ => return Err(StoreError::Refused("give either `template` or `stages`".into()).into()),
    };
    let auto_advance = request
        .auto_advance
        .unwrap_or_else(|| request.template.as_deref().is_none_or(templates::auto_advance));
    let PlanRequest { flag, environment, template, variant, control, .. } = request;
    let by = caller.name.clone();
    let plan_environment = environment.clone();
    let create: PlanCreate = Box::new(move |id, definition, segments, now, flag_state| {
        let variant = variant
            .or_else(|| definition.sole_other_variant())
            .ok_or_else(|| StoreError::Refused("name the `variant` to roll out".into()))?;
        let control = control.unwrap_or_else(|| definition.off_variant.clone());
        validate(&stages, definition, &variant, &control, segments)?;
        let mut plan = Plan {
            id,
            flag: definition.key.clone(),
            environment: plan_environment,
            template,
            variant,
            control,
            auto_advance,
            stages,
            status: Status::Running,
            stage: 0,
            stage_started_at: now.to_owned(),
            approvals: Vec::new(),
            installed_rule: None,
            created_by: by.clone(),
            created_at: now.to_owned(),
        };
        plan.apply(flag_state);
        flag_state.enabled = true;
        let step = Step {
            action: "start",
            audit_action: "plan.start",
            from_stage: None,
            to_stage: Some(plan.current().name.clone()),
            decision: "proceed",
            notifications: vec![messages::started(&plan, &by, &rationale)],
            rationale,
            decided_by: by,
            metrics: json!([]),
        };
        Ok((plan, step))
    });
    let changed = state.store.create_plan(&environment, &flag, create).await?;
    committed(state, &changed);
    Ok(changed)
}

/// A release manager's action on plan `id`.
pub async fn act(
    state: &AppState,
    id: i64,
    action: Action,
    rollback_to: RollbackTo,
    caller: &Token,
    rationale: &str,
) -> Result<PlanChanged, ApiError> {
    let rationale = required(rationale)?;
    let plan = state.store.plan(id).await?;
    if !caller.reaches(&plan.environment) {
        return Err(ApiError::OtherEnvironment(plan.environment));
    }
    if action == Action::Advance
        && let Some(next) = plan.stages.get(plan.stage + 1)
        && let Some(refusal) = next.advance.refuses(&caller.name, caller.scope)
    {
        return Err(ApiError::NotPermitted(refusal));
    }
    let readings = read(state, &plan).await?;
    let (expected_stage, by) = (plan.stage, caller.name.clone());
    let change: PlanChange = Box::new(move |plan, _, flag_state, now| {
        if plan.stage != expected_stage {
            return Err(StoreError::Stale(format!(
                "plan {} moved to stage `{}` meanwhile; look again",
                plan.id,
                plan.current().name
            )));
        }
        if !plan.status.is_active() {
            return Err(StoreError::Refused(format!(
                "plan {} is {}; start a new plan",
                plan.id,
                plan.status.as_str()
            )));
        }
        let step = match action {
            Action::Advance => advance(plan, flag_state, now, &by, rationale, &readings, true)?,
            Action::Complete => {
                if !plan.is_last_stage() {
                    return Err(StoreError::Refused(format!(
                        "plan {} is at stage `{}`; only the last stage completes",
                        plan.id,
                        plan.current().name
                    )));
                }
                complete(plan, &by, rationale, &readings)
            }
            Action::Hold => {
                if plan.status == Status::Held {
                    return Err(StoreError::Refused(format!("plan {} is already held", plan.id)));
                }
                hold(plan, &by, rationale)
            }
            Action::Resume => {
                if plan.status != Status::Held {
                    return Err(StoreError::Refused(format!("plan {} is not held", plan.id)));
                }
                plan.status = Status::Running;
                plan.apply(flag_state);
                flag_state.enabled = true;
                let stage = Some(plan.current().name.clone());
                Step {
                    action: "resume",
                    audit_action: "plan.resume",
                    from_stage: stage.clone(),
                    to_stage: stage,
                    decision: "proceed",
                    rationale,
                    decided_by: by,
                    metrics: json!(readings),
                    notifications: Vec::new(),
                }
            }
            Action::Rollback => rollback(plan, flag_state, now, rollback_to, &by, rationale)?,
        };
        Ok(Some(step))
    });
    let changed = state
        .store
        .change_plan(id, change)
        .await?
        .ok_or_else(|| StoreError::Internal("a plan action recorded nothing".into()))?;
    committed(state, &changed);
    Ok(changed)
}

/// Moves into the next stage once enough approvals are in; `by_hand` counts the caller's
/// `advance` as one.
fn advance(
    plan: &mut Plan,
    flag_state: &mut FlagState,
    now: &str,
    by: &str,
    rationale: String,
    readings: &[Reading],
    by_hand: bool,
) -> Result<Step, StoreError> {
    if plan.is_last_stage() {
        return Err(StoreError::Refused(format!(
            "plan {} is at its last stage; `complete` it",
            plan.id
        )));
    }
    let from = plan.current().clone();
    let next = &plan.stages[plan.stage + 1];
    let needed = next.advance.approvals.max(u32::from(by_hand)) as usize;
    if by_hand {
        if plan.approvals.iter().any(|name| name == by) {
            return Err(StoreError::Refused(format!(
                "{by} already approved; {} of {needed} approvals",
                plan.approvals.len()
            )));
        }
        plan.approvals.push(by.to_owned());
        if plan.approvals.len() < needed {
            return Ok(Step {
                action: "approve",
                audit_action: "plan.approve",
                from_stage: Some(from.name),
                to_stage: Some(next.name.clone()),
                decision: "proceed",
                rationale: format!("{rationale} ({} of {needed} approvals)", plan.approvals.len()),
                decided_by: by.to_owned(),
                metrics: json!(readings),
                notifications: Vec::new(),
            });
        }
    }
    plan.stage += 1;
    plan.stage_started_at = now.to_owned();
    plan.approvals.clear();
    plan.apply(flag_state);
    Ok(Step {
        action: "advance",
        audit_action: "plan.advance",
        from_stage: Some(from.name.clone()),
        to_stage: Some(plan.current().name.clone()),
        decision: "proceed",
        notifications: vec![messages::advanced(plan, &from, by, &rationale, readings)],
        rationale,
        decided_by: by.to_owned(),
        metrics: json!(readings),
    })
}

fn complete(plan: &mut Plan, by: &str, rationale: String, readings: &[Reading]) -> Step {
    plan.status = Status::Completed;
    Step {
        action: "complete",
        audit_action: "plan.complete",
        from_stage: Some(plan.current().name.clone()),
        to_stage: None,
        decision: "proceed",
        notifications: vec![messages::completed(plan, by, &rationale, readings)],
        rationale,
        decided_by: by.to_owned(),
        metrics: json!(readings),
    }
}

fn hold(plan: &mut Plan, by: &str, rationale: String) -> Step {
    plan.status = Status::Held;
    let stage = Some(plan.current().name.clone());
    Step {
        action: "hold",
        audit_action: "plan.hold",
        from_stage: stage.clone(),
        to_stage: stage,
        decision: "hold",
        notifications: vec![messages::held(plan, by, &rationale)],
        rationale,
        decided_by: by.to_owned(),
        metrics: json!([]),
    }
}

fn rollback(
    plan: &mut Plan,
    flag_state: &mut FlagState,
    now: &str,
    to: RollbackTo,
    by: &str,
    rationale: String,
) -> Result<Step, StoreError> {
    let from = Some(plan.current().name.clone());
    let (action, to_stage, killed) = match to {
        RollbackTo::Kill => {
            flag_state.enabled = false;
            plan.status = Status::RolledBack;
            ("flag.kill", None, true)
        }
        RollbackTo::Previous => {
            if plan.stage == 0 {
                return Err(StoreError::Refused(format!(
                    "plan {} is at its first stage; roll back `to: kill`",
                    plan.id
                )));
            }
            plan.stage -= 1;
            plan.stage_started_at = now.to_owned();
            plan.approvals.clear();
            // Stays there until someone resumes: the issue that caused it needs a look first.
            plan.status = Status::Held;
            plan.apply(flag_state);
            ("plan.rollback", Some(plan.current().name.clone()), false)
        }
    };
    Ok(Step {
        action: "rollback",
        audit_action: action,
        from_stage: from,
        to_stage,
        decision: "rollback",
        notifications: vec![messages::rolled_back(plan, killed, by, &rationale)],
        rationale,
        decided_by: by.to_owned(),
        metrics: json!([]),
    })
}

/// After a manual kill of a flag: a running plan for it is held, so it does not advance a
/// killed flag. Failures are logged; the kill itself has already committed.
pub async fn hold_after_kill(
    state: &AppState,
    environment: &str,
    flag: &str,
    by: &str,
    reason: &str,
) {
    let filter = PlanFilter {
        flag: Some(flag.to_owned()),
        environment: Some(environment.to_owned()),
        active: true,
    };
    let plans = match state.store.plans(filter).await {
        Ok(plans) => plans,
        Err(error) => return tracing::error!(%error, flag, "could not look for a plan to hold"),
    };
    for plan in plans.into_iter().filter(|plan| plan.status == Status::Running) {
        let (by, rationale) = (by.to_owned(), format!("the flag was killed: {reason}"));
        let change: PlanChange = Box::new(move |plan, _, _, _| {
            Ok((plan.status == Status::Running).then(|| hold(plan, &by, rationale)))
        });
        match state.store.change_plan(plan.id, change).await {
            Ok(Some(changed)) => committed(state, &changed),
            Ok(None) => {}
            Err(error) => tracing::error!(%error, plan = plan.id, "could not hold the plan"),
        }
    }
}

/// The current stage's guardrails, then its leading metrics, read now over what was reported
/// since the stage began.
pub async fn read(state: &AppState, plan: &Plan) -> Result<Vec<Reading>, StoreError> {
    let stage = plan.current();
    let criteria: Vec<_> = stage.guardrails.iter().chain(&stage.leading).collect();
    let Some(widest) = criteria.iter().map(|c| c.window_minutes()).max() else {
        return Ok(Vec::new());
    };
    let stage_began = plan.stage_began()?.timestamp().div_euclid(60);
    let since = (state.clock.minute() - widest).max(stage_began - 1);
    let mut counts: Counts =
        state.store.metric_counts(&plan.environment, &plan.flag, since).await?;
    counts.first_minute = stage_began;
    Ok(criteria.iter().map(|c| c.read(&counts, &plan.variant, &plan.control)).collect())
}

/// One pass over every active plan: roll back on a breached guardrail; advance or complete a
/// running plan whose hold has passed and whose criteria all pass. Returns how many plans
/// changed.
pub async fn tick(state: &AppState) -> Result<usize, StoreError> {
    let plans = state.store.plans(PlanFilter { active: true, ..PlanFilter::default() }).await?;
    let mut changed = 0;
    for plan in plans {
        match tick_plan(state, &plan).await {
            Ok(Some(change)) => {
                committed(state, &change);
                changed += 1;
            }
            Ok(None) => {}
            // One plan's trouble (say, its flag was archived) does not stop the others.
            Err(error) => {
                tracing::error!(%error, plan = plan.id, "scheduler could not run the plan")
            }
        }
    }
    Ok(changed)
}

async fn tick_plan(state: &AppState, plan: &Plan) -> Result<Option<PlanChanged>, StoreError> {
    let readings = read(state, plan).await?;
    let guardrails = &readings[..plan.current().guardrails.len()];
    let breach =
        guardrails.iter().find(|reading| reading.verdict == Verdict::Fail).map(|reading| {
            format!("{} ({})", reading.criterion, reading.detail.as_deref().unwrap_or("failed"))
        });
    let expected = (plan.stage, plan.status);
    let unchanged = move |plan: &Plan| (plan.stage, plan.status) == expected;
    if let Some(breach) = breach {
        let change: PlanChange = Box::new(move |plan, _, flag_state, _| {
            if !unchanged(plan) {
                return Ok(None);
            }
            let issue = format!("guardrail breached at stage `{}`: {breach}", plan.current().name);
            flag_state.enabled = false;
            plan.status = Status::RolledBack;
            Ok(Some(Step {
                action: "rollback",
                audit_action: "flag.kill",
                from_stage: Some(plan.current().name.clone()),
                to_stage: None,
                decision: "rollback",
                notifications: vec![
                    messages::issue_detected(plan, &issue, &readings),
                    messages::rolled_back(plan, true, GUARDRAIL, &issue),
                ],
                rationale: issue,
                decided_by: GUARDRAIL.into(),
                metrics: json!(readings),
            }))
        });
        return state.store.change_plan(plan.id, change).await;
    }
    let healthy = readings.iter().all(|reading| reading.verdict == Verdict::Pass);
    if plan.status != Status::Running || !plan.auto_advance || !healthy {
        return Ok(None);
    }
    if state.clock.now() < plan.hold_until()? {
        return Ok(None);
    }
    let change: PlanChange = Box::new(move |plan, _, flag_state, now| {
        // A killed flag stays killed until someone resumes the plan.
        if !unchanged(plan) || !flag_state.enabled {
            return Ok(None);
        }
        let rationale = format!(
            "held {} at `{}` and healthy: {}",
            messages::duration(plan.current().hold_seconds),
            plan.current().name,
            messages::metric_summary(&readings)
        );
        if plan.is_last_stage() {
            return Ok(Some(complete(plan, SCHEDULE, rationale, &readings)));
        }
        let next = &plan.stages[plan.stage + 1];
        if plan.approvals.len() < next.advance.approvals as usize {
            return Ok(None);
        }
        advance(plan, flag_state, now, SCHEDULE, rationale, &readings, false).map(Some)
    });
    state.store.change_plan(plan.id, change).await
}

/// Runs `tick` every `every`, and at once when metrics arrive; prunes metric counts older than
/// the longest window hourly.
pub fn spawn_scheduler(state: AppState, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pruned_at: Option<tokio::time::Instant> = None;
        loop {
            if let Err(error) = tick(&state).await {
                tracing::error!(%error, "scheduler tick failed");
            }
            if pruned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                let horizon = state.clock.minute() - (super::MAX_SECONDS / 60) as i64;
                if let Err(error) = state.store.prune_metrics(horizon).await {
                    tracing::error!(%error, "pruning metric counts failed");
                }
                pruned_at = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = state.wake_scheduler.notified() => {}
            }
        }
    })
}

/// After a plan change commits: serve its snapshot and send its notifications.
fn committed(state: &AppState, changed: &PlanChanged) {
    if let Some(published) = &changed.published {
        state.publisher.publish(published.clone());
    }
    if changed.notified {
        state.wake_deliveries.notify_one();
    }
    tracing::info!(
        plan = changed.plan.id,
        flag = %changed.plan.flag,
        environment = %changed.plan.environment,
        action = %changed.decision.action,
        decided_by = %changed.decision.decided_by,
        "plan decision"
    );
}

fn required(rationale: &str) -> Result<String, ApiError> {
    crate::api::required_text("rationale", rationale)
}
