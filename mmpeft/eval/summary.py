"""The plain-text summary ``mmpeft eval`` prints: each task's lines, then what the figures leave out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mmpeft.data.integrity import describe_losses
from mmpeft.eval.task import EvalTask


def summary(scores: dict[str, Any], tasks: Sequence[EvalTask]) -> str:
    """Lines of each task in ``tasks`` that has scores in ``scores`` (``EvalTask.summary``), then the
    ``missing_line`` of ``scores["missing"]`` when present."""
    lines = [line for task in tasks if isinstance(scores.get(task.name), dict) for line in task.summary(
        scores[task.name])]
    if "missing" in scores:
        lines.append(missing_line(scores["missing"]))
    return "\n".join(lines)


def missing_line(missing: dict[str, Any]) -> str:
    """What the scores leave out: skipped samples, lost rows (by shard), unchecked shards, an explicit --limit."""
    skipped = ", ".join(f"{k}: {v}" for k, v in sorted(missing["skipped"].items()))
    parts = [f"{missing['missing_rows']} row(s) missing" if missing["missing_rows"] or missing["damaged"]
             else "no rows missing"]
    if skipped:
        parts.append(f"skipped {skipped}")
    if missing["lost"] or missing["damaged"]:
        parts.append(f"lost {describe_losses(missing['lost'], missing['damaged'])}")
    parts.append(f"{missing['shards_checked']} shard read(s) checked against manifests"
                 + (f", {missing['unchecked_reads']} unchecked (no manifest)" if missing["unchecked_reads"] else ""))
    if missing.get("limit") is not None:
        parts.append(f"--limit {missing['limit']} per task (partial by request)")
    return "data: " + "; ".join(parts)
