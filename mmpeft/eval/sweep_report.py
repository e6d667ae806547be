"""``mmpeft report --sweep SWEEP_DIR``: a sweep's configs compared across training seeds.

Writes into ``--out`` (default ``SWEEP_DIR/report``), each file atomically:

- ``runs.jsonl``: one line per planned run (``mmpeft.eval.sweep_collect`` rows: flattened metrics, probe curves,
  status); ``mmpeft report --from-jsonl runs.jsonl`` rebuilds every other file from it alone
- ``sweep_report.json``: per config the seeds done and missing, per metric mean, std and 95% t interval across
  seeds, paired differences against the baseline config by seed (``mmpeft.eval.sweep_stats``); the Pareto front;
  the curves' per-step summaries; the list of runs
- ``sweep_report.md``: the same as tables, one row per config (``mmpeft.eval.sweep_markdown``)
- ``vl_vs_forgetting.png`` and ``curves.png`` (``mmpeft.eval.sweep_plots``)

"VL score" is ``vqa/overall`` by default (else ``captions/CIDEr``), "forgetting" ``forgetting/ppl_change_pct`` (the
mean over the perplexity probes of the adapted model's perplexity change in percent of its base's, as
``mmpeft report`` computes it); ``--vl-metric`` and ``--forgetting-metric`` pick any flattened metric (higher VL is
better; lower forgetting is better).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmpeft.atomic import write_json_atomic, write_text_atomic
from mmpeft.eval.sweep_collect import collect, metric_unit
from mmpeft.eval.sweep_markdown import render
from mmpeft.eval.sweep_plots import plot_curves, plot_vl_vs_forgetting
from mmpeft.eval.sweep_stats import CONFIDENCE, aggregate, config_order, curve_summary, pareto_front

VL_DEFAULTS = ("vqa/overall", "captions/CIDEr")
FORGETTING_DEFAULTS = ("forgetting/ppl_change_pct",)
LABELS = {"vqa/overall": "VQA accuracy", "captions/CIDEr": "CIDEr (pycocoevalcap's CIDEr-D)",
          "forgetting/ppl_change_pct": "text perplexity change vs base, mean over perplexity probes"}
INTERVAL = ("mean over training seeds +- the half-width of a 95% t interval across seeds (t quantile with n - 1 "
            "degrees of freedom times s / sqrt(n)); one seed: no interval. Paired differences: the same over the "
            "per-seed differences config - baseline of the seeds both ran.")
PPL_CURVE = "perplexity_delta_pct"


def choose_metric(rows: list[dict[str, Any]], asked: str | None, defaults: tuple[str, ...], flag: str
                  ) -> dict[str, Any] | None:
    """``{"name", "unit", "label"}`` of the metric ``asked`` (an error naming the available ones when no counted
    run has it), else of the first default some counted run has; None when none has any."""
    available = sorted({m for r in rows if r["counted"] for m in r["metrics"]})
    if asked is not None and asked not in available:
        raise ValueError(f"{flag} {asked!r}: no counted run of this sweep has that metric; available: {available}")
    found = [m for m in ([asked] if asked else defaults) if m in available]
    if not found:
        return None
    name = found[0]
    return {"name": name, "unit": metric_unit(name), "label": LABELS.get(name, name)}


def run_curves(run: dict[str, Any], vl: dict[str, Any] | None) -> dict[str, list[tuple[int, float]]]:
    """A run's two curves from its in-loop probes: ``forgetting`` (per step, the mean over perplexity probes of
    ``probe/<probe>/perplexity_delta_pct``) and ``vl`` (``probe/<VL metric>``, else ``probe/vqa/overall``)."""
    curves = run["curves"]
    by_step: dict[int, list[float]] = {}
    for key, series in curves.items():
        if key.endswith("/" + PPL_CURVE):
            for step, value in series:
                by_step.setdefault(int(step), []).append(value)
    out = {"forgetting": [(s, sum(v) / len(v)) for s, v in sorted(by_step.items())]}
    for key in ([f"probe/{vl['name']}"] if vl else []) + ["probe/vqa/overall"]:
        if key in curves:
            out["vl"] = [(int(s), v) for s, v in curves[key]]
            out["vl_column"] = key
            break
    return out


def build_report(rows: list[dict[str, Any]], baseline: str | None = None, vl_metric: str | None = None,
                 forgetting_metric: str | None = None) -> dict[str, Any]:
    """The content of ``sweep_report.json`` from collected rows (``baseline`` None: the sweep's own, if any)."""
    if not rows:
        raise ValueError("the sweep plans no run: nothing to report")
    if baseline is None:
        baseline = rows[0].get("baseline")
        if baseline is not None and baseline not in config_order(rows):
            raise ValueError(f"sweep.json's baseline {baseline!r} is not one of its configs {config_order(rows)}; "
                             "pass --baseline CONFIG_ID")
    configs = aggregate(rows, baseline)
    vl = choose_metric(rows, vl_metric, VL_DEFAULTS, "--vl-metric")
    forget = choose_metric(rows, forgetting_metric, FORGETTING_DEFAULTS, "--forgetting-metric")
    pareto = None
    if vl and forget:
        points = {c: [s["metrics"][vl["name"]]["mean"], s["metrics"][forget["name"]]["mean"]]
                  for c, s in configs.items() if vl["name"] in s["metrics"] and forget["name"] in s["metrics"]}
        pareto = {"points": points, "front": pareto_front({c: (p[0], p[1]) for c, p in points.items()})}
    curves = {}
    for config in configs:
        per_run = [run_curves(r, vl) for r in rows if r["config"] == config and r["counted"]]
        entry = {k: curve_summary([c[k] for c in per_run if c.get(k)]) for k in ("forgetting", "vl")}
        entry["vl_column"] = next((c["vl_column"] for c in per_run if "vl_column" in c), None)
        curves[config] = entry
    return {
        "sweep": rows[0].get("sweep"), "baseline": baseline, "confidence": CONFIDENCE, "interval": INTERVAL,
        "vl_metric": vl, "forgetting_metric": forget, "configs": configs, "pareto": pareto, "curves": curves,
        "units": {m: metric_unit(m) for m in sorted({m for r in rows for m in r["metrics"]})},
        "runs": [{k: r[k] for k in ("config", "seed", "case", "run_dir", "status", "counted", "reason")}
                 for r in rows],
    }


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``runs.jsonl``, each checked for the keys a report needs; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path} not found: give the runs.jsonl a sweep report wrote")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise ValueError(f"{path}:{number} is not JSON ({e})") from None
        lacking = [k for k in ("config", "seed", "counted", "metrics", "curves") if k not in row]
        if lacking:
            raise ValueError(f"{path}:{number} has no {', '.join(lacking)}: not a runs.jsonl of `mmpeft report "
                             "--sweep`")
        rows.append(row)
    return rows


