"""Statistics of a sweep across training seeds: per config mean, standard deviation and 95% t interval; paired
differences against a baseline config, matched by seed; the Pareto front of VL score against text forgetting.

Intervals here are over *training seeds* (unlike ``mmpeft.eval.intervals``, over test items): the mean of n
per-seed values +- ``t(0.975, n - 1) * s / sqrt(n)``, ``s`` the sample standard deviation (ddof 1). One seed gives
no interval (``None``, with a note), never a zero-width one. A paired difference is the same over the per-seed
differences ``config - baseline`` of the seeds both ran: the runs of one seed share data order and initialisation,
so the pairing removes what they share and its interval is usually narrower than the two configs' intervals
suggest.

Input rows are ``mmpeft.eval.sweep_collect`` rows; only rows with ``counted`` true enter a statistic.
"""

from __future__ import annotations

import math
from typing import Any

CONFIDENCE = 0.95
ONE_SEED = "one seed: no interval across seeds"


def seed_summary(values: list[float]) -> dict[str, Any]:
    """``{"n", "mean", "std", "half_width", "interval": [lo, hi]}`` of per-seed values; for n = 1 std, half_width
    and interval are None and ``note`` says why."""
    from scipy.stats import t

    n = len(values)
    if n == 0:
        raise ValueError("a summary needs at least one value")
    if len(set(values)) == 1:  # exactly equal (a count, a fixed setting): zero spread, not rounding noise
        mean = values[0]
    else:
        mean = math.fsum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "half_width": None, "interval": None, "note": ONE_SEED}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "half_width": half, "interval": [mean - half, mean + half]}


def config_order(rows: list[dict[str, Any]]) -> list[str]:
    """Configs in the order the sweep planned them (first appearance)."""
    return list(dict.fromkeys(r["config"] for r in rows))


def check_baseline(rows: list[dict[str, Any]], baseline: str | None) -> None:
    configs = config_order(rows)
    if baseline is not None and baseline not in configs:
        raise ValueError(f"--baseline {baseline!r} is not a config of this sweep; its configs: {configs}")


def paired_differences(runs: list[dict[str, Any]], baseline_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per metric: ``seed_summary`` of ``run - baseline`` over the seeds both have (counted and with the metric),
    with ``"seeds"`` listing them."""
    base = {r["seed"]: r["metrics"] for r in baseline_runs}
    out = {}
    for name in sorted({m for r in runs for m in r["metrics"]}):
        pairs = sorted((r["seed"], r["metrics"][name] - base[r["seed"]][name]) for r in runs
                       if name in r["metrics"] and name in base.get(r["seed"], {}))
        if pairs:
            out[name] = {**seed_summary([d for _, d in pairs]), "seeds": [s for s, _ in pairs]}
    return out


def aggregate(rows: list[dict[str, Any]], baseline: str | None = None) -> dict[str, dict[str, Any]]:
    """``{config: {"case", "overrides", "planned", "n_done", "seeds_done", "missing": [{"seed", "run_dir",
    "status", "reason"}], "metrics": {name: seed_summary}, "paired": {name: summary} | None}}``; ``paired`` is
    against ``baseline`` (None for the baseline itself and without one)."""
    check_baseline(rows, baseline)
    counted = {c: [r for r in rows if r["config"] == c and r["counted"]] for c in config_order(rows)}
    out = {}
    for config, runs in counted.items():
        planned = [r for r in rows if r["config"] == config]
        names = sorted({m for r in runs for m in r["metrics"]})
        out[config] = {
            "case": planned[0].get("case"), "overrides": planned[0].get("overrides", {}), "planned": len(planned),
            "n_done": len(runs), "seeds_done": sorted(r["seed"] for r in runs),
            "missing": [{k: r[k] for k in ("seed", "run_dir", "status", "reason")} for r in planned
                        if not r["counted"]],
            "metrics": {m: seed_summary([r["metrics"][m] for r in runs if m in r["metrics"]]) for m in names},
            "paired": None if baseline is None or config == baseline else paired_differences(runs, counted[baseline]),
        }
    return out


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Configs not dominated in ``{config: (vl score, forgetting)}``, higher score and lower forgetting better: no
    other config is at least as good in both and better in one. Sorted by forgetting, then score (descending)."""
    front = [c for c, (vl, forget) in points.items()
             if not any(v >= vl and f <= forget and (v > vl or f < forget) for v, f in points.values())]
    return sorted(front, key=lambda c: (points[c][1], -points[c][0]))


def curve_summary(series: list[list[tuple[int, float]]]) -> list[dict[str, Any]]:
    """Per step, over the seeds' curves ``[[(step, value)], ...]``: ``{"step", **seed_summary}`` of the seeds
    that logged that step (steps where none did are absent)."""
    by_step: dict[int, list[float]] = {}
    for curve in series:
        for step, value in curve:
            by_step.setdefault(int(step), []).append(float(value))
    return [{"step": s, **seed_summary(v)} for s, v in sorted(by_step.items())]
