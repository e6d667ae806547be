"""Read a sweep directory (``mmpeft sweep``) into one row per planned run, with the run's metrics flattened.

A sweep directory holds ``sweep.json`` (``{"name", "baseline", "runs": [{"config", "seed", "run_dir", "overrides",
"case"}]}``, ``run_dir`` relative to the sweep directory) and, in each run directory, an ordinary mmpeft run
(``metrics.csv``, ``trainability.md``, ``eval/<checkpoint>.json``) plus ``sweep_run.json`` (``{"status", "fit_s",
"eval_s", ...}``).

A row is ``{"sweep", "baseline", "config", "seed", "case", "overrides", "run_dir", "status", "counted", "reason",
"metrics": {name: float}, "curves": {probe column: [[step, value], ...]}}``. Only a run whose status is ``done``
and that has an eval JSON counts (or, in a sweep without evaluation, ``eval_args: null`` in ``sweep_run.json``,
with its training figures and curves only); every other planned run is a row with ``counted: false`` and the
reason, so a report lists it as missing instead of dropping it. These rows are what ``runs.jsonl`` holds, one a
line: the report regenerates from them alone.

Metric names (``flatten_eval``, ``run_metrics``), units in ``metric_unit``:

- a VQA task (key ``vqa`` by default): ``vqa/overall``, ``vqa/qtype/<question type>``, ``vqa/atype/<answer type>``
- a caption task: ``captions/CIDEr``, ``captions/ROUGE_L``, ``captions/Bleu_1..4``, ``captions/METEOR``
- each text probe's headline metric, adapted minus base (``mmpeft.eval.run_readers.probe_changes``):
  ``text/<probe>/perplexity_change_pct`` (percent of the base's perplexity), ``text/<probe>/acc_change_pts``,
  ``text/<probe>/exact_match_change_pts`` (points); their means over probes of a kind (``run_readers.forgetting``):
  ``forgetting/ppl_change_pct``, ``forgetting/mc_acc_change``, ``forgetting/em_change``
- each generation probe (chat, instructions): ``text/<probe>/rougeL_to_base`` (ROUGE-L of the adapted model's
  replies to the base's; 1: unchanged) and, where recorded, ``text/<probe>/mean_chars`` (adapted reply length)
  and ``text/<probe>/mean_chars_change`` (adapted minus base)
- vision drift: ``vision/cka``, ``vision/cosine_pooled``, ``vision/cosine_tokens``, ``vision/linear_probe_delta``
- any other task: its numeric top-level scores, ``<task>/<key>`` (counts ``num_*`` left out)
- ``perf/trainable_params`` (``trainability.md`` total), ``perf/tokens_per_s`` (mean of ``metrics.csv``
  ``tokens_per_s`` after the first ``WARMUP_STEPS`` logged values), ``perf/peak_memory_gib`` (max of the logged
  ``perf/peak_memory_gib``, CUDA runs only), ``time/fit_s`` and ``time/eval_s`` (``sweep_run.json``)
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from mmpeft.eval.run_readers import forgetting, latest_eval, probe_changes, probe_curves

WARMUP_STEPS = 3
"""Logged ``tokens_per_s`` values left out of the mean (compilation, allocator and loader warm-up), when more remain."""
NOT_SCORES = {"checkpoint", "step", "skipped", "missing", "text_probes"}
"""Top-level keys of an eval JSON that are not a task's scores."""
CHANGE_NAMES = {"perplexity": "perplexity_change_pct", "acc": "acc_change_pts", "exact_match": "exact_match_change_pts"}


def metric_unit(name: str) -> str:
    """The unit of a flattened metric, for table headers and axis labels ("" where it has none)."""
    if name.endswith("_change_pct"):
        return "% of base"
    if name.endswith(("_change_pts", "/mc_acc_change", "/em_change")):
        return "points"
    if name.endswith(("/mean_chars", "/mean_chars_change")):
        return "characters"
    if name.endswith("/overall") or "/qtype/" in name or "/atype/" in name:  # VQA accuracies
        return "%"
    return {"perf/trainable_params": "parameters", "perf/tokens_per_s": "tokens/s", "perf/peak_memory_gib": "GiB",
            "time/fit_s": "s", "time/eval_s": "s"}.get(name, "")