def write_sweep_report(rows: list[dict[str, Any]], out: str | Path, baseline: str | None = None,
                       vl_metric: str | None = None, forgetting_metric: str | None = None,
                       write_rows: bool = True) -> dict[str, Any]:
    """Every report file into ``out`` from collected rows; ``write_rows`` False keeps an existing runs.jsonl."""
    report = build_report(rows, baseline, vl_metric, forgetting_metric)  # errors before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    if write_rows:
        files.append(write_text_atomic(out / "runs.jsonl", "".join(json.dumps(r) + "\n" for r in rows)))
    files.append(write_json_atomic(out / "sweep_report.json", report))
    plots = [p for p in (plot_vl_vs_forgetting(report, out), plot_curves(report, out)) if p is not None]
    files.append(write_text_atomic(out / "sweep_report.md", render(report, [p.name for p in plots])))
    return {"report": report, "files": [*files, *plots]}


def report_sweep(sweep_dir: str | Path | None = None, from_jsonl: str | Path | None = None,
                 out: str | Path | None = None, **options: Any) -> dict[str, Any]:
    """``mmpeft report --sweep`` / ``--from-jsonl``: collect (or read) the rows and write the report.

    Default ``out``: ``SWEEP_DIR/report``, or the JSONL's directory (the report next to its rows, regenerated)."""
    if (sweep_dir is None) == (from_jsonl is None):
        raise ValueError("give exactly one of --sweep SWEEP_DIR and --from-jsonl RUNS_JSONL")
    if sweep_dir is not None:
        rows = collect(sweep_dir)
        return write_sweep_report(rows, out or Path(sweep_dir) / "report", **options)
    rows = read_jsonl(from_jsonl)
    out = Path(out) if out else Path(from_jsonl).parent
    same = (out / "runs.jsonl").resolve() == Path(from_jsonl).resolve()
    return write_sweep_report(rows, out, write_rows=not same, **options)
