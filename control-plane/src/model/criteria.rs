//! Guardrails and leading metrics: a rate of two reported counters (e.g. `errors` per
//! `requests`) for the exposed variant, either over a sliding window against an absolute bound
//! or the control variant's rate (fixed thresholds), or over the whole stage against the
//! control's rate with an always-valid sequential test (`model::sequential`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::metrics::{CountRow, valid_metric_name};
use crate::model::plan::MAX_SECONDS;
use crate::model::sequential::{self, Arm, Finding, Tolerance};

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
    /// Sequential: the rate may rise above the control's by at most this much (0.005 is half a
    /// percentage point). It fails only when a larger rise is significant at `confidence`, and
    /// passes only when the data show, with that confidence, that there is none; it reads the
    /// whole stage, and may be read every minute without raising its false alarms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_increase: Option<f64>,
    /// Sequential, as `max_increase`: by at most this share of the control's rate (0.1 is 10%).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_relative_increase: Option<f64>,
    /// The sequential test's confidence, 0.5 to 0.999 (default 0.95).
    #[serde(default = "ninety_five", skip_serializing_if = "is_ninety_five")]
    pub confidence: f64,
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

fn ninety_five() -> f64 {
    0.95
}

fn is_ninety_five(confidence: &f64) -> bool {
    *confidence == 0.95
}

impl Criterion {
    /// What is wrong with it, as a suffix for the field path (`.max must ...`).
    pub fn check(&self) -> Result<(), String> {
        for (field, name) in [("metric", &self.metric), ("per", &self.per)] {
            if !valid_metric_name(name) {
                return Err(format!(".{field}` must be 1 to 64 of a-z 0-9 _ . -"));
            }
        }
        let fixed = self.max.is_some() || self.min.is_some() || self.max_vs_control.is_some();
        let sequential = self.max_increase.is_some() || self.max_relative_increase.is_some();
        if !fixed && !sequential {
            return Err(
                "` needs `max_increase` or `max_relative_increase` (sequential), or `max`, `min` or `max_vs_control` (fixed)"
                    .into(),
            );
        }
        if fixed && sequential {
            return Err("` is sequential (`max_increase`, `max_relative_increase`) or fixed (`max`, `min`, `max_vs_control`), not both: give each its own guardrail".into());
        }
        if self.max_increase.is_some() && self.max_relative_increase.is_some() {
            return Err("` takes `max_increase` or `max_relative_increase`, not both".into());
        }
        for (field, bound) in
            [("max", self.max), ("min", self.min), ("max_vs_control", self.max_vs_control)]
        {
            if bound.is_some_and(|b| !b.is_finite() || b < 0.0) {
                return Err(format!(".{field}` must be a number, at least 0"));
            }
        }
        for (field, tolerance) in [
            ("max_increase", self.max_increase),
            ("max_relative_increase", self.max_relative_increase),
        ] {
            // No rise at all can never be shown: the test needs room.
            if tolerance.is_some_and(|t| !t.is_finite() || t <= 0.0) {
                return Err(format!(".{field}` must be a number above 0"));
            }
        }
        if !(0.5..=0.999).contains(&self.confidence) {
            return Err(".confidence` must be 0.5 to 0.999 (0.95 is 95%)".into());
        }
        if !(60..=MAX_SECONDS).contains(&self.window_seconds) {
            return Err(".window_seconds` must be 60 to 7776000 (90 days)".into());
        }
        Ok(())
    }

    /// Whether it is the sequential test, which reads the whole stage rather than a window.
    pub fn is_sequential(&self) -> bool {
        self.tolerance().is_some()
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
        let confidence = percent(self.confidence);
        if let Some(increase) = self.max_increase {
            parts.push(format!(
                "{rate} <= control + {} ({confidence} sequential)",
                points(increase)
            ));
        }
        if let Some(share) = self.max_relative_increase {
            let factor = format!("{:.4}", 1.0 + share);
            let factor = factor.trim_end_matches('0').trim_end_matches('.');
            parts.push(format!("{rate} <= {factor} x control ({confidence} sequential)"));
        }
        parts.join(" and ")
    }

    fn tolerance(&self) -> Option<Tolerance> {
        self.max_increase
            .map(Tolerance::Absolute)
            .or(self.max_relative_increase.map(Tolerance::Relative))
    }

