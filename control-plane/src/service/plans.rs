//! Runs rollout plans: starts them, applies release managers' actions, and the scheduler that
//! advances healthy stages on time and rolls back breached ones. Every transition is one
//! transaction: the plan, the flag's state with its audit record, the decision, and the
//! notifications in the outbox.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::model::Refusal;
use crate::model::audit::AuditEntry;
use crate::model::criteria::{Counts, Reading};
use crate::model::flag::FlagState;
use crate::model::plan::{Decision, DecisionQuery, FlagChange, Plan, PlanQuery, Step};
use crate::model::sample_ratio;
use crate::model::time::Timestamp;
use crate::model::token::Token;
use crate::plans::{self, Action, Author, Due, PlanRequest};
use crate::service::flags::{FlagInEnvironment, kill_in};
use crate::service::{Effects, Error, Service};
use crate::store::Tx;

/// A plan after a transition, and the decision that recorded it.
#[derive(Debug, Clone)]
pub struct PlanChanged {
    pub plan: Plan,
    pub decision: Decision,
}

/// Plans matching `query`, newest first.
pub async fn list(service: &Service, query: PlanQuery) -> Result<Vec<Plan>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.plans(&query).await?) })).await
}

pub async fn get(service: &Service, id: i64) -> Result<Plan, Error> {
    service.read(move |tx| Box::pin(async move { load(tx, id).await })).await
}

/// Decision log records matching `query`, oldest first.
pub async fn decisions(service: &Service, query: DecisionQuery) -> Result<Vec<Decision>, Error> {
    service.read(|tx| Box::pin(async move { Ok(tx.decisions(&query).await?) })).await
}

/// Starts a plan: its first stage is served at once, and the flag is enabled.
pub async fn start(
    service: &Service,
    request: PlanRequest,
    caller: &Token,
    rationale: String,
) -> Result<PlanChanged, Error> {
    if !caller.reaches(&request.environment) {
        return Err(other_environment(&request.environment));
    }
    let by = caller.name.clone();
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let mut target =
                    FlagInEnvironment::load(tx, &request.environment, &request.flag, None).await?;
                let Some(id) = tx.insert_plan(&request.flag, &request.environment, now).await?
                else {
                    let active = PlanQuery {
                        flag: Some(request.flag.clone()),
                        environment: Some(request.environment.clone()),
                        active: true,
                    };
                    let which = match tx.plans(&active).await?.first() {
                        Some(plan) => format!(
                            ": plan {} ({}, at stage `{}`). Complete or roll it back first",
                            plan.id,
                            plan.status.as_str(),
                            plan.current().name
                        ),
                        None => String::new(),
                    };
                    return Err(Refusal::Blocked(format!(
                        "flag `{}` has an active plan in `{}`{which}",
                        request.flag, request.environment
                    ))
                    .into());
                };
                let segments: BTreeSet<String> =
                    tx.segments().await?.into_iter().map(|record| record.segment.key).collect();
                let mut state = target.state.clone();
                let author = Author { by, rationale };
                let (plan, step) = plans::start(
                    id,
                    request,
                    &target.definition,
                    &segments,
                    &mut state,
                    now,
                    author,
                )?;
                commit_step(tx, now, effects, plan, &mut target, state, step).await
            })
        })
        .await
}

/// A release manager's action on plan `id`.
pub async fn act(
    service: &Service,
    id: i64,
    action: Action,
    caller: &Token,
    rationale: String,
) -> Result<PlanChanged, Error> {
    let plan = get(service, id).await?;
    if !caller.reaches(&plan.environment) {
        return Err(other_environment(&plan.environment));
    }
    if action == Action::Advance
        && let Some(next) = plan.stages.get(plan.stage + 1)
        && let Some(refusal) = next.advance.refuses(&caller.name, caller.scope)
    {
        return Err(Refusal::Forbidden(refusal).into());
    }
    let readings = read(service, &plan).await?;
    let (seen_stage, by) = (plan.stage, caller.name.clone());
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let mut plan = load(tx, id).await?;
                let mut target =
                    FlagInEnvironment::load(tx, &plan.environment, &plan.flag, None).await?;
                let mut state = target.state.clone();
                let author = Author { by, rationale };
                let step =
                    plans::act(&mut plan, &mut state, seen_stage, action, now, author, &readings)?;
                commit_step(tx, now, effects, plan, &mut target, state, step).await
            })
        })
        .await
}

