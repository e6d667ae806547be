"""What a run directory records, read for reports: its latest eval JSON (``mmpeft eval``), the probe curves of its
``metrics.csv`` (``ForgettingProbes``), and each text probe's change against its base in report units.

Shared by ``mmpeft report`` (``mmpeft.eval.report``, one row per run) and the sweep report
(``mmpeft.eval.sweep_collect``, across seeds).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def latest_eval(run_dir: Path) -> dict[str, Any] | None:
    files = sorted((run_dir / "eval").glob("*.json")) if (run_dir / "eval").is_dir() else []
    evals = []
    for f in files:
        if f.name.endswith(".predictions.json"):
            continue
        try:
            evals.append(json.loads(f.read_text()))
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{f} is not a readable eval JSON ({e}); re-run mmpeft eval for it or move it out of "
                             f"{f.parent}") from None
    evals = [e for e in evals if isinstance(e, dict)]
    return max(evals, key=lambda e: e.get("step") or -1) if evals else None


def probe_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{column: [(step, value)]}`` for every ``probe/...`` column of ``metrics.csv``."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            for key, value in row.items():
                if key and key.startswith("probe/") and value not in ("", None):
                    curves.setdefault(key, []).append((int(row["step"]), float(value)))
    return curves


# (summary key, probe kind, metric): each change in the units of the table (``_change``: perplexity in percent of
# the base's, accuracies in points)
SUMMARY_CHANGES = (("ppl_change_pct", "perplexity", "perplexity"), ("mc_acc_change", "multiple_choice", "acc"),
                   ("em_change", "exact_match", "exact_match"))


def probe_changes(text_probes: dict[str, Any]) -> list[dict[str, Any]]:
    """Per probe and headline metric: ``{"probe", "metric", "change", "interval"}``, the change of the adapted
    model against its base in table units (perplexity: percent of the base; acc, exact_match: points) with its 95%
    interval over the probe's items (``interval_95[metric]["delta"]`` of the eval JSON; None where not recorded)."""
    rows = []
    for name, r in text_probes.items():
        for _, kind, metric in SUMMARY_CHANGES:
            if r.get("kind") != kind or metric not in r.get("delta", {}):
                continue
            scale = 100 / r["base"][metric] if metric == "perplexity" else 100
            interval = r.get("interval_95", {}).get(metric, {}).get("delta")
            rows.append({"probe": name, "metric": metric, "change": scale * r["delta"][metric],
                         "interval": None if interval is None else [scale * v for v in interval]})
    return rows


def forgetting(text_probes: dict[str, Any]) -> dict[str, Any]:
    """Summary of text forgetting: mean perplexity change in percent, mean MC accuracy and EM changes (points);
    where one probe of a kind gives the figure, also its 95% interval (``<key>_interval``, over the probe's items;
    a mean over several probes has none here: ``probe_changes`` lists each probe's)."""
    out: dict[str, Any] = {}
    changes = probe_changes(text_probes)
    for key, _, metric in SUMMARY_CHANGES:
        found = [c for c in changes if c["metric"] == metric]
        if found:
            out[key] = sum(c["change"] for c in found) / len(found)
        if len(found) == 1 and found[0]["interval"] is not None:
            out[key + "_interval"] = found[0]["interval"]
    return out
