"""Intervals over test items: values checked against closed forms and scipy's own functions."""

import math

import numpy as np
import pytest

from mmpeft.eval.intervals import (
    bootstrap_interval,
    excludes_zero,
    mean_interval,
    paired_difference_interval,
    proportion_interval,
    score_interval,
)


def wilson(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (10, 10), (37, 60), (1, 1)])
def test_proportion_interval_is_wilsons(k, n):
    assert proportion_interval(k, n) == pytest.approx(wilson(k, n), abs=1e-9)


def test_mean_interval_uses_wilson_for_proportions_and_bootstrap_otherwise():
    assert mean_interval([1, 0, 1, 1], proportion=True) == pytest.approx(wilson(3, 4))
    assert score_interval([1, 0, 1, 1]) == pytest.approx(wilson(3, 4))
    # a continuous metric that happens to be 0 everywhere (CIDEr of a failed run) is not a proportion
    assert mean_interval([0.0] * 12) == (0.0, 0.0)
    assert score_interval([0.0, 0.3, 1.0])[0] < score_interval([0.0, 0.3, 1.0])[1]
    with pytest.raises(ValueError, match="0/1"):
        mean_interval([0.5, 1.0], proportion=True)
    values = np.random.default_rng(1).normal(5.0, 1.0, size=400)
    low, high = mean_interval(values)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))  # the normal-theory interval, for scale
    assert low < values.mean() < high
    assert (high - low) == pytest.approx(2 * half, rel=0.15)
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_paired_difference_sees_a_consistent_shift_that_unpaired_noise_hides():
    rng = np.random.default_rng(0)
    base = rng.normal(0, 10, size=50)  # large item-to-item spread
    adapted = base + 0.5 + rng.normal(0, 0.1, size=50)  # a small but consistent change per item
    interval = paired_difference_interval(adapted, base)
    assert excludes_zero(interval) and interval[0] > 0.4 and interval[1] < 0.6
    assert paired_difference_interval(base, base) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same items"):
        paired_difference_interval([1, 2], [1])


def test_bootstrap_of_a_ratio_statistic_brackets_the_point_value():
    nll = [10.0, 12.0, 9.0, 30.0, 11.0]
    tokens = [5, 6, 5, 10, 6]
    low, high = bootstrap_interval([nll, tokens], lambda n, t: math.exp(n.sum() / t.sum()))
    assert low <= math.exp(sum(nll) / sum(tokens)) <= high and low < high