    /// The sequential test over the whole stage: the variant's rate against the control's.
    fn read_sequential(
        &self,
        counts: &Counts,
        variant: &str,
        control: &str,
        tolerance: Tolerance,
    ) -> Reading {
        let since = counts.first_minute.saturating_sub(1);
        let exposed = Rate::of(counts, variant, &self.metric, &self.per, since);
        let compared = Rate::of(counts, control, &self.metric, &self.per, since);
        let arm = |rate: &Rate| Arm { events: rate.metric as f64, exposures: rate.per as f64 };
        let short = exposed.per < self.min_sample || compared.per < self.min_sample;
        let comparison =
            sequential::compare(arm(&exposed), arm(&compared), tolerance, self.confidence);
        let (verdict, detail) = match comparison.filter(|_| !short).map(|c| (c.finding, c)) {
            Some((Finding::Regression, c)) => (
                Verdict::Fail,
                Some(format!(
                    "rose {} over control ({} to {} at {}), beyond the {} tolerated",
                    points(c.difference.estimate),
                    points(c.difference.low),
                    points(c.difference.high),
                    percent(self.confidence),
                    points(c.tolerated),
                )),
            ),
            Some((Finding::NoRegression, _)) => (Verdict::Pass, None),
            _ => (Verdict::Insufficient, None),
        };
        Reading {
            criterion: self.describe(),
            variant: exposed,
            control: Some(compared),
            verdict,
            detail,
            difference: comparison.map(|c| Difference {
                estimate: c.difference.estimate,
                low: c.difference.low,
                high: c.difference.high,
                tolerated: c.tolerated,
                confidence: self.confidence,
            }),
            share: None,
        }
    }

    /// Reads the criterion from `counts` for `variant` against `control`.
    pub fn read(&self, counts: &Counts, variant: &str, control: &str) -> Reading {
        if let Some(tolerance) = self.tolerance() {
            return self.read_sequential(counts, variant, control, tolerance);
        }
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
        Reading {
            criterion: self.describe(),
            variant: exposed,
            control: compared,
            verdict,
            detail,
            difference: None,
            share: None,
        }
    }
}

/// A difference of rates in percentage points: `0.0052` as `0.52 points`.
pub fn points(difference: f64) -> String {
    let text = format!("{:.2}", difference * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    let text = if text == "-0" { "0" } else { text };
    format!("{text} points")
}

/// `0.0213` as `2.13%`.
pub fn percent(rate: f64) -> String {
    let text = format!("{:.2}", rate * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

/// Per-minute counter sums of one flag in one environment, as running totals, and the current
/// minute: a sum over any span takes two binary searches, so a reading costs little however
/// long the stage, and a history of readings reuses the same counts.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    pub minute: i64,
    /// The earliest minute readings count, whatever their window: the minute the current stage
    /// began, so each stage (and each new plan) is judged on its own exposure.
    pub first_minute: i64,
    /// Per variant and metric: each minute with a count, ascending, and the total through it.
    totals: HashMap<String, HashMap<String, Vec<(i64, u64)>>>,
}

impl Counts {
    pub fn new(minute: i64, first_minute: i64) -> Self {
        Self { minute, first_minute, totals: HashMap::new() }
    }

    pub fn from_rows(minute: i64, first_minute: i64, mut rows: Vec<CountRow>) -> Self {
        rows.sort_unstable_by_key(|row| row.minute);
        let mut counts = Self::new(minute, first_minute);
        for row in rows {
            counts.add(&row.variant, &row.metric, row.minute, row.value);
        }
        counts
    }

    /// Adds `value` to `metric` of `variant` in `minute`: cheapest in ascending minutes.
    pub fn add(&mut self, variant: &str, metric: &str, minute: i64, value: u64) {
        let series = self
            .totals
            .entry(variant.to_owned())
            .or_default()
            .entry(metric.to_owned())
            .or_default();
        let at = series.partition_point(|(m, _)| *m <= minute);
        let from = if at > 0 && series[at - 1].0 == minute {
            at - 1
        } else {
            let before = if at == 0 { 0 } else { series[at - 1].1 };
            series.insert(at, (minute, before));
            at
        };
        for (_, total) in &mut series[from..] {
            *total += value;
        }
    }

    /// The sum of `metric` for `variant` over minutes after `since`, up to `minute`.
    pub fn sum(&self, variant: &str, metric: &str, since: i64) -> u64 {
        let Some(series) = self.totals.get(variant).and_then(|metrics| metrics.get(metric)) else {
            return 0;
        };
        let through = |minute: i64| match series.partition_point(|(m, _)| *m <= minute) {
            0 => 0,
            n => series[n - 1].1,
        };
        through(self.minute).saturating_sub(through(since))
    }
}

/// One variant's counts for a rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reading {
    pub criterion: String,
    pub variant: Rate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<Rate>,
    pub verdict: Verdict,
    /// Which bound failed, and by how much.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// A sequential criterion's estimate of the variant's rate minus the control's, with its
    /// always-valid interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub difference: Option<Difference>,
    /// The sample-ratio check's reading (`model::sample_ratio`): the variant's share of the
    /// rollout's evaluations. A failing one holds the plan rather than rolling it back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share: Option<Share>,
}

impl Reading {
    /// Whether it is the sample-ratio check's, not a criterion's.
    pub fn is_sample_ratio(&self) -> bool {
        self.share.is_some()
    }

    /// A sequential criterion's rise over control with its interval (`0.88 points over control
    /// (0.31 to 1.44 points)`), or the sample-ratio check's interval of the share (`4.6% to 5.4%
    /// at 99.9%`).
    pub fn interval(&self) -> Option<String> {
        if let Some(d) = &self.difference {
            return Some(format!(
                "{} over control ({} to {})",
                points(d.estimate),
                points(d.low).trim_end_matches(" points"),
                points(d.high)
            ));
        }
        let share = self.share.as_ref()?;
        Some(format!(
            "{} to {} at {}",
            percent(share.low),
            percent(share.high),
            percent(share.confidence)
        ))
    }
}

/// The variant's rate minus the control's over the stage, its interval at `confidence`, valid
/// at every reading at once, and the rise tolerated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Difference {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    pub tolerated: f64,
    pub confidence: f64,
}

