//! Rollout plans' transitions, without IO: starting a plan, and every move between its stages
//! (approve, advance, hold, resume, roll back, complete), by people, the schedule or a
//! guardrail. Each edits the plan and the flag's state and returns the `Step` the decision log
//! records; `service::plans` reads the metrics and stores the result in one transaction.

pub mod messages;
pub mod templates;

use std::collections::BTreeSet;

use flag_core::wire::{self, Serve};
use serde::Deserialize;
use serde_json::json;

use crate::model::Refusal;
use crate::model::criteria::{Reading, Verdict};
use crate::model::flag::{FlagDefinition, FlagState};
use crate::model::percent::Percent;
use crate::model::plan::{FlagChange, Notification, Plan, Stage, Status, Step, validate};
use crate::model::time::Timestamp;
use crate::plans::messages::Mitigation;
use crate::plans::templates::TemplateParameters;

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
    /// Whether a mismatch of the rollout's split holds the plan (default true); off for a flag
    /// whose variant changes how often it is evaluated.
    pub sample_ratio_check: Option<bool>,
    /// The stage to start at, by name; default the first. A plan never lowers exposure, so a
    /// flag already serving the variant more widely than the first stage starts further on.
    pub start_at: Option<String>,
    pub rationale: String,
}

/// A release manager's action on a running plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Advance,
    Hold,
    Resume,
    Rollback(RollbackTo),
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

/// Who makes a transition, and why.
#[derive(Debug, Clone)]
pub struct Author {
    pub by: String,
    pub rationale: String,
}

/// A new plan, given its id: its first stage served at once, and the flag enabled.
pub fn start(
    id: i64,
    request: PlanRequest,
    definition: &FlagDefinition,
    known_segments: &BTreeSet<String>,
    state: &mut FlagState,
    now: Timestamp,
    author: Author,
) -> Result<(Plan, Step), Refusal> {
    let Author { by, rationale } = author;
    let by = by.as_str();
    let stages = match (&request.template, request.stages) {
        (Some(name), None) => templates::expand(name, &request.parameters)?,
        (None, Some(stages)) => stages,
        _ => return Err(Refusal::Unprocessable("give either `template` or `stages`".into())),
    };
    let auto_advance = request
        .auto_advance
        .unwrap_or_else(|| request.template.as_deref().is_none_or(templates::auto_advance));
    let variant = request
        .variant
        .or_else(|| definition.sole_other_variant())
        .ok_or_else(|| Refusal::Unprocessable("name the `variant` to roll out".into()))?;
    let control = request.control.unwrap_or_else(|| definition.off_variant.clone());
    validate(&stages, definition, &variant, &control, known_segments)?;
    let stage = match &request.start_at {
        None => 0,
        Some(name) => stages.iter().position(|stage| stage.name == *name).ok_or_else(|| {
            Refusal::Unprocessable(format!("`start_at`: the plan has no stage `{name}`"))
        })?,
    };
    refuse_lower_exposure(&stages, stage, state, &variant, definition, &request.environment)?;
    refuse_moving_units(state, &variant, definition, &request.environment)?;
    let mut plan = Plan {
        id,
        flag: definition.key.clone(),
        environment: request.environment,
        template: request.template,
        variant,
        control,
        auto_advance,
        stages,
        status: Status::Running,
        stage,
        stage_started_at: now,
        approvals: Vec::new(),
        installed_rule: None,
        sample_ratio_check: request.sample_ratio_check.unwrap_or(true),
        resumed_at: None,
        created_by: by.to_owned(),
        created_at: now,
    };
    plan.apply(state);
    state.enabled = true;
    let step = Step {
        action: "start",
        flag: FlagChange::Edit("plan.start"),
        from_stage: None,
        to_stage: Some(plan.current().name.clone()),
        decision: "proceed",
        notifications: vec![messages::started(&plan, by, &rationale)],
        rationale,
        decided_by: by.to_owned(),
        metrics: json!([]),
    };
    Ok((plan, step))
}

