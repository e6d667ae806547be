"""Confidence intervals for evaluation figures: over test items, from scipy.

Every interval here is over the *items* of one evaluation (questions, images, probe items, perplexity windows): it
says how much a figure would move on another draw of test items of the same kind. It says nothing about training
seeds; a comparison of two training runs needs several seeds per arm for that.

- ``proportion_interval``: Wilson score interval of a share of successes (``scipy.stats.binomtest``).
- ``mean_interval``: the mean of per-item values: Wilson for 0/1 outcomes (``proportion=True``), else a percentile
  bootstrap.
- ``score_interval``: the mean of per-item scores in [0, 1] with partial credit (VQA accuracy): Wilson when every
  item scored exactly 0 or 1, else a bootstrap.
- ``paired_difference_interval``: mean of ``a - b`` over the same items (adapted vs base, run A vs run B).
- ``bootstrap_interval``: any statistic of paired per-item arrays (e.g. perplexity from per-window NLL and token
  counts).

Bootstraps use ``scipy.stats.bootstrap`` (percentile method, 2,000 resamples, a fixed seed so reports reproduce).
Degenerate inputs (all values equal) give a zero-width interval at that value rather than NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000


def proportion_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` as ``(low, high)`` in [0, 1]."""
    from scipy.stats import binomtest

    if n <= 0:
        raise ValueError("an interval needs at least one item")
    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def bootstrap_interval(arrays: Sequence[Sequence[float]], statistic: Callable[..., float],
                       confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*arrays)``, resampling items (the arrays' common index)."""
    from scipy.stats import bootstrap

    data = tuple(np.asarray(a, dtype=float) for a in arrays)
    if len(data[0]) == 0:
        raise ValueError("an interval needs at least one item")
    point = float(statistic(*data))
    if len(data[0]) == 1 or all(np.all(a == a[0]) for a in data):
        return point, point
    result = bootstrap(data, lambda *xs: statistic(*xs), paired=True, vectorized=False, n_resamples=resamples,
                       confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_interval(values: Sequence[float], proportion: bool = False, confidence: float = CONFIDENCE
                  ) -> tuple[float, float]:
    """Interval of the mean of per-item values.

    Args:
        proportion: the values are 0/1 outcomes (correct or not): Wilson. Otherwise (CIDEr, lengths, ...) a
            percentile bootstrap, also when the values happen to be all 0 (the metric, not the sample, decides).
    """
    values = [float(v) for v in values]
    if proportion:
        if not all(v in (0.0, 1.0) for v in values):
            raise ValueError("proportion=True needs 0/1 values")
        return proportion_interval(int(sum(values)), len(values), confidence)
    return bootstrap_interval([values], np.mean, confidence)


def score_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Interval of the mean of per-item scores in [0, 1] that are 0/1 outcomes or partial credit (VQA accuracy):
    Wilson when every item scored exactly 0 or 1 (then each is a Bernoulli outcome), else a bootstrap."""
    values = [float(v) for v in values]
    if any(v < 0 or v > 1 for v in values):
        raise ValueError("scores must lie in [0, 1]")
    return mean_interval(values, proportion=all(v in (0.0, 1.0) for v in values), confidence=confidence)


def paired_difference_interval(a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
                               ) -> tuple[float, float]:
    """Interval of ``mean(a) - mean(b)`` where ``a[i]`` and ``b[i]`` are the same item scored twice."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same items: {len(a)} vs {len(b)}")
    return bootstrap_interval([a, b], lambda x, y: float(np.mean(x - y)), confidence)


def excludes_zero(interval: Sequence[float]) -> bool:
    """Whether an interval of a difference lies entirely on one side of zero."""
    return interval[0] > 0 or interval[1] < 0
