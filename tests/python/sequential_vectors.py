"""The sequential guardrail's and the sample-ratio check's intervals, computed independently
with scipy: the mixture likelihood ratio by numerical integration over the normal mixture
(scipy.integrate.quad), and the interval's ends as the roots where it reaches 1/alpha
(scipy.optimize.brentq), rather than by the closed form control_plane::model::sequential uses.

`python tests/python/sequential_vectors.py > control-plane/tests/fixtures/sequential-scipy.json`
writes the vectors the Rust unit tests compare with; test_sequential_scipy.py checks that the
committed file is what scipy computes.
"""

import json
import math

from scipy import integrate, optimize, stats


def mixture_ratio(estimate, variance, mixing, theta):
    """Lambda(theta): the normal likelihood of `estimate` averaged over a N(theta, mixing)
    mixture of means, over its likelihood at theta."""
    sd, tau = math.sqrt(variance), math.sqrt(mixing)
    # In logs, so that far from the estimate nothing underflows; over where the integrand
    # lives (the means the estimate makes likely), as a hint to quad.
    center = (estimate * mixing + theta * variance) / (variance + mixing)
    spread = math.sqrt(variance * mixing / (variance + mixing))

    def integrand(mean):
        return math.exp(
            stats.norm.logpdf(estimate, mean, sd)
            + stats.norm.logpdf(mean, theta, tau)
            - stats.norm.logpdf(estimate, theta, sd)
        )

    ratio, _ = integrate.quad(
        integrand, center - 12 * spread, center + 12 * spread, points=[center], epsabs=0, epsrel=1e-12, limit=200
    )
    return ratio


def interval(estimate, variance, mixing, confidence):
    """The theta on either side of `estimate` where Lambda(theta) = 1 / alpha."""
    target = 1.0 / (1.0 - confidence)
    gap = lambda theta: mixture_ratio(estimate, variance, mixing, theta) - target
    reach = math.sqrt(variance)
    while gap(estimate + reach) < 0:
        reach *= 2
    low = optimize.brentq(gap, estimate - reach, estimate, xtol=1e-15, rtol=1e-13)
    high = optimize.brentq(gap, estimate, estimate + reach, xtol=1e-15, rtol=1e-13)
    return low, high


def arm_variance(events, exposures):
    """A Poisson count's variance of the rate, the rate pulled towards half an event: the
    definition the criterion documents (docs/rollout-plans.md)."""
    return (events + 0.5) / (exposures + 1.0) / exposures


MIN_MIXING = 1e-4


def compare(variant, control, tolerance, confidence):
    (v_events, v_exposures), (c_events, c_exposures) = variant, control
    kind, amount = tolerance
    tolerated = amount if kind == "absolute" else amount * c_events / c_exposures
    estimate = v_events / v_exposures - c_events / c_exposures
    variance = arm_variance(v_events, v_exposures) + arm_variance(c_events, c_exposures)
    mixing = max(tolerated, MIN_MIXING) ** 2
    low, high = interval(estimate, variance, mixing, confidence)
    finding = "regression" if low > tolerated else "no_regression" if high <= tolerated else "undecided"
    return {"estimate": estimate, "low": low, "high": high, "tolerated": tolerated, "finding": finding}


def sample_ratio(variant, control, expected, confidence):
    total = variant + control
    variance = expected * (1 - expected) / total
    mixing = (0.1 * min(expected, 1 - expected)) ** 2
    low, high = interval(variant / total, variance, mixing, confidence)
    return {"estimate": variant / total, "low": low, "high": high, "mismatch": low > expected or high < expected}


COMPARISONS = [
    # variant (events, exposures), control, tolerance, confidence
    ((300, 10_000), (100, 10_000), ("absolute", 0.005), 0.95),
    ((100, 10_000), (100, 10_000), ("absolute", 0.005), 0.95),
    ((0, 10), (0, 10), ("absolute", 0.005), 0.95),
    ((120, 10_000), (100, 10_000), ("relative", 0.1), 0.95),
    ((108, 10_800), (2052, 205_200), ("absolute", 0.005), 0.95),
    ((410, 3_000), (150, 57_000), ("absolute", 0.005), 0.95),
    ((45, 3_000), (570, 57_000), ("relative", 0.5), 0.9),
    ((2_600, 100_000), (2_400, 100_000), ("relative", 0.05), 0.99),
    ((31, 1_000), (19, 1_000), ("absolute", 0.01), 0.999),
    ((5, 50_000), (40, 950_000), ("absolute", 0.0005), 0.95),
    ((700, 40_000), (3_800, 760_000), ("absolute", 0.005), 0.95),
    ((12, 1_500), (9, 1_400), ("relative", 0.2), 0.8),
]

SAMPLE_RATIOS = [
    # variant, control, expected share, confidence
    (5_000, 95_000, 0.05, 0.999),
    (4_500, 95_500, 0.05, 0.999),
    (5_600, 94_400, 0.05, 0.95),
    (8, 92, 0.05, 0.95),
    (2_450, 7_550, 0.25, 0.999),
    (49_300, 50_700, 0.5, 0.999),
]


def vectors():
    return {
        "comparisons": [
            {
                "variant": list(variant),
                "control": list(control),
                "tolerance": list(tolerance),
                "confidence": confidence,
                **compare(variant, control, tolerance, confidence),
            }
            for variant, control, tolerance, confidence in COMPARISONS
        ],
        "sample_ratios": [
            {"variant": variant, "control": control, "expected": expected, "confidence": confidence,
             **sample_ratio(variant, control, expected, confidence)}
            for variant, control, expected, confidence in SAMPLE_RATIOS
        ],
    }


if __name__ == "__main__":
    print(json.dumps(vectors(), indent=1))
