//! Rollout plans: a flag taken through ordered stages in one environment, each with an
//! audience, a minimum hold, exit criteria and who may advance it. This module holds the plan,
//! its decisions and their rules; `plans` has the transitions between stages, and
//! `service::plans` runs them.

use std::collections::BTreeSet;

use flag_core::wire::{self, Rollout, Serve};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::criteria::Criterion;
use crate::model::flag::{FlagDefinition, FlagState};
use crate::model::percent::Percent;
use crate::model::time::Timestamp;
use crate::model::token::Scope;
use crate::model::{Refusal, check_label};

/// The longest hold a stage may have, and the longest metric window: 90 days.
pub const MAX_SECONDS: u64 = 90 * 24 * 3600;

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub name: String,
    /// Segments whose members get the exposed variant. Audiences nest: a stage also keeps every
    /// earlier stage's segments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// Everyone else's exposure, a percentage (5 is 5%); never lower than an earlier stage's.
    #[serde(default)]
    #[schema(value_type = f64, minimum = 0, maximum = 100)]
    pub percent: Percent,
    /// The least time the plan stays in this stage before it may advance on its own.
    #[serde(default)]
    pub hold_seconds: u64,
    /// Checked all the time: a breach rolls the plan back. All must pass to leave the stage.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<Criterion>,
    /// Must pass to leave the stage on schedule; never roll back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leading: Vec<Criterion>,
    /// Who may move the plan into this stage (ignored for the first, which the plan's start
    /// enters).
    #[serde(default)]
    pub advance: Advancers,
}

/// Who may move a plan into a stage, and how many of them must approve first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Advancers {
    /// The least scope a token needs.
    #[serde(default = "release_scope")]
    pub scope: Scope,
    /// If not empty, only tokens with these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<String>,
    /// Distinct approvals needed, each an `advance` by an allowed token, before the plan moves
    /// in, by hand or on schedule. 0: the scheduler needs none, and one `advance` moves it.
    #[serde(default)]
    pub approvals: u32,
}

fn yes() -> bool {
    true
}

fn release_scope() -> Scope {
    Scope::Release
}

impl Default for Advancers {
    fn default() -> Self {
        Self { scope: Scope::Release, tokens: Vec::new(), approvals: 0 }
    }
}

impl Advancers {
    /// Why the token named `name`, of `scope`, may not advance, if it may not.
    pub fn refuses(&self, name: &str, scope: Scope) -> Option<String> {
        if scope < self.scope {
            return Some(format!("advancing this stage needs a `{}` token", self.scope.as_str()));
        }
        if !self.tokens.is_empty() && !self.tokens.iter().any(|allowed| allowed == name) {
            return Some(format!(
                "only these tokens may advance this stage: {}",
                self.tokens.join(", ")
            ));
        }
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    /// Not advancing on its own; guardrails still roll it back.
    Held,
    RolledBack,
    Completed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Held => "held",
            Self::RolledBack => "rolled_back",
            Self::Completed => "completed",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, Self::Running | Self::Held)
    }
}

/// A plan as stored and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    pub id: i64,
    pub flag: String,
    pub environment: String,
    /// The built-in template it was made from, if any.
    pub template: Option<String>,
    /// The variant the plan rolls out.
    pub variant: String,
    /// What everyone outside the audience gets, and what guardrails compare against.
    pub control: String,
    /// Whether the scheduler advances stages whose hold has passed and whose criteria hold.
    pub auto_advance: bool,
    pub stages: Vec<Stage>,
    pub status: Status,
    /// Index into `stages`.
    pub stage: usize,
    /// When the current stage was entered.
    #[schema(value_type = String)]
    pub stage_started_at: Timestamp,
    /// Tokens that approved leaving the current stage.
    pub approvals: Vec<String>,
    /// The rule the plan put first in the flag's rules for the stage's segments, so the next
    /// stage can replace exactly that rule and leave the others alone.
    pub installed_rule: Option<wire::Rule>,
    /// Whether a mismatch of the rollout's split holds the plan (`model::sample_ratio`).
    #[serde(default = "yes")]
    pub sample_ratio_check: bool,
    /// When someone last resumed the plan: the sample-ratio check counts from then, so a
    /// mismatch that held the plan, once looked into, does not hold it again at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub resumed_at: Option<Timestamp>,
    pub created_by: String,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
}

