//! The sample-ratio check of a rollout plan's stage: whether the variant's share of the
//! evaluations the flag's percentage rollout decided matches the share the stage configures.
//! A mismatch means the comparison of the variant with the control cannot be trusted: a broken
//! bucketing, a `bucket_by` attribute whose value many units share, a cache or a retry that
//! counts one arm twice, an app that misreports.
//!
//! Edges and the in-process SDKs report those evaluations as `rollout_evaluations`, per variant;
//! evaluations a rule decided are left out, since rules (staff, a stage's segments) do not
//! follow the split. The test is `sequential::sample_ratio`, read every minute, at a
//! confidence high enough that three stages of healthy plans rarely see a false alarm.

use crate::model::criteria::{Counts, Rate, Reading, Share, Verdict, percent};
use crate::model::sequential;

/// The counter the check reads.
pub const ROLLOUT_EVALUATIONS: &str = "rollout_evaluations";

/// The check's confidence: a false alarm holds a healthy plan, so it is rarer than a guardrail's.
pub const CONFIDENCE: f64 = 0.999;

/// The whole minutes after the one the stage began in (or the plan was resumed in) that the
/// check skips: counts of the previous split still arrive then, from batches sent every few
/// seconds and configurations on their way to the edges.
pub const SETTLING_MINUTES: i64 = 2;

/// The least rollout evaluations, in both arms together, before the check can find a mismatch.
pub const MIN_SAMPLE: u64 = 1000;

/// How far off the configured share a share may be before it is a mismatch, as a part of it:
/// 2%, so 4.9% to 5.1% of a 5% stage. Evaluations are not quite independent draws (busy units
/// count many times), so a test of the exact share would, given months of counts, find some
/// difference in the end.
pub const TOLERANCE: f64 = 0.02;

/// Reads the check over the minutes after `since` (the minute the stage began, or the plan was
/// resumed, plus the settling minutes), up to `counts.minute`, for a stage that gives `variant` a share of
/// `thousandths` of the rollout (100,000 is all) and `control` the rest. It fails when the
/// share's interval lies wholly outside the configured share give or take `TOLERANCE`, and is
/// insufficient below `MIN_SAMPLE`. `None` where there is nothing to check: a stage at 0% or
/// 100%, or no rollout evaluations reported.
pub fn read(
    counts: &Counts,
    variant: &str,
    control: &str,
    thousandths: u32,
    since: i64,
) -> Option<Reading> {
    if thousandths == 0 || thousandths >= 100_000 {
        return None;
    }
    let expected = f64::from(thousandths) / 100_000.0;
    let variant_count = counts.sum(variant, ROLLOUT_EVALUATIONS, since);
    let control_count = counts.sum(control, ROLLOUT_EVALUATIONS, since);
    let total = variant_count + control_count;
    if total == 0 {
        return None;
    }
    let share =
        sequential::sample_ratio(variant_count as f64, control_count as f64, expected, CONFIDENCE)?;
    let (least, most) = (expected * (1.0 - TOLERANCE), expected * (1.0 + TOLERANCE));
    let mismatch = total >= MIN_SAMPLE && (share.low > most || share.high < least);
    let detail = mismatch.then(|| {
        format!(
            "`{variant}` got {} of the rollout's evaluations ({} to {} at {}), where the stage gives it {}",
            percent(share.estimate),
            percent(share.low),
            percent(share.high),
            percent(CONFIDENCE),
            percent(expected),
        )
    });
    let rate = |name: &str, count| Rate { variant: name.to_owned(), metric: count, per: total };
    Some(Reading {
        criterion: format!(
            "sample ratio: {variant} gets {} of {ROLLOUT_EVALUATIONS}",
            percent(expected)
        ),
        variant: rate(variant, variant_count),
        control: Some(rate(control, control_count)),
        verdict: match (total >= MIN_SAMPLE, mismatch) {
            (false, _) => Verdict::Insufficient,
            (true, true) => Verdict::Fail,
            (true, false) => Verdict::Pass,
        },
        detail,
        difference: None,
        share: Some(Share {
            expected,
            estimate: share.estimate,
            low: share.low.max(0.0),
            high: share.high.min(1.0),
            confidence: CONFIDENCE,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(rows: &[(&str, i64, u64)]) -> Counts {
        let mut counts = Counts::new(100, 0);
        for (variant, minute, value) in rows {
            counts.add(variant, ROLLOUT_EVALUATIONS, *minute, *value);
        }
        counts
    }

    #[test]
    fn a_share_off_the_split_is_a_mismatch_and_one_on_it_is_not() {
        // 5% configured: 5,000 of 100,000 is on target, 4,500 is 10% short.
        let on_target = counts(&[("on", 50, 5_000), ("off", 50, 95_000)]);
        let reading = read(&on_target, "on", "off", 5_000, 0).unwrap();
        assert_eq!((reading.verdict, reading.detail), (Verdict::Pass, None));
        let share = reading.share.unwrap();
        assert!((share.estimate - 0.05).abs() < 1e-12 && share.low < 0.05 && share.high > 0.05);
        assert_eq!((reading.variant.metric, reading.variant.per), (5_000, 100_000));

        let short = counts(&[("on", 50, 4_500), ("off", 50, 95_500)]);
        let reading = read(&short, "on", "off", 5_000, 0).unwrap();
        assert_eq!(reading.verdict, Verdict::Fail);
        let detail = reading.detail.unwrap();
        assert!(detail.starts_with("`on` got 4.5% of the rollout's evaluations ("), "{detail}");
        assert!(detail.ends_with("at 99.9%), where the stage gives it 5%"), "{detail}");
    }

    #[test]
    fn nothing_is_checked_without_a_split_or_counts_and_little_is_not_judged() {
        let some = counts(&[("on", 50, 10), ("off", 50, 90)]);
        assert_eq!(read(&some, "on", "off", 0, 0), None);
        assert_eq!(read(&some, "on", "off", 100_000, 0), None);
        assert_eq!(read(&counts(&[]), "on", "off", 5_000, 0), None);
        // 10% where 5% is configured, but from 100 evaluations: not judged yet.
        assert_eq!(read(&some, "on", "off", 5_000, 0).unwrap().verdict, Verdict::Insufficient);
        // 5.05% of a million: off the exact 5%, but within the tolerance.
        let close = counts(&[("on", 50, 50_500), ("off", 50, 949_500)]);
        assert_eq!(read(&close, "on", "off", 5_000, 0).unwrap().verdict, Verdict::Pass);
        // Counts at or before `since` are not read: the stage's first minutes mix the splits.
        let late =
            counts(&[("on", 10, 4_500), ("off", 10, 95_500), ("on", 11, 50), ("off", 11, 950)]);
        let reading = read(&late, "on", "off", 5_000, 10).unwrap();
        assert_eq!((reading.variant.metric, reading.variant.per), (50, 1_000));
    }
}