def metric_range(unit: str) -> tuple[float | None, float | None]:
    """The values a metric of ``unit`` (``metric_unit``) can take, (low, high), None where unbounded: an accuracy lies
    in [0, 100] %, a perplexity change is above -100 % of the base's, a change of an accuracy within +-100 points.
    The plots clip a t interval (symmetric by construction) to this range, so no bar or band shows an impossible
    value."""
    return {"%": (0.0, 100.0), "% of base": (-100.0, None), "points": (-100.0, 100.0)}.get(unit, (None, None))


def read_json(path: Path, what: str) -> Any:
    """``path`` parsed, or a ValueError naming the file and what to do."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path} not found ({what})") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not readable JSON ({what}): {e}") from None


def load_sweep(sweep_dir: Path) -> dict[str, Any]:
    """``sweep.json`` of ``sweep_dir``, checked: every run names a config, an integer seed and a run_dir; no
    (config, seed) twice."""
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: {sweep_dir} is not a sweep directory (`mmpeft sweep` writes sweep.json "
                         "into its --out directory); for single runs use `mmpeft report RUN_DIR...`")
    sweep = read_json(path, "the sweep's plan")
    if not isinstance(sweep, dict) or not isinstance(sweep.get("runs"), list):
        raise ValueError(f"{path}: expected an object with a 'runs' list")
    seen = set()
    for i, run in enumerate(sweep["runs"]):
        lacking = [k for k in ("config", "seed", "run_dir") if not isinstance(run, dict) or k not in run]
        if lacking:
            raise ValueError(f"{path}: runs[{i}] has no {', '.join(lacking)}")
        if not isinstance(run["seed"], int):
            raise ValueError(f"{path}: runs[{i}].seed is {run['seed']!r}; expected an integer")
        if (run["config"], run["seed"]) in seen:
            raise ValueError(f"{path}: config {run['config']!r} seed {run['seed']} is planned twice")
        seen.add((run["config"], run["seed"]))
    return sweep


def flatten_eval(evaluation: dict[str, Any]) -> dict[str, float]:
    """The eval JSON of ``mmpeft eval`` as ``{metric name: value}`` (see the module docstring for the names)."""
    out: dict[str, float] = {}
    for task, scores in evaluation.items():
        if task in NOT_SCORES or not isinstance(scores, dict):
            continue
        if "overall" in scores and "per_question_type" in scores:  # VQAResult.to_dict()
            out[f"{task}/overall"] = scores["overall"]
            # eval files written before the official-2021 scorer port keep the per-type means under ``*_mean``
            for t, v in scores.get("per_question_type_mean", scores["per_question_type"]).items():
                out[f"{task}/qtype/{t}"] = v
            for t, v in scores.get("per_answer_type", {}).items():
                out[f"{task}/atype/{t}"] = v
        elif "cka" in scores:  # vision_drift
            out.update({f"{task}/{k}": scores[k] for k in ("cka", "cosine_pooled", "cosine_tokens") if k in scores})
            if "linear_probe" in scores:
                out[f"{task}/linear_probe_delta"] = scores["linear_probe"]["delta"]
        else:  # captions (CIDEr, ...) and any other task: its numeric top-level figures
            out.update({f"{task}/{k}": v for k, v in scores.items() if _number(v) and not k.startswith("num_")
                        and k not in ("images", "pycocoevalcap", "empty_predictions")})
    probes = evaluation.get("text_probes", {})
    for change in probe_changes(probes):
        out[f"text/{change['probe']}/{CHANGE_NAMES[change['metric']]}"] = change["change"]
    out.update({f"forgetting/{k}": v for k, v in forgetting(probes).items() if not k.endswith("_interval")})
    for name, result in probes.items():  # generation probes: how far the replies moved from the base's
        adapted = result.get("adapted", {})
        if "rougeL_to_base" in adapted:
            out[f"text/{name}/rougeL_to_base"] = adapted["rougeL_to_base"]
        if "mean_chars" in adapted:
            out[f"text/{name}/mean_chars"] = adapted["mean_chars"]
            if "mean_chars" in result.get("delta", {}):
                out[f"text/{name}/mean_chars_change"] = result["delta"]["mean_chars"]
    return {k: float(v) for k, v in out.items() if _number(v)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trainable_parameters(run_dir: Path) -> int | None:
    """The total trainable parameter count from ``trainability.md`` (its ``**total**`` row); None without one."""
    path = run_dir / "trainability.md"
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == "**total**":
            try:
                return int(cells[2].replace(",", ""))
            except (IndexError, ValueError):
                raise ValueError(f"{path}: unreadable total row {line!r}; expected '| **total** | | N | M | p |'") \
                    from None
    raise ValueError(f"{path} has no '**total**' row; rerun the training or remove the file")


def logged_performance(run_dir: Path) -> dict[str, float]:
    """``perf/tokens_per_s`` (mean after warm-up) and ``perf/peak_memory_gib`` (max) from ``metrics.csv``."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    speeds, peaks = [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get("tokens_per_s"):
                speeds.append(float(row["tokens_per_s"]))
            if row.get("perf/peak_memory_gib"):
                peaks.append(float(row["perf/peak_memory_gib"]))
    out = {}
    if speeds:
        kept = speeds[WARMUP_STEPS:] or speeds
        out["perf/tokens_per_s"] = sum(kept) / len(kept)
    if peaks:
        out["perf/peak_memory_gib"] = max(peaks)
    return out


