//! Always-valid statistics for guardrails: confidence sequences that may be looked at after
//! every batch of counts without raising the false-alarm rate.
//!
//! The method is the mixture sequential probability ratio test (mSPRT) with a normal mixture,
//! and the confidence sequence it implies, for an estimate that is asymptotically normal:
//! Johari, Koomen, Pekelis and Walsh, "Peeking at A/B Tests: Why it matters, and what to do
//! about it", KDD 2017, and Johari, Pekelis and Walsh, "Always Valid Inference: Continuous
//! Monitoring of A/B Tests", Operations Research 70(3), 2022. For an estimate `x` of `θ` with
//! variance `v`, and a mixing variance `τ²`, the mixture likelihood ratio against `θ₀` is
//!
//! ```text
//! Λ(θ₀) = sqrt(v / (v + τ²)) · exp(τ² (x − θ₀)² / (2 v (v + τ²)))
//! ```
//!
//! and `{θ₀ : Λ(θ₀) < 1/α}` holds `θ` at every look at once with probability at least `1 − α`:
//!
//! ```text
//! x ± sqrt( v (v + τ²) / τ² · (2 ln(1/α) + ln((v + τ²) / v)) )
//! ```
//!
//! `τ` is set to the effect that matters (the tolerance), where the test is most powerful.
//! The guarantee is asymptotic (a normal estimate, a plug-in variance), and assumes independent
//! events: errors that come in bursts make the interval too narrow. Each one-sided decision
//! below uses one side of the two-sided sequence, so its error is at most about `α / 2`.

/// Counts of one arm: events (e.g. `errors`) over exposures (e.g. `requests`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    pub events: f64,
    pub exposures: f64,
}

impl Arm {
    pub fn rate(&self) -> f64 {
        self.events / self.exposures
    }

    /// The variance of `rate()`, as of a Poisson count: right for a count metric that can pass
    /// one per exposure, and a little above the binomial variance of a share. The rate in it is
    /// pulled towards half an event, so that no events in ten exposures is not taken for
    /// certainty (a zero variance).
    fn variance(&self) -> f64 {
        (self.events + 0.5) / (self.exposures + 1.0) / self.exposures
    }
}

/// An always-valid interval, at its confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub estimate: f64,
    pub low: f64,
    pub high: f64,
}

/// The confidence sequence's interval for an estimate with `variance`, mixing variance
/// `mixing`, at `confidence` (e.g. 0.95).
pub fn interval(estimate: f64, variance: f64, mixing: f64, confidence: f64) -> Interval {
    let alpha = 1.0 - confidence;
    let half = if variance <= 0.0 {
        0.0
    } else {
        let spread = variance * (variance + mixing) / mixing;
        (spread * (2.0 * (1.0 / alpha).ln() + ((variance + mixing) / variance).ln())).sqrt()
    };
    Interval { estimate, low: estimate - half, high: estimate + half }
}

/// The least mixing standard deviation: a tolerance near 0 would make the interval useless.
const MIN_MIXING: f64 = 1e-4;

/// How far the variant's rate may rise above the control's (above 0; `Criterion::check`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tolerance {
    /// By this much, e.g. 0.005 for half a percentage point.
    Absolute(f64),
    /// By this share of the control's rate, e.g. 0.1 for 10%.
    Relative(f64),
}

/// What the data say of a regression beyond the tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// With the confidence asked for, the variant's rate is above the control's by more than
    /// the tolerance.
    Regression,
    /// With the confidence asked for, it is not.
    NoRegression,
    /// Not yet either.
    Undecided,
}

/// The variant's rate minus the control's, its always-valid interval, the tolerance as a
/// difference of rates, and what follows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub difference: Interval,
    pub tolerated: f64,
    pub finding: Finding,
}

/// Compares `variant` with `control` at `confidence`. `None` until both arms have exposures.
pub fn compare(
    variant: Arm,
    control: Arm,
    tolerance: Tolerance,
    confidence: f64,
) -> Option<Comparison> {
    if variant.exposures <= 0.0 || control.exposures <= 0.0 {
        return None;
    }
    let tolerated = match tolerance {
        Tolerance::Absolute(difference) => difference,
        // Taken at the control's rate so far, as if it were known: an approximation, whose own
        // error the interval does not carry.
        Tolerance::Relative(share) => share * control.rate(),
    };
    let variance = variant.variance() + control.variance();
    // Most power at the effect that matters.
    let mixing = tolerated.max(MIN_MIXING).powi(2);
    let difference = interval(variant.rate() - control.rate(), variance, mixing, confidence);
    let finding = if difference.low > tolerated {
        Finding::Regression
    } else if difference.high <= tolerated {
        Finding::NoRegression
    } else {
        Finding::Undecided
    };
    Some(Comparison { difference, tolerated, finding })
}