/// How many units `state` serves `variant` to, in thousandths of a percent, outside any rule.
fn exposure(state: &FlagState, variant: &str) -> u32 {
    if !state.enabled {
        return 0;
    }
    match &state.fallthrough {
        Serve::Variant(served) if served == variant => Percent::ALL.thousandths(),
        Serve::Variant(_) => 0,
        Serve::Rollout(rollout) => {
            let all = Percent::ALL.thousandths();
            // Weights alone split everyone; with a percent (under `unleash`), the units inside.
            let inside = rollout.percent.unwrap_or(all);
            let served_inside = match &rollout.weights {
                // Their own total under an imported algorithm, 100000 under rg1.
                Some(weights) => {
                    let total: u64 = weights.iter().map(|w| u64::from(w.weight)).sum();
                    let ours: u64 = weights
                        .iter()
                        .filter(|w| w.variant == variant)
                        .map(|w| u64::from(w.weight))
                        .sum();
                    // Rounded up: a plan must not start below what the flag serves.
                    let share = match total {
                        0 => 0,
                        total => (ours * u64::from(inside)).div_ceil(total),
                    };
                    u32::try_from(share).unwrap_or(all)
                }
                None if rollout.inside.as_deref() == Some(variant) => inside,
                None => 0,
            };
            let served_outside =
                if rollout.outside.as_deref() == Some(variant) { all - inside } else { 0 };
            served_inside + served_outside
        }
    }
}

/// Audiences only grow, from before the plan too: refuses a start at a stage that serves
/// `variant` to fewer units than the flag does today, naming the stage to start at instead.
fn refuse_lower_exposure(
    stages: &[Stage],
    start: usize,
    state: &FlagState,
    variant: &str,
    definition: &FlagDefinition,
    environment: &str,
) -> Result<(), Refusal> {
    let today = exposure(state, variant);
    let first = &stages[start];
    if first.percent.thousandths() >= today {
        return Ok(());
    }
    let today = Percent::from_thousandths(today).unwrap_or(Percent::ALL);
    let instead = match stages.iter().find(|stage| stage.percent >= today) {
        Some(stage) => format!(
            "start at stage `{}` ({}) with `start_at` (`--start-at` in the CLI), or lower the \
             rollout by hand first",
            stage.name, stage.percent
        ),
        None => "no stage of this plan reaches that; lower the rollout by hand first".into(),
    };
    Err(Refusal::Blocked(format!(
        "`{}` already serves `{variant}` to {today} in `{environment}`, and stage `{}` serves \
         {}: starting there would take the feature away from users who have it. A plan never \
         lowers exposure: {instead}",
        definition.key, first.name, first.percent
    )))
}

/// A plan serves `variant` to the lowest buckets: refuses to start on a flag whose rollout
/// serves it to others (outside its percentage, after another variant in its split, or split
/// by Unleash's variant hash), since the plan's first stage would move those users.
fn refuse_moving_units(
    state: &FlagState,
    variant: &str,
    definition: &FlagDefinition,
    environment: &str,
) -> Result<(), Refusal> {
    let Serve::Rollout(rollout) = &state.fallthrough else {
        return Ok(());
    };
    let today = exposure(state, variant);
    if today == 0 || today >= Percent::ALL.thousandths() {
        return Ok(());
    }
    let ours = |w: &&wire::Weight| w.variant == variant;
    let lowest = match (&rollout.weights, rollout.percent) {
        (None, _) => rollout.inside.as_deref() == Some(variant),
        // Unleash splits the units inside its percentage by another hash.
        (Some(weights), Some(_)) => weights.iter().all(|w| w.variant == variant),
        (Some(_), None) if matches!(rollout.algorithm, Some(wire::Algorithm::Unleash { .. })) => {
            false
        }
        (Some(weights), None) => {
            let first: u32 = weights.iter().take_while(ours).map(|w| w.weight).sum();
            first == weights.iter().filter(ours).map(|w| w.weight).sum::<u32>()
        }
    };
    if lowest {
        return Ok(());
    }
    Err(Refusal::Blocked(format!(
        "`{}` serves `{variant}` in `{environment}` to other units than a plan's rollout starts          from (outside its percentage, or after another variant in its split): the plan would          move them. Set the rollout by hand so `{variant}` comes first, knowing that moves them,          then start the plan",
        definition.key
    )))
}