def run_metrics(run_dir: Path, evaluation: dict[str, Any], record: dict[str, Any]) -> dict[str, float]:
    """Every flattened metric of one run: its eval JSON, trainability, ``metrics.csv`` and ``sweep_run.json``."""
    metrics = flatten_eval(evaluation)
    params = trainable_parameters(run_dir)
    if params is not None:
        metrics["perf/trainable_params"] = float(params)
    metrics.update(logged_performance(run_dir))
    for key in ("fit_s", "eval_s"):
        if _number(record.get(key)):
            metrics[f"time/{key}"] = float(record[key])
    return metrics


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per run planned in ``sweep_dir/sweep.json``, in its order (see the module docstring)."""
    sweep_dir = Path(sweep_dir)
    sweep = load_sweep(sweep_dir)
    rows = []
    for planned in sweep["runs"]:
        run_dir = sweep_dir / planned["run_dir"]
        row: dict[str, Any] = {"sweep": sweep.get("name"), "baseline": sweep.get("baseline"),
                               "config": planned["config"], "seed": planned["seed"], "case": planned.get("case"),
                               "overrides": planned.get("overrides", {}), "run_dir": str(planned["run_dir"]),
                               "status": "not started", "counted": False, "reason": None, "metrics": {}, "curves": {}}
        rows.append(row)
        record_path = run_dir / "sweep_run.json"
        if not record_path.is_file():
            row["reason"] = f"no {planned['run_dir']}/sweep_run.json: the run was not started"
            continue
        record = read_json(record_path, "the sweep's record of this run")
        row["status"] = record.get("status", "unknown")
        if row["status"] != "done":
            row["reason"] = f"status {row['status']!r} in {planned['run_dir']}/sweep_run.json"
            continue
        evaluation = latest_eval(run_dir)  # an unreadable eval JSON raises, naming the file
        if evaluation is None and not ("eval_args" in record and record["eval_args"] is None):
            row["reason"] = f"status 'done' but no eval JSON in {planned['run_dir']}/eval"
            continue
        evaluation = evaluation or {}  # a sweep without eval (eval_args null): training figures and curves only
        row["metrics"] = run_metrics(run_dir, evaluation, record)
        row["curves"] = {k: [list(p) for p in v] for k, v in probe_curves(run_dir).items()}
        row["counted"] = True
    return rows
