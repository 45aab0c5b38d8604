//! Guardrails and leading metrics: a rate of two reported counters (e.g. `errors` per
//! `requests`) for the exposed variant over a sliding window, against an absolute bound or
//! against the control variant's rate.

use serde::{Deserialize, Serialize};

use crate::model::metrics::{CountRow, valid_metric_name};
use crate::model::plan::MAX_SECONDS;

/// A bound on `metric / per` for the plan's variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Criterion {
    /// The counter on top, e.g. `errors`.
    pub metric: String,
    /// The counter below, e.g. `requests` (the default) or `evaluations` (what edges report).
    #[serde(default = "requests")]
    pub per: String,
    /// The rate may be at most this (0.02 is 2%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The rate must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The rate may be at most this many times the control variant's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_vs_control: Option<f64>,
    /// The least `per` count (for each variant compared) before the criterion can pass or fail.
    #[serde(default = "thousand")]
    pub min_sample: u64,
    /// The sliding window, in seconds, rounded up to whole minutes.
    #[serde(default = "hour")]
    pub window_seconds: u64,
}

fn requests() -> String {
    "requests".into()
}

fn thousand() -> u64 {
    1000
}

fn hour() -> u64 {
    3600
}

impl Criterion {
    /// What is wrong with it, as a suffix for the field path (`.max must ...`).
    pub fn check(&self) -> Result<(), String> {
        for (field, name) in [("metric", &self.metric), ("per", &self.per)] {
            if !valid_metric_name(name) {
                return Err(format!(".{field}` must be 1 to 64 of a-z 0-9 _ . -"));
            }
        }
        if self.max.is_none() && self.min.is_none() && self.max_vs_control.is_none() {
            return Err("` needs `max`, `min` or `max_vs_control`".into());
        }
        for (field, bound) in
            [("max", self.max), ("min", self.min), ("max_vs_control", self.max_vs_control)]
        {
            if bound.is_some_and(|b| !b.is_finite() || b < 0.0) {
                return Err(format!(".{field}` must be a number, at least 0"));
            }
        }
        if !(60..=MAX_SECONDS).contains(&self.window_seconds) {
            return Err(".window_seconds` must be 60 to 7776000 (90 days)".into());
        }
        Ok(())
    }

    /// The window in whole minutes.
    pub fn window_minutes(&self) -> i64 {
        self.window_seconds.div_ceil(60) as i64
    }

    /// `errors/requests <= 2%`, `errors/requests <= 1.5 x control`.
    pub fn describe(&self) -> String {
        let rate = format!("{}/{}", self.metric, self.per);
        let mut parts = Vec::new();
        if let Some(max) = self.max {
            parts.push(format!("{rate} <= {}", percent(max)));
        }
        if let Some(min) = self.min {
            parts.push(format!("{rate} >= {}", percent(min)));
        }
        if let Some(factor) = self.max_vs_control {
            parts.push(format!("{rate} <= {factor} x control"));
        }
        parts.join(" and ")
    }

    /// Reads the criterion from `counts` for `variant` against `control`.
    pub fn read(&self, counts: &Counts, variant: &str, control: &str) -> Reading {
        let since =
            (counts.minute - self.window_minutes()).max(counts.first_minute.saturating_sub(1));
        let exposed = Rate::of(counts, variant, &self.metric, &self.per, since);
        let compared =
            self.max_vs_control.map(|_| Rate::of(counts, control, &self.metric, &self.per, since));
        let short = |rate: &Rate| rate.per < self.min_sample;
        let mut breaches = Vec::new();
        let verdict = if short(&exposed) || compared.as_ref().is_some_and(short) {
            Verdict::Insufficient
        } else {
            let value = exposed.value();
            if let Some(max) = self.max
                && value > max
            {
                breaches.push(format!("{} > {}", percent(value), percent(max)));
            }
            if let Some(min) = self.min
                && value < min
            {
                breaches.push(format!("{} < {}", percent(value), percent(min)));
            }
            if let (Some(factor), Some(control)) = (self.max_vs_control, &compared)
                && value > factor * control.value()
            {
                breaches.push(format!(
                    "{} > {factor} x control's {}",
                    percent(value),
                    percent(control.value())
                ));
            }
            if breaches.is_empty() { Verdict::Pass } else { Verdict::Fail }
        };
        let detail = (!breaches.is_empty()).then(|| breaches.join("; "));
        Reading { criterion: self.describe(), variant: exposed, control: compared, verdict, detail }
    }
}

/// `0.0213` as `2.13%`.
pub fn percent(rate: f64) -> String {
    let text = format!("{:.2}", rate * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Per-minute counter sums of one flag in one environment, and the current minute.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub minute: i64,
    /// The earliest minute readings count, whatever their window: the minute the current stage
    /// began, so each stage (and each new plan) is judged on its own exposure.
    pub first_minute: i64,
    pub rows: Vec<CountRow>,
}

impl Counts {
    /// The sum of `metric` for `variant` over minutes after `since`.
    pub fn sum(&self, variant: &str, metric: &str, since: i64) -> u64 {
        self.rows
            .iter()
            .filter(|row| row.variant == variant && row.metric == metric && row.minute > since)
            .map(|row| row.value)
            .sum()
    }
}

/// One variant's counts for a rate.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rate {
    pub variant: String,
    pub metric: u64,
    pub per: u64,
}