/// A release manager's `action` on `plan`, which they saw at stage `seen_stage`.
pub fn act(
    plan: &mut Plan,
    state: &mut FlagState,
    seen_stage: usize,
    action: Action,
    now: Timestamp,
    author: Author,
    readings: &[Reading],
) -> Result<Step, Refusal> {
    let Author { by, rationale } = author;
    let by = by.as_str();
    if plan.stage != seen_stage {
        return Err(Refusal::Stale(format!(
            "plan {} moved to stage `{}` meanwhile; look again",
            plan.id,
            plan.current().name
        )));
    }
    if !plan.status.is_active() {
        return Err(Refusal::Unprocessable(format!(
            "plan {} is {}; start a new plan",
            plan.id,
            plan.status.as_str()
        )));
    }
    match action {
        Action::Advance => advance(plan, state, now, by, rationale, readings, true),
        Action::Complete => {
            if !plan.is_last_stage() {
                return Err(Refusal::Unprocessable(format!(
                    "plan {} is at stage `{}`; only the last stage completes",
                    plan.id,
                    plan.current().name
                )));
            }
            Ok(complete(plan, by, rationale, readings))
        }
        Action::Hold => {
            if plan.status == Status::Held {
                return Err(Refusal::Unprocessable(format!("plan {} is already held", plan.id)));
            }
            Ok(hold(plan, by, rationale))
        }
        Action::Resume => {
            if plan.status != Status::Held {
                return Err(Refusal::Unprocessable(format!("plan {} is not held", plan.id)));
            }
            plan.status = Status::Running;
            plan.resumed_at = Some(now);
            plan.apply(state);
            state.enabled = true;
            let stage = Some(plan.current().name.clone());
            Ok(Step {
                action: "resume",
                flag: FlagChange::Edit("plan.resume"),
                from_stage: stage.clone(),
                to_stage: stage,
                decision: "proceed",
                rationale,
                decided_by: by.to_owned(),
                metrics: json!(readings),
                notifications: Vec::new(),
            })
        }
        Action::Rollback(to) => rollback(plan, state, now, to, by, rationale),
    }
}

/// What the schedule is due to do with a plan, given its readings now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// A guardrail failed, as described.
    Rollback(String),
    /// The running plan's sample ratio is off, as described: hold it.
    Hold(String),
    /// The hold has passed, every criterion passes and the approvals are in: advance, or
    /// complete the last stage.
    Advance,
    Nothing,
}

pub fn due(plan: &Plan, now: Timestamp, readings: &[Reading]) -> Due {
    let guardrails = &readings[..plan.current().guardrails.len().min(readings.len())];
    if let Some(breached) = guardrails.iter().find(|reading| reading.verdict == Verdict::Fail) {
        let detail = breached.detail.as_deref().unwrap_or("failed");
        return Due::Rollback(format!("{} ({detail})", breached.criterion));
    }
    if plan.status == Status::Running
        && let Some(mismatch) = readings
            .iter()
            .find(|reading| reading.is_sample_ratio() && reading.verdict == Verdict::Fail)
    {
        return Due::Hold(mismatch.detail.clone().unwrap_or_default());
    }
    // The sample-ratio check holds a plan when it finds a mismatch; too few counts to tell do
    // not stop it, since apps that report few evaluations would otherwise never advance.
    let healthy = readings.iter().all(|reading| {
        reading.verdict == Verdict::Pass
            || (reading.is_sample_ratio() && reading.verdict == Verdict::Insufficient)
    });
    let approved = plan
        .stages
        .get(plan.stage + 1)
        .is_none_or(|next| plan.approvals.len() >= next.advance.approvals as usize);
    if plan.status == Status::Running
        && plan.auto_advance
        && healthy
        && now >= plan.hold_until()
        && approved
    {
        Due::Advance
    } else {
        Due::Nothing
    }
}

/// What the schedule does with a plan: roll back on a breached guardrail; advance or complete
/// a running plan that is `due` to, unless its flag is killed (it stays killed until someone
/// resumes the plan). `None`: nothing yet.
pub fn on_schedule(
    plan: &mut Plan,
    state: &mut FlagState,
    now: Timestamp,
    readings: &[Reading],
) -> Result<Option<Step>, Refusal> {
    match due(plan, now, readings) {
        Due::Rollback(breach) => Ok(Some(guardrail_breached(plan, &breach, readings))),
        Due::Hold(mismatch) => Ok(Some(sample_ratio_mismatched(plan, &mismatch, readings))),
        Due::Advance if state.enabled => {
            let rationale = format!(
                "held {} at `{}` and healthy: {}",
                messages::duration(plan.current().hold_seconds),
                plan.current().name,
                messages::metric_summary(readings)
            );
            if plan.is_last_stage() {
                Ok(Some(complete(plan, SCHEDULE, rationale, readings)))
            } else {
                advance(plan, state, now, SCHEDULE, rationale, readings, false).map(Some)
            }
        }
        Due::Advance | Due::Nothing => Ok(None),
    }
}