/// For a sample-ratio check: the variant's share of all exposures, `variant / (variant +
/// control)`, with its interval at `confidence`, were the `expected` share (above 0, below 1)
/// the truth. `None` without exposures.
pub fn sample_ratio(
    variant: f64,
    control: f64,
    expected: f64,
    confidence: f64,
) -> Option<Interval> {
    let total = variant + control;
    if total <= 0.0 || expected <= 0.0 || expected >= 1.0 {
        return None;
    }
    let variance = expected * (1.0 - expected) / total;
    // Most power at a mismatch of a tenth of the expected share.
    let mixing = (0.1 * expected.min(1.0 - expected)).powi(2);
    Some(interval(variant / total, variance, mixing, confidence))
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    fn arm(events: f64, exposures: f64) -> Arm {
        Arm { events, exposures }
    }

    #[test]
    fn the_interval_is_the_mixture_ratio_boundary() {
        // At either end of the interval, the mixture likelihood ratio is exactly 1/alpha.
        let (estimate, variance, mixing, confidence): (f64, f64, f64, f64) =
            (0.004, 2.5e-6, 1e-5, 0.95);
        let ratio = |theta: f64| {
            (variance / (variance + mixing)).sqrt()
                * (mixing * (estimate - theta).powi(2) / (2.0 * variance * (variance + mixing)))
                    .exp()
        };
        let found = interval(estimate, variance, mixing, confidence);
        for end in [found.low, found.high] {
            assert!((ratio(end) - 20.0).abs() < 1e-9, "{}", ratio(end));
        }
        // Always valid costs width: wider than the fixed-sample z interval (1.96 sigma).
        assert!(found.high - estimate > 1.96 * variance.sqrt());
    }

    #[test]
    fn findings_follow_the_interval_and_the_tolerance() {
        let control = arm(100.0, 10_000.0); // 1%
        let absolute = Tolerance::Absolute(0.005);
        // 3% against 1%: beyond half a point, clearly.
        let worse = compare(arm(300.0, 10_000.0), control, absolute, 0.95).unwrap();
        assert_eq!(worse.finding, Finding::Regression);
        // 1% against 1% with plenty of data: no regression beyond half a point.
        let same = compare(arm(100.0, 10_000.0), control, absolute, 0.95).unwrap();
        assert_eq!(same.finding, Finding::NoRegression);
        // Ten requests say nothing yet.
        let early = compare(arm(0.0, 10.0), arm(0.0, 10.0), absolute, 0.95).unwrap();
        assert_eq!(early.finding, Finding::Undecided);
        // Relative: 10% of the control's 1% is 0.1 points.
        let relative = compare(arm(100.0, 10_000.0), control, Tolerance::Relative(0.1), 0.95);
        assert!((relative.unwrap().tolerated - 0.001).abs() < 1e-12);
        assert_eq!(compare(arm(1.0, 0.0), control, absolute, 0.95), None);
    }

    /// Binomial draws, as sums of Bernoulli trials.
    fn binomial(random: &mut StdRng, trials: u32, rate: f64) -> f64 {
        (0..trials).filter(|_| random.random::<f64>() < rate).count() as f64
    }

    /// Looked at after every batch, the confidence sequence misses the true difference in at
    /// most about 5% of runs at 95%: the fixed-sample z interval, looked at as often, misses
    /// far more. An independent check of the method's promise, by simulation.
    #[test]
    fn peeking_after_every_batch_keeps_the_error_rate() {
        let mut random = StdRng::seed_from_u64(17);
        let (runs, batches, per_batch, rate) = (600, 40, 250, 0.05);
        let (mut sequential_misses, mut fixed_misses) = (0, 0);
        for _ in 0..runs {
            let (mut variant, mut control) = (arm(0.0, 0.0), arm(0.0, 0.0));
            let (mut sequential_missed, mut fixed_missed) = (false, false);
            for _ in 0..batches {
                variant.events += binomial(&mut random, per_batch, rate);
                control.events += binomial(&mut random, per_batch, rate);
                variant.exposures += f64::from(per_batch);
                control.exposures += f64::from(per_batch);
                let compared = compare(variant, control, Tolerance::Absolute(0.01), 0.95).unwrap();
                let d = compared.difference;
                sequential_missed |= d.low > 0.0 || d.high < 0.0;
                let z = 1.96 * (variant.variance() + control.variance()).sqrt();
                fixed_missed |= d.estimate - z > 0.0 || d.estimate + z < 0.0;
            }
            sequential_misses += usize::from(sequential_missed);
            fixed_misses += usize::from(fixed_missed);
        }
        let share = |misses: usize| misses as f64 / f64::from(runs);
        assert!(share(sequential_misses) <= 0.06, "{}", share(sequential_misses));
        assert!(share(fixed_misses) > 0.15, "{}", share(fixed_misses));
    }

    /// Against scipy: the interval's ends as the roots of the mixture likelihood ratio,
    /// integrated numerically (`tests/python/sequential_vectors.py`, which
    /// `tests/python/test_sequential_scipy.py` checks the fixture against).
    #[test]
    fn intervals_and_findings_match_an_independent_computation_with_scipy() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/fixtures/sequential-scipy.json"))
                .unwrap();
        let close = |ours: f64, theirs: &serde_json::Value, what: &str| {
            let theirs = theirs.as_f64().unwrap();
            let scale = theirs.abs().max(1e-6);
            assert!(
                (ours - theirs).abs() <= 1e-7 * scale,
                "{what}: {ours} against scipy's {theirs}"
            );
        };
        let comparisons = vectors["comparisons"].as_array().unwrap();
        assert_eq!(comparisons.len(), 12);
        for case in comparisons {
            let arm = |side: &serde_json::Value| {
                arm(side[0].as_f64().unwrap(), side[1].as_f64().unwrap())
            };
            let amount = case["tolerance"][1].as_f64().unwrap();
            let tolerance = match case["tolerance"][0].as_str().unwrap() {
                "absolute" => Tolerance::Absolute(amount),
                _ => Tolerance::Relative(amount),
            };
            let confidence = case["confidence"].as_f64().unwrap();
            let ours = compare(arm(&case["variant"]), arm(&case["control"]), tolerance, confidence)
                .unwrap();
            close(ours.difference.estimate, &case["estimate"], &format!("estimate of {case}"));
            close(ours.difference.low, &case["low"], &format!("low of {case}"));
            close(ours.difference.high, &case["high"], &format!("high of {case}"));
            close(ours.tolerated, &case["tolerated"], &format!("tolerated of {case}"));
            let finding = match ours.finding {
                Finding::Regression => "regression",
                Finding::NoRegression => "no_regression",
                Finding::Undecided => "undecided",
            };
            assert_eq!(finding, case["finding"], "{case}");
        }
        let ratios = vectors["sample_ratios"].as_array().unwrap();
        assert_eq!(ratios.len(), 6);
        for case in ratios {
            let number = |field: &str| case[field].as_f64().unwrap();
            let share = sample_ratio(
                number("variant"),
                number("control"),
                number("expected"),
                number("confidence"),
            )
            .unwrap();
            close(share.low, &case["low"], &format!("low of {case}"));
            close(share.high, &case["high"], &format!("high of {case}"));
            let mismatch = share.low > number("expected") || share.high < number("expected");
            assert_eq!(mismatch, case["mismatch"].as_bool().unwrap(), "{case}");
        }
    }

    #[test]
    fn a_sample_ratio_interval_holds_the_share_it_was_drawn_from() {
        let excludes = |variant, control, expected| {
            let share = sample_ratio(variant, control, expected, 0.95).unwrap();
            share.low > expected || share.high < expected
        };
        // 5% expected; 5,000 of 100,000 is on target, 5,600 and 4,400 are not.
        assert!(!excludes(5_000.0, 95_000.0, 0.05));
        assert!(excludes(5_600.0, 94_400.0, 0.05));
        assert!(excludes(4_400.0, 95_600.0, 0.05));
        // Too few to tell.
        assert!(!excludes(8.0, 92.0, 0.05));
        assert_eq!(sample_ratio(0.0, 0.0, 0.05, 0.95), None);
        assert_eq!(sample_ratio(1.0, 1.0, 1.0, 0.95), None);
    }
}
