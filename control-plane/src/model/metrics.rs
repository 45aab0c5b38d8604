//! Counters per flag and variant that apps and edges report, which guardrails read. A batch is
//! checked whole before any of it is counted.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::Refusal;
use crate::model::flag::FlagDefinition;

/// Counter entries per batch, metrics per entry, and the largest count, so one batch stays a
/// small transaction and no sum nears overflow.
pub const MAX_COUNTERS: usize = 1_000;
pub const MAX_METRICS: usize = 32;
pub const MAX_COUNT: u64 = 1_000_000_000;

/// Quotas, so a read token cannot fill the disk: the new rows (flag, variant, metric in a
/// minute) one token may add in a minute, and the distinct metric names a flag may have in an
/// environment over the last hour.
pub const MAX_ROWS_PER_MINUTE: u64 = 10_000;
pub const MAX_METRIC_NAMES: usize = 32;
pub const METRIC_NAMES_WINDOW_MINUTES: i64 = 60;

/// Counters reported by an app or an edge.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricBatch {
    /// Makes a retried batch count once: up to 128 characters, unique per sender.
    pub batch: Option<String>,
    pub counters: Vec<CounterReport>,
}

/// Counts for one flag variant, by metric name, e.g. `{"requests": 1200, "errors": 3}`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CounterReport {
    pub flag: String,
    pub variant: String,
    pub counts: BTreeMap<String, u64>,
}

/// One stored count: a metric of a variant in one minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRow {
    pub variant: String,
    pub metric: String,
    pub minute: i64,
    pub value: u64,
}

impl MetricBatch {
    /// Checks the batch's shape: sizes, names and counts.
    pub fn check(&self) -> Result<(), Refusal> {
        let refuse = |detail: String| Err(Refusal::Unprocessable(detail));
        if let Some(id) = &self.batch
            && !(1..=128).contains(&id.len())
        {
            return refuse("`batch` must be 1 to 128 characters".into());
        }
        if self.counters.is_empty() || self.counters.len() > MAX_COUNTERS {
            return refuse(format!("`counters` must hold 1 to {MAX_COUNTERS} entries"));
        }
        for (index, report) in self.counters.iter().enumerate() {
            if report.counts.is_empty() || report.counts.len() > MAX_METRICS {
                return refuse(format!(
                    "`counters[{index}].counts` must hold 1 to {MAX_METRICS} metrics"
                ));
            }
            for (name, count) in &report.counts {
                if !valid_metric_name(name) {
                    return refuse(format!(
                        "`counters[{index}].counts`: `{name}` is not a metric name (1 to 64 of a-z 0-9 _ . -)"
                    ));
                }
                if *count > MAX_COUNT {
                    return refuse(format!(
                        "`counters[{index}].counts.{name}` is over {MAX_COUNT}"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Checks that every counter names a flag `definition` knows, and one of its variants.
    pub fn check_flags<'a>(
        &self,
        mut definition: impl FnMut(&str) -> Option<&'a FlagDefinition>,
    ) -> Result<(), Refusal> {
        for (index, report) in self.counters.iter().enumerate() {
            let Some(flag) = definition(&report.flag) else {
                return Err(Refusal::Unprocessable(format!(
                    "`counters[{index}].flag`: flag `{}` not found",
                    report.flag
                )));
            };
            if !flag.variants.contains_key(&report.variant) {
                return Err(Refusal::Unprocessable(format!(
                    "`counters[{index}].variant`: flag `{}` has no variant `{}`",
                    report.flag, report.variant
                )));
            }
        }
        Ok(())
    }
}

/// Metric names: what apps and edges report, and what criteria name.
pub fn valid_metric_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'))
}