/// A manual kill of the flag holds its running plan, so the plan does not advance a killed
/// flag.
pub fn hold_for_kill(plan: &mut Plan, by: &str, reason: &str) -> Option<Step> {
    (plan.status == Status::Running)
        .then(|| hold(plan, by, format!("the flag was killed: {reason}")))
}

/// Moves into the next stage once enough approvals are in; `by_hand` counts the caller's
/// `advance` as one.
fn advance(
    plan: &mut Plan,
    state: &mut FlagState,
    now: Timestamp,
    by: &str,
    rationale: String,
    readings: &[Reading],
    by_hand: bool,
) -> Result<Step, Refusal> {
    if plan.is_last_stage() {
        return Err(Refusal::Unprocessable(format!(
            "plan {} is at its last stage; `complete` it",
            plan.id
        )));
    }
    let from = plan.current().clone();
    let next = &plan.stages[plan.stage + 1];
    let needed = next.advance.approvals.max(u32::from(by_hand)) as usize;
    if by_hand {
        if plan.approvals.iter().any(|name| name == by) {
            return Err(Refusal::Unprocessable(format!(
                "{by} already approved; {} of {needed} approvals",
                plan.approvals.len()
            )));
        }
        plan.approvals.push(by.to_owned());
        if plan.approvals.len() < needed {
            return Ok(Step {
                action: "approve",
                flag: FlagChange::Edit("plan.approve"),
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
    plan.stage_started_at = now;
    plan.approvals.clear();
    plan.apply(state);
    Ok(Step {
        action: "advance",
        flag: FlagChange::Edit("plan.advance"),
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
        flag: FlagChange::Edit("plan.complete"),
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
    let notification = messages::held(plan, by, &rationale);
    held_step(plan, by, rationale, notification, json!([]))
}

/// The decision that records a hold, by a person or the sample-ratio check.
fn held_step(
    plan: &Plan,
    by: &str,
    rationale: String,
    notification: Notification,
    metrics: serde_json::Value,
) -> Step {
    let stage = Some(plan.current().name.clone());
    Step {
        action: "hold",
        flag: FlagChange::Edit("plan.hold"),
        from_stage: stage.clone(),
        to_stage: stage,
        decision: "hold",
        notifications: vec![notification],
        rationale,
        decided_by: by.to_owned(),
        metrics,
    }
}

fn rollback(
    plan: &mut Plan,
    state: &mut FlagState,
    now: Timestamp,
    to: RollbackTo,
    by: &str,
    rationale: String,
) -> Result<Step, Refusal> {
    let from = Some(plan.current().name.clone());
    let (flag, to_stage, killed) = match to {
        RollbackTo::Kill => {
            plan.status = Status::RolledBack;
            (FlagChange::Kill, None, true)
        }
        RollbackTo::Previous => {
            if plan.stage == 0 {
                return Err(Refusal::Unprocessable(format!(
                    "plan {} is at its first stage; roll back `to: kill`",
                    plan.id
                )));
            }
            plan.stage -= 1;
            plan.stage_started_at = now;
            plan.approvals.clear();
            // Stays there until someone resumes: the issue that caused it needs a look first.
            plan.status = Status::Held;
            plan.apply(state);
            (FlagChange::Edit("plan.rollback"), Some(plan.current().name.clone()), false)
        }
    };
    Ok(Step {
        action: "rollback",
        flag,
        from_stage: from,
        to_stage,
        decision: "rollback",
        notifications: vec![messages::rolled_back(plan, killed, by, &rationale)],
        rationale,
        decided_by: by.to_owned(),
        metrics: json!([]),
    })
}

fn guardrail_breached(plan: &mut Plan, breach: &str, readings: &[Reading]) -> Step {
    let issue = format!("guardrail breached at stage `{}`: {breach}", plan.current().name);
    plan.status = Status::RolledBack;
    Step {
        action: "rollback",
        flag: FlagChange::Kill,
        from_stage: Some(plan.current().name.clone()),
        to_stage: None,
        decision: "rollback",
        notifications: vec![
            messages::issue_detected(plan, &issue, Mitigation::Kill, readings),
            messages::rolled_back(plan, true, GUARDRAIL, &issue),
        ],
        rationale: issue,
        decided_by: GUARDRAIL.into(),
        metrics: json!(readings),
    }
}

/// Holds a running plan whose sample ratio is off: its guardrails' comparison cannot be trusted
/// until someone finds why, and resumes it.
fn sample_ratio_mismatched(plan: &mut Plan, mismatch: &str, readings: &[Reading]) -> Step {
    let issue = format!("sample-ratio mismatch at stage `{}`: {mismatch}", plan.current().name);
    plan.status = Status::Held;
    let notification = messages::issue_detected(plan, &issue, Mitigation::Hold, readings);
    held_step(plan, GUARDRAIL, issue, notification, json!(readings))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn state(fallthrough: serde_json::Value) -> FlagState {
        serde_json::from_value(json!({"enabled": true, "fallthrough": fallthrough})).unwrap()
    }

    #[test]
    fn exposure_reads_weights_as_shares_of_their_total() {
        let rg1 = state(json!({"rollout": {"weights": [
            {"variant": "on", "weight": 25000}, {"variant": "off", "weight": 75000}]}}));
        assert_eq!(exposure(&rg1, "on"), 25_000);
        // flagd's weights 1 and 3: a quarter, not one thousandth of a percent.
        let flagd = state(json!({"rollout": {"algorithm": {"name": "flagd", "prefix": "f"},
            "weights": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 3}]}}));
        assert_eq!((exposure(&flagd, "on"), exposure(&flagd, "off")), (25_000, 75_000));
        // Unleash's 40% split by its variants' weights; the rest off.
        let unleash = state(json!({"rollout": {
            "algorithm": {"name": "unleash", "group_id": "g", "stickiness": ["targetingKey"]},
            "percent": 40000, "outside": "off",
            "weights": [{"variant": "a", "weight": 500}, {"variant": "b", "weight": 500}]}}));
        assert_eq!((exposure(&unleash, "a"), exposure(&unleash, "off")), (20_000, 60_000));
        let percent =
            state(json!({"rollout": {"percent": 5000, "inside": "on", "outside": "off"}}));
        assert_eq!((exposure(&percent, "on"), exposure(&percent, "off")), (5_000, 95_000));
        // A third of the units: rounded up, so no plan starts below it.
        let thirds = state(json!({"rollout": {"algorithm": {"name": "flagd", "prefix": "f"},
            "weights": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 2}]}}));
        assert_eq!(exposure(&thirds, "on"), 33_334);
    }

    #[test]
    fn a_plan_does_not_start_where_it_would_move_units() {
        let definition: FlagDefinition =
            serde_json::from_value(json!({"key": "f", "type": "boolean",
            "variants": {"on": true, "off": false}, "off_variant": "off"}))
            .unwrap();
        let refused = |fallthrough| {
            refuse_moving_units(&state(fallthrough), "on", &definition, "production").is_err()
        };
        let flagd = |first: &str, second: &str| {
            json!({"rollout": {"algorithm": {"name": "flagd", "prefix": "f"},
            "weights": [{"variant": first, "weight": 3}, {"variant": second, "weight": 1}]}})
        };
        // `on` in the top quarter of the hash: a plan's 25% would be the bottom quarter.
        assert!(refused(flagd("off", "on")));
        assert!(!refused(flagd("on", "off")));
        assert!(refused(json!({"rollout": {"percent": 75000, "inside": "off", "outside": "on"}})));
        assert!(!refused(json!({"rollout": {"percent": 25000, "inside": "on", "outside": "off"}})));
        let unleash = json!({"rollout": {"algorithm": {"name": "unleash", "group_id": "g", "stickiness": ["targetingKey"]},
            "weights": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}]}});
        assert!(refused(unleash));
        assert!(!refused(json!({"variant": "off"})));
        assert!(!refused(json!({"rollout": {"percent": 0, "inside": "off", "outside": "on"}})));
    }
}
