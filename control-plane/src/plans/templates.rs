//! The built-in plans, from our release process: the four-stage release (internal dogfooding,
//! alpha, beta, GA) and the canary timeline (5%, assessed after 1 h, 25% after 1 day, 100%
//! after 3 days).

use serde::{Deserialize, Serialize};

use crate::model::Refusal;
use crate::model::criteria::Criterion;
use crate::model::percent::Percent;
use crate::model::plan::{Advancers, Stage};

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// What a template needs from the caller; every field has a default except the four-stage
/// template's segments.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateParameters {
    /// Guardrails for every stage; default: the sequential test that `errors` per `requests`
    /// rise by at most half a percentage point over the control's, at 95%, once 1,000 requests
    /// of each are in. Sequential criteria are left out of stages at 100%, where no one is left
    /// on the control to compare with.
    pub guardrails: Option<Vec<Criterion>>,
    /// Leading metrics every stage must meet to advance on schedule.
    #[serde(default)]
    pub leading: Vec<Criterion>,
    /// Four-stage: the segment of staff who dogfood the feature.
    pub internal_segment: Option<String>,
    /// Four-stage: the segment of friendly customers.
    pub alpha_segment: Option<String>,
    /// Four-stage: beta exposure, a percentage from 10 to 25 (default 10).
    #[schema(value_type = Option<f64>, minimum = 10, maximum = 25)]
    pub beta_percent: Option<Percent>,
    /// Four-stage: approvals needed to enter GA (default 2).
    pub ga_approvals: Option<u32>,
}

/// A template as `GET /api/v1/plan-templates` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Template {
    pub name: &'static str,
    pub description: &'static str,
    /// Whether plans from it advance on their own by default.
    pub auto_advance: bool,
    /// The stages with default parameters (the four-stage template's segments shown as
    /// `internal` and `alpha`).
    pub stages: Vec<Stage>,
}

pub const CANARY: &str = "canary";
pub const FOUR_STAGE: &str = "four-stage";

/// Every built-in template, with default parameters.
pub fn all() -> Vec<Template> {
    let four_stage_defaults = TemplateParameters {
        internal_segment: Some("internal".into()),
        alpha_segment: Some("alpha".into()),
        ..TemplateParameters::default()
    };
    [CANARY, FOUR_STAGE]
        .into_iter()
        .map(|name| {
            let (description, auto_advance) = describe(name).expect("built in");
            let parameters = if name == FOUR_STAGE {
                &four_stage_defaults
            } else {
                &TemplateParameters::default()
            };
            let stages = expand(name, parameters).expect("defaults are valid");
            Template { name, description, auto_advance, stages }
        })
        .collect()
}

fn describe(name: &str) -> Option<(&'static str, bool)> {
    match name {
        CANARY => Some((
            "5% now, assessed after 1 hour, 25% after 1 day, 100% after 3 days; each step only when healthy",
            true,
        )),
        FOUR_STAGE => Some((
            "internal dogfooding (a segment, 2 days), alpha (a segment, 1 week), beta at 10 to 25% (1 week), GA at 100% with two approvals",
            false,
        )),
        _ => None,
    }
}

/// Whether plans from template `name` advance on their own unless the request says otherwise.
pub fn auto_advance(name: &str) -> bool {
    describe(name).is_some_and(|(_, auto)| auto)
}