/// The variant's share of the evaluations the flag's rollout decided: the stage's configured
/// share, the observed one, and its interval at `confidence`, valid at every reading at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Share {
    pub expected: f64,
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
    pub confidence: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Fewer than `min_sample` in the window, or (sequential) not yet significant either way:
    /// neither passes nor fails.
    Insufficient,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criterion(value: serde_json::Value) -> Criterion {
        serde_json::from_value(value).unwrap()
    }

    fn counts(rows: &[(&str, &str, i64, u64)]) -> Counts {
        let mut counts = Counts::new(100, 0);
        for (variant, metric, minute, value) in rows {
            counts.add(variant, metric, *minute, *value);
        }
        counts
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
    fn the_sequential_criterion_fails_a_significant_rise_and_passes_a_proven_absence() {
        let guardrail = criterion(serde_json::json!({"metric": "errors", "max_increase": 0.005}));
        assert_eq!(guardrail.check(), Ok(()));
        assert!(guardrail.is_sequential());
        assert_eq!(
            guardrail.describe(),
            "errors/requests <= control + 0.5 points (95% sequential)"
        );
        // The whole stage counts, however old (the window does not apply).
        let stage = |on_errors, off_errors| {
            counts(&[
                ("on", "requests", 1, 20_000),
                ("on", "errors", 1, on_errors),
                ("off", "requests", 2, 20_000),
                ("off", "errors", 2, off_errors),
            ])
        };
        let worse = guardrail.read(&stage(600, 200), "on", "off");
        assert_eq!(worse.verdict, Verdict::Fail);
        let difference = worse.difference.unwrap();
        assert!((difference.estimate - 0.02).abs() < 1e-12);
        assert!(difference.low > 0.005 && difference.high > difference.low);
        assert!(worse.detail.unwrap().starts_with("rose 2 points over control"));
        assert_eq!(guardrail.read(&stage(200, 200), "on", "off").verdict, Verdict::Pass);
        // A rise near the tolerance is neither proven nor excluded yet.
        assert_eq!(guardrail.read(&stage(300, 200), "on", "off").verdict, Verdict::Insufficient);
        let few = counts(&[("on", "requests", 99, 999), ("off", "requests", 99, 5000)]);
        assert_eq!(guardrail.read(&few, "on", "off").verdict, Verdict::Insufficient);

        for (bad, why) in [
            (
                serde_json::json!({"metric": "errors", "max_increase": 0.005, "max": 0.02}),
                "not both",
            ),
            (
                serde_json::json!({"metric": "errors", "max_increase": 0.005, "max_relative_increase": 0.1}),
                "not both",
            ),
            (serde_json::json!({"metric": "errors", "max_increase": -0.1}), "above 0"),
            (serde_json::json!({"metric": "errors", "max_relative_increase": 0}), "above 0"),
            (
                serde_json::json!({"metric": "errors", "max_increase": 0.01, "confidence": 1.0}),
                "0.5 to 0.999",
            ),
        ] {
            let error = criterion(bad).check().unwrap_err();
            assert!(error.contains(why), "{error}");
        }
        // The default confidence is not written back, so stored plans keep their shape.
        assert!(!serde_json::to_string(&guardrail).unwrap().contains("confidence"));
    }

    #[test]
    fn sums_span_minutes_after_since_up_to_the_current_minute_in_any_order_of_adding() {
        let mut counts = Counts::new(10, 0);
        for (minute, value) in [(5, 50), (2, 20), (9, 90), (5, 5), (11, 1000), (0, 1)] {
            counts.add("on", "requests", minute, value);
        }
        assert_eq!(counts.sum("on", "requests", -1), 166);
        assert_eq!(counts.sum("on", "requests", 2), 145);
        assert_eq!(counts.sum("on", "requests", 5), 90);
        assert_eq!(counts.sum("on", "requests", 10), 0);
        assert_eq!((counts.sum("off", "requests", -1), counts.sum("on", "errors", -1)), (0, 0));
        counts.minute = 4;
        assert_eq!(counts.sum("on", "requests", -1), 21);
        let rows = [(9, 90), (2, 20)].map(|(minute, value)| CountRow {
            variant: "on".into(),
            metric: "requests".into(),
            minute,
            value,
        });
        assert_eq!(Counts::from_rows(10, 0, rows.to_vec()).sum("on", "requests", 1), 110);
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