impl Plan {
    pub fn current(&self) -> &Stage {
        &self.stages[self.stage]
    }

    pub fn is_last_stage(&self) -> bool {
        self.stage + 1 == self.stages.len()
    }

    /// When the current stage's hold ends.
    pub fn hold_until(&self) -> Timestamp {
        self.stage_started_at.plus_seconds(self.current().hold_seconds)
    }

    /// The segments exposed at stage `index`: its own and every earlier stage's.
    pub fn segments_at(&self, index: usize) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut segments = Vec::new();
        for stage in &self.stages[..=index] {
            for segment in &stage.segments {
                if seen.insert(segment.as_str()) {
                    segments.push(segment.clone());
                }
            }
        }
        segments
    }

    /// Serves the current stage's audience in `state`: a first rule for its segments, and a
    /// percent rollout of `variant` against `control` for everyone else. Other rules stay.
    pub fn apply(&mut self, state: &mut FlagState) {
        if let Some(previous) = self.installed_rule.take()
            && let Some(at) = state.rules.iter().position(|rule| *rule == previous)
        {
            state.rules.remove(at);
        }
        let segments = self.segments_at(self.stage);
        if !segments.is_empty() {
            let rule = wire::Rule {
                conditions: Vec::new(),
                segments,
                serve: Serve::Variant(self.variant.clone()),
            };
            state.rules.insert(0, rule.clone());
            self.installed_rule = Some(rule);
        }
        // Who is bucketed, and how, stays: an imported flag keeps its old system's cohorts.
        let (bucket_by, algorithm) = match &state.fallthrough {
            Serve::Rollout(rollout) => (rollout.bucket_by.clone(), rollout.algorithm.clone()),
            Serve::Variant(_) => (None, None),
        };
        let stage = &self.stages[self.stage];
        state.fallthrough = Serve::Rollout(Rollout {
            bucket_by,
            percent: Some(stage.percent.thousandths()),
            inside: Some(self.variant.clone()),
            outside: Some(self.control.clone()),
            weights: None,
            algorithm,
            stage: Some(stage.name.clone()),
        });
    }
}