/// The current stage's guardrails, then its leading metrics, read now over what was reported
/// since the stage began, then the sample-ratio check where the stage splits its traffic and
/// rollout evaluations were reported.
pub async fn read(service: &Service, plan: &Plan) -> Result<Vec<Reading>, Error> {
    let minute = service.clock.timestamp().minute();
    let counts = counts(service, plan, minute).await?;
    Ok(readings(plan, &counts))
}

/// The most points `history` gives: enough for a chart. Each costs a few binary searches in the
/// stage's running totals (`Counts`), however long the stage.
pub const MAX_HISTORY_POINTS: i64 = 180;

/// The current stage's readings as they were over time, from the stage's start until now (or,
/// for a plan that ended, its last decision), at most `MAX_HISTORY_POINTS` evenly spaced
/// minutes, the last one being the end.
pub async fn history(service: &Service, plan: &Plan) -> Result<Vec<ReadingsAt>, Error> {
    let until = if plan.status.is_active() {
        service.clock.timestamp()
    } else {
        let last = DecisionQuery {
            plan: Some(plan.id),
            limit: Some(1),
            newest_first: true,
            ..DecisionQuery::default()
        };
        decisions(service, last).await?.first().map_or(plan.stage_started_at, |d| d.at)
    };
    let (first, last) = (plan.stage_started_at.minute(), until.minute());
    let mut counts = counts(service, plan, last).await?;
    let step = ((last - first) / MAX_HISTORY_POINTS + 1).max(1);
    let mut minutes: Vec<i64> =
        (0..).map(|n| last - n * step).take_while(|m| *m >= first).collect();
    minutes.reverse();
    Ok(minutes
        .into_iter()
        .map(|minute| {
            counts.minute = minute;
            ReadingsAt { at: Timestamp::from_minute(minute), readings: readings(plan, &counts) }
        })
        .collect())
}

/// A plan's readings as of one minute.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReadingsAt {
    /// The start of the minute.
    #[schema(value_type = String)]
    pub at: Timestamp,
    pub readings: Vec<Reading>,
}

/// The counts of `plan`'s flag over the current stage, up to `minute`: sequential criteria and
/// the sample-ratio check read all of them, and a history every window's.
async fn counts(service: &Service, plan: &Plan, minute: i64) -> Result<Counts, Error> {
    let stage_began = plan.stage_started_at.minute();
    let since = stage_began - 1;
    let (environment, flag) = (plan.environment.clone(), plan.flag.clone());
    let rows = service
        .read(move |tx| {
            Box::pin(async move { Ok(tx.metric_counts(&environment, &flag, since, minute).await?) })
        })
        .await?;
    Ok(Counts::from_rows(minute, stage_began, rows))
}

/// The current stage's criteria and sample-ratio check, read from `counts`.
fn readings(plan: &Plan, counts: &Counts) -> Vec<Reading> {
    let stage = plan.current();
    let (variant, control) = (&plan.variant, &plan.control);
    let mut readings: Vec<Reading> = stage
        .guardrails
        .iter()
        .chain(&stage.leading)
        .map(|c| c.read(counts, variant, control))
        .collect();
    if plan.sample_ratio_check {
        // From the stage's start, or the last resume before `counts.minute` (a history shows
        // the mismatch that held the plan, and the check afresh after it).
        let stage_began = plan.stage_started_at.minute();
        let resumed = plan.resumed_at.map(|at| at.minute()).filter(|at| *at <= counts.minute);
        let checked_from = resumed.map_or(stage_began, |at| at.max(stage_began));
        let since = checked_from + sample_ratio::SETTLING_MINUTES;
        let split = stage.percent.thousandths();
        readings.extend(sample_ratio::read(counts, variant, control, split, since));
    }
    readings
}