/// The stages of template `name` with `parameters` filled in.
pub fn expand(name: &str, parameters: &TemplateParameters) -> Result<Vec<Stage>, Refusal> {
    let guardrails = parameters.guardrails.clone().unwrap_or_else(default_guardrails);
    let stage = |name: &str, segments: Vec<String>, thousandths: u32, hold_seconds: u64| {
        let percent = Percent::from_thousandths(thousandths).expect("at most 100%");
        // At 100% no one is left on the control for a sequential criterion to compare with.
        let comparable = |criteria: &[Criterion]| -> Vec<Criterion> {
            let keep = |c: &&Criterion| percent != Percent::ALL || !c.is_sequential();
            criteria.iter().filter(keep).cloned().collect()
        };
        Stage {
            name: name.into(),
            segments,
            percent,
            hold_seconds,
            guardrails: comparable(&guardrails),
            leading: comparable(&parameters.leading),
            advance: Advancers::default(),
        }
    };
    match name {
        CANARY => {
            refuse_four_stage_parameters(parameters)?;
            Ok(vec![
                stage("canary", vec![], 5_000, HOUR),
                stage("assessed", vec![], 5_000, DAY - HOUR),
                stage("expanded", vec![], 25_000, 2 * DAY),
                stage("ga", vec![], 100_000, 0),
            ])
        }
        FOUR_STAGE => {
            let segment = |field: &str, value: &Option<String>| {
                value.clone().ok_or_else(|| {
                    Refusal::Unprocessable(format!("the four-stage template needs `{field}`"))
                })
            };
            let internal = segment("internal_segment", &parameters.internal_segment)?;
            let alpha = segment("alpha_segment", &parameters.alpha_segment)?;
            let beta = parameters.beta_percent.map_or(10_000, Percent::thousandths);
            if !(10_000..=25_000).contains(&beta) {
                return Err(Refusal::Unprocessable(format!(
                    "`beta_percent` is 10 to 25 (percent); got {}",
                    parameters.beta_percent.unwrap_or_default()
                )));
            }
            let mut ga = stage("ga", vec![], 100_000, 0);
            ga.advance.approvals = parameters.ga_approvals.unwrap_or(2);
            Ok(vec![
                stage("internal", vec![internal], 0, 2 * DAY),
                stage("alpha", vec![alpha], 0, 7 * DAY),
                stage("beta", vec![], beta, 7 * DAY),
                ga,
            ])
        }
        other => Err(Refusal::Unprocessable(format!(
            "no template `{other}`; the templates are `{CANARY}` and `{FOUR_STAGE}`"
        ))),
    }
}

fn refuse_four_stage_parameters(parameters: &TemplateParameters) -> Result<(), Refusal> {
    let four_stage_only = [
        ("internal_segment", parameters.internal_segment.is_some()),
        ("alpha_segment", parameters.alpha_segment.is_some()),
        ("beta_percent", parameters.beta_percent.is_some()),
        ("ga_approvals", parameters.ga_approvals.is_some()),
    ];
    match four_stage_only.iter().find(|(_, given)| *given) {
        Some((field, _)) => Err(Refusal::Unprocessable(format!(
            "`{field}` is a parameter of the four-stage template, not the canary"
        ))),
        None => Ok(()),
    }
}

fn default_guardrails() -> Vec<Criterion> {
    vec![Criterion {
        metric: "errors".into(),
        per: "requests".into(),
        max: None,
        min: None,
        max_vs_control: None,
        max_increase: Some(0.005),
        max_relative_increase: None,
        confidence: 0.95,
        min_sample: 1000,
        window_seconds: HOUR,
    }]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_follow_the_product_timelines() {
        let templates = all();
        let canary = &templates[0].stages;
        let timeline: Vec<(u32, u64)> = canary
            .iter()
            .scan(0, |at, stage| {
                let entered = *at;
                *at += stage.hold_seconds;
                Some((stage.percent.thousandths(), entered))
            })
            .collect();
        assert_eq!(timeline, [(5_000, 0), (5_000, HOUR), (25_000, DAY), (100_000, 3 * DAY)]);
        let four_stage = &templates[1].stages;
        let names: Vec<&str> = four_stage.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["internal", "alpha", "beta", "ga"]);
        assert_eq!(
            (four_stage[2].percent.thousandths(), four_stage[3].advance.approvals),
            (10_000, 2)
        );
        assert!(
            expand(
                FOUR_STAGE,
                &TemplateParameters {
                    beta_percent: Percent::from_thousandths(30_000),
                    ..templates_params()
                }
            )
            .is_err()
        );
    }

    fn templates_params() -> TemplateParameters {
        TemplateParameters {
            internal_segment: Some("staff".into()),
            alpha_segment: Some("friends".into()),
            ..TemplateParameters::default()
        }
    }
}