impl Rate {
    fn of(counts: &Counts, variant: &str, metric: &str, per: &str, since: i64) -> Self {
        Self {
            variant: variant.to_owned(),
            metric: counts.sum(variant, metric, since),
            per: counts.sum(variant, per, since),
        }
    }

    pub fn value(&self) -> f64 {
        if self.per == 0 { 0.0 } else { self.metric as f64 / self.per as f64 }
    }
}

/// A criterion's reading at one moment, as the decision log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reading {
    pub criterion: String,
    pub variant: Rate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<Rate>,
    pub verdict: Verdict,
    /// Which bound failed, and by how much.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Fewer than `min_sample` in the window: neither passes nor fails.
    Insufficient,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(value: serde_json::Value) -> Criterion {
        serde_json::from_value(value).unwrap()
    }

    fn counts(rows: &[(&str, &str, i64, u64)]) -> Counts {
        Counts {
            minute: 100,
            first_minute: 0,
            rows: rows
                .iter()
                .map(|(variant, metric, minute, value)| CountRow {
                    variant: variant.to_string(),
                    metric: metric.to_string(),
                    minute: *minute,
                    value: *value,
                })
                .collect(),
        }
    }

    #[test]
    fn absolute_bounds_need_the_sample_then_pass_or_fail() {
        let guardrail = criterion(serde_json::json!({"metric": "errors", "max": 0.02}));
        assert_eq!(guardrail.check(), Ok(()));
        let few = counts(&[("on", "requests", 99, 999), ("on", "errors", 99, 500)]);
        assert_eq!(guardrail.read(&few, "on", "off").verdict, Verdict::Insufficient);
        let healthy = counts(&[("on", "requests", 99, 1000), ("on", "errors", 99, 20)]);
        assert_eq!(guardrail.read(&healthy, "on", "off").verdict, Verdict::Pass);
        let sick = counts(&[("on", "requests", 99, 1000), ("on", "errors", 99, 21)]);
        let reading = guardrail.read(&sick, "on", "off");
        assert_eq!(
            (reading.verdict, reading.detail.as_deref()),
            (Verdict::Fail, Some("2.1% > 2%"))
        );
    }

    #[test]
    fn the_window_slides() {
        let guardrail =
            criterion(serde_json::json!({"metric": "errors", "max": 0.02, "window_seconds": 600}));
        // Minute 90 is outside a 10-minute window ending at minute 100.
        let old_errors = counts(&[
            ("on", "requests", 90, 5000),
            ("on", "errors", 90, 5000),
            ("on", "requests", 95, 1000),
        ]);
        let reading = guardrail.read(&old_errors, "on", "off");
        assert_eq!((reading.variant.metric, reading.variant.per), (0, 1000));
        assert_eq!(reading.verdict, Verdict::Pass);
    }

    #[test]
    fn readings_start_at_the_stage() {
        let guardrail = criterion(serde_json::json!({"metric": "errors", "max": 0.02}));
        let mut before_and_during = counts(&[
            ("on", "requests", 80, 5000),
            ("on", "errors", 80, 5000),
            ("on", "requests", 90, 1000),
        ]);
        before_and_during.first_minute = 90;
        let reading = guardrail.read(&before_and_during, "on", "off");
        assert_eq!((reading.variant.metric, reading.variant.per), (0, 1000));
    }

    #[test]
    fn relative_bounds_compare_with_control() {
        let guardrail = criterion(
            serde_json::json!({"metric": "errors", "max_vs_control": 1.5, "min_sample": 100}),
        );
        let rows = |on_errors| {
            counts(&[
                ("on", "requests", 99, 1000),
                ("on", "errors", 99, on_errors),
                ("off", "requests", 99, 1000),
                ("off", "errors", 99, 10),
            ])
        };
        assert_eq!(guardrail.read(&rows(15), "on", "off").verdict, Verdict::Pass);
        assert_eq!(guardrail.read(&rows(16), "on", "off").verdict, Verdict::Fail);
        let no_control = counts(&[("on", "requests", 99, 1000)]);
        assert_eq!(guardrail.read(&no_control, "on", "off").verdict, Verdict::Insufficient);
    }

    #[test]
    fn malformed_criteria_are_refused() {
        for bad in [
            serde_json::json!({"metric": "errors"}),
            serde_json::json!({"metric": "Errors!", "max": 0.1}),
            serde_json::json!({"metric": "errors", "max": -1.0}),
            serde_json::json!({"metric": "errors", "max": 0.1, "window_seconds": 10}),
        ] {
            assert!(criterion(bad.clone()).check().is_err(), "{bad}");
        }
    }
}