/// One pass over every active plan: roll back on a breached guardrail; advance or complete a
/// running plan whose hold has passed and whose criteria all pass. Returns how many plans
/// changed.
pub async fn tick(service: &Service) -> Result<usize, Error> {
    let plans = list(service, PlanQuery { active: true, ..PlanQuery::default() }).await?;
    let mut changed = 0;
    for plan in plans {
        match tick_plan(service, plan.clone()).await {
            Ok(Some(change)) => {
                log(&change);
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

async fn tick_plan(service: &Service, plan: Plan) -> Result<Option<PlanChanged>, Error> {
    let readings = read(service, &plan).await?;
    // Decide on what was read; then decide again inside the transaction, on the plan and the
    // flag as they are by then, so a person's action in between is never undone.
    if plans::due(&plan, service.clock.timestamp(), &readings) == Due::Nothing {
        return Ok(None);
    }
    // A resume in between restarts the sample-ratio check: these readings are stale then too.
    let expected = (plan.stage, plan.status, plan.resumed_at);
    service
        .change(move |tx, now, effects| {
            Box::pin(async move {
                let mut plan = load(tx, plan.id).await?;
                if (plan.stage, plan.status, plan.resumed_at) != expected {
                    return Ok(None);
                }
                let mut target =
                    FlagInEnvironment::load(tx, &plan.environment, &plan.flag, None).await?;
                let mut state = target.state.clone();
                match plans::on_schedule(&mut plan, &mut state, now, &readings)? {
                    Some(step) => commit_step(tx, now, effects, plan, &mut target, state, step)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            })
        })
        .await
}

/// Runs `tick` every `every`, and at once when metrics arrive; prunes metric counts older than
/// the longest window hourly.
pub fn spawn_scheduler(service: Service, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pruned_at: Option<tokio::time::Instant> = None;
        loop {
            // One scheduler decides, in the leading process.
            if !service.leads() {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = service.scheduler.notified() => {}
                }
                continue;
            }
            if let Err(error) = tick(&service).await {
                tracing::error!(%error, "scheduler tick failed");
            }
            if pruned_at.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                if let Err(error) = crate::service::metrics::prune(&service).await {
                    tracing::error!(%error, "pruning metric counts failed");
                }
                pruned_at = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = service.scheduler.notified() => {}
            }
        }
    })
}

/// Stores a plan's transition: the flag's state (a kill goes through `kill_in`, as a person's
/// does), the plan, the decision, and a notification per webhook of the environment.
pub(crate) async fn commit_step(
    tx: &mut dyn Tx,
    now: Timestamp,
    effects: &mut Effects,
    plan: Plan,
    target: &mut FlagInEnvironment,
    state: FlagState,
    step: Step,
) -> Result<PlanChanged, Error> {
    match step.flag {
        FlagChange::Kill if target.state.enabled => {
            kill_in(tx, now, effects, target, &step.decided_by, &step.rationale).await?;
        }
        FlagChange::Edit(action) if state != target.state => {
            let entry = AuditEntry {
                reason: Some(step.rationale.clone()),
                ..AuditEntry::new(&step.decided_by, action)
            };
            target.save(tx, now, effects, state, entry).await?;
        }
        _ => {}
    }
    tx.save_plan(&plan, now).await?;
    let mut decision = Decision {
        id: 0,
        at: now,
        plan: plan.id,
        flag: plan.flag.clone(),
        environment: plan.environment.clone(),
        action: step.action.to_owned(),
        from_stage: step.from_stage,
        to_stage: step.to_stage,
        decision: step.decision.to_owned(),
        rationale: step.rationale,
        decided_by: step.decided_by,
        metrics: step.metrics,
    };
    decision.id = tx.insert_decision(&decision).await?;
    let webhooks: Vec<_> = tx
        .webhooks()
        .await?
        .into_iter()
        .filter(|webhook| webhook.environment == plan.environment)
        .collect();
    for notification in &step.notifications {
        let payload = notification.payload.to_string();
        for webhook in &webhooks {
            tx.insert_delivery(&webhook.name, &webhook.url, notification.event, &payload, now)
                .await?;
            effects.notified = true;
        }
    }
    Ok(PlanChanged { plan, decision })
}

async fn load(tx: &mut dyn Tx, id: i64) -> Result<Plan, Error> {
    Ok(tx.plan(id).await?.ok_or_else(|| Refusal::NotFound(format!("plan {id}")))?)
}

fn other_environment(environment: &str) -> Error {
    Refusal::Forbidden(format!("this token is bound to another environment than `{environment}`"))
        .into()
}

fn log(changed: &PlanChanged) {
    tracing::info!(
        plan = changed.plan.id,
        flag = %changed.plan.flag,
        environment = %changed.plan.environment,
        action = %changed.decision.action,
        decided_by = %changed.decision.decided_by,
        "plan decision"
    );
}