/// Checks a plan's stages against the flag it rolls out; the error names the field at fault.
pub fn validate(
    stages: &[Stage],
    definition: &FlagDefinition,
    variant: &str,
    control: &str,
    known_segments: &BTreeSet<String>,
) -> Result<(), Refusal> {
    let refuse = |message: String| Err(Refusal::Unprocessable(message));
    for (name, field) in [(variant, "variant"), (control, "control")] {
        if !definition.variants.contains_key(name) {
            return refuse(format!("`{field}`: flag `{}` has no variant `{name}`", definition.key));
        }
    }
    if variant == control {
        return refuse("`variant` and `control` must differ".into());
    }
    if stages.is_empty() {
        return refuse("`stages`: a plan needs at least one stage".into());
    }
    if stages.len() > 20 {
        return refuse("`stages`: at most 20".into());
    }
    let mut names = BTreeSet::new();
    let mut percent = Percent::default();
    for (index, stage) in stages.iter().enumerate() {
        let at = format!("stages[{index}]");
        check_label(&format!("{at}.name"), &stage.name)?;
        if !names.insert(stage.name.as_str()) {
            return refuse(format!("`{at}.name`: `{}` names two stages", stage.name));
        }
        if stage.percent < percent {
            return refuse(format!(
                "`{at}.percent`: {} is below the previous stage's {percent}; audiences only grow",
                stage.percent
            ));
        }
        percent = stage.percent;
        if let Some(unknown) = stage.segments.iter().find(|s| !known_segments.contains(*s)) {
            return refuse(format!("`{at}.segments`: no segment `{unknown}`"));
        }
        if stage.hold_seconds > MAX_SECONDS {
            return refuse(format!("`{at}.hold_seconds`: at most {MAX_SECONDS} (90 days)"));
        }
        if stage.advance.approvals > 10 {
            return refuse(format!("`{at}.advance.approvals` must be 0 to 10"));
        }
        for (list, criteria) in [("guardrails", &stage.guardrails), ("leading", &stage.leading)] {
            for (position, criterion) in criteria.iter().enumerate() {
                criterion.check().map_err(|message| {
                    Refusal::Unprocessable(format!("`{at}.{list}[{position}]{message}"))
                })?;
                if criterion.is_sequential() && stage.percent == Percent::ALL {
                    return refuse(format!(
                        "`{at}.{list}[{position}]` is sequential, comparing `{variant}` with `{control}`, which a stage at 100% serves to no one: give this stage fixed bounds (`max`, `min`) or none"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// One record of the decision log.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Decision {
    pub id: i64,
    #[schema(value_type = String)]
    pub at: Timestamp,
    pub plan: i64,
    pub flag: String,
    pub environment: String,
    /// `start`, `advance`, `approve`, `hold`, `resume`, `rollback`, `kill` or `complete`.
    pub action: String,
    pub from_stage: Option<String>,
    pub to_stage: Option<String>,
    /// `proceed`, `hold` or `rollback`.
    pub decision: String,
    pub rationale: String,
    /// A token's name, or `guardrail` or `schedule`.
    pub decided_by: String,
    /// The criteria readings when it was made.
    pub metrics: Value,
}

/// A decision's stage as the decision log template writes it: `beta→ga` for a move, `beta` for
/// a decision within or out of a stage, empty for none.
pub fn stage_label(from: Option<&str>, to: Option<&str>) -> String {
    match (from, to) {
        (Some(from), Some(to)) if from != to => format!("{from}→{to}"),
        (Some(stage), _) | (None, Some(stage)) => stage.to_owned(),
        (None, None) => String::new(),
    }
}

/// Which decisions to return: empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DecisionQuery {
    pub flag: Option<String>,
    pub environment: Option<String>,
    pub plan: Option<i64>,
    /// Decisions at or after it.
    pub since: Option<Timestamp>,
    /// At most this many, from the oldest matching, or from the newest if `newest_first`.
    pub limit: Option<u32>,
    pub newest_first: bool,
}

/// Which plans to return, newest first: empty fields match everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanQuery {
    pub flag: Option<String>,
    pub environment: Option<String>,
    /// Only running and held plans.
    pub active: bool,
}

/// A plan's transition: what the decision log records, what happens to the flag, and what
/// the webhooks are told.
#[derive(Debug, Clone)]
pub struct Step {
    /// The decision log's `action`: `start`, `advance`, `approve`, `hold`, ...
    pub action: &'static str,
    pub flag: FlagChange,
    pub from_stage: Option<String>,
    pub to_stage: Option<String>,
    /// `proceed`, `hold` or `rollback`.
    pub decision: &'static str,
    pub rationale: String,
    pub decided_by: String,
    pub metrics: Value,
    /// Sent to every webhook of the environment once the change commits.
    pub notifications: Vec<Notification>,
}

/// What a plan's transition does to its flag's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagChange {
    /// The transition edited the state (a stage's audience, `enabled`): audited under this
    /// action if the state differs.
    Edit(&'static str),
    /// Kill the flag, as a manual kill does.
    Kill,
}

/// A webhook payload for one event.
#[derive(Debug, Clone)]
pub struct Notification {
    pub event: &'static str,
    pub payload: Value,
}
