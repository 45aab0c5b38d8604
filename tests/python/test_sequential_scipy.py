"""The vectors the Rust unit tests check the sequential guardrail and the sample-ratio check
against (control-plane/tests/fixtures/sequential-scipy.json) are what scipy computes now."""

import json
import pathlib

import pytest

import sequential_vectors

FIXTURE = pathlib.Path(__file__).parents[2] / "control-plane" / "tests" / "fixtures" / "sequential-scipy.json"


def test_the_committed_vectors_are_scipys():
    committed = json.loads(FIXTURE.read_text())
    computed = sequential_vectors.vectors()
    assert [c["finding"] for c in committed["comparisons"]] == [c["finding"] for c in computed["comparisons"]]
    for kind in ("comparisons", "sample_ratios"):
        assert len(committed[kind]) == len(computed[kind])
        for ours, theirs in zip(committed[kind], computed[kind]):
            for field, value in theirs.items():
                if isinstance(value, float):
                    assert ours[field] == pytest.approx(value, rel=1e-9, abs=1e-15), (kind, field, theirs)
                else:
                    assert ours[field] == value, (kind, field, theirs)


def test_the_interval_holds_the_estimate_and_widens_with_confidence():
    narrow = sequential_vectors.interval(0.0, 1e-6, 2.5e-5, 0.9)
    wide = sequential_vectors.interval(0.0, 1e-6, 2.5e-5, 0.99)
    assert wide[0] < narrow[0] < 0 < narrow[1] < wide[1]
    # At each end, the mixture likelihood ratio is 1 / alpha.
    for end in narrow:
        assert sequential_vectors.mixture_ratio(0.0, 1e-6, 2.5e-5, end) == pytest.approx(10.0, rel=1e-9)
